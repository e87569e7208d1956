"""What a poll round says about a job, as pure functions (``judge_round``): a pod lost or
Terminating, a node NotReady, unreachable or marked by HyperPod (``node_trouble``), an agent
FAULTED since the current start (``stale_status`` fences older reports by ``ipVersion``) or silent
too many rounds (``silence``), a job that stopped making sense (``misbehaviour``); and, before the
start, whether the agents may start (``agents_ready``).
"""

from __future__ import annotations

import contextlib
from datetime import datetime
from typing import Any

from hyperpod_control.models.agent import AgentAnswer, AgentState, AgentStatus
from hyperpod_control.models.job_faults import JobFault, agent_fault_kind
from hyperpod_control.models.node_health import HEALTH_LABEL, SCHEDULABLE
from hyperpod_control.models.records import JobRecord, PodSlot, utcnow
from hyperpod_control.models.supervisor import RoundVerdict
from hyperpod_control.services.supervision.pods import pod_failure, pod_phase
from hyperpod_control.services.supervision.status import listed

#: The taints Kubernetes' node lifecycle controller puts on a node whose kubelet went silent
#: (unreachable) or reports NotReady; pods tolerate them 300 s (DefaultTolerationSeconds), then are
#: evicted and stay Terminating while the node is gone.
NODE_TROUBLE_TAINTS = ("node.kubernetes.io/unreachable", "node.kubernetes.io/not-ready")


def _condition(obj: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in (obj.get("status") or {}).get("conditions") or [] if c.get("type") == kind), {})


def node_trouble(name: str | None, node: dict[str, Any] | None) -> str | None:
    """Pure: why pods on node ``name`` cannot go on (None while it looks healthy). A node whose
    instance died stays Ready until the node-monitor grace period ends, so this is one signal among
    the agents' silence and the health events, never the only one."""
    if not name:
        return None
    if node is None:
        return f"node {name} is gone"
    health = ((node.get("metadata") or {}).get("labels") or {}).get(HEALTH_LABEL)
    if health and health != SCHEDULABLE:
        return f"node {name} is {health} (HyperPod health monitoring)"
    for taint in (node.get("spec") or {}).get("taints") or []:
        if taint.get("key") in NODE_TROUBLE_TAINTS and taint.get("effect") == "NoExecute":
            what = taint["key"].rsplit("/", 1)[-1]
            return f"node {name} is {what} (taint since {taint.get('timeAdded', '?')})"
    ready = _condition(node, "Ready")
    if ready and ready.get("status") != "True":
        return f"node {name} is NotReady ({ready.get('reason') or ready.get('status')})"
    return None


def node_names(record: JobRecord, pods: dict[str, dict[str, Any]]) -> set[str]:
    """Pure: the nodes the job's pods are bound to."""
    found = {((pods.get(s.pod) or {}).get("spec") or {}).get("nodeName") or s.node for s in record.pods}
    return {n for n in found if n}


def node_troubles(
    record: JobRecord, pods: dict[str, dict[str, Any]], nodes: dict[str, dict[str, Any] | None]
) -> dict[str, str]:
    """Pure: pod -> why its node cannot carry it (``nodes``: the nodes read, None for one gone)."""
    troubled = {}
    for slot in record.pods:
        node = ((pods.get(slot.pod) or {}).get("spec") or {}).get("nodeName") or slot.node
        why = node_trouble(node, nodes.get(node)) if node in nodes else None
        if why:
            troubled[slot.pod] = why
    return troubled


def unreachable(record: JobRecord, pods: dict[str, dict[str, Any]], troubles: dict[str, str]) -> set[str]:
    """Pure: pods whose agents are not asked this round: gone, Terminating or finished, or on a
    troubled node (a dead node's connections hang; the fault is known without them)."""
    return {s.pod for s in record.pods if s.pod not in pods or pod_failure(pods[s.pod]) or s.pod in troubles}


def silence(record: JobRecord, answers: dict[str, AgentAnswer]) -> list[PodSlot]:
    """Pure: the slots with their count of silent rounds after this round's answers (a timed-out
    /status adds one; any answer, or a failure that is not silence, resets it)."""
    updated = []
    for slot in record.pods:
        answer = answers.get(slot.pod)
        rounds = slot.silent_rounds + 1 if answer is not None and answer.silent else 0
        updated.append(
            slot if rounds == slot.silent_rounds else slot.model_copy(update={"silent_rounds": rounds})
        )
    return updated


def _fault_time(status: Any, now: datetime) -> datetime:
    """When the agent went FAULTED (its transitions say), else now."""
    stamp = (status.transitions or {}).get("FAULTED") if status is not None else None
    if stamp:
        with contextlib.suppress(ValueError):
            return datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    return now


