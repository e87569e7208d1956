"""The workflows' steps act only on the cluster their workflow locked (no confused deputy).

The install, uninstall and upgrade workflows take a per-cluster lock (``AcquireLock``: the
cluster's OPERATOR item, ``lock_owner`` = the execution, naming the HyperPod cluster and its EKS
cluster); then each step that acts on a cluster is handed the cluster in its input. The steps run
with the control plane's roles, which reach every cluster in the account, so an input naming
another cluster than the locked one (a tampered or mistaken definition, a direct invocation)
would have them change a cluster that no lock protects and no workflow owns. Every such step
therefore reads its input with ``locked_step_input``: the lock it names (``$.lock``: owner and
cluster ARN) must be held by that owner in the table, and the cluster the step acts on must be
the locked one, HyperPod cluster and EKS cluster both; otherwise the step raises
``ClusterMismatchError`` (a ``PermanentError``: the workflow's ``Catch`` records it, no retry)
before it touches anything.
"""

from __future__ import annotations

from typing import Any, TypeVar

from hyperpod_control.exceptions import ClusterMismatchError
from hyperpod_control.models.install import ClusterRef, LockedClusterInput, WorkflowLock
from hyperpod_control.models.records import OperatorRecord
from hyperpod_control.models.validation import parse_input

L = TypeVar("L", bound=LockedClusterInput)


def _named(cluster: ClusterRef) -> str:
    return (
        f"HyperPod cluster {cluster.cluster_name} ({cluster.cluster_arn}, "
        f"EKS cluster {cluster.eks_cluster_name})"
    )


def check_locked_cluster(cluster: ClusterRef, lock: WorkflowLock, locked: OperatorRecord | None) -> None:
    """Pure: raise ``ClusterMismatchError`` unless ``locked`` (the OPERATOR item of the lock's
    cluster, as the table has it) is held by the lock's owner and is the cluster the step acts on."""
    if locked is None or locked.lock_owner != lock.owner:
        holder = f"workflow {locked.lock_owner}" if locked is not None and locked.lock_owner else "nobody"
        raise ClusterMismatchError(
            f"cluster: workflow {lock.owner} holds no lock on {lock.cluster_arn} (held by {holder}), so "
            f"this step may not act on {_named(cluster)}; nothing was changed.",
            remedy="start the workflow again; its steps run only under its own lock.",
        )
    if cluster.cluster_arn != locked.cluster_arn or cluster.eks_cluster_name != locked.eks_cluster_name:
        raise ClusterMismatchError(
            f"cluster: this step was asked to act on {_named(cluster)}, but workflow {lock.owner} locked "
            f"HyperPod cluster {locked.cluster_name} ({locked.cluster_arn}, EKS cluster "
            f"{locked.eks_cluster_name or 'not recorded'}); nothing was changed.",
            remedy="a step acts only on the cluster its workflow locked: check the workflow's definition "
            "and input, then start it again.",
        )


def guard_locked_cluster(request: LockedClusterInput, store: Any) -> OperatorRecord:
    """The lock's OPERATOR item, once ``check_locked_cluster`` passed (one GetItem)."""
    locked = store.get_operator(request.lock.cluster_arn)
    check_locked_cluster(request.cluster, request.lock, locked)
    assert locked is not None
    return locked


def locked_step_input(model: type[L], event: Any, store: Any = None) -> L:
    """A step's input as ``model``, once its cluster is known to be the one its workflow locked
    (``store``: the table; the stack's by default)."""
    request = parse_input(model, event)
    if store is None:
        from hyperpod_control.adapters.store import Store
        from hyperpod_control.settings import get_settings

        store = Store(get_settings().table_name)
    guard_locked_cluster(request, store)
    return request
