"""Upgrading and downgrading the training-operator add-on without losing a job.

``decide_plan`` is the rule, a pure function: current version, target (given, or the latest the
cluster's Kubernetes supports), the jobs -> no-op, upgrade, downgrade or draining downgrade, or a
refusal that says why. The steps below it apply the plan through the adapters; each is idempotent
(a retried step re-reads what is there and does only what is left).

Snapshots: before an update that crosses 1.2.0 (either way), every job's manifest goes to the
stack's bucket, indexed by ``UPGRADE#<cluster>#<id>`` / ``JOB#<uid>`` items. DrainJobs marks the
items it deletes; ResubmitJobs creates those again (same spec, labels, annotations; no server-set
field), confirms every indexed job exists, and only then removes the objects and the items.
"""

from __future__ import annotations

import copy
from typing import Any

from hyperpod_control.adapters.eks import EksAdapter
from hyperpod_control.adapters.kube import KubeAdapter
from hyperpod_control.adapters.snapshots import SnapshotBucket
from hyperpod_control.adapters.store import Store
from hyperpod_control.exceptions import (
    SnapshotMissingError,
    UpgradeRefusedError,
    VersionConflictError,
)
from hyperpod_control.models.install import (
    ADDON_NAME,
    JOB_GROUP,
    JOB_PLURAL,
    JOB_VERSION,
    RecordOutcome,
    resolve_version,
    version_key,
)
from hyperpod_control.models.records import OperatorMode, OperatorRecord, OperatorStatus, utcnow
from hyperpod_control.models.upgrade import (
    FEATURE_VERSION,
    SHOWN_JOBS,
    JobRef,
    JobSnapshotRecord,
    JobsTaskInput,
    JobsTaskOutcome,
    PlanDecision,
    RecordUpgradeInput,
    UpgradePlan,
    UpgradeRequest,
    upgrade_pk,
)
from hyperpod_control.services.install.addon import BUSY, _parsed
from hyperpod_control.services.install.records import cluster_ref, record_change

ELASTIC = "elasticPolicy"
IN_PROCESS_RESTART = "in-process restart (hyperpodrun --inprocess-restart)"
#: Set by the API server or the operator, never by the job's author: left out of a resubmission.
SERVER_METADATA = (
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "selfLink",
    "ownerReferences",
    "finalizers",
)


# ============================================================== the rule (pure)


def has_features(version: str) -> bool:
    """Pure: the version has elastic training and in-process restart (1.2.0 or later)."""
    return version_key(version)[:3] >= FEATURE_VERSION


def crosses_feature_line(current: str, target: str) -> bool:
    return has_features(current) != has_features(target)


