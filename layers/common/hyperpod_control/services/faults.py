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

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from hyperpod_control.exceptions import VersionConflictError
from hyperpod_control.models.records import JobRecord, utcnow

FaultKind = Literal["node", "pod", "worker", "hang", "agent"]
MAX_WRITE_ATTEMPTS = 5


class JobFault(BaseModel):
    """One fault of one job, as the supervisor's decision reads it."""

    # Schema built on first use, not at import (cold start: README, Performance).
    model_config = ConfigDict(defer_build=True)

    kind: FaultKind
    reason: str
    pod: str | None = None
    node: str | None = None
    rank: int | None = None
    source: str = "poll"
    at: datetime = Field(default_factory=utcnow)
    event_id: str | None = None
    #: For a fault an agent reported: the IP table version (``ipVersion`` of the ``/start``) the
    #: agent held then. A fault from before the job's current start is history, not a new fault.
    ip_version: str | None = None

    def stale(self, current_ip_version: str | None) -> bool:
        """Whether this fault predates the job's current start (fenced by ``ipVersion``)."""
        return bool(self.ip_version and current_ip_version and self.ip_version != current_ip_version)

    def key(self) -> tuple[str | None, str | None]:
        return (self.pod, self.node)


class FaultReport(BaseModel):
    model_config = ConfigDict(defer_build=True)

    job: str
    recorded: bool
    woken: bool
    note: str | None = None


def agent_fault_kind(reason: str | None) -> FaultKind:
    """The agent's reason says what failed: a log rule (hang, slow, fault) or a worker."""
    return "hang" if (reason or "").startswith(("LogHang_", "LogSlow_", "LogFault_")) else "worker"


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
