"""The sandbox runs state machines from a SAM template for real: Choice, Wait, Map, Retry,
Catch and task-token callbacks over real handlers, with time scaled."""

from __future__ import annotations

import json
import uuid

import pytest

from sandbox.testing import eventually

pytestmark = pytest.mark.integration


def _token(sb, key: str) -> str:
    def read():
        item = (
            sb.client("dynamodb")
            .get_item(TableName=sb.output("TableName"), Key={"PK": {"S": f"TOKEN#{key}"}})
            .get("Item")
        )
        return item and item["token"]["S"]

    return eventually(read, what=f"the task token of {key}")


def test_happy_path_runs_every_construct_to_succeeded(fixture_app):
    sb = fixture_app
    key = uuid.uuid4().hex
    arn = sb.start_execution("KitchenSinkStateMachine", {"path": "ok", "key": key, "numbers": [1, 2, 3]})
    # The approver answers the callback, as an operator or another Lambda would.
    sb.client("stepfunctions").send_task_success(
        taskToken=_token(sb, key), output=json.dumps({"approved": 1})
    )
    result = sb.wait_execution(arn, timeout=60)

    assert result.status == "SUCCEEDED", (result.error, result.cause)
    assert result.output["squares"] == [1, 4, 9]
    assert result.output["flaky"] == {"attempts": 3}
    assert result.output["approval"] == {"approved": 1}
    entered = result.states_entered()
    assert entered[:3] == ["Route", "Pause", "Fanout"]
    assert entered.count("Square") == 3
    # Retry: two real failures of the handler, each named by its exception class.
    failures = [
        e["lambdaFunctionFailedEventDetails"] for e in result.history if e["type"] == "LambdaFunctionFailed"
    ]
    assert [f["error"] for f in failures] == ["TransientError", "TransientError"]
    assert len(sb.runtime.calls("FlakyFunction")) >= 3


def test_a_one_hour_wait_runs_on_the_scaled_clock(fixture_app):
    # At time_scale 0.001 the 3600 s Wait takes 3.6 s; unscaled it would outlast the test timeout.
    sb = fixture_app
    key = uuid.uuid4().hex
    arn = sb.start_execution("KitchenSinkStateMachine", {"path": "ok", "key": key, "numbers": []})
    sb.client("stepfunctions").send_task_success(taskToken=_token(sb, key), output="{}")
    assert sb.wait_execution(arn, timeout=30).status == "SUCCEEDED"


def test_catch_leads_to_failed_with_the_handlers_reason(fixture_app):
    result = fixture_app.run_execution("KitchenSinkStateMachine", {"path": "fail", "key": "k1"})
    assert result.status == "FAILED"
    assert result.error == "PermanentBoom"
    assert "cannot process k1: it is broken for good" in result.cause
    assert result.states_entered() == ["Route", "Boom", "Recover", "Failed"]


def test_callback_timeout_is_caught(fixture_app):
    result = fixture_app.run_execution(
        "KitchenSinkStateMachine", {"path": "timeout", "key": uuid.uuid4().hex}
    )
    assert result.status == "FAILED"
    assert result.error == "ApprovalTimedOut"
    assert "WaitForToken" in result.states_entered()


def test_task_failure_callback_fails_the_execution(fixture_app):
    sb = fixture_app
    key = uuid.uuid4().hex
    arn = sb.start_execution("KitchenSinkStateMachine", {"path": "timeout", "key": key})
    sb.client("stepfunctions").send_task_failure(taskToken=_token(sb, key), error="Rejected", cause="no")
    result = sb.wait_execution(arn)
    assert result.status == "FAILED"
    assert result.error == "Rejected"


def test_unknown_task_token_is_refused(fixture_app):
    sfn = fixture_app.client("stepfunctions")
    with pytest.raises(sfn.exceptions.InvalidToken):
        sfn.send_task_success(taskToken="not-a-token", output="{}")


def test_a_child_workflow_runs_to_its_end_and_answers_as_aws_documents(fixture_app):
    """startExecution.sync:2: the task's result is the child's DescribeExecution, its Output parsed
    as JSON; each unnamed child gets a name of its own; the Outcome carries the children."""
    result = fixture_app.run_execution("ParentStateMachine", {"fail": False})
    assert result.status == "SUCCEEDED", (result.error, result.cause)
    first, second = result.output["first"], result.output["second"]
    assert first["Status"] == "SUCCEEDED" and first["Output"] == {"doubled": 4}
    assert second["Output"] == {"doubled": 6} and second["Input"] == {"n": 3, "fail": False}
    assert first["ExecutionArn"] != second["ExecutionArn"]
    assert not first["ExecutionArn"].endswith(":None")
    assert [c.execution_arn for c in result.children] == [first["ExecutionArn"], second["ExecutionArn"]]
    assert [c.input["n"] for c in result.children] == [2, 3]
    assert result.steps_entered() == ["First", "Route", "Double", "Second", "Route", "Double"]


def test_a_failed_child_fails_its_task_with_states_task_failed_and_the_childs_reason(fixture_app):
    result = fixture_app.run_execution("ParentStateMachine", {"fail": True})
    assert result.status == "SUCCEEDED", (result.error, result.cause)
    error = result.output["error"]
    assert error["Error"] == "States.TaskFailed"
    child = json.loads(error["Cause"])  # the child's DescribeExecution
    assert (child["Status"], child["Error"], child["Cause"]) == ("FAILED", "ChildBoom", "the child failed")
    assert [c.status for c in result.children] == ["SUCCEEDED", "FAILED"]
    assert result.children[1].execution_arn == child["ExecutionArn"]
    assert result.steps_entered() == ["First", "Route", "Double", "Second", "Route", "Boom", "Caught"]
