"""EventBridge Scheduler schedules fire on the sandbox clock (SAM ScheduleV2 events, an
AWS::Scheduler::Schedule, schedules made through the API), and a Step Functions task waiting on
a task token resumes with the callback's output, times out into its Catch, refuses used tokens
as AWS does and stops at once."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta

import pytest

from sandbox.testing import eventually

pytestmark = pytest.mark.integration


def _seen(sb, event_id: str) -> dict | None:
    return (
        sb.client("dynamodb")
        .get_item(
            TableName=sb.output("TableName"), Key={"PK": {"S": f"SEEN#{event_id}"}}, ConsistentRead=True
        )
        .get("Item")
    )


def _deliveries(sb, event_id: str) -> int:
    item = _seen(sb, event_id)
    return int(item["deliveries"]["N"]) if item else 0


def _dead_letter(sb, match) -> dict | None:
    """The message on the fixture's dead-letter queue whose body ``match`` accepts (left visible)."""
    messages = (
        sb.client("sqs")
        .receive_message(
            QueueUrl=sb.output("DeadLettersUrl"),
            MaxNumberOfMessages=10,
            MessageAttributeNames=["All"],
            VisibilityTimeout=0,
        )
        .get("Messages", [])
    )
    return next((m for m in messages if match(json.loads(m["Body"]))), None)


def _at(sb, minutes_from_now: int) -> str:
    """A one-time ``at(...)`` expression, minutes ahead on the sandbox clock."""
    when = sb.clock.now() + timedelta(minutes=minutes_from_now)
    return f"at({when.strftime('%Y-%m-%dT%H:%M:%S')})"


# -- EventBridge Scheduler ---------------------------------------------------------------------


def test_schedule_v2_event_fires_repeatedly_with_its_input(fixture_app):
    # rate(1 minute) at time_scale 0.001 fires every 60 ms of wall time.
    sb = fixture_app
    schedule = sb.client("scheduler").get_schedule(Name="RecorderFunctionBeat")
    assert schedule["State"] == "ENABLED"
    assert schedule["ScheduleExpression"] == "rate(1 minute)"
    assert schedule["Target"]["Arn"].endswith(":function:fixture-RecorderFunction")
    assert sb.stack.types["RecorderFunctionBeat"] == "AWS::Scheduler::Schedule"

    before = _deliveries(sb, "beat")
    eventually(lambda: _deliveries(sb, "beat") >= before + 3, what="three more ScheduleV2 firings")
    # EventBridge Scheduler sends the target's Input verbatim, not an event envelope.
    assert json.loads(_seen(sb, "beat")["body"]["S"]) == {"id": "beat", "kind": "schedule-v2"}


def test_disabled_schedule_never_fires_until_enabled(fixture_app):
    sb = fixture_app
    scheduler = sb.client("scheduler")
    muted = scheduler.get_schedule(Name="RecorderFunctionMuted")
    assert muted["State"] == "DISABLED"
    before = _deliveries(sb, "beat")
    eventually(lambda: _deliveries(sb, "beat") >= before + 3, what="the enabled schedule firing")
    assert _seen(sb, "muted") is None

    # The scheduler reads schedules live: enabling it through the API starts it.
    keys = ("Name", "GroupName", "ScheduleExpression", "FlexibleTimeWindow", "Target")
    scheduler.update_schedule(**{k: muted[k] for k in keys}, State="ENABLED")
    try:
        item = eventually(lambda: _seen(sb, "muted"), what="the schedule once enabled")
        assert json.loads(item["body"]["S"]) == {"id": "muted", "kind": "schedule-v2"}
    finally:
        scheduler.update_schedule(**{k: muted[k] for k in keys}, State="DISABLED")


def test_schedule_resource_in_a_group_starts_its_state_machine(fixture_app):
    sb = fixture_app
    name, arn = sb.output("PulseScheduleName"), sb.output("PulseScheduleArn")
    assert arn.endswith(f":schedule/fixture-schedules/{name}")  # Ref: the name; GetAtt Arn
    schedule = sb.client("scheduler").get_schedule(Name=name, GroupName="fixture-schedules")
    assert schedule["Arn"] == arn
    assert schedule["Target"]["RetryPolicy"] == {"MaximumRetryAttempts": 3, "MaximumEventAgeInSeconds": 600}

    sfn = sb.client("stepfunctions")
    machine = sb.state_machine_arn("PulseStateMachine")
    executions = eventually(
        lambda: sfn.list_executions(stateMachineArn=machine)["executions"],
        what="an execution started by rate(10 minutes)",
    )
    result = sb.wait_execution(executions[-1]["executionArn"])
    assert result.status == "SUCCEEDED"
    assert result.output["pulse"] is True
    # <aws.scheduler.scheduled-time> is filled in, as EventBridge Scheduler does.
    assert result.output["at"].endswith("Z") and "<" not in result.output["at"]


