"""Faults reported from outside a job's execution (node_health, job_events): recorded on the JOB
item, then the execution woken.

The JOB item is the meeting point: a fault is appended to ``pending_faults`` with a write
conditional on the item's version, so it is never lost to a concurrent writer (the execution
itself, another fault), and a fault already pending for the same pod is not added twice (AWS may
send one node change several times, each with its own id). Then the execution waiting in its
Monitor state is woken with ``SendTaskSuccess`` on the token the item holds; a stale token (the
execution already polled, or is remediating) is normal, since the next poll reads the item.
"""

from __future__ import annotations

from typing import Any

from hyperpod_control.exceptions import VersionConflictError
from hyperpod_control.models.job_faults import FaultReport, JobFault
from hyperpod_control.models.records import JobRecord, utcnow

MAX_WRITE_ATTEMPTS = 5


def with_fault(record: JobRecord, fault: JobFault) -> JobRecord | None:
    """Pure: ``record`` with ``fault`` pending; None when it changes nothing (the same pod's fault
    is pending already, the job is finished, or the fault predates the job's current start: an
    agent's report confirmed before a remediation restarted it must not land after it)."""
    if record.phase.finished or fault.stale(record.ip_version):
        return None
    for pending in record.pending_faults:
        if (pending.get("pod"), pending.get("node")) == fault.key():
            return None
    return record.model_copy(
        update={
            "pending_faults": [*record.pending_faults, fault.model_dump(mode="json")],
            "updated_at": utcnow(),
        }
    )


def report_fault(store: Any, sfn: Any, record: JobRecord, fault: JobFault) -> FaultReport:
    """Add ``fault`` to the job's item (re-reading on a lost race) and wake its execution."""
    name = f"{record.namespace}/{record.name}"
    for _ in range(MAX_WRITE_ATTEMPTS):
        updated = with_fault(record, fault)
        if updated is None:
            return FaultReport(job=name, recorded=False, woken=False, note="already pending, or job finished")
        try:
            record = store.put(updated, expected_version=record.version)
            break
        except VersionConflictError:
            fresh = store.get_job(record.cluster_arn, record.uid)
            if fresh is None:
                return FaultReport(job=name, recorded=False, woken=False, note="the job's item is gone")
            record = fresh
    else:
        raise VersionConflictError(f"{name}: the JOB item kept changing; the fault will be retried.")
    woken = bool(record.task_token) and sfn.wake(
        record.task_token, {"wokenBy": fault.source, "reason": fault.reason}
    )
    return FaultReport(job=name, recorded=True, woken=woken)
