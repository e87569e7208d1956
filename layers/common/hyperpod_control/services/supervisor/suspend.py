"""``runPolicy.suspend`` on a job that runs or starts, and unset on a suspended one: the one spec
change honoured on a running job (``suspension``, called by CheckAgents and Poll).
"""

from __future__ import annotations

from typing import Any

from hyperpod_control.adapters.agents import AgentCall
from hyperpod_control.models.job import JobCondition, parse_job, set_condition
from hyperpod_control.models.records import JobPhase, JobRecord
from hyperpod_control.models.supervisor import StepResult
from hyperpod_control.services.supervision import conditions_after, pod_phase, rfc3339
from hyperpod_control.services.supervisor.access import pods_by_name, save
from hyperpod_control.services.supervisor.context import Supervisor
from hyperpod_control.services.supervisor.pods import fresh_pods
from hyperpod_control.services.supervisor.reporting import k8s_event, patch_status, record_history


def suspension(sup: Supervisor, record: JobRecord, obj: dict[str, Any]) -> StepResult | None:
    """``runPolicy.suspend``: set on a job that runs or starts, its agents are shut down and its
    pods deleted (the JOB item keeps the checkpoint progress); unset on a suspended job, its pods
    are created anew and it starts from that checkpoint. None: nothing to do about it. The edit
    of ``suspend`` is the one spec change honoured on a running job: the JOB item records the
    job's generation as honoured (reconcile_jobs would otherwise call it an edit not applied)."""
    job = parse_job(obj)
    wanted = bool(job.spec.run_policy.suspend)
    poll = sup.config.poll_seconds
    if wanted == (record.phase is JobPhase.SUSPENDED):
        if wanted:  # still suspended: nothing runs, nothing to observe
            rounds = record.poll_rounds + 1
            # faults reported about the deleted pods' nodes concern no running pod
            save(sup, record, poll_rounds=rounds, task_token=None, pending_faults=[])
            due = rounds >= (record.segment + 1) * sup.config.segment_rounds
            return StepResult(
                next="suspended", reason="runPolicy.suspend", poll_seconds=poll, segment_due=due
            )
        return None
    now = sup.now()
    stamp = rfc3339(now)
    generation = job.metadata.generation
    if wanted:
        pods = pods_by_name(sup, record)
        live = [s for s in record.pods if s.pod in pods and pod_phase(pods[s.pod]) == "Running"]
        sup.agents.call_all(
            AgentCall(s.pod, "POST", "/shutdown", ip=s.ip, namespace=record.namespace) for s in live
        )
        for slot in record.pods:
            sup.kube.delete_pod(record.namespace, slot.pod)
        record = save(
            sup,
            record,
            phase=JobPhase.SUSPENDED,
            honoured_generation=generation,
            pending_faults=[],
            task_token=None,
            scaling=None,
            recovery=None,
            master_addr=None,
        )
        message = f"runPolicy.suspend: {len(record.pods)} pods deleted; training resumes from the checkpoint"
        conditions = conditions_after(job, "Suspended", "Suspended", message, stamp)
        if job.condition("Running") is not None:
            conditions = _with_condition(conditions, "Running", "False", "Suspended", message, stamp)
        patch_status(sup, job, {"conditions": _edit_honoured(conditions, stamp), "jobPods": []})
        k8s_event(sup, job, "Normal", "Suspended", message)
        record_history(sup, record, "Suspended", message, progress=record.progress)
        return StepResult(next="suspended", reason=message, poll_seconds=poll)
    slots = fresh_pods(sup, record, job)
    record = save(
        sup,
        record,
        phase=JobPhase.CREATING,
        honoured_generation=generation,
        pods=slots,
        nnodes=job.replicas,
        created_at=now,
        # activeDeadlineSeconds counts from the start after the resume, as Kubernetes' Jobs do
        started_at=None,
        task_token=None,
    )
    message = f"runPolicy.suspend unset: {len(slots)} pods created, training resumes from the checkpoint"
    current = (
        [c.model_dump(mode="json", by_alias=True, exclude_none=True) for c in job.status.conditions]
        if job.status
        else []
    )
    conditions = _with_condition(current, "Suspended", "False", "Resumed", message, stamp)
    patch_status(sup, job, {"conditions": _edit_honoured(conditions, stamp)})
    k8s_event(sup, job, "Normal", "Resumed", message)
    record_history(sup, record, "Resumed", message, pods=[s.pod for s in slots], progress=record.progress)
    return StepResult(next="wait", reason=message, poll_seconds=poll)


def _edit_honoured(conditions: list[dict[str, Any]], stamp: str) -> list[dict[str, Any]]:
    """Pure: reconcile_jobs may have called the suspend edit one not applied before this step
    honoured it (its ``SpecChangeRejected`` condition): no longer true."""
    if not any(c.get("type") == "SpecChangeRejected" and c.get("status") == "True" for c in conditions):
        return conditions
    message = "runPolicy.suspend was applied; other edits of a running job are not"
    return _with_condition(conditions, "SpecChangeRejected", "False", "SuspendApplied", message, stamp)


def _with_condition(
    conditions: list[dict[str, Any]], kind: str, status: str, reason: str, message: str, stamp: str
) -> list[dict[str, Any]]:
    """Pure: ``conditions`` (as the status holds them) with ``kind`` set."""
    merged = set_condition(
        [JobCondition.model_validate(c) for c in conditions], kind, status, reason, message, stamp
    )
    return [c.model_dump(mode="json", by_alias=True, exclude_none=True) for c in merged]
