"""Recording a workflow's failure: a readable cause, kept on the OPERATOR item, status unchanged."""

from __future__ import annotations

import json

import pytest
from unit_support import CLUSTER_ARN, TABLE

from hyperpod_control.models.records import OperatorMode, OperatorRecord, OperatorStatus
from hyperpod_control.models.tasks import RecordFailureInput
from hyperpod_control.services.failures import record_failure, summarise

pytestmark = pytest.mark.unit

LAMBDA_CAUSE = json.dumps(
    {
        "errorMessage": "cluster 'ml-cluster' already runs the addon training operator; "
        "a cluster runs exactly one.",
        "errorType": "OperatorConflictError",
        "stackTrace": ['  File "/var/task/app.py", line 17, in lambda_handler\n'],
    }
)


def failure(cause: str = LAMBDA_CAUSE, state: dict | None = None, **kw) -> RecordFailureInput:
    return RecordFailureInput(
        step=kw.pop("step", "RecordOperator"),
        error={"Error": "OperatorConflictError", "Cause": cause},
        execution=kw.pop("execution", "arn:aws:states:us-west-2:123456789012:execution:register:x1"),
        state=state if state is not None else {"check": {"clusterArn": CLUSTER_ARN}},
    )


def test_summarise_extracts_error_message_from_a_json_cause():
    outcome = summarise(failure())

    assert outcome.step == "RecordOperator"
    assert outcome.error == "OperatorConflictError"
    assert (
        outcome.cause
        == "cluster 'ml-cluster' already runs the addon training operator; a cluster runs exactly one."
    )
    assert "stackTrace" not in outcome.cause


def test_summarise_uses_message_when_there_is_no_error_message():
    outcome = summarise(failure(cause=json.dumps({"message": "Rate exceeded"})))

    assert outcome.cause == "Rate exceeded"


@pytest.mark.parametrize(
    "cause",
    [
        "States.Timeout: the task timed out after 300 seconds",
        "{not json at all",
        "",
    ],
)
def test_summarise_keeps_a_plain_cause(cause):
    assert summarise(failure(cause=cause)).cause == cause


def test_summarise_without_error_object_names_an_unknown_error():
    outcome = summarise(RecordFailureInput())

    assert outcome.error == "UnknownError"
    assert outcome.step == "unknown"
    assert outcome.cause == ""


def test_summarise_caps_a_huge_cause():
    assert len(summarise(failure(cause="x" * 50_000)).cause) == 1000


def test_record_failure_writes_the_reason_and_keeps_the_status(store):
    store.put(
        OperatorRecord(
            cluster_arn=CLUSTER_ARN,
            cluster_name="ml-cluster",
            mode=OperatorMode.ADDON,
            status=OperatorStatus.ACTIVE,
        ),
        expected_version=None,
    )

    outcome = record_failure(failure(), store)

    stored = store.get_operator(CLUSTER_ARN)
    assert stored.status is OperatorStatus.ACTIVE
    assert stored.mode is OperatorMode.ADDON
    assert stored.version == 2
    assert stored.reason == f"RecordOperator: OperatorConflictError: {outcome.cause}"
    assert stored.last_workflow == "arn:aws:states:us-west-2:123456789012:execution:register:x1"


def test_record_failure_reads_the_cluster_arn_from_the_state_too(store):
    store.put(
        OperatorRecord(cluster_arn=CLUSTER_ARN, cluster_name="ml-cluster", mode=OperatorMode.SERVERLESS),
        expected_version=None,
    )

    record_failure(failure(state={"clusterArn": CLUSTER_ARN}, step="Install"), store)

    stored = store.get_operator(CLUSTER_ARN)
    assert stored.reason.startswith("Install: OperatorConflictError: ")
    assert stored.status is OperatorStatus.REGISTERED


def test_record_failure_without_a_cluster_writes_nothing(store, ddb):

    outcome = record_failure(failure(state={"clusterName": "ml-cluster"}), store)

    assert outcome.error == "OperatorConflictError"
    assert ddb.scan(TableName=TABLE)["Items"] == []


def test_record_failure_for_an_unregistered_cluster_creates_nothing(store):
    record_failure(failure(), store)

    assert store.get_operator(CLUSTER_ARN) is None


def test_an_error_object_embedded_in_a_formatted_cause_becomes_its_message():
    inner = json.dumps(
        {"errorType": "AddonFailedError", "errorMessage": "UPDATE_FAILED", "stackTrace": ["x"]}
    )
    cause = f"UpdateAddon failed (AddonFailedError: {inner}); rolled back to v1.1.2."
    outcome = summarise(
        RecordFailureInput(step="RolledBack", error={"Error": "UpgradeRolledBackError", "Cause": cause})
    )
    assert outcome.cause == "UpdateAddon failed (AddonFailedError: UPDATE_FAILED); rolled back to v1.1.2."
    assert "stackTrace" not in outcome.cause
