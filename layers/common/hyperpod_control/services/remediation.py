"""The remediation decision: given a job's faults, what it has (spares, the agents' restart
capability) and what its restart budget allows, the least disruptive action that fixes it.

Pure functions over models, from least to most disruptive:

1. in-process restart: every fault is a worker's (its pod and node are fine) and the agents
   restart in process (``restartMode: in_process_restart``): workers re-rendezvous in place;
2. process restart: the same faults, agents that restart processes: stop every agent and start
   them again on the same pods (no pod recreated);
3. spare swap: ranks lost with their pod or node, and enough hot spares on healthy nodes: each
   spare takes a lost rank, the others keep theirs (rank 0's pod stays when it is healthy);
4. full job restart: no spare left, or ``numRestartBeforeFullJobRestart`` restarts already in the
   ``evalPeriodSeconds`` window: every pod recreated, repeat-offender nodes avoided (a job with
   an ``elasticPolicy`` that lost ranks scales down instead where it can: ``elastic.scale_down``);
5. fail, with the reason: ``jobMaxRetryCount`` restarts used, or ``maxFullJobRestarts`` spent.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from hyperpod_control.models.agent import AgentAnswer, AgentState
from hyperpod_control.models.job import RunPolicy
from hyperpod_control.models.job_faults import JobFault
from hyperpod_control.models.records import JobRecord, PodSlot
from hyperpod_control.services.supervision import listed

#: Restarts a job gets when it sets no jobMaxRetryCount (AWS documents no default; a job that
#: fails forever must not restart forever).
DEFAULT_MAX_RETRIES = 10
#: The restart window when restartPolicy sets none (AWS's examples use 6 hours).
DEFAULT_EVAL_PERIOD_S = 6 * 3600
#: Faults that leave the pod and its node usable: the processes restart on the same pod.
PROCESS_FAULTS = ("worker", "hang", "agent")


class Action(StrEnum):
    IN_PROCESS_RESTART = "in_process_restart"
    PROCESS_RESTART = "process_restart"
    SPARE_SWAP = "spare_swap"
    FULL_JOB_RESTART = "full_job_restart"
    #: elastic (services/elastic.py): restart at fewer ranks instead of waiting for new nodes
    SCALE_DOWN = "scale_down"
    #: elastic: new pods joined; restart at more ranks
    SCALE_UP = "scale_up"
    FAIL = "fail"


class Decision(BaseModel):
    # Schema built on first use, not at import (cold start: README, Performance).
    model_config = ConfigDict(defer_build=True)

    action: Action
    reason: str
    #: spare swap: lost rank -> the spare pod that takes it
    moves: dict[int, str] = Field(default_factory=dict)
    #: pods to delete (lost ranks' pods on a swap; every pod on a full restart)
    delete_pods: list[str] = Field(default_factory=list)
    #: full restart: nodes the new pods must not land on
    avoid_nodes: list[str] = Field(default_factory=list)
    #: elastic resize: the number of ranks after it
    nnodes: int | None = None

    @property
    def restart_type(self) -> str:
        """HyperPod's name in latestFaultyPodInstanceList: process-level or job-level restart."""
        return "JLR" if self.action is Action.FULL_JOB_RESTART else "PLR"


def restarts_in_window(record: JobRecord, eval_period_s: int, now: datetime) -> int:
    since = now - timedelta(seconds=eval_period_s)
    return sum(1 for t in record.restart_times if t >= since)


def usable_spares(record: JobRecord, ready: set[str], bad_nodes: set[str]) -> list[PodSlot]:
    """Pure: spares whose agent answers and whose node is not among the faulty ones."""
    return [s for s in record.spare_pods() if s.pod in ready and (s.node or "") not in bad_nodes]