def stale_status(reported: str | None, current: str | None) -> bool:
    """Pure: an agent's ``/status`` speaks of an earlier start than the job's current one (its
    ``ipversion`` is not the ``ipVersion`` of the last ``/start``): a FAULTED or COMPLETED in it
    is about workers a remediation already replaced."""
    return bool(reported and current and reported != current)


def _slot_fault(slot: PodSlot, kind: str, reason: str, at: datetime) -> JobFault:
    return JobFault(kind=kind, reason=reason, pod=slot.pod, node=slot.node, rank=slot.rank, at=at)


def _since(status: AgentStatus, state: str, until: datetime) -> float | None:
    """Seconds from the agent's last entry into ``state`` (its transitions) to ``until``."""
    stamp = status.transitions.get(state)
    if not stamp:
        return None
    try:
        return (until - datetime.fromisoformat(stamp.replace("Z", "+00:00"))).total_seconds()
    except (TypeError, ValueError):
        return None


def _run_seconds(status: AgentStatus) -> float | None:
    """How long a COMPLETED agent ran: its RUNNING to its COMPLETED transition (one clock)."""
    done = status.transitions.get("COMPLETED")
    if not done:
        return None
    with contextlib.suppress(ValueError):
        return _since(status, "RUNNING", datetime.fromisoformat(done.replace("Z", "+00:00")))
    return None


def misbehaviour(
    record: JobRecord, statuses: dict[str, AgentStatus], now: datetime, straggler_s: float | None = None
) -> dict[str, JobFault]:
    """Pure: faults of a job that stopped making sense while no agent says FAULTED (``statuses``:
    this round's answers of the current start). Each reason starts with which:

    - ``SpareRunsWorkers``: a spare's agent runs workers while it should stand by (one that ignores
      ``spare`` was started anyway, or one that holds spares was told it is none);
    - ``DuplicateRank``: two agents run the same assigned rank; the fault is the one whose slot holds
      another rank (or none);
    - ``RankStraggling``: some ranks COMPLETED and a rank still RUNNING has run ``straggler_s``
      longer than the longest of them took (its peers are gone: it can only wait forever).
    """
    faults: dict[str, JobFault] = {}
    slots = {s.pod: s for s in record.pods}

    def fault(slot: PodSlot, kind: str, reason: str) -> None:
        where = f"rank {slot.rank}" if slot.rank is not None else "spare"
        faults.setdefault(slot.pod, _slot_fault(slot, kind, f"{where} ({slot.pod}): {reason}", now))

    for slot in record.spare_pods():
        status = statuses.get(slot.pod)
        # Judged only for agents that say how they restart (AWS's and ours always do): of one that
        # does not, nothing tells whether RUNNING means workers.
        if status is not None and status.restart_mode and status.runs_workers():
            rank = f" as rank {status.assigned_rank}" if status.assigned_rank is not None else ""
            fault(
                slot,
                "agent",
                f"SpareRunsWorkers: its agent runs workers{rank} while the spare should stand by "
                f"({status.describe()}, spare {status.spare})",
            )
    by_rank: dict[int, list[str]] = {}
    for pod, status in sorted(statuses.items()):
        if pod in slots and status.runs_workers() and status.assigned_rank is not None:
            by_rank.setdefault(status.assigned_rank, []).append(pod)
    for rank, holders in sorted(by_rank.items()):
        if len(holders) < 2:
            continue
        for pod in [p for p in holders if slots[p].rank != rank] or holders:
            fault(slots[pod], "agent", f"DuplicateRank: rank {rank} is run by {', '.join(holders)} at once")
    if straggler_s is None:
        return faults
    took = [
        t
        for s in record.ranked()
        if (st := statuses.get(s.pod)) is not None and st.status is AgentState.COMPLETED
        if (t := _run_seconds(st)) is not None
    ]
    if not took:
        return faults
    longest = max(took)
    for slot in record.ranked():
        status = statuses.get(slot.pod)
        if status is None or status.status is not AgentState.RUNNING:
            continue
        running = _since(status, "RUNNING", now)
        if running is not None and running > longest + straggler_s:
            fault(
                slot,
                "hang",
                f"RankStraggling: still running after {running:.0f} s while {len(took)} rank(s) "
                f"completed within {longest:.0f} s (bound: {straggler_s:.0f} s more)",
            )
    return faults


