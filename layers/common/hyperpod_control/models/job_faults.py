"""A fault of one job, as the supervisor's decision reads it (``JobFault``: found by a poll, or
reported from outside the execution by node_health and job_events, and then pending on the JOB
item), and how such a report went (``FaultReport``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from hyperpod_control.models.records import utcnow

FaultKind = Literal["node", "pod", "worker", "hang", "agent"]


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