def decide(
    faults: list[JobFault],
    record: JobRecord,
    policy: RunPolicy,
    *,
    ready_spares: set[str],
    restart_modes: set[str],
    now: datetime,
) -> Decision:
    """Pure: the remediation of ``faults`` (at least one) for the job ``record`` describes."""
    restart = policy.restart_policy
    max_retries = (
        policy.job_max_retry_count if policy.job_max_retry_count is not None else DEFAULT_MAX_RETRIES
    )
    summary = listed(list(dict.fromkeys(f.reason for f in faults)), "; ")
    if record.restart_count >= max_retries:
        return Decision(
            action=Action.FAIL,
            reason=f"restart budget exhausted: {record.restart_count} restarts of jobMaxRetryCount "
            f"{max_retries}; last fault: {summary}",
        )
    eval_period = (restart.eval_period_seconds if restart else None) or DEFAULT_EVAL_PERIOD_S
    recent = restarts_in_window(record, eval_period, now)
    escalate = bool(
        restart
        and restart.num_restart_before_full_job_restart is not None
        and recent >= restart.num_restart_before_full_job_restart
    )
    ranks = {s.pod: s.rank for s in record.pods}
    lost = [f for f in faults if f.kind not in PROCESS_FAULTS]
    bad_nodes = {f.node for f in faults if f.node and f.kind == "node"}
    if not escalate and not lost:
        if restart_modes and restart_modes <= {"in_process_restart"}:
            return Decision(
                action=Action.IN_PROCESS_RESTART, reason=f"worker fault, restarted in process: {summary}"
            )
        return Decision(
            action=Action.PROCESS_RESTART, reason=f"worker fault, processes restarted in place: {summary}"
        )
    lost_ranks = sorted({ranks[f.pod] for f in lost if f.pod in ranks and ranks[f.pod] is not None})
    lost_pods = sorted({f.pod for f in lost if f.pod in ranks})
    lost_spares = {f.pod for f in lost if f.pod}
    spares = [
        s
        for s in usable_spares(record, ready_spares, bad_nodes | {f.node for f in lost if f.node})
        if s.pod not in lost_spares
    ]
    if not escalate and lost_ranks and len(spares) >= len(lost_ranks):
        moves = {rank: spares[i].pod for i, rank in enumerate(lost_ranks)}
        return Decision(
            action=Action.SPARE_SWAP,
            reason=f"{len(lost_ranks)} rank(s) moved to hot spares: {summary}",
            moves=moves,
            delete_pods=lost_pods,
        )
    if not escalate and not lost_ranks and lost:
        # Only spares were lost: nothing to remediate for training; replace them.
        return Decision(action=Action.SPARE_SWAP, reason=f"spare lost: {summary}", delete_pods=lost_pods)
    max_full = restart.max_full_job_restarts if restart else None
    if max_full is not None and record.full_restart_count >= max_full:
        return Decision(
            action=Action.FAIL,
            reason=f"full job restarts exhausted: {record.full_restart_count} of maxFullJobRestarts "
            f"{max_full}; last fault: {summary}",
        )
    why = (
        f"{recent} restarts in {eval_period} s reached numRestartBeforeFullJobRestart"
        if escalate
        else f"{len(lost_ranks)} rank(s) lost and {len(spares)} usable spare(s)"
    )
    return Decision(
        action=Action.FULL_JOB_RESTART,
        reason=f"full job restart ({why}): {summary}",
        delete_pods=[s.pod for s in record.pods],
        avoid_nodes=repeat_offenders(
            record, faults, restart.max_num_repeat_offenders_to_avoid if restart else None
        ),
    )


def offender_counts(record: JobRecord, faults: list[JobFault]) -> dict[str, int]:
    """Pure: faults per node, this remediation's included. A pod lost with its node (or evicted
    from it) makes the node a suspect too."""
    counts = dict(record.offenders)
    for fault in faults:
        if fault.node and fault.kind in ("node", "pod"):
            counts[fault.node] = counts.get(fault.node, 0) + 1
    return counts


def repeat_offenders(record: JobRecord, faults: list[JobFault], limit: int | None) -> list[str]:
    """Pure: the nodes to avoid on a full restart: this fault's nodes and earlier offenders, most
    faults first, at most ``limit`` (maxNumRepeatOffendersToAvoid; unset: every faulty node)."""
    counts = offender_counts(record, faults)
    ranked = sorted(counts, key=lambda n: (-counts[n], n))
    return ranked if limit is None else ranked[:limit]