def judge_round(
    record: JobRecord,
    pods: dict[str, dict[str, Any]],
    answers: dict[str, AgentAnswer],
    now: datetime | None = None,
    *,
    troubles: dict[str, str] | None = None,
    silent_limit: int = 3,
    straggler_s: float | None = None,
) -> RoundVerdict:
    """Pure: what one poll round says about the job. A pod lost, Terminating or on a troubled node
    (``troubles``: NotReady, unreachable, marked by HyperPod's health monitoring) is a fault of its
    rank now, without waiting for its agent; so is an agent that reports FAULTED since the current
    start, and one silent ``silent_limit`` rounds in a row (hung: its node looked healthy). All
    ranks COMPLETED is completion. An agent failing to answer fewer rounds, or for another reason
    than silence, is judged again next round. A lost spare is a fault too (remediation replaces
    it), and so is every fault reported from outside (``pending_faults``). A job that stopped
    making sense (``misbehaviour``: a spare running workers, a rank run twice, a rank straggling
    ``straggler_s`` behind completed peers) is a fault too."""
    now = now or utcnow()
    troubles = troubles or {}
    faults: dict[str, JobFault] = {}
    current: dict[str, AgentStatus] = {}
    completed = 0
    ranked = record.ranked()
    for slot in record.pods:
        failure = pod_failure(pods.get(slot.pod))
        answer = answers.get(slot.pod)
        status = answer.status if answer and answer.ok else None
        if status is not None and stale_status(status.ipversion, record.ip_version):
            status = None  # said before the current /start reached it: no news of this start
        if status is not None and not failure and slot.pod not in troubles:
            current[slot.pod] = status
        where = f"rank {slot.rank}" if slot.rank is not None else "spare"
        if status is not None and status.status is AgentState.COMPLETED and slot.rank is not None:
            completed += 1
            continue
        on = f"{where} ({slot.pod} on {slot.node or 'no node'})"
        if failure and (failure != "PodExited" or slot.rank is not None):
            text = "the container exited before the job completed" if failure == "PodExited" else failure
            faults[slot.pod] = _slot_fault(slot, "pod", f"{on}: {text}", now)
        elif slot.pod in troubles:
            faults[slot.pod] = _slot_fault(slot, "node", f"{where} ({slot.pod}): {troubles[slot.pod]}", now)
        elif answer is not None and answer.silent and slot.silent_rounds + 1 >= silent_limit:
            silence_text = (
                f"{on}: its agent has not answered {slot.silent_rounds + 1} rounds in a row while its "
                "node looks healthy (hung)"
            )
            faults[slot.pod] = _slot_fault(slot, "pod", silence_text, now)
        elif status is not None and status.status is AgentState.FAULTED and slot.rank is not None:
            detail = f"{status.reason or 'WorkerFault'}" + (f": {status.message}" if status.message else "")
            faults[slot.pod] = JobFault(
                kind=agent_fault_kind(status.reason),
                ip_version=status.ipversion,
                reason=f"{where} ({slot.pod}): {detail}",
                pod=slot.pod,
                node=slot.node,
                rank=slot.rank,
                at=_fault_time(status, now),
            )
    for pod, fault in misbehaviour(record, current, now, straggler_s).items():
        faults.setdefault(pod, fault)
    present = {s.pod for s in record.pods}
    for raw in record.pending_faults:
        fault = JobFault.model_validate(raw)
        if fault.pod and fault.pod not in present:
            continue  # a late report about a pod a remediation already replaced
        if fault.stale(record.ip_version):
            continue  # reported before the restart that already remediated it
        known = faults.get(fault.pod or "")
        # A node's fault names the cause better than the lost pod it explains; keep its time.
        if known is None or fault.kind == "node":
            faults[fault.pod or f"node:{fault.node}"] = fault
    if faults:
        found = list(faults.values())
        return RoundVerdict(
            next="fault",
            reason=listed([f.reason for f in found], "; "),
            faulty_pods=[f.pod for f in found if f.pod],
            faults=found,
            completed=completed,
        )
    if ranked and completed == len(ranked):
        return RoundVerdict(next="completed", completed=completed)
    return RoundVerdict(next="running", completed=completed)


def agents_ready(
    record: JobRecord, pods: dict[str, dict[str, Any]], answers: dict[str, AgentAnswer]
) -> tuple[str, str | None]:
    """Pure: ("start", None) when every pod runs and its agent is READY, ("fail", why) when a pod
    can no longer start, ("wait", what is missing) otherwise."""
    waiting = []
    for slot in record.pods:
        pod = pods.get(slot.pod)
        failure = pod_failure(pod)
        if failure:
            return "fail", f"{slot.pod}: {failure} before its agent started"
        if pod_phase(pod) != "Running":
            waiting.append(f"{slot.pod} {pod_phase(pod)}")
            continue
        answer = answers.get(slot.pod)
        if not answer or not answer.ok or answer.status is None:
            waiting.append(f"{slot.pod} agent not answering")
        elif answer.status.status is not AgentState.READY:
            waiting.append(f"{slot.pod} agent {answer.status.status.value}")
    if waiting:
        return "wait", listed(waiting)
    return "start", None
