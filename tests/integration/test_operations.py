"""Operations in the sandbox: what pages the on-call engineer reaches moto's CloudWatch
(a dead letter, a failed execution; the breaker's metric: test_node_health_actions.py), the
functions' logs and EMF go to their log groups and files, not the console, and a second stack of
the template deploys beside the first in the same account and Region."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator

import pytest

from hpctl.operations import dlq_redrive, dlq_show
from sandbox import Sandbox, SandboxConfig
from sandbox.stack import StackDeployer

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def sb() -> Iterator[Sandbox]:
    with Sandbox(SandboxConfig(time_scale=0.005)) as sandbox:
        yield sandbox


def _metric_values(sb: Sandbox, namespace: str, name: str) -> list[tuple[dict, float]]:
    from moto.cloudwatch.models import cloudwatch_backends

    backend = cloudwatch_backends["123456789012"][sb.config.region]
    return [
        ({d.name: d.value for d in datum.dimensions}, datum.value)
        for datum in list(backend.metric_data)
        if datum.namespace == namespace and datum.name == name
    ]


def _unreadable_node_health_event(sb: Sandbox) -> None:
    """A node-health event node_health cannot read: it fails, Lambda retries it twice, then
    dead-letters it."""
    sb.client("events").put_events(
        Entries=[
            {
                "Source": "aws.sagemaker",
                "DetailType": "SageMaker HyperPod Cluster Node Health Event",
                "Detail": json.dumps({"unexpected": True}),
            }
        ]
    )
    sb.wait_idle(timeout=60)


def test_an_event_in_the_dead_letter_queue_puts_its_alarm_over_the_threshold(sb, capfd):
    assert not sb.alarm_breaching("EventsDeadLetterAlarm")
    _unreadable_node_health_event(sb)
    sqs = sb.client("sqs")
    attributes = sqs.get_queue_attributes(
        QueueUrl=sb.output("EventsDeadLetterQueueUrl"), AttributeNames=["ApproximateNumberOfMessages"]
    )["Attributes"]
    assert attributes["ApproximateNumberOfMessages"] == "1"

    assert sb.alarm_breaching("EventsDeadLetterAlarm")
    function = sb.stack.physical("NodeHealthFunction")
    errors = [
        v for dims, v in _metric_values(sb, "AWS/Lambda", "Errors") if dims == {"FunctionName": function}
    ]
    assert sum(errors) == 3  # the first try and Lambda's two retries
    alarm = sb.alarm("EventsDeadLetterAlarm")
    assert alarm["AlarmActions"] == [sb.stack.physical("AlarmTopic")]
    # The function's output went to its log group and file, none of it to the console.
    logs = sb.client("logs")
    group = logs.describe_log_groups(logGroupNamePrefix=f"/aws/lambda/{function}")["logGroups"][0]
    assert group["retentionInDays"] == 30
    events = logs.filter_log_events(logGroupName=f"/aws/lambda/{function}")["events"]
    assert any(e["message"].startswith("[ERROR] InvalidInputError: invalid NodeHealthEvent") for e in events)
    assert (sb.log_dir / f"{function}.log").read_text()
    assert '"_aws"' not in capfd.readouterr().out


def test_hpctl_dlq_shows_each_dead_letter_and_redrives_it_to_its_function(sb, monkeypatch):
    for key, value in sb.env.items():
        if key.startswith("HPCTL_") or key == "AWS_ENDPOINT_URL":
            monkeypatch.setenv(key, value)
    stack, sqs = sb.config.stack_name, sb.client("sqs")
    url = sb.output("EventsDeadLetterQueueUrl")
    sqs.purge_queue(QueueUrl=url)
    _unreadable_node_health_event(sb)
    function = sb.stack.physical("NodeHealthFunction")

    out = io.StringIO()
    (letter,) = dlq_show(stack, sqs=sqs, out=out, as_json=True)
    assert letter["event"]["source"] == "aws.sagemaker" and letter["error"]
    dlq_show(stack, sqs=sqs, out=out)  # showing removes nothing
    assert "1 message(s)" in out.getvalue()

    calls = len(sb.runtime.calls("NodeHealthFunction"))
    counts = dlq_redrive(stack, sqs=sqs, lam=sb.client("lambda"), out=out)
    assert counts == {"redriven": 1, "left": 0}
    assert f"-> {function}" in out.getvalue()
    sb.wait_idle(timeout=60)
    # Handed to node_health again (asynchronously: its first try and two retries), where it still
    # fails, so it is back in the queue: a redrive is for events whose cause was fixed.
    assert len(sb.runtime.calls("NodeHealthFunction")) == calls + 3
    (again,) = dlq_show(stack, sqs=sqs, out=out, as_json=True)
    assert again["event"]["id"] == letter["event"]["id"]


def test_a_failed_execution_puts_its_workflow_alarm_over_the_threshold(sb, capfd):
    assert not sb.alarm_breaching("RegisterClusterExecutionsAlarm")
    outcome = sb.run_execution(
        "RegisterClusterStateMachine", {"clusterName": "no-such-cluster", "mode": "addon"}, timeout=120
    )
    assert outcome.status == "FAILED"

    assert sb.alarm_breaching("RegisterClusterExecutionsAlarm")
    arn = sb.stack.physical("RegisterClusterStateMachine")
    failed = _metric_values(sb, "AWS/States", "ExecutionsFailed")
    assert ({"StateMachineArn": arn}, 1.0) in failed
    # The workflow's own EMF metric (record_failure) was extracted from its log output, with the
    # service dimension Powertools gives it; nothing of it was printed.
    recorded = _metric_values(sb, "HyperPodControlPlane", "WorkflowFailures")
    assert ({"service": "hyperpod-control-plane"}, 1.0) in recorded
    assert '"_aws"' not in capfd.readouterr().out


def test_a_second_stack_deploys_beside_the_first_in_the_same_account(sb):
    """Everything named per account and Region carries its stack's name: the second stack's
    schedules, buses, log groups, alarms, topic and roles do not collide with the first's."""
    second = StackDeployer(
        sb.config.template, "second-stack", sb.config.region, sb.client, sb.runtime, {"JobWatchSeconds": "1"}
    ).deploy()

    first = sb.stack
    assert first is not None
    for logical, physical in second.resources.items():
        # A bus policy's statement id is unique within its bus only, and each stack has its bus.
        if logical in first.resources and second.types.get(logical) != "AWS::Events::EventBusPolicy":
            assert physical != first.resources[logical], f"{logical} is shared: {physical}"
    stacks = {s["StackName"] for s in sb.client("cloudformation").describe_stacks()["Stacks"]}
    assert {first.name, "second-stack"} <= stacks
    schedules = {s["Name"] for s in sb.client("scheduler").list_schedules()["Schedules"]}
    assert {"second-stack-reconcile-jobs", f"{first.name}-reconcile-jobs"} <= schedules
    alarms = sb.client("cloudwatch").describe_alarms(AlarmNamePrefix="second-stack-")["MetricAlarms"]
    assert len(alarms) == sum(1 for t in second.types.values() if t == "AWS::CloudWatch::Alarm")