def test_one_time_schedule_from_the_api_follows_the_lambda_retry_and_dead_letter_path(fixture_app):
    sb = fixture_app
    marker = uuid.uuid4().hex
    before = len(sb.runtime.calls("AlwaysFailsFunction"))
    sb.client("scheduler").create_schedule(
        Name=f"doomed-{marker[:8]}",
        ScheduleExpression=_at(sb, 30),  # 1.8 s of wall time: still ahead when the scheduler sees it
        FlexibleTimeWindow={"Mode": "OFF"},
        Target={
            "Arn": sb.runtime.functions["fixture-AlwaysFailsFunction"].arn,
            "RoleArn": "arn:aws:iam::123456789012:role/scheduler",
            "Input": json.dumps({"id": marker}),
        },
    )
    # Invoked asynchronously: Lambda's first try and two retries, then the function's DLQ.
    message = eventually(
        lambda: _dead_letter(sb, lambda body: body == {"id": marker}),
        timeout=60,
        what="the function's dead letter",
    )
    assert "BrokenTarget" in message["MessageAttributes"]["ErrorMessage"]["StringValue"]
    assert len(sb.runtime.calls("AlwaysFailsFunction")) - before == 3
    # at(...) fires once.
    assert sum(1 for name, _ in sb._scheduler.fired if name.endswith(f"doomed-{marker[:8]}")) == 1


def test_schedule_whose_state_machine_is_gone_goes_to_its_dead_letter_queue(fixture_app):
    sb = fixture_app
    marker = uuid.uuid4().hex
    missing = "arn:aws:states:us-west-2:123456789012:stateMachine:does-not-exist"
    arn = sb.client("scheduler").create_schedule(
        Name=f"orphan-{marker[:8]}",
        ScheduleExpression=_at(sb, 30),
        FlexibleTimeWindow={"Mode": "OFF"},
        Target={
            "Arn": missing,
            "RoleArn": "arn:aws:iam::123456789012:role/scheduler",
            "Input": json.dumps({"orphan": marker}),
            "RetryPolicy": {"MaximumRetryAttempts": 2, "MaximumEventAgeInSeconds": 3600},
            "DeadLetterConfig": {"Arn": "arn:aws:sqs:us-west-2:123456789012:fixture-DeadLetters"},
        },
    )["ScheduleArn"]
    message = eventually(
        lambda: _dead_letter(sb, lambda body: body == {"orphan": marker}),
        timeout=60,
        what="the schedule's dead letter",
    )
    attributes = {k: v["StringValue"] for k, v in message["MessageAttributes"].items()}
    assert attributes["SCHEDULE_ARN"] == arn
    assert attributes["TARGET_ARN"] == missing
    assert attributes["RETRY_ATTEMPTS"] == "2"
    assert attributes["EXHAUSTED_RETRY_CONDITION"] == "MaximumRetryAttempts"


# -- Step Functions task-token callbacks -------------------------------------------------------


def _armed(sb, job: str) -> tuple[str, int] | None:
    """(the latest task token, how many times the job was armed) once ArmFunction ran."""
    item = (
        sb.client("dynamodb")
        .get_item(TableName=sb.output("TableName"), Key={"PK": {"S": f"ARM#{job}"}}, ConsistentRead=True)
        .get("Item")
    )
    return (item["token"]["S"], int(item["arms"]["N"])) if item else None


def _armed_at_least(sb, job: str, times: int) -> str:
    def check():
        armed = _armed(sb, job)
        return armed[0] if armed and armed[1] >= times else None

    return eventually(check, timeout=60, what=f"{job} armed {times} times")


def _start(sb, poll_seconds: int) -> tuple[str, str]:
    job = uuid.uuid4().hex
    return job, sb.start_execution("CallbackStateMachine", {"job": job, "pollSeconds": poll_seconds})


def _events(result, kind: str) -> list[dict]:
    return [e for e in result.history if e["type"] == kind]


def test_callback_resumes_the_execution_with_its_output(fixture_app):
    sb = fixture_app
    job, arn = _start(sb, poll_seconds=3600)  # 3.6 s of wall time: the answer comes first
    token = _armed_at_least(sb, job, 1)
    sb.client("stepfunctions").send_task_success(
        taskToken=token, output=json.dumps({"done": True, "by": "operator"})
    )
    result = sb.wait_execution(arn, timeout=30)

    assert result.status == "SUCCEEDED", (result.error, result.cause)
    assert result.output["wake"] == {"done": True, "by": "operator"}  # ResultPath $.wake
    assert result.states_entered() == ["Monitor", "Poll", "Done"]
    assert not _events(result, "TaskTimedOut")
    assert _armed(sb, job)[1] == 1


