"""The HyperPodPyTorchJob custom resource, in three modules:

- ``resource``: the typed models of the resource (spec, status, conditions) as the API server
  serves it, lenient about fields they do not know;
- ``validation``: what a job must satisfy before the control plane runs it (``parse_job``,
  ``job_problems``, ``validation_message``);
- ``errors``: ``JobSpecError``, whose lines name each problem's Kubernetes path and fix.

This package re-exports the names its callers import from ``hyperpod_control.models.job``.
"""

from __future__ import annotations

from hyperpod_control.models.job.errors import JobSpecError
from hyperpod_control.models.job.resource import (
    JOB_API_VERSION,
    JOB_KINDS,
    PRIORITY_LABEL,
    QUEUE_LABEL,
    CleanPodPolicy,
    ElasticPolicy,
    HyperPodPytorchJob,
    JobCondition,
    JobMeta,
    JobSpec,
    JobStatus,
    LogMonitoringRule,
    ReplicaSpec,
    RestartPolicy,
    RestartStatus,
    RunPolicy,
    set_condition,
)
from hyperpod_control.models.job.validation import job_problems, parse_job, validation_message

__all__ = [
    "JOB_API_VERSION",
    "JOB_KINDS",
    "PRIORITY_LABEL",
    "QUEUE_LABEL",
    "CleanPodPolicy",
    "ElasticPolicy",
    "HyperPodPytorchJob",
    "JobCondition",
    "JobMeta",
    "JobSpec",
    "JobSpecError",
    "JobStatus",
    "LogMonitoringRule",
    "ReplicaSpec",
    "RestartPolicy",
    "RestartStatus",
    "RunPolicy",
    "job_problems",
    "parse_job",
    "set_condition",
    "validation_message",
]
