"""The per-cluster lock and the one-operator rule: AcquireLock and ReleaseLock.

Every install, upgrade and uninstall holds the OPERATOR item's lock while it runs; a second
operator of another kind is refused here, and a lock whose execution ended without releasing it is
taken over.
"""

from __future__ import annotations

from typing import Any

from hyperpod_control.adapters.eks import EksAdapter
from hyperpod_control.adapters.store import Store
from hyperpod_control.exceptions import (
    ClusterMismatchError,
    LockHeldError,
    OperatorConflictError,
)
from hyperpod_control.models.install import (
    ADDON_NAME,
    AcquireLockInput,
    ClusterRef,
    InstallRequest,
    LockOutcome,
    ReleaseLockInput,
    ReleaseOutcome,
)
from hyperpod_control.models.records import OperatorMode, OperatorRecord, OperatorStatus, utcnow
from hyperpod_control.models.validation import parse_input


def decide_claim(
    existing: OperatorRecord | None,
    cluster: ClusterRef,
    owner: str,
    mode: OperatorMode,
    purpose: str,
    holder_ended: str | None = None,
) -> OperatorRecord:
    """Pure: the OPERATOR item with the lock taken by ``owner``, or the reason it cannot be.

    ``holder_ended``: the final status of the execution that holds the lock (``lock_holder_ended``).
    A lock whose execution ended without releasing it (aborted, or stopped by its timeout: no
    Catch runs then) protects nothing: ``owner`` takes it over, and the item's ``reason`` names
    the old execution."""
    taken_over = bool(existing and existing.lock_owner and existing.lock_owner != owner and holder_ended)
    if existing is not None and existing.lock_owner and existing.lock_owner != owner and not taken_over:
        raise LockHeldError(
            f"cluster '{cluster.cluster_name}' is locked by workflow {existing.lock_owner}.",
            remedy="wait for that workflow to end (the lock is released on every path), then start again.",
        )
    if (
        purpose == "install"
        and existing is not None
        and existing.mode != mode
        and existing.status
        in (
            OperatorStatus.ACTIVE,
            OperatorStatus.INSTALLING,
        )
    ):
        raise OperatorConflictError(
            f"operator: cluster '{cluster.cluster_name}' already runs the {existing.mode.value} training "
            f"operator ({existing.status.value}); a cluster runs exactly one.",
            remedy=f"uninstall it first (hpctl uninstall --cluster {cluster.cluster_name}), or install "
            f"with operator={existing.mode.value}.",
        )
    if existing is not None and existing.eks_cluster_name not in (None, cluster.eks_cluster_name):
        # A HyperPod cluster's EKS cluster never changes: the request names another cluster's.
        raise ClusterMismatchError(
            f"cluster: HyperPod cluster '{cluster.cluster_name}' is orchestrated by EKS cluster "
            f"{existing.eks_cluster_name}, not {cluster.eks_cluster_name}; nothing was locked.",
            remedy="start the workflow with the HyperPod cluster's name only; Preflight finds its EKS "
            "cluster.",
        )
    base = existing or OperatorRecord(
        cluster_arn=cluster.cluster_arn, cluster_name=cluster.cluster_name, mode=mode
    )
    # The lock names the cluster, EKS cluster included: every later step acts on that one only
    # (services/workflow_lock.py).
    update: dict[str, Any] = {
        "lock_owner": owner,
        "last_workflow": owner,
        "eks_cluster_name": cluster.eks_cluster_name,
        "updated_at": utcnow(),
    }
    if taken_over:
        assert existing is not None
        update["reason"] = (
            f"lock taken over from workflow {existing.lock_owner}, which ended {holder_ended} "
            "without releasing it"
        )
    if purpose == "install":
        update["mode"] = mode
        if base.status is not OperatorStatus.ACTIVE or base.mode != mode:
            update["status"] = OperatorStatus.INSTALLING
    return base.model_copy(update=update)


def lock_holder_ended(owner: str | None, sfn: Any) -> str | None:
    """How the execution holding a lock ended (SUCCEEDED, FAILED, TIMED_OUT, ABORTED; DELETED when
    Step Functions no longer has it: its history expires 90 days after it ended); None while it
    runs, or when the holder is not an execution (a lock taken by hand is never taken over)."""
    if not owner or sfn is None or ":execution:" not in owner:
        return None
    status = sfn.status(owner)
    if status is None:
        return "DELETED"
    return None if status == "RUNNING" else status


def acquire_lock(request: AcquireLockInput, store: Store, eks: EksAdapter, sfn: Any = None) -> LockOutcome:
    cluster = request.cluster
    if request.purpose == "install":
        install = parse_input(InstallRequest, request.request)
        mode = install.operator
        if mode is OperatorMode.SERVERLESS and eks.describe_addon(cluster.eks_cluster_name, ADDON_NAME):
            raise OperatorConflictError(
                f"operator: EKS cluster '{cluster.eks_cluster_name}' runs the {ADDON_NAME} add-on; the "
                "serverless operator cannot run beside it.",
                remedy=f"uninstall the add-on first (hpctl uninstall --cluster {cluster.cluster_name}).",
            )
    else:
        existing = store.get_operator(cluster.cluster_arn)
        mode = existing.mode if existing else OperatorMode.ADDON
    existing = store.get_operator(cluster.cluster_arn)
    held_by = existing.lock_owner if existing is not None and existing.lock_owner != request.owner else None
    ended = lock_holder_ended(held_by, sfn)
    record = decide_claim(existing, cluster, request.owner, mode, request.purpose, holder_ended=ended)
    written = store.put(record, expected_version=existing.version if existing else None)
    return LockOutcome(
        owner=request.owner,
        mode=written.mode,
        version=written.version,
        taken_over_from=held_by if ended else None,
    )


def decide_release(existing: OperatorRecord, owner: str, succeeded: bool) -> OperatorRecord | None:
    """Pure: the item with the lock released (None: not ours, nothing to write)."""
    if existing.lock_owner != owner:
        return None
    update: dict[str, Any] = {"lock_owner": None, "updated_at": utcnow()}
    if not succeeded and existing.status is OperatorStatus.INSTALLING:
        update["status"] = OperatorStatus.FAILED
    return existing.model_copy(update=update)


def release_lock(request: ReleaseLockInput, store: Store) -> ReleaseOutcome:
    if not request.cluster_arn:
        return ReleaseOutcome(released=False)
    existing = store.get_operator(request.cluster_arn)
    if existing is None:
        return ReleaseOutcome(released=False)
    record = decide_release(existing, request.owner, request.succeeded)
    if record is None:
        return ReleaseOutcome(released=False, status=existing.status.value)
    written = store.put(record, expected_version=existing.version)
    return ReleaseOutcome(released=True, status=written.status.value)
