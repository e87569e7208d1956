"""The OPERATOR item and its announcements: recording a finished install or uninstall (written on
the item's version, put on the stack's bus), and the uninstall's plan and its check for jobs.
"""

from __future__ import annotations

import json
from typing import Any

from hyperpod_control.adapters.kube import KubeAdapter
from hyperpod_control.adapters.store import Store
from hyperpod_control.exceptions import (
    InvalidInputError,
    VersionConflictError,
)
from hyperpod_control.models.install import (
    EVENT_SOURCE,
    JOB_GROUP,
    JOB_PLURAL,
    JOB_VERSION,
    ClusterRef,
    JobsOutcome,
    PlanUninstallInput,
    RecordInstallInput,
    RecordOutcome,
    RecordUninstallInput,
    UninstallPlan,
    UninstallRequest,
)
from hyperpod_control.models.records import OperatorMode, OperatorRecord, OperatorStatus, utcnow
from hyperpod_control.models.upgrade import SHOWN_JOBS
from hyperpod_control.models.validation import parse_input

# ============================================================== record


def installed_record(existing: OperatorRecord, request: RecordInstallInput) -> OperatorRecord:
    """Pure: the OPERATOR item of a finished install (the lock stays with its owner until
    ReleaseLock)."""
    if existing.lock_owner != request.owner:
        raise VersionConflictError(
            f"the lock on {request.cluster.cluster_name} is held by {existing.lock_owner}, "
            f"not {request.owner}."
        )
    installed = request.installed
    addon = installed.operator is OperatorMode.ADDON
    return existing.model_copy(
        update={
            "mode": installed.operator,
            "status": OperatorStatus.ACTIVE,
            "eks_cluster_name": request.cluster.eks_cluster_name,
            "addon_version": installed.addon_version if addon else None,
            "role_arn": installed.role_arn if addon else None,
            "association_id": installed.association_id if addon else None,
            "last_workflow": request.owner,
            "reason": None,
            "updated_at": utcnow(),
        }
    )


def operator_event(detail_type: str, record: OperatorRecord, bus: str) -> dict[str, Any]:
    """Pure: the EventBridge entry announcing an operator change on the stack's bus."""
    return {
        "Source": EVENT_SOURCE,
        "DetailType": detail_type,
        "Resources": [record.cluster_arn],
        "EventBusName": bus,
        "Detail": json.dumps(
            {
                "clusterName": record.cluster_name,
                "clusterArn": record.cluster_arn,
                "mode": record.mode.value,
                "status": record.status.value,
                "addonVersion": record.addon_version,
                "roleArn": record.role_arn,
                "associationId": record.association_id,
                "execution": record.last_workflow,
            }
        ),
    }


def put_event(events: Any, entry: dict[str, Any]) -> str | None:
    from hyperpod_control.adapters.aws import map_client_error

    try:
        result = events.put_events(Entries=[entry])
    except Exception as exc:
        raise map_client_error(exc, resource=f"event bus {entry['EventBusName']}") from exc
    failed = [e for e in result.get("Entries", []) if e.get("ErrorCode")]
    if failed or result.get("FailedEntryCount"):
        from hyperpod_control.exceptions import DependencyUnavailableError

        raise DependencyUnavailableError(f"EventBridge refused the event: {failed}")
    return (result.get("Entries") or [{}])[0].get("EventId")


def record_change(
    store: Store, events: Any, bus: str, cluster_arn: str, detail_type: str, change: Any
) -> RecordOutcome:
    """Write ``change(OPERATOR item)`` conditionally on its version and announce it on the bus."""
    existing = store.get_operator(cluster_arn)
    if existing is None:
        raise VersionConflictError(f"no OPERATOR item for {cluster_arn}; the lock was lost.")
    record = store.put(change(existing), expected_version=existing.version)
    event_id = put_event(events, operator_event(detail_type, record, bus))
    return RecordOutcome(
        cluster_arn=record.cluster_arn,
        mode=record.mode,
        status=record.status.value,
        addon_version=record.addon_version,
        role_arn=record.role_arn,
        association_id=record.association_id,
        event_id=event_id,
    )


