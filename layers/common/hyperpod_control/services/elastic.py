"""Elastic training: the sizes a job with an ``elasticPolicy`` may run at, and when it changes size.

Pure functions over models, in the style of ``remediation.py`` (the supervisor reads, calls these,
and acts):

- ``allowed_sizes``: ``minReplicas``..``maxReplicas`` (``maxReplicas`` defaults to the replica
  specs' ``maxReplicas``, else their ``replicas``), every ``replicaIncrementStep`` from the
  minimum, or exactly the ``replicaDiscreteValues`` in that range;
- ``scale_down``: ranks lost and no spare to take them: instead of a full job restart that waits
  for replacement nodes, the job restarts at once on the largest allowed size its healthy pods
  hold (below ``minReplicas``: None, and the ladder of ``remediation.decide`` stands);
- ``grow_target`` / ``scale_up_open``: capacity back (schedulable nodes without a pod of the job),
  ``scaleUpSnoozeTimeInSeconds`` after the last restart: the size to grow to, towards
  ``maxReplicas``; ``scaling_expired`` bounds the wait for the new pods by
  ``scalingTimeoutInSeconds``;
- ``resize_slots``: the pods after a resize (rank 0's pod kept where it can be, the others in rank
  order, then the new pods; healthy pods beyond the size stand by as spares);
- ``scaling_status``: ``status.elasticScalingStatus`` as AWS's CRD names it.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from hyperpod_control.models.job import HyperPodPytorchJob
from hyperpod_control.models.job_faults import JobFault
from hyperpod_control.models.records import JobRecord, PodSlot
from hyperpod_control.services.remediation import PROCESS_FAULTS, Action, Decision, usable_spares
from hyperpod_control.services.supervision import listed, node_trouble, pod_index

#: How long new pods may take to run and answer when ``scalingTimeoutInSeconds`` is not set.
DEFAULT_SCALING_TIMEOUT_S = 600


def is_elastic(job: HyperPodPytorchJob) -> bool:
    return job.spec.elastic_policy is not None


def max_size(job: HyperPodPytorchJob) -> int:
    """Pure: the most ranks the job may run at."""
    policy = job.spec.elastic_policy
    if policy is not None and policy.max_replicas is not None:
        return policy.max_replicas
    specs = job.spec.replica_specs
    if specs and all(r.max_replicas is not None for r in specs):
        return sum(r.max_replicas or 0 for r in specs)
    return job.replicas


def allowed_sizes(job: HyperPodPytorchJob) -> list[int]:
    """Pure: every rank count the elasticPolicy allows, ascending; ``[replicas]`` without one."""
    policy = job.spec.elastic_policy
    if policy is None:
        return [job.replicas]
    high = max_size(job)
    low = policy.min_replicas if policy.min_replicas is not None else min(job.replicas, high)
    if policy.replica_discrete_values:
        return sorted({v for v in policy.replica_discrete_values if low <= v <= high})
    step = policy.replica_increment_step or 1
    return list(range(low, high + 1, step))


def largest_allowed(job: HyperPodPytorchJob, at_most: int) -> int | None:
    """Pure: the largest allowed size not above ``at_most`` (None: none is)."""
    fitting = [n for n in allowed_sizes(job) if n <= at_most]
    return fitting[-1] if fitting else None


def scale_down(
    faults: list[JobFault], record: JobRecord, job: HyperPodPytorchJob, *, ready_spares: set[str]
) -> Decision | None:
    """Pure: the elastic answer to ranks lost with their pods or nodes when ``remediation.decide``
    chose a full job restart (no spare left to take them): restart now at the largest allowed size
    the healthy pods hold. None when the job is not elastic, when no rank was lost (the full
    restart was an escalation), or when the healthy pods are fewer than ``minReplicas`` or fit no
    allowed size (``replicaDiscreteValues``)."""
    if not is_elastic(job):
        return None
    lost = [f for f in faults if f.kind not in PROCESS_FAULTS]
    if not lost or len(lost) != len(faults):
        return None  # only lost pods shrink the job; a worker fault restarts in place
    lost_pods = {f.pod for f in lost if f.pod}
    lost_nodes = {f.node for f in lost if f.node}
    ranks_lost = [s for s in record.ranked() if s.pod in lost_pods]
    if not ranks_lost:
        return None
    healthy = [s for s in record.ranked() if s.pod not in lost_pods]
    spares = [s for s in usable_spares(record, ready_spares, lost_nodes) if s.pod not in lost_pods]
    holds = len(healthy) + len(spares)
    target = largest_allowed(job, min(holds, max_size(job)))
    summary = listed(list(dict.fromkeys(f.reason for f in faults)), "; ")
    if target is None or target >= record.nnodes:
        return None  # below minReplicas, no allowed size fits, or spares enough for a swap
    return Decision(
        action=Action.SCALE_DOWN,
        reason=f"elastic scale-down from {record.nnodes} to {target} ranks ({len(ranks_lost)} rank(s) lost, "
        f"{holds} healthy pod(s), allowed sizes {allowed_text(job)}): {summary}",
        delete_pods=sorted(lost_pods & {s.pod for s in record.pods}),
        nnodes=target,
    )


def allowed_text(job: HyperPodPytorchJob) -> str:
    sizes = allowed_sizes(job)
    return listed([str(n) for n in sizes])


def resize_slots(record: JobRecord, target: int, leaving: set[str]) -> list[PodSlot]:
    """Pure: the job's pods after a resize to ``target`` ranks, ``leaving`` gone. Ranks go to the
    pods that held ranks, in rank order (rank 0's pod keeps rank 0 when it stays), then to standing
    pods by index; the rest stand by as spares."""
    staying = [s for s in record.pods if s.pod not in leaving]
    ranked = sorted((s for s in staying if s.rank is not None), key=lambda s: s.rank or 0)
    others = sorted((s for s in staying if s.rank is None), key=lambda s: pod_index(s.pod))
    ordered = ranked + others
    ranks = {s.pod: i for i, s in enumerate(ordered[:target])}
    return [s.model_copy(update={"rank": ranks.get(s.pod)}) for s in staying]


def scale_up_open(record: JobRecord, job: HyperPodPytorchJob, now: datetime) -> bool:
    """Pure: the job may grow now: it is elastic, below its largest allowed size, and
    ``scaleUpSnoozeTimeInSeconds`` have passed since its last restart (or its start)."""
    if not is_elastic(job) or record.nnodes >= (largest_allowed(job, max_size(job)) or 0):
        return False
    restart = job.spec.run_policy.restart_policy
    snooze = (restart.scale_up_snooze_time_in_seconds if restart else None) or 0
    moments = [*record.restart_times, record.started_at, record.last_resize_at]
    last = max((m for m in moments if m is not None), default=None)
    return last is None or now - last >= timedelta(seconds=snooze)


def free_nodes(
    nodes: list[dict[str, Any]], pods: dict[str, dict[str, Any]], taken: set[str] | None = None
) -> list[str]:
    """Pure: the nodes a new pod of the job could run on: healthy (``node_trouble``), schedulable,
    and holding no pod of the job (one pod of a job per node). ``taken``: nodes also excluded."""
    used = {((p.get("spec") or {}).get("nodeName")) for p in pods.values()} | (taken or set())
    out = []
    for node in nodes:
        name = (node.get("metadata") or {}).get("name")
        if not name or name in used or (node.get("spec") or {}).get("unschedulable"):
            continue
        taints = (node.get("spec") or {}).get("taints") or []
        if any(t.get("effect") in ("NoSchedule", "NoExecute") for t in taints):
            continue
        if node_trouble(name, node) is None:
            out.append(name)
    return sorted(out)


def grow_target(record: JobRecord, job: HyperPodPytorchJob, free: int) -> int | None:
    """Pure: the size to grow to with ``free`` more pods' room (idle spares beyond the job's
    reserved ``spares`` count too), or None when no allowed size above the current one fits."""
    extra = max(0, len(record.spare_pods()) - job.spares)
    target = largest_allowed(job, min(record.nnodes + extra + free, max_size(job)))
    return target if target is not None and target > record.nnodes else None


def scaling_expired(scaling: dict[str, Any], job: HyperPodPytorchJob, now: datetime) -> bool:
    """Pure: a scale-up's new pods have had ``scalingTimeoutInSeconds`` to run and answer."""
    policy = job.spec.elastic_policy
    limit = (policy.scaling_timeout_in_seconds if policy else None) or DEFAULT_SCALING_TIMEOUT_S
    since = datetime.fromisoformat(scaling["since"])
    return now - since > timedelta(seconds=limit)


