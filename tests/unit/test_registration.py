"""Registration: what a cluster's status means, and one training operator per cluster."""

from __future__ import annotations

import pytest
from unit_support import CLUSTER_ARN

from hyperpod_control.exceptions import (
    ClusterUnusableError,
    OperatorConflictError,
    PermanentError,
    RetryableError,
    VersionConflictError,
)
from hyperpod_control.models.records import OperatorMode, OperatorRecord, OperatorStatus
from hyperpod_control.models.tasks import RecordOperatorInput
from hyperpod_control.services.registration import assess_cluster, decide_operator, record_operator

pytestmark = pytest.mark.unit


def description(status: str, **extra) -> dict:
    return {
        "ClusterName": "ml-cluster",
        "ClusterArn": CLUSTER_ARN,
        "ClusterStatus": status,
        "InstanceGroups": [
            {"InstanceGroupName": "gpu", "CurrentCount": 4, "TargetCount": 4},
            {"InstanceGroupName": "cpu", "CurrentCount": 2, "TargetCount": 2},
        ],
        **extra,
    }


def request(mode: OperatorMode, execution: str | None = "arn:exec:2") -> RecordOperatorInput:
    return RecordOperatorInput(
        cluster_name="ml-cluster", cluster_arn=CLUSTER_ARN, mode=mode, execution=execution
    )


# -- assess_cluster -----------------------------------------------------------------------------


def test_in_service_cluster_is_ready():
    check = assess_cluster("ml-cluster", description("InService"))

    assert check.ready is True
    assert check.cluster_status == "InService"
    assert check.cluster_arn == CLUSTER_ARN
    assert check.node_count == 6
    assert check.dump()["clusterArn"] == CLUSTER_ARN


@pytest.mark.parametrize("status", ["Creating", "Updating", "SystemUpdating", "RollingBack"])
def test_transitional_cluster_is_not_ready(status):
    check = assess_cluster("ml-cluster", description(status))

    assert check.ready is False
    assert check.cluster_status == status


@pytest.mark.parametrize("status", ["Failed", "Deleting"])
def test_unusable_cluster_raises_naming_the_status(status):
    with pytest.raises(ClusterUnusableError) as info:
        assess_cluster("ml-cluster", description(status, FailureMessage="capacity unavailable"))

    err = info.value
    assert isinstance(err, PermanentError)
    assert status in err.message
    assert "ml-cluster" in err.message
    assert "capacity unavailable" in err.message
    assert err.remedy


def test_cluster_without_instance_groups_counts_no_nodes():
    description_ = description("InService")
    del description_["InstanceGroups"]

    assert assess_cluster("ml-cluster", description_).node_count == 0


# -- decide_operator ----------------------------------------------------------------------------


def test_new_cluster_is_registered_with_the_requested_mode():
    record = decide_operator(None, request(OperatorMode.SERVERLESS, execution="arn:exec:1"))

    assert record.status is OperatorStatus.REGISTERED
    assert record.mode is OperatorMode.SERVERLESS
    assert record.cluster_arn == CLUSTER_ARN
    assert record.cluster_name == "ml-cluster"
    assert record.last_workflow == "arn:exec:1"
    assert record.reason is None


def test_same_mode_again_keeps_the_status_and_records_the_workflow():
    existing = OperatorRecord(
        cluster_arn=CLUSTER_ARN,
        cluster_name="ml-cluster",
        mode=OperatorMode.ADDON,
        status=OperatorStatus.ACTIVE,
        addon_version="v1.2.0",
        version=4,
        last_workflow="arn:exec:1",
        reason="CheckCluster: ClusterNotReadyError: Creating",
    )

    record = decide_operator(existing, request(OperatorMode.ADDON, execution="arn:exec:2"))

    assert record.status is OperatorStatus.ACTIVE
    assert record.mode is OperatorMode.ADDON
    assert record.addon_version == "v1.2.0"
    assert record.last_workflow == "arn:exec:2"
    assert record.reason is None
    assert record.version == 4  # the store increments it on the conditional write
    assert existing.last_workflow == "arn:exec:1"  # the input record is not mutated


@pytest.mark.parametrize(
    ("existing_mode", "requested"),
    [(OperatorMode.ADDON, OperatorMode.SERVERLESS), (OperatorMode.SERVERLESS, OperatorMode.ADDON)],
)
def test_other_mode_is_refused_naming_both_modes(existing_mode, requested):
    existing = OperatorRecord(cluster_arn=CLUSTER_ARN, cluster_name="ml-cluster", mode=existing_mode)

    with pytest.raises(OperatorConflictError) as info:
        decide_operator(existing, request(requested))

    err = info.value
    assert isinstance(err, PermanentError)
    text = str(err)
    assert existing_mode.value in text
    assert requested.value in text
    assert "ml-cluster" in err.message
    assert err.remedy and existing_mode.value in err.remedy


# -- record_operator on the store ---------------------------------------------------------------


def test_record_operator_creates_then_updates_and_refuses_the_other_mode(store):
    first = record_operator(request(OperatorMode.ADDON, execution="arn:exec:1"), store)
    second = record_operator(request(OperatorMode.ADDON, execution="arn:exec:2"), store)

    assert (first.version, second.version) == (1, 2)
    assert store.get_operator(CLUSTER_ARN).last_workflow == "arn:exec:2"

    with pytest.raises(OperatorConflictError):
        record_operator(request(OperatorMode.SERVERLESS), store)
    stored = store.get_operator(CLUSTER_ARN)
    assert stored.mode is OperatorMode.ADDON
    assert stored.version == 2


def test_record_operator_losing_a_race_is_retryable(store, monkeypatch):
    record_operator(request(OperatorMode.ADDON), store)
    real_get = store.get_operator

    def stale_read(arn):
        record = real_get(arn)
        return record.model_copy(update={"version": record.version - 1})

    monkeypatch.setattr(store, "get_operator", stale_read)

    with pytest.raises(VersionConflictError) as info:
        record_operator(request(OperatorMode.ADDON), store)
    assert isinstance(info.value, RetryableError)