def _containers(job: dict[str, Any]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for replica in (job.get("spec") or {}).get("replicaSpecs") or []:
        pod = ((replica or {}).get("template") or {}).get("spec") or {}
        found.extend(pod.get("containers") or [])
        found.extend(pod.get("initContainers") or [])
    return found


def _uses_in_process_restart(container: dict[str, Any]) -> bool:
    words = [str(w) for w in (container.get("command") or []) + (container.get("args") or [])]
    # A shell wrapper ("bash -c 'hyperpodrun --inprocess-restart ...'") holds both in one word.
    text = " ".join(words)
    if "hyperpodrun" not in text:
        return False
    return any(
        token == "--inprocess-restart" or token.startswith("--inprocess-restart=")
        for word in words
        for token in word.split()
    )


def job_features(job: dict[str, Any]) -> list[str]:
    """Pure: what a job uses that needs operator 1.2.0 or later."""
    features = []
    if (job.get("spec") or {}).get(ELASTIC):
        features.append(ELASTIC)
    if any(_uses_in_process_restart(c) for c in _containers(job)):
        features.append(IN_PROCESS_RESTART)
    return features


def job_ref(job: dict[str, Any]) -> JobRef:
    meta = job.get("metadata") or {}
    return JobRef(
        namespace=meta.get("namespace", "default"),
        name=meta["name"],
        uid=meta.get("uid"),
        features=job_features(job),
    )


def _listed(names: list[str], limit: int = 10) -> str:
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")


def shown_jobs(refs: list[JobRef]) -> list[JobRef]:
    """Pure: the jobs a plan names, at most ``SHOWN_JOBS``: those using what needs 1.2.0 first."""
    return sorted(refs, key=lambda r: not r.features)[:SHOWN_JOBS]


def decide_plan(
    current: str | None,
    requested: str | None,
    all_versions: list[str],
    compatible: list[str],
    kubernetes_version: str | None,
    jobs: list[dict[str, Any]],
    force: bool = False,
) -> PlanDecision:
    """Pure: the plan of an add-on version change, or ``UpgradeRefusedError`` saying why not.

    - no add-on installed, an unknown target, a target the cluster's Kubernetes does not support,
      or no compatible version at all: refused;
    - target == current: ``noop``;
    - target newer: ``upgrade`` (jobs untouched; crossing 1.2.0 upward, snapshotted first so that
      a rollback, itself a downward crossing, can drain);
    - target older and both on the same side of 1.2.0: ``downgrade``;
    - target older, crossing 1.2.0 downward: ``draining_downgrade`` when jobs exist (snapshot,
      delete, update, resubmit), else ``downgrade``;
    - a target older than 1.2.0 while jobs use an elasticPolicy or in-process restart: refused,
      naming the jobs and what they use, unless ``force``.
    """
    if not current:
        raise UpgradeRefusedError(
            f"the {ADDON_NAME} add-on is not installed on this cluster; there is nothing to upgrade.",
            remedy="install it first (hpctl install --cluster NAME).",
        )
    known = sorted(set(all_versions), key=version_key, reverse=True)
    fits = sorted(set(compatible), key=version_key, reverse=True)
    if requested is None:
        if not fits:
            raise UpgradeRefusedError(
                f"version: no version of {ADDON_NAME} supports Kubernetes {kubernetes_version}.",
                remedy="upgrade the EKS cluster's Kubernetes version first.",
            )
        target = fits[0]
    elif resolve_version(requested, known) is None:
        raise UpgradeRefusedError(
            f"version: {requested} does not exist for {ADDON_NAME}; known versions: {', '.join(known)}.",
            remedy="pick one of them (hpctl upgrade --dry-run shows the plan without changing anything).",
        )
    elif resolve_version(requested, fits) is None:
        raise UpgradeRefusedError(
            f"version: {requested} is not compatible with the cluster's Kubernetes {kubernetes_version}; "
            f"compatible: {', '.join(fits) or 'none'}.",
            remedy="pick a compatible version, or upgrade the EKS cluster first.",
        )
    else:
        target = resolve_version(requested, fits) or requested

    refs = sorted((job_ref(j) for j in jobs), key=lambda r: (r.namespace, r.name))
    shown = shown_jobs(refs)
    if target == current:
        return PlanDecision(
            action="noop",
            current_version=current,
            target_version=target,
            jobs=shown,
            job_count=len(refs),
            notes=[f"the add-on already runs {target}; nothing changes."],
        )
    newer = version_key(target) > version_key(current)
    crosses = crosses_feature_line(current, target)
    notes: list[str] = []
    forced: list[str] = []
    if not has_features(target):
        users = [f"{r.namespace}/{r.name} ({', '.join(r.features)})" for r in refs if r.features]
        if users and not force:
            raise UpgradeRefusedError(
                f"version: {target} lacks elastic training and in-process restart (they need 1.2.0 or "
                f"later), and {len(users)} job(s) use them: {_listed(users)}.",
                remedy="finish or delete those jobs, pick 1.2.0 or later, or pass force to go ahead "
                "anyway (the jobs are resubmitted unchanged and may not run as intended).",
            )
        forced = users[:SHOWN_JOBS]
    if newer:
        action = "upgrade"
        notes.append("jobs keep running: an upgrade neither deletes nor recreates them.")
    elif crosses and refs:
        action = "draining_downgrade"
        notes.append(
            f"a downgrade from {current} (1.2.0 or later) to {target} requires deleting the jobs first: "
            f"{len(refs)} job(s) are snapshotted, deleted, and resubmitted after the update."
        )
    else:
        action = "downgrade"
    if crosses:
        notes.append("the update crosses 1.2.0: every job's manifest is snapshotted first.")
    if target.startswith("v1.2.1-eksbuild.1"):
        notes.append(
            "v1.2.1-eksbuild.1 refuses Pod Identity declared inline in the add-on: the association "
            "stays standalone (EnsurePodIdentityAssociation)."
        )
    return PlanDecision(
        action=action,
        current_version=current,
        target_version=target,
        crosses=crosses,
        snapshot=crosses,
        drain=action == "draining_downgrade",
        rollback_drain=newer and crosses,
        jobs=shown,
        job_count=len(refs),
        forced=forced,
        notes=notes,
    )


#: The one version that refuses Pod Identity declared inline in the add-on (the association stays
#: standalone there: EnsurePodIdentityAssociation).
NO_INLINE_POD_IDENTITY = ("v1.2.1-eksbuild.1",)


def version_support(
    compatible: list[str], installed: str | None, kubernetes_version: str | None
) -> list[dict[str, Any]]:
    """Pure: for each add-on version the cluster's Kubernetes supports (newest first), what it
    supports: checkpointless (in-process restart) and elastic training, and whether it requires the
    HyperPod training agent (all three from 1.2.0), inline Pod Identity (every version but
    v1.2.1-eksbuild.1), and whether it is the installed one."""
    rows = []
    for version in sorted(set(compatible), key=version_key, reverse=True):
        features = has_features(version)
        rows.append(
            {
                "version": version,
                "kubernetesVersion": kubernetes_version,
                "installed": version == installed,
                "checkpointlessTraining": features,
                "elasticTraining": features,
                "requiresAgent": features,
                "inlinePodIdentity": version not in NO_INLINE_POD_IDENTITY,
            }
        )
    return rows


def upgrade_id_of(owner: str | None) -> str:
    """Pure: the execution's name (the last part of its ARN) names the upgrade's snapshot."""
    return (owner or "dry-run").rsplit(":", 1)[-1][:80] or "dry-run"


def resubmittable(job: dict[str, Any]) -> dict[str, Any]:
    """Pure: the manifest to create again: same spec, labels and annotations; no status and no
    field the API server or the operator sets."""
    body = copy.deepcopy({k: v for k, v in job.items() if k != "status"})
    meta = body.setdefault("metadata", {})
    for key in SERVER_METADATA:
        meta.pop(key, None)
    return body


def snapshot_key(cluster_name: str, upgrade_id: str, job: dict[str, Any]) -> str:
    meta = job["metadata"]
    return (
        f"upgrades/{cluster_name}/{upgrade_id}/{meta.get('namespace', 'default')}/{meta['name']}-"
        f"{meta['uid']}.json"
    )


# ============================================================== PlanUpgrade


def plan_upgrade(
    request: UpgradeRequest, sagemaker: Any, eks: EksAdapter, store: Store, kube_for: Any
) -> UpgradePlan:
    """Read what the plan depends on, then decide (``kube_for(eks_cluster_name)`` opens the
    cluster's Kubernetes API)."""
    cluster = cluster_ref(request.cluster_name, sagemaker.describe_cluster(request.cluster_name))
    described = eks.describe_cluster(cluster.eks_cluster_name)
    cluster = cluster.model_copy(update={"kubernetes_version": described.get("version")})
    record = store.get_operator(cluster.cluster_arn)
    if (
        record is not None
        and record.mode is OperatorMode.SERVERLESS
        and record.status is OperatorStatus.ACTIVE
    ):
        raise UpgradeRefusedError(
            f"cluster '{cluster.cluster_name}' runs the serverless operator, not the {ADDON_NAME} add-on.",
            remedy="the serverless operator is upgraded with the stack (sam deploy).",
        )
    addon = eks.describe_addon(cluster.eks_cluster_name, ADDON_NAME)
    if addon is not None and addon.get("status") in BUSY:
        raise UpgradeRefusedError(
            f"the {ADDON_NAME} add-on is {addon['status']}; a second change cannot start now.",
            remedy="wait until it is ACTIVE (aws eks describe-addon), then start again.",
        )
    all_versions = [v["addonVersion"] for v in eks.addon_versions(ADDON_NAME, None) if "addonVersion" in v]
    compatible = [
        v["addonVersion"]
        for v in eks.addon_versions(ADDON_NAME, cluster.kubernetes_version)
        if "addonVersion" in v
    ]
    jobs: list[dict[str, Any]] = []
    if addon is not None:
        with kube_for(cluster.eks_cluster_name) as kube:
            jobs = kube.custom_objects(JOB_GROUP, JOB_VERSION, JOB_PLURAL)
    decision = decide_plan(
        (addon or {}).get("addonVersion"),
        request.addon_version,
        all_versions,
        compatible,
        cluster.kubernetes_version,
        jobs,
        request.force,
    )
    if decision.action != "noop" and not (record and record.role_arn):
        raise UpgradeRefusedError(
            f"the {ADDON_NAME} add-on of '{cluster.cluster_name}' was not installed by this control plane "
            "(no OPERATOR item with its role).",
            remedy=f"run hpctl install --cluster {cluster.cluster_name} first; it adopts the add-on.",
        )
    config = _parsed((addon or {}).get("configurationValues"))
    return UpgradePlan(
        **decision.model_dump(),
        cluster=cluster,
        upgrade_id=upgrade_id_of(request.owner),
        role_arn=record.role_arn if record else None,
        configuration_values=config if isinstance(config, dict) and config else None,
    )


# ============================================================== SnapshotJobs, DrainJobs, ResubmitJobs


def _index(store: Store, request: JobsTaskInput) -> list[JobSnapshotRecord]:
    return store.query(
        JobSnapshotRecord, upgrade_pk(request.cluster.cluster_name, request.upgrade_id), "JOB#"
    )


def _list_jobs(kube: KubeAdapter) -> list[dict[str, Any]]:
    return kube.custom_objects(JOB_GROUP, JOB_VERSION, JOB_PLURAL)


def snapshot_jobs(
    request: JobsTaskInput, kube: KubeAdapter, bucket: SnapshotBucket, store: Store
) -> JobsTaskOutcome:
    """Save every job's manifest (object first, then its index item); a job already indexed is
    left as it is, so a retry or the rollback's second snapshot only adds the new ones."""
    indexed = {r.uid for r in _index(store, request)}
    names: list[str] = []
    added = 0
    for job in _list_jobs(kube):
        meta = job["metadata"]
        names.append(f"{meta.get('namespace', 'default')}/{meta['name']}")
        if meta["uid"] in indexed:
            continue
        key = snapshot_key(request.cluster.cluster_name, request.upgrade_id, job)
        size = bucket.put_json(key, job)
        record = JobSnapshotRecord(
            cluster_name=request.cluster.cluster_name,
            upgrade_id=request.upgrade_id,
            uid=meta["uid"],
            namespace=meta.get("namespace", "default"),
            name=meta["name"],
            s3_key=key,
            size=size,
        )
        store.put(record, expected_version=None)
        added += 1
    return JobsTaskOutcome(snapshotted=added, present=len(names), jobs=sorted(names))


def delete_jobs(
    request: JobsTaskInput, kube: KubeAdapter, bucket: SnapshotBucket, store: Store
) -> JobsTaskOutcome:
    """Snapshot whatever is not yet saved, mark each item ``deleted`` (before the delete, so a
    crash in between still resubmits it), then delete the job."""
    snapshot_jobs(request, kube, bucket, store)
    deleted = 0
    names: list[str] = []
    for record in _index(store, request):
        if record.state == "snapshotted":
            record = store.put(
                record.model_copy(update={"state": "deleted", "updated_at": utcnow()}),
                expected_version=record.version,
            )
        if record.state == "deleted":
            current = kube.custom_object(JOB_GROUP, JOB_VERSION, JOB_PLURAL, record.namespace, record.name)
            if current is not None and current["metadata"].get("uid") == record.uid:
                kube.delete_custom_object(JOB_GROUP, JOB_VERSION, JOB_PLURAL, record.namespace, record.name)
                deleted += 1
                names.append(f"{record.namespace}/{record.name}")
    return JobsTaskOutcome(deleted=deleted, jobs=sorted(names), done=False)


def jobs_gone(request: JobsTaskInput, kube: KubeAdapter, store: Store) -> JobsTaskOutcome:
    """Whether every job the workflow deleted is gone (the wait loop's one look)."""
    uids = {r.uid for r in _index(store, request) if r.state == "deleted"}
    left = [
        f"{j['metadata'].get('namespace', 'default')}/{j['metadata']['name']}"
        for j in _list_jobs(kube)
        if j["metadata"].get("uid") in uids
    ]
    return JobsTaskOutcome(remaining=len(left), jobs=sorted(left), done=not left)


def resubmit_jobs(
    request: JobsTaskInput, kube: KubeAdapter, bucket: SnapshotBucket, store: Store
) -> JobsTaskOutcome:
    """Create again every job the workflow deleted, confirm every indexed job exists, then drop
    the snapshot. A job the workflow did not delete and that is gone was deleted by someone else:
    it is not brought back. Whatever is not confirmed stays in the bucket and the index."""
    records = _index(store, request)
    resubmitted = 0
    present = 0
    names: list[str] = []
    for record in records:
        current = kube.custom_object(JOB_GROUP, JOB_VERSION, JOB_PLURAL, record.namespace, record.name)
        if record.state == "deleted":
            if current is not None and current["metadata"].get("uid") == record.uid:
                raise VersionConflictError(
                    f"job {record.namespace}/{record.name} is still being deleted; resubmitting it next try."
                )
            if current is None:
                manifest = bucket.get_json(record.s3_key)
                if manifest is None:
                    raise SnapshotMissingError(
                        f"the snapshot of {record.namespace}/{record.name} ({record.s3_key}) is missing.",
                        remedy="its index item is kept; restore the object from the bucket's versions.",
                    )
                current = kube.create_custom_object(
                    JOB_GROUP, JOB_VERSION, JOB_PLURAL, record.namespace, resubmittable(manifest)
                )
                resubmitted += 1
            record = store.put(
                record.model_copy(
                    update={
                        "state": "resubmitted",
                        "new_uid": current["metadata"].get("uid"),
                        "updated_at": utcnow(),
                    }
                ),
                expected_version=record.version,
            )
        if current is not None:
            present += 1
            names.append(f"{record.namespace}/{record.name}")
    # Confirmed: every job the workflow deleted exists again. Now the snapshot can go.
    for record in records:
        bucket.delete(record.s3_key)
        store.delete(record.pk, record.sk)
    return JobsTaskOutcome(resubmitted=resubmitted, present=present, jobs=sorted(names))


# ============================================================== Record


def upgraded_record(existing: OperatorRecord, request: RecordUpgradeInput) -> OperatorRecord:
    """Pure: the OPERATOR item at the new version (the lock stays with its owner until ReleaseLock)."""
    if existing.lock_owner != request.owner:
        raise VersionConflictError(
            f"the lock on {request.cluster.cluster_name} is held by {existing.lock_owner}, "
            f"not {request.owner}."
        )
    return existing.model_copy(
        update={
            "status": OperatorStatus.ACTIVE,
            "addon_version": request.addon_version,
            "last_workflow": request.owner,
            "reason": None,
            "updated_at": utcnow(),
        }
    )


def record_upgrade(request: RecordUpgradeInput, store: Store, events: Any, bus: str) -> RecordOutcome:
    return record_change(
        store,
        events,
        bus,
        request.cluster.cluster_arn,
        "Operator Upgraded",
        lambda existing: upgraded_record(existing, request),
    )
