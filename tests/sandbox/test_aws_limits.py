"""The sandbox is no kinder than AWS about limits: a Lambda invocation stops at its Timeout with
``Sandbox.Timedout``, oversized payloads are refused, and a state over 256 KiB fails the
execution with ``States.DataLimitExceeded``, which no ``States.ALL`` catches."""

from __future__ import annotations

import json

import pytest

from sandbox.lambdas import ASYNC_EVENT_LIMIT, SYNC_PAYLOAD_LIMIT

pytestmark = pytest.mark.integration


def test_an_invocation_over_its_timeout_fails_as_on_aws_and_the_handler_sees_its_deadline(fixture_app):
    sb = fixture_app
    payload, error = sb.runtime.invoke("fixture-SlowFunction", {"sleep": 0})
    assert error is None and 0 < payload["left_ms"] <= 2000  # the template's Timeout: 2
    payload, error = sb.runtime.invoke("fixture-SlowFunction", {"sleep": 5})
    assert error == "Sandbox.Timedout"
    assert payload["errorType"] == "Sandbox.Timedout"
    assert payload["errorMessage"].endswith("Task timed out after 2.00 seconds")


def test_a_timed_out_task_is_retried_by_name_then_caught(fixture_app):
    sb = fixture_app
    outcome = sb.run_execution("LimitsStateMachine", {"sleep": 5}, timeout=60)
    assert outcome.status == "SUCCEEDED"
    assert outcome.states_entered() == ["Slow", "Caught"]
    failures = [e for e in outcome.history if e["type"] == "TaskFailed"]
    assert [f["taskFailedEventDetails"]["error"] for f in failures] == ["Sandbox.Timedout"] * 2


def test_a_state_over_256_kib_fails_the_execution_whatever_catches_everything(fixture_app):
    sb = fixture_app
    small = sb.run_execution("LimitsStateMachine", {"bytes": 1000}, timeout=60)
    assert small.status == "SUCCEEDED" and small.states_entered() == ["Slow"]
    big = sb.run_execution("LimitsStateMachine", {"bytes": 300 * 1024}, timeout=60)
    assert big.status == "FAILED"
    assert big.error == "States.DataLimitExceeded"
    assert "Caught" not in big.states_entered(), "States.ALL does not catch States.DataLimitExceeded"


def test_payloads_over_lambdas_limits_are_refused_before_the_handler_runs(fixture_app):
    sb = fixture_app
    before = len(sb.runtime.calls("SlowFunction"))
    _, error = sb.runtime.invoke("fixture-SlowFunction", {"pad": "x" * SYNC_PAYLOAD_LIMIT})
    assert error == "RequestEntityTooLargeException"
    _, error = sb.runtime.invoke("fixture-SlowFunction", {"bytes": SYNC_PAYLOAD_LIMIT})
    assert error == "Function.ResponseSizeTooLarge"
    refused = []
    sb.runtime.invoke_async(
        "fixture-SlowFunction",
        json.dumps({"pad": "x" * ASYNC_EVENT_LIMIT}),
        lambda spec, event, why: refused.append(why["errorType"]),
    )
    assert refused == ["RequestEntityTooLargeException"]
    ran = sb.runtime.calls("SlowFunction")[before:]
    assert [i.error_type for i in ran] == ["RequestEntityTooLargeException", "Function.ResponseSizeTooLarge"]