# -- what Remediate reads from a round, and how it carries out a decision (pure) -----------------


def root_faults(faults: list[JobFault]) -> list[JobFault]:
    """Pure: the faults to remediate. When a pod or node is lost, its peers' workers fail too
    (their collectives break): those are consequences, fixed by the same restart."""
    lost = [f for f in faults if f.kind in ("node", "pod")]
    return lost or list(faults)


def unrecorded(faults: list[JobFault], record: JobRecord) -> list[dict]:
    """Pure: the faults not yet pending on the JOB item (made pending before acting, so a retried
    Remediate still sees a fault whose agent it already stopped)."""
    known = {(f.get("pod"), f.get("node")) for f in record.pending_faults}
    return [f.model_dump(mode="json") for f in faults if f.key() not in known]


def standing_spares(record: JobRecord, answers: dict[str, AgentAnswer]) -> set[str]:
    """Pure: the spares whose agents answered READY or RUNNING this round: those a swap may use."""
    return {
        s.pod
        for s in record.spare_pods()
        if (a := answers.get(s.pod))
        and a.ok
        and a.status
        and a.status.status in (AgentState.RUNNING, AgentState.READY)
    }


def restart_modes(record: JobRecord, answers: dict[str, AgentAnswer]) -> set[str]:
    """Pure: the restart modes the ranks' agents report (all in-process: an in-process restart)."""
    return {
        a.status.restart_mode
        for s in record.ranked()
        if (a := answers.get(s.pod)) and a.ok and a.status and a.status.restart_mode
    }


def restart_counters(record: JobRecord, faults: list[JobFault], now: datetime) -> dict:
    """Pure: the JOB item's counters after one more restart (the faults it fixes cleared)."""
    return {
        "fault_count": record.fault_count + 1,
        "restart_count": record.restart_count + 1,
        "restart_times": [*record.restart_times, now][-50:],
        "offenders": offender_counts(record, faults),
        "pending_faults": [],
        "task_token": None,
    }


class SwapPlan(BaseModel):
    """How a spare swap changes the job's pods: who is stopped, the slots after, who starts."""

    model_config = ConfigDict(defer_build=True)

    stop: list[PodSlot]
    slots: list[PodSlot]
    start: list[PodSlot]


def swap_plan(record: JobRecord, decision: Decision) -> SwapPlan:
    """Pure: the lost pods leave; each promoted spare takes its rank; the ranks kept and the
    promoted spares are stopped and started again under the new IP table; other spares stay."""
    lost = set(decision.delete_pods)
    promoted = {pod: rank for rank, pod in decision.moves.items()}
    keep = [s for s in record.pods if s.pod not in lost]
    stop = [s for s in keep if s.rank is not None or s.pod in promoted]
    slots = [s.model_copy(update={"rank": promoted[s.pod]}) if s.pod in promoted else s for s in keep]
    return SwapPlan(stop=stop, slots=slots, start=[s for s in slots if s.rank is not None])


def aggregate_progress(progress_by_pod: dict[str, dict | None]) -> dict | None:
    """Pure: per checkpoint prefix, the step every rank reported (the minimum), with that rank's
    path; a prefix some rank never reported is left out."""
    reports = [p or {} for p in progress_by_pod.values()]
    if not reports or not all(reports):
        return None
    prefixes = set.intersection(*(set(r) for r in reports))
    out: dict = {}
    for prefix in sorted(prefixes):
        entries = [r[prefix] for r in reports if isinstance(r.get(prefix), dict)]
        if len(entries) != len(reports):
            continue
        lowest = min(entries, key=lambda e: int(e.get("progressCount") or -1))
        out[prefix] = {
            "progressData": lowest.get("progressData"),
            "progressCount": lowest.get("progressCount"),
        }
    return out or None
