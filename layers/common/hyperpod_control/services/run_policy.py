"""The job's ``runPolicy`` deadlines, as pure functions: each says why the job fails, naming the
field, or None while it is within its bounds.

- ``activeDeadlineSeconds`` (as Kubeflow's): how long the job may be active, from its start;
- ``startupDeadlineSeconds``: how long its pods may take to run and their agents to answer;
- ``faultDeadlineSeconds``: how long it may stay in a fault (from the fault until training runs
  again: a full restart waiting for its new pods);
- ``ttlSecondsAfterFinished``: when a finished job's object is deleted (``ttl_due``).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from hyperpod_control.models.job import RunPolicy
from hyperpod_control.models.records import JobRecord


def active_deadline(record: JobRecord, policy: RunPolicy, now: datetime) -> str | None:
    """Pure: the job has been active longer than ``activeDeadlineSeconds`` (counted from when its
    agents first started; before that, from its pods' creation)."""
    limit = policy.active_deadline_seconds
    if limit is None:
        return None
    since = record.started_at or record.created_at
    took = (now - since).total_seconds()
    if took <= limit:
        return None
    return (
        f"DeadlineExceeded: the job was active {int(took)} s, beyond runPolicy.activeDeadlineSeconds {limit}"
    )


def startup_deadline(record: JobRecord, policy: RunPolicy, now: datetime, default_s: int) -> str | None:
    """Pure: the pods created at ``record.created_at`` are not all running with a READY agent
    after ``startupDeadlineSeconds`` (``default_s`` when the job sets none)."""
    limit = policy.startup_deadline_seconds or default_s
    waited = (now - record.created_at).total_seconds()
    if waited <= limit:
        return None
    field = (
        "runPolicy.startupDeadlineSeconds"
        if policy.startup_deadline_seconds
        else "the default startup deadline"
    )
    return (
        f"StartupDeadlineExceeded: the agents were not all ready {int(waited)} s after their pods were "
        f"created, beyond {field} {limit}"
    )


def fault_deadline(record: JobRecord, policy: RunPolicy, now: datetime) -> str | None:
    """Pure: a fault has kept the job from training longer than ``faultDeadlineSeconds`` (a full
    restart whose new pods do not come up)."""
    limit = policy.fault_deadline_seconds
    if limit is None or not record.recovery:
        return None
    fault_at = datetime.fromisoformat(record.recovery["fault_at"])
    took = (now - fault_at).total_seconds()
    if took <= limit:
        return None
    return (
        f"FaultDeadlineExceeded: the job has been in a fault {int(took)} s, beyond "
        f"runPolicy.faultDeadlineSeconds {limit}"
    )


def ttl_due(policy: RunPolicy, completed_at: datetime | None, now: datetime) -> bool:
    """Pure: a finished job's object is to be deleted: ``ttlSecondsAfterFinished`` set (not -1,
    which keeps it) and passed since it finished."""
    ttl = policy.ttl_seconds_after_finished
    if ttl is None or ttl < 0 or completed_at is None:
        return False
    return now - completed_at >= timedelta(seconds=ttl)
