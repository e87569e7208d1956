"""Registering a HyperPod cluster with the control plane, and the one-operator-per-cluster rule."""

from __future__ import annotations

from hyperpod_control.adapters.sagemaker import SageMakerAdapter
from hyperpod_control.adapters.store import Store
from hyperpod_control.exceptions import ClusterUnusableError, OperatorConflictError
from hyperpod_control.models.records import OperatorRecord, OperatorStatus, utcnow
from hyperpod_control.models.tasks import ClusterCheck, RecordOperatorInput, RegisterClusterInput

UNUSABLE = frozenset({"Failed", "Deleting"})


def assess_cluster(name: str, description: dict) -> ClusterCheck:
    """Pure: what a DescribeCluster response means for registration."""
    status = description.get("ClusterStatus", "Unknown")
    if status in UNUSABLE:
        reason = description.get("FailureMessage") or "no failure message"
        raise ClusterUnusableError(
            f"HyperPod cluster '{name}' is {status} ({reason}).",
            remedy="repair or recreate the cluster, then register it again.",
        )
    return ClusterCheck(
        cluster_name=name,
        cluster_arn=description["ClusterArn"],
        cluster_status=status,
        ready=status == "InService",
        node_count=sum(int(g.get("CurrentCount", 0)) for g in description.get("InstanceGroups", [])),
    )


def check_cluster(request: RegisterClusterInput, sagemaker: SageMakerAdapter) -> ClusterCheck:
    return assess_cluster(request.cluster_name, sagemaker.describe_cluster(request.cluster_name))


def decide_operator(existing: OperatorRecord | None, request: RecordOperatorInput) -> OperatorRecord:
    """Pure: the OPERATOR item after registering ``request``; refuses a second operator."""
    if existing is not None and existing.mode != request.mode:
        raise OperatorConflictError(
            f"cluster '{request.cluster_name}' already runs the {existing.mode.value} training "
            f"operator; cannot register it for {request.mode.value}: a cluster runs exactly one.",
            remedy=f"uninstall the {existing.mode.value} operator first, or register with "
            f"mode={existing.mode.value}.",
        )
    base = existing or OperatorRecord(
        cluster_arn=request.cluster_arn, cluster_name=request.cluster_name, mode=request.mode
    )
    return base.model_copy(
        update={
            "status": existing.status if existing else OperatorStatus.REGISTERED,
            "last_workflow": request.execution,
            "reason": None,
            "updated_at": utcnow(),
        }
    )


def record_operator(request: RecordOperatorInput, store: Store) -> OperatorRecord:
    existing = store.get_operator(request.cluster_arn)
    record = decide_operator(existing, request)
    return store.put(record, expected_version=existing.version if existing else None)
