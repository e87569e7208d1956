"""The Monitor loop's steps: Arm (the task token that lets a fault wake the execution) and Poll
(one round: the job judged, the silent agents counted, new spares joined, an elastic job's growth).
"""

from __future__ import annotations

from typing import Any

from hyperpod_control.exceptions import FaultPendingError
from hyperpod_control.models.agent import AgentAnswer, AgentState
from hyperpod_control.models.job import HyperPodPytorchJob, parse_job
from hyperpod_control.models.records import JobRecord, PodSlot
from hyperpod_control.models.supervisor import StepInput, StepResult
from hyperpod_control.services import run_policy
from hyperpod_control.services.remediation import aggregate_progress
from hyperpod_control.services.supervision import pod_ip, silence, spares_held, start_calls
from hyperpod_control.services.supervisor.access import job_record, observe_round, read_job, save
from hyperpod_control.services.supervisor.context import Supervisor
from hyperpod_control.services.supervisor.reporting import record_history
from hyperpod_control.services.supervisor.scaling import scale_up_round
from hyperpod_control.services.supervisor.suspend import suspension


def arm(request: StepInput, sup: Supervisor) -> StepResult:
    """Keep the Monitor state's task token on the JOB item, so node_health and job_events can wake
    the execution with SendTaskSuccess before the poll interval ends."""
    record = job_record(sup, request.job)
    current = {s.pod for s in record.pods}
    if any(not f.get("pod") or f["pod"] in current for f in record.pending_faults):
        # A fault arrived between the poll and now, and its sender found no token to wake us
        # with. Waking ourselves with SendTaskSuccess races the task's own start; an error the
        # Monitor state catches is deterministic.
        raise FaultPendingError(f"{record.namespace}/{record.name}: a fault is pending; polling now.")
    save(sup, record, task_token=request.token)
    return StepResult(next="armed")


def poll(request: StepInput, sup: Supervisor) -> StepResult:
    ref = request.job
    record = job_record(sup, ref)
    obj = read_job(sup, ref)
    if obj is None:
        return StepResult(next="gone", reason="the job was deleted")
    suspended = suspension(sup, record, obj)
    if suspended is not None:
        return suspended
    pods, answers, verdict = observe_round(sup, record)
    update: dict[str, Any] = {
        "task_token": None,
        "poll_rounds": record.poll_rounds + 1,
        "pods": silence(record, answers),
    }
    current = {s.pod for s in record.pods}
    stale = [f for f in record.pending_faults if f.get("pod") and f["pod"] not in current]
    if stale:
        update["pending_faults"] = [f for f in record.pending_faults if f not in stale]
    progress = aggregate_progress(
        {
            s.pod: answers[s.pod].status.progress
            for s in record.ranked()
            if s.pod in answers and answers[s.pod].status
        }
    )
    if progress and progress != record.progress:
        update["progress"] = progress
    nxt, why = verdict.next, verdict.reason
    over = run_policy.active_deadline(record, parse_job(obj).spec.run_policy, sup.now())
    if over and verdict.next != "completed":
        nxt, why = "fail", over
    elif verdict.next == "running":
        job = parse_job(obj)
        staged = record.model_copy(update={"pods": update["pods"]})
        update["pods"] = _start_new_spares(sup, staged, pods, answers, job)
        staged = staged.model_copy(update={"pods": update["pods"]})
        grow = scale_up_round(sup, staged, job, pods, answers)
        update.update(grow)
        if grow.get("resize"):
            update.pop("resize")
            target = (update.get("scaling") or record.scaling or {}).get("target")
            nxt, why = "resize", f"elastic scale-up to {target} ranks"
    save(sup, record, **update)
    due = nxt == "running" and update["poll_rounds"] >= (ref.segment + 1) * sup.config.segment_rounds
    return StepResult(next=nxt, reason=why, segment_due=due, poll_seconds=sup.config.poll_seconds)


def _start_new_spares(
    sup: Supervisor,
    record: JobRecord,
    pods: dict[str, dict[str, Any]],
    answers: dict[str, AgentAnswer],
    job: HyperPodPytorchJob,
) -> list[PodSlot]:
    """A replacement spare created after a swap joins once its pod runs and its agent is READY:
    /start it as a spare, with the current IP table, when its agent holds spares; otherwise it
    only joins the JOB item (its node and IP) and stays READY until promoted."""
    slots = []
    fresh = []
    held = spares_held(answers)
    for slot in record.pods:
        answer = answers.get(slot.pod)
        status = answer.status.status if answer and answer.ok and answer.status else None
        if slot.rank is None and status is AgentState.READY and (slot.pod in held or slot.ip is None):
            slot = slot.model_copy(
                update={
                    "node": (pods[slot.pod].get("spec") or {}).get("nodeName"),
                    "ip": pod_ip(pods[slot.pod]),
                }
            )
            fresh.append(slot.pod)
        slots.append(slot)
    if fresh:
        staged = record.model_copy(update={"pods": slots})
        calls = [
            c for c in start_calls(staged, job, record.ip_version or "", spares_held=held) if c.pod in fresh
        ]
        sup.agents.call_all(calls)
        record_history(sup, record, "SpareJoined", f"spare(s) {', '.join(fresh)} standing by", pods=fresh)
    return slots
