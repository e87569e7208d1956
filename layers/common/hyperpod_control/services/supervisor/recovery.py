"""The Remediate step: every fault the job has now, handled in one coordinated remediation
(services/remediation.py decides): a restart in place, a spare swapped in, the job shrunk, or all
of its pods recreated (``_full_restart``); a refusal fails the job.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from hyperpod_control.adapters.agents import AgentCall
from hyperpod_control.exceptions import DependencyUnavailableError
from hyperpod_control.models.job import HyperPodPytorchJob
from hyperpod_control.models.job_faults import JobFault
from hyperpod_control.models.records import JobPhase, JobRecord
from hyperpod_control.models.supervisor import RemediationOutcome, StepInput, StepResult
from hyperpod_control.services import elastic
from hyperpod_control.services.remediation import (
    Action,
    Decision,
    decide,
    restart_counters,
    restart_modes,
    root_faults,
    standing_spares,
    swap_plan,
    unrecorded,
)
from hyperpod_control.services.supervision import held_table, ip_version_at, listed, start_calls
from hyperpod_control.services.supervisor.access import GONE, load_job, observe_round, save
from hyperpod_control.services.supervisor.context import Supervisor
from hyperpod_control.services.supervisor.pods import fresh_pods, replacement_spares, stop_and_wait
from hyperpod_control.services.supervisor.reporting import (
    fault_kind,
    k8s_event,
    record_history,
    report_recovery,
    report_resize,
)
from hyperpod_control.services.supervisor.scaling import scale_up


def remediate(request: StepInput, sup: Supervisor) -> StepResult:
    """One coordinated remediation of every fault the job has now (services/remediation.py
    decides; this carries it out). Faults are first made pending on the JOB item, so a retried
    step still sees a fault whose agent it already stopped."""
    ref = request.job
    loaded = load_job(sup, ref)
    if loaded is None:
        return GONE
    record, job, _obj = loaded
    _pods, answers, verdict = observe_round(sup, record)
    if verdict.next == "running" and record.scaling:
        return scale_up(sup, record, job, answers)
    if verdict.next != "fault":
        return StepResult(
            next="monitor" if verdict.next == "running" else verdict.next,
            poll_seconds=sup.config.poll_seconds,
        )
    faults = root_faults(verdict.faults)
    new = unrecorded(faults, record)
    if new:
        record = sup.store.put(
            record.model_copy(update={"pending_faults": [*record.pending_faults, *new]}),
            expected_version=record.version,
        )
    ready_spares = standing_spares(record, answers)
    modes = restart_modes(record, answers)
    now = sup.now()
    decision = decide(
        faults, record, job.spec.run_policy, ready_spares=ready_spares, restart_modes=modes, now=now
    )
    fault_at = min(f.at for f in faults)
    if decision.action is Action.FAIL:
        record_history(
            sup,
            record,
            "RemediationRefused",
            decision.reason,
            faults=[f.model_dump(mode="json") for f in faults],
        )
        outcome = RemediationOutcome(action=decision.action.value, fault=fault_kind(faults))
        return StepResult(next="fail", reason=decision.reason, remediation=outcome)
    for fault in faults:
        if fault.kind == "node" and fault.node:
            k8s_event(sup, job, "Warning", "NodeFault", f"Found unhealthy node {fault.node}: {fault.reason}")
    actions: list[str] = []
    counters = restart_counters(record, faults, now)
    if decision.action is Action.FULL_JOB_RESTART:
        shrink = elastic.scale_down(faults, record, job, ready_spares=ready_spares)
        if shrink is None:
            return _full_restart(sup, record, job, decision, faults, fault_at, counters, actions)
        decision = shrink
    slots = list(record.pods)
    resized: dict[str, Any] = {}
    if decision.action is Action.SCALE_DOWN:
        assert decision.nnodes is not None
        leaving = set(decision.delete_pods)
        slots = elastic.resize_slots(record, decision.nnodes, leaving)
        promoted = {s.pod for s in slots if s.rank is not None}
        stop = [s for s in record.pods if s.pod not in leaving and (s.rank is not None or s.pod in promoted)]
        stop_and_wait(sup, record, stop, "process_level_restart")
        actions.append(f"stopped {len(stop)} agents")
        for pod in decision.delete_pods:
            sup.kube.delete_pod(record.namespace, pod, grace_period_seconds=0)
            actions.append(f"deleted {pod}")
        # every pod stopped starts again: the ranks, and former ranks now standing by
        targets = [s for s in slots if s.pod in {p.pod for p in stop}]
        resized = {"nnodes": decision.nnodes, "last_resize_at": now, "scaling": None}
    elif decision.action is Action.SPARE_SWAP:
        plan = swap_plan(record, decision)
        stop_and_wait(sup, record, plan.stop, "process_level_restart")
        actions.append(f"stopped {len(plan.stop)} agents")
        for pod in decision.delete_pods:
            # Force deletion: a dead node's kubelet would never confirm a graceful one.
            sup.kube.delete_pod(record.namespace, pod, grace_period_seconds=0)
            actions.append(f"deleted {pod}")
        for rank, pod in sorted(decision.moves.items()):
            actions.append(f"spare {pod} promoted to rank {rank}")
        slots, targets = plan.slots, plan.start
    else:
        mode = (
            "in_process_restart" if decision.action is Action.IN_PROCESS_RESTART else "process_level_restart"
        )
        targets = record.ranked()
        # A spare found running workers is stopped too; it gets no /start (it stands by again).
        running_spares = [s for s in record.spare_pods() if s.pod in {f.pod for f in faults}]
        stop_and_wait(sup, record, targets + running_spares, mode)
        actions.append(f"stopped {len(targets)} agents ({mode})")
    master = next((s.ip for s in slots if s.rank == 0), record.master_addr)
    ip_version = ip_version_at(sup.now())
    staged = record.model_copy(
        update={"pods": slots, "master_addr": master, "ip_version": ip_version, **counters, **resized}
    )
    chosen = {t.pod for t in targets}
    # The agents hold the table of the last start (their /status said so): they need the changes.
    held = held_table(record, answers) if sup.config.rank_ips == "changed" else None
    calls = [c for c in start_calls(staged, job, ip_version, held=held) if c.pod in chosen]
    started = sup.agents.call_all(calls)
    refused = [f"{pod}: {a.error}" for pod, a in started.items() if not a.ok]
    if refused:
        raise DependencyUnavailableError("agents refused /start after remediation: " + listed(refused, "; "))
    resumed = sup.now()
    actions.append(f"started {len(targets)} ranks with faultCount {staged.fault_count}")
    if decision.action is Action.SPARE_SWAP and decision.delete_pods:
        slots = slots + replacement_spares(sup, job, slots, len(decision.delete_pods))
        actions.append(
            f"created replacement spare(s) {', '.join(s.pod for s in slots[-len(decision.delete_pods) :])}"
        )
    before = record.nnodes
    record = save(
        sup,
        record,
        **{**counters, **resized, "pods": slots, "master_addr": master, "ip_version": ip_version},
    )
    outcome = report_recovery(sup, record, job, decision, faults, fault_at, resumed, actions)
    if resized:
        report_resize(sup, record, job, before, decision.reason, fault_at, resumed, faulty=True)
    return StepResult(
        next="monitor", reason=decision.reason, poll_seconds=sup.config.poll_seconds, remediation=outcome
    )


def _full_restart(
    sup: Supervisor,
    record: JobRecord,
    job: HyperPodPytorchJob,
    decision: Decision,
    faults: list[JobFault],
    fault_at: datetime,
    counters: dict[str, Any],
    actions: list[str],
) -> StepResult:
    """Every pod deleted and recreated (new names, so no old pod is mistaken for a new one), the
    repeat offenders avoided; the execution goes back to WaitForAgents and StartAgents."""
    lost = {f.pod for f in faults if f.kind in ("node", "pod")}
    live = [s for s in record.pods if s.ip and s.pod not in lost]  # a dead node's agent never answers
    sup.agents.call_all(
        AgentCall(s.pod, "POST", "/shutdown", ip=s.ip, namespace=record.namespace) for s in live
    )
    for slot in record.pods:
        sup.kube.delete_pod(record.namespace, slot.pod, grace_period_seconds=0)
    actions.append(f"deleted all {len(record.pods)} pods")
    total = job.replicas + job.spares
    slots = fresh_pods(sup, record, job, decision.avoid_nodes)
    actions.append(
        f"created {total} pods {slots[0].pod}..{slots[-1].pod}"
        + (f" avoiding {', '.join(decision.avoid_nodes)}" if decision.avoid_nodes else "")
    )
    recovery = {
        "fault_at": fault_at.isoformat(),
        "decision": decision.model_dump(mode="json"),
        "faults": [f.model_dump(mode="json") for f in faults],
        "actions": actions,
    }
    save(
        sup,
        record,
        **counters,
        phase=JobPhase.CREATING,
        pods=slots,
        created_at=sup.now(),
        full_restart_count=record.full_restart_count + 1,
        recovery=recovery,
        master_addr=None,
        # an elastic job that had shrunk restarts at its full size
        nnodes=job.replicas,
        scaling=None,
    )
    # decided now, recovered once StartAgents runs the new pods (it reports the time to recover)
    outcome = RemediationOutcome(action=decision.action.value, fault=fault_kind(faults))
    return StepResult(
        next="wait", reason=decision.reason, poll_seconds=sup.config.poll_seconds, remediation=outcome
    )