def record_install(request: RecordInstallInput, store: Store, events: Any, bus: str) -> RecordOutcome:
    return record_change(
        store,
        events,
        bus,
        request.cluster.cluster_arn,
        "Operator Installed",
        lambda existing: installed_record(existing, request),
    )


# ============================================================== uninstall


def cluster_ref(cluster_name: str, described: dict[str, Any]) -> ClusterRef:
    """Pure: the HyperPod cluster (DescribeCluster's answer) as the workflows' steps name it."""
    eks_arn = ((described.get("Orchestrator") or {}).get("Eks") or {}).get("ClusterArn")
    if not eks_arn:
        raise InvalidInputError(f"clusterName: HyperPod cluster '{cluster_name}' is not orchestrated by EKS.")
    return ClusterRef(
        cluster_name=cluster_name,
        cluster_arn=described["ClusterArn"],
        eks_cluster_name=eks_arn.rsplit("/", 1)[-1],
    )


def plan_uninstall(request: PlanUninstallInput, sagemaker: Any, store: Store) -> UninstallPlan:
    parse_input(UninstallRequest, request.dump())
    cluster = cluster_ref(request.cluster_name, sagemaker.describe_cluster(request.cluster_name))
    record = store.get_operator(cluster.cluster_arn)
    if record is None or record.status is OperatorStatus.REGISTERED:
        raise InvalidInputError(
            f"clusterName: no training operator is installed on '{request.cluster_name}' by this "
            "control plane.",
            remedy="nothing to uninstall.",
        )
    return UninstallPlan(
        cluster=cluster,
        mode=record.mode,
        role_arn=record.role_arn,
        association_id=record.association_id,
        addon_version=record.addon_version,
        force=request.force,
    )


def judge_jobs(jobs: list[dict[str, Any]], force: bool) -> JobsOutcome:
    """Pure: refuse an uninstall while jobs exist, unless forced (their CRD goes, and they with it)."""
    names = sorted(f"{j['metadata'].get('namespace', 'default')}/{j['metadata']['name']}" for j in jobs)
    if names and not force:
        from hyperpod_control.exceptions import JobsRunningError

        shown = ", ".join(names[:10]) + (f" and {len(names) - 10} more" if len(names) > 10 else "")
        raise JobsRunningError(
            f"force: {len(names)} HyperPodPytorchJob(s) still exist: {shown}; uninstalling the operator "
            "deletes them.",
            remedy="delete or finish them first, or uninstall with force (hpctl uninstall --force).",
        )
    # A forced uninstall of a 2,000-job cluster: the names stay under Step Functions' 256 KiB.
    return JobsOutcome(count=len(names), jobs=names[:SHOWN_JOBS])


def check_jobs(kube: KubeAdapter, force: bool) -> JobsOutcome:
    return judge_jobs(kube.custom_objects(JOB_GROUP, JOB_VERSION, JOB_PLURAL), force)


def uninstalled_record(existing: OperatorRecord, owner: str) -> OperatorRecord:
    if existing.lock_owner != owner:
        raise VersionConflictError(
            f"the lock on {existing.cluster_name} is held by {existing.lock_owner}, not {owner}."
        )
    return existing.model_copy(
        update={
            "status": OperatorStatus.REGISTERED,
            "addon_version": None,
            "role_arn": None,
            "association_id": None,
            "last_workflow": owner,
            "reason": None,
            "updated_at": utcnow(),
        }
    )


def record_uninstall(request: RecordUninstallInput, store: Store, events: Any, bus: str) -> RecordOutcome:
    existing = store.get_operator(request.cluster.cluster_arn)
    if existing is None:
        raise VersionConflictError(f"no OPERATOR item for {request.cluster.cluster_arn}; the lock was lost.")
    record = store.put(uninstalled_record(existing, request.owner), expected_version=existing.version)
    event_id = put_event(events, operator_event("Operator Uninstalled", record, bus))
    return RecordOutcome(
        cluster_arn=record.cluster_arn, mode=record.mode, status=record.status.value, event_id=event_id
    )