def test_unanswered_token_times_out_into_the_catch_and_polls_again(fixture_app):
    # TimeoutSecondsPath: $.pollSeconds = 250 sandbox seconds, 0.25 s of wall time per round
    # (the arming Lambda's run counts in it, as on AWS).
    sb = fixture_app
    job, arn = _start(sb, poll_seconds=250)
    first = _armed_at_least(sb, job, 1)
    latest = _armed_at_least(sb, job, 3)  # each timeout is caught, Poll loops back to Monitor
    assert latest != first
    sfn = sb.client("stepfunctions")
    # The first task timed out: its token is closed.
    with pytest.raises(sfn.exceptions.TaskTimedOut):
        sfn.send_task_success(taskToken=first, output=json.dumps({"done": True}))

    def answered():
        token = _armed(sb, job)[0]
        try:
            sfn.send_task_success(taskToken=token, output=json.dumps({"done": True}))
            return True
        except sfn.exceptions.TaskTimedOut:  # that round timed out as we answered: the next one
            return False

    eventually(answered, timeout=60, what="a round answered before its timeout")
    result = sb.wait_execution(arn, timeout=30)
    assert result.status == "SUCCEEDED"
    assert result.output["wake"] == {"done": True}
    timeouts = _events(result, "TaskTimedOut")
    assert len(timeouts) >= 2
    assert all(e["taskTimedOutEventDetails"]["error"] == "States.Timeout" for e in timeouts)
    entered = result.states_entered()
    assert entered[:3] == ["Monitor", "Poll", "Monitor"] and entered[-1] == "Done"
    assert not _events(result, "TaskFailed")


def test_a_used_or_unknown_token_is_refused_as_aws_does(fixture_app):
    sb = fixture_app
    sfn = sb.client("stepfunctions")
    job, arn = _start(sb, poll_seconds=3600)
    first = _armed_at_least(sb, job, 1)
    sfn.send_task_success(taskToken=first, output=json.dumps({"done": False}))
    second = _armed_at_least(sb, job, 2)  # not done: Poll armed a new wait with a new token

    # The execution still runs, but the first task is closed: TaskTimedOut, for every call.
    with pytest.raises(sfn.exceptions.TaskTimedOut):
        sfn.send_task_success(taskToken=first, output=json.dumps({"done": True}))
    with pytest.raises(sfn.exceptions.TaskTimedOut):
        sfn.send_task_failure(taskToken=first, error="Late", cause="too late")
    with pytest.raises(sfn.exceptions.TaskTimedOut):
        sfn.send_task_heartbeat(taskToken=first)
    # A token no execution issued: InvalidToken.
    with pytest.raises(sfn.exceptions.InvalidToken):
        sfn.send_task_success(taskToken=str(uuid.uuid4()), output="{}")

    sfn.send_task_success(taskToken=second, output=json.dumps({"done": True}))
    assert sb.wait_execution(arn, timeout=30).status == "SUCCEEDED"
    # After the execution ended, its tokens are closed too.
    with pytest.raises(sfn.exceptions.TaskTimedOut):
        sfn.send_task_success(taskToken=second, output=json.dumps({"done": True}))


def test_task_failure_keeps_its_error_and_cause(fixture_app):
    sb = fixture_app
    job, arn = _start(sb, poll_seconds=3600)
    sb.client("stepfunctions").send_task_failure(
        taskToken=_armed_at_least(sb, job, 1), error="WakeFailed", cause="the job crashed"
    )
    result = sb.wait_execution(arn, timeout=30)
    assert result.status == "FAILED"
    assert (result.error, result.cause) == ("WakeFailed", "the job crashed")


def test_stop_execution_while_waiting_for_the_token_ends_it_at_once(fixture_app):
    sb = fixture_app
    sfn = sb.client("stepfunctions")
    job, arn = _start(sb, poll_seconds=10**6)  # 1000 s of wall time: only the stop can end it
    token = _armed_at_least(sb, job, 1)
    sfn.stop_execution(executionArn=arn, cause="operator stopped it")

    def aborted():
        return sfn.describe_execution(executionArn=arn)["status"] == "ABORTED"

    eventually(aborted, timeout=5, what="the execution ABORTED")
    result = sb.wait_execution(arn, timeout=5)
    assert result.history[-1]["type"] == "ExecutionAborted"
    # The interrupted wait is neither a timeout nor a failure in the history.
    assert not _events(result, "TaskTimedOut") and not _events(result, "TaskFailed")
    with pytest.raises(sfn.exceptions.TaskTimedOut):
        sfn.send_task_success(taskToken=token, output=json.dumps({"done": True}))
