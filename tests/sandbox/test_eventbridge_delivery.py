"""EventBridge in the sandbox delivers to the targets template.yaml wires, with real pattern
semantics, asynchronous Lambda retries, dead-letter queues and a scheduler on the sandbox clock."""

from __future__ import annotations

import json
import uuid

import pytest

from sandbox.testing import eventually

pytestmark = pytest.mark.integration


def _seen(sb, event_id: str) -> dict | None:
    item = (
        sb.client("dynamodb")
        .get_item(
            TableName=sb.output("TableName"), Key={"PK": {"S": f"SEEN#{event_id}"}}, ConsistentRead=True
        )
        .get("Item")
    )
    return item


def _put(sb, source: str, detail_type: str, detail: dict | None = None) -> str:
    entries = sb.client("events").put_events(
        Entries=[{"Source": source, "DetailType": detail_type, "Detail": json.dumps(detail or {"k": 1})}]
    )["Entries"]
    return entries[0]["EventId"]


def test_matching_event_reaches_its_lambda_target_and_others_do_not(fixture_app):
    sb = fixture_app
    matching = _put(sb, "fixture.app", "OrderPlaced", {"order": 7})  # prefix "Order" matches
    other_type = _put(sb, "fixture.app", "Shipment")
    other_source = _put(sb, "fixture.elsewhere", "OrderPlaced")
    sb.wait_idle()

    item = _seen(sb, matching)
    assert item is not None, "the matching event was not delivered"
    body = json.loads(item["body"]["S"])
    assert body["detail"] == {"order": 7} and body["detail-type"] == "OrderPlaced"
    assert item["deliveries"]["N"] == "1"
    assert _seen(sb, other_type) is None
    assert _seen(sb, other_source) is None


def test_disabled_rule_delivers_nothing(fixture_app):
    sb = fixture_app
    event_id = _put(sb, "fixture.disabled", "Anything")
    sb.wait_idle()
    assert _seen(sb, event_id) is None


def test_event_starts_a_state_machine_target(fixture_app):
    sb = fixture_app
    marker = uuid.uuid4().hex
    _put(sb, "fixture.sfn", "Go", {"marker": marker})
    sb.wait_idle()
    sfn = sb.client("stepfunctions")
    arn = sb.state_machine_arn("EchoStateMachine")

    def started():
        for ex in sfn.list_executions(stateMachineArn=arn)["executions"]:
            out = sfn.describe_execution(executionArn=ex["executionArn"])
            if marker in out.get("input", ""):
                return out
        return None

    execution = eventually(started, what="an execution started by the event")
    result = sb.wait_execution(execution["executionArn"])
    assert result.status == "SUCCEEDED"
    assert result.output["detail"] == {"marker": marker}
    assert result.output["source"] == "fixture.sfn"


def test_failing_lambda_target_is_retried_then_dead_lettered(fixture_app):
    sb = fixture_app
    before = len(sb.runtime.calls("AlwaysFailsFunction"))
    event_id = _put(sb, "fixture.fail", "Doomed", {"n": 1})
    sb.wait_idle(timeout=60)

    # Lambda's asynchronous invocation: the first try and two retries.
    assert len(sb.runtime.calls("AlwaysFailsFunction")) - before == 3
    sqs = sb.client("sqs")
    messages = sqs.receive_message(
        QueueUrl=sb.output("DeadLettersUrl"), MaxNumberOfMessages=10, MessageAttributeNames=["All"]
    ).get("Messages", [])
    ours = [m for m in messages if json.loads(m["Body"])["id"] == event_id]
    assert len(ours) == 1
    assert (
        "BrokenTarget: this target never works" in ours[0]["MessageAttributes"]["ErrorMessage"]["StringValue"]
    )


def test_scheduled_rule_fires_on_the_sandbox_clock(fixture_app):
    # rate(1 minute) at time_scale 0.001 fires every 60 ms of wall time.
    sb = fixture_app

    def ticks():
        item = _seen(sb, "tick")
        return item and int(item["deliveries"]["N"]) >= 3 and item

    item = eventually(ticks, timeout=20, what="three scheduled ticks")
    assert json.loads(item["body"]["S"]) == {"id": "tick", "kind": "tick"}  # the target's constant Input
