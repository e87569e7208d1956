"""A stuck lock: an install execution aborted while it holds the cluster's lock leaves
it held and the cluster INSTALLING (no Catch runs for an aborted execution); the next install
takes the lock over by itself and names the execution it took it from; ``hpctl unlock`` releases
such a lock by hand, and refuses one whose execution still runs."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator

import pytest
from install_support import install_sandbox, operator_item, run_install

from hpctl.operations import unlock
from hyperpod_control.exceptions import LockHeldError
from sandbox import Sandbox
from sandbox.testing import eventually

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def sb() -> Iterator[Sandbox]:
    with install_sandbox() as sandbox:
        yield sandbox


def _aborted_install(sb: Sandbox) -> str:
    arn = sb.start_execution("InstallOperatorStateMachine", {"clusterName": sb.world.hyperpod_cluster_name})
    eventually(lambda: operator_item(sb).get("lock_owner") == arn, timeout=60, what="the install's lock")
    sb.client("stepfunctions").stop_execution(executionArn=arn, cause="the operator pressed Ctrl-C")
    assert sb.wait_execution(arn).status == "ABORTED"
    return arn


def _acquire_lock_output(outcome) -> dict:
    """AcquireLock's whole result, as the execution's history records it."""
    (entered,) = [
        i
        for i, e in enumerate(outcome.history)
        if e.get("stateEnteredEventDetails", {}).get("name") == "AcquireLock"
    ]
    for event in outcome.history[entered:]:
        if event["type"] == "TaskSucceeded":
            return json.loads(event["taskSucceededEventDetails"]["output"])["Payload"]
    raise AssertionError("AcquireLock did not succeed")


def test_an_aborted_install_leaves_a_lock_the_next_install_takes_over(sb):
    old = _aborted_install(sb)
    item = operator_item(sb)
    assert item["lock_owner"] == old and item["status"] == "INSTALLING"  # what used to stay stuck

    outcome = run_install(sb)

    assert outcome.ok, (outcome.error, outcome.cause)
    assert _acquire_lock_output(outcome)["takenOverFrom"] == old
    item = operator_item(sb)
    assert item["lock_owner"] is None and item["status"] == "ACTIVE"
    assert item["last_workflow"] == outcome.execution_arn
    logs = (sb.log_dir / f"{sb.stack.physical('AcquireLockFunction')}.log").read_text()
    assert "lock taken over" in logs and old in logs


def test_hpctl_unlock_releases_an_ended_executions_lock_and_refuses_a_running_one(sb, monkeypatch):
    monkeypatch.setenv("HPCTL_STACK", sb.config.stack_name)
    for key, value in sb.env.items():
        if key.startswith("HPCTL_OUTPUT_"):
            monkeypatch.setenv(key, value)
    clients = {
        "sagemaker": sb.client("sagemaker"),
        "dynamodb": sb.client("dynamodb"),
        "sfn": sb.client("stepfunctions"),
    }
    cluster = sb.world.hyperpod_cluster_name
    old = _aborted_install(sb)

    out = io.StringIO()
    result = unlock(sb.config.stack_name, cluster, out=out, **clients)

    assert result["released"] == old and result["holder"] == "ABORTED"
    item = operator_item(sb)
    # The operator installed by the previous test stays ACTIVE: a re-install of it never marks it
    # INSTALLING, so there is no interrupted install to mark FAILED (decide_release).
    assert item["lock_owner"] is None and item["status"] == "ACTIVE"
    assert old in item["reason"] and "hpctl unlock" in item["reason"]

    # A running execution's lock is refused, naming it and how to stop it.
    arn = sb.start_execution("InstallOperatorStateMachine", {"clusterName": cluster})
    try:
        eventually(lambda: operator_item(sb).get("lock_owner") == arn, timeout=60, what="the install's lock")
        with pytest.raises(LockHeldError, match="still running") as refused:
            unlock(sb.config.stack_name, cluster, out=out, **clients)
        assert arn in str(refused.value)
    finally:
        sb.client("stepfunctions").stop_execution(executionArn=arn, cause="test over")
