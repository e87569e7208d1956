"""The serverless supervisor of one HyperPodPyTorchJob: the steps of the ``supervise_job`` state
machine (Admit, CreatePods, CheckAgents, StartAgents, Arm, Poll, Remediate, Complete, Fail,
Cleanup, NextSegment), by name in ``STEPS``.

Each step reads the job (Kubernetes) and its JOB item (DynamoDB), decides with the pure functions
of ``services/supervision/`` and ``services/remediation.py``, acts, and writes the JOB item
conditionally on the version it read: a concurrent writer (node_health adding a fault, a second
segment) makes the write fail with ``VersionConflictError`` and Step Functions runs the step again
on fresh state. Steps are idempotent for the same reason: a retried CreatePods finds the pods it
made, a retried Complete finds the job completed.

The execution is the only writer to Kubernetes for its job. Pods are named ``<job>-<index>``,
labelled ``HPJob=<job>`` (what ``hyp list-pods`` selects) and the job's uid, and owned by the job,
so deleting the job lets Kubernetes' garbage collector remove them even if we are gone.

The package's modules, along the job's life: ``context`` (what the steps act through), ``access``
(reading and writing the job, its item and its pods; one round observed and judged),
``reporting`` (status, Events, history), ``pods`` (pods created, agents stopped), ``start``,
``suspend``, ``monitor``, ``scaling`` (an elastic job's growth), ``recovery`` (Remediate) and
``finish``. The execution's input and the steps' answers are ``models/supervisor.py``.
"""

from __future__ import annotations

from collections.abc import Callable

from hyperpod_control.models.supervisor import StepInput, StepResult
from hyperpod_control.services.supervisor.access import new_job_record
from hyperpod_control.services.supervisor.context import Supervisor, SupervisorConfig, open_supervisor
from hyperpod_control.services.supervisor.finish import (
    cleanup,
    complete,
    delete_job_resources,
    expire_finished_job,
    fail,
    next_segment,
)
from hyperpod_control.services.supervisor.monitor import arm, poll
from hyperpod_control.services.supervisor.recovery import remediate
from hyperpod_control.services.supervisor.reporting import EVENT_SOURCE_COMPONENT
from hyperpod_control.services.supervisor.start import admit, check_agents, create_pods, start_agents

STEPS: dict[str, Callable[[StepInput, Supervisor], StepResult]] = {
    "admit": admit,
    "create_pods": create_pods,
    "check_agents": check_agents,
    "start_agents": start_agents,
    "arm": arm,
    "poll": poll,
    "complete": complete,
    "fail": fail,
    "cleanup": cleanup,
    "next_segment": next_segment,
    "remediate": remediate,
}

__all__ = [
    "EVENT_SOURCE_COMPONENT",
    "STEPS",
    "Supervisor",
    "SupervisorConfig",
    "admit",
    "arm",
    "check_agents",
    "cleanup",
    "complete",
    "create_pods",
    "delete_job_resources",
    "expire_finished_job",
    "fail",
    "new_job_record",
    "next_segment",
    "open_supervisor",
    "poll",
    "remediate",
    "start_agents",
]