def scale_up_ready(scaling: dict[str, Any], ready: set[str]) -> bool:
    """Pure: every pod a scale-up created answers READY (or standing by as a spare)."""
    return bool(scaling.get("pods")) and set(scaling["pods"]) <= ready


def graceful_timeout(job: HyperPodPytorchJob) -> int | None:
    """Pure: the workers' grace to checkpoint before a planned resize (None: the agent's own)."""
    policy = job.spec.elastic_policy
    return policy.graceful_shutdown_timeout_in_seconds if policy else None


def scaling_status(
    job: HyperPodPytorchJob,
    target: int,
    now: str,
    *,
    faulty: bool,
    pods_scaled: int,
    failures: int = 0,
    last_restart: str | None = None,
) -> dict[str, Any]:
    """Pure: ``status.elasticScalingStatus`` after a resize: the target per replica spec (one
    worker group: the first spec carries the ranks beyond the others' ``replicas``)."""
    specs = job.spec.replica_specs
    targets: dict[str, int] = {}
    left = target
    for i, spec in enumerate(specs):
        share = left if i == len(specs) - 1 else min(spec.replicas, left)
        targets[spec.name] = max(0, share)
        left -= targets[spec.name]
    return {
        "targetReplicas": targets,
        "lastUpdated": now,
        "lastScalingTime": now,
        "lastRestartTime": last_restart or now,
        "podsScaled": pods_scaled,
        "isFaultyPodScaleDown": faulty,
        "consecutiveScalingFailures": failures,
    }
