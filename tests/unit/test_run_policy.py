"""The run policy's deadlines (services/run_policy.py) as plain data: each fails the job naming
its field, and ttlSecondsAfterFinished says when a finished job's object goes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from hyperpod_control.models.job import RunPolicy
from hyperpod_control.models.records import JobRecord
from hyperpod_control.services import run_policy

pytestmark = pytest.mark.unit

NOW = datetime(2026, 3, 4, 12, 0, 0, tzinfo=UTC)


def record(**update: Any) -> JobRecord:
    base = JobRecord(cluster_arn="arn:c", uid="u1", namespace="team-a", name="llama", nnodes=2)
    return base.model_copy(update=update)


def test_the_active_deadline_counts_from_the_start_and_names_the_field():
    started = record(started_at=NOW - timedelta(seconds=100))
    assert run_policy.active_deadline(started, RunPolicy(active_deadline_seconds=100), NOW) is None
    why = run_policy.active_deadline(started, RunPolicy(active_deadline_seconds=99), NOW)
    assert why and "runPolicy.activeDeadlineSeconds 99" in why
    assert run_policy.active_deadline(started, RunPolicy(), NOW) is None


def test_the_startup_deadline_names_the_field_or_the_default():
    creating = record(created_at=NOW - timedelta(seconds=61))
    why = run_policy.startup_deadline(creating, RunPolicy(startup_deadline_seconds=60), NOW, 1800)
    assert why and "runPolicy.startupDeadlineSeconds 60" in why
    assert run_policy.startup_deadline(creating, RunPolicy(), NOW, 1800) is None
    assert "default startup deadline 30" in (
        run_policy.startup_deadline(creating, RunPolicy(), NOW, 30) or ""
    )


def test_the_fault_deadline_counts_from_the_fault_of_a_restart_under_way():
    restarting = record(recovery={"fault_at": (NOW - timedelta(seconds=50)).isoformat()})
    why = run_policy.fault_deadline(restarting, RunPolicy(fault_deadline_seconds=40), NOW)
    assert why and "runPolicy.faultDeadlineSeconds 40" in why
    assert run_policy.fault_deadline(restarting, RunPolicy(fault_deadline_seconds=60), NOW) is None
    assert run_policy.fault_deadline(record(), RunPolicy(fault_deadline_seconds=1), NOW) is None


def test_ttl_after_finished():
    done = NOW - timedelta(seconds=30)
    assert run_policy.ttl_due(RunPolicy(ttl_seconds_after_finished=30), done, NOW)
    assert not run_policy.ttl_due(RunPolicy(ttl_seconds_after_finished=31), done, NOW)
    assert not run_policy.ttl_due(RunPolicy(ttl_seconds_after_finished=-1), done, NOW), "-1 keeps it"
    assert not run_policy.ttl_due(RunPolicy(), done, NOW)
    assert not run_policy.ttl_due(RunPolicy(ttl_seconds_after_finished=0), None, NOW)
