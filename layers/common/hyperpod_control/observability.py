"""Powertools Logger, Tracer and Metrics shared by every handler.

Service name, log level, metrics namespace and tracing come from the POWERTOOLS_* variables that
template.yaml's Globals set, so one import gives every function the same setup.

Tracing. Every function runs with Lambda's active tracing (template.yaml ``Tracing: Active``):
Lambda records each invocation's segment (Initialization on a cold start, Invocation, Overhead)
without any SDK in the function, and botocore forwards the trace header (``_X_AMZN_TRACE_ID``) on
every AWS call, so a fault's trace still runs from EventBridge through the function into Step
Functions. The X-Ray SDK adds subsegments inside the function (the handler, each AWS and
Kubernetes call) but costs about 0.6 s of import on every cold start, most of the fault path's
budget; so ``tracer`` is Powertools' ``Tracer`` only where ``XRAY_SUBSEGMENTS`` is true (the
template's ``XRaySubsegments`` parameter, or one function's environment), built here at import so
that provisioned concurrency pays for it ahead of the first event. Elsewhere it is
``SegmentlessTracer``: the same decorators and calls, which do what Powertools' Tracer does when
tracing is disabled, and the SDK is never imported.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import EphemeralMetrics, MetricUnit

from hyperpod_control.settings import (
    powertools_metrics_namespace,
    powertools_service_name,
    xray_subsegments_enabled,
)


class SegmentlessTracer:
    """Powertools' ``Tracer`` surface without the X-Ray SDK: what ``Tracer`` does when tracing is
    disabled. Handlers keep ``@tracer.capture_lambda_handler``, ``@tracer.capture_method`` and
    ``tracer.put_annotation``; Lambda's active tracing still records each invocation."""

    disabled = True

    def capture_lambda_handler(
        self,
        lambda_handler: Callable[..., Any] | None = None,
        capture_response: bool | None = None,
        capture_error: bool | None = None,
    ) -> Any:
        if lambda_handler is None:  # used with arguments: @tracer.capture_lambda_handler(...)
            return functools.partial(self.capture_lambda_handler)
        return lambda_handler

    def capture_method(
        self,
        method: Callable[..., Any] | None = None,
        capture_response: bool | None = None,
        capture_error: bool | None = None,
    ) -> Any:
        if method is None:
            return functools.partial(self.capture_method)
        return method

    def put_annotation(self, key: str, value: Any) -> None:
        return None

    def put_metadata(self, key: str, value: Any, namespace: str | None = None) -> None:
        return None


def _tracer() -> Any:
    if xray_subsegments_enabled():
        from aws_lambda_powertools import Tracer  # imports and patches the X-Ray SDK

        return Tracer()
    return SegmentlessTracer()


#: The template's MetricsNamespace default and service name. The variables the template sets win;
#: without them (a process that imports this module before a function's environment is set, as a
#: test run that collects every module first does) metrics would be flushed without a namespace
#: and refused, and the logger named "service_undefined".
DEFAULT_METRICS_NAMESPACE = "HyperPodControlPlane"
DEFAULT_SERVICE = "hyperpod-control-plane"


def service_name() -> str:
    return powertools_service_name() or DEFAULT_SERVICE


logger = Logger(service=service_name())
tracer = _tracer()


def metrics_namespace() -> str:
    return powertools_metrics_namespace() or DEFAULT_METRICS_NAMESPACE


metrics = Metrics(namespace=metrics_namespace(), service=service_name())


def emit_remediation(cluster_arn: str, outcome: Any) -> None:
    """A remediation's metrics (``models.supervisor.RemediationOutcome``), by cluster, action and
    fault kind: ``Remediations`` (Count) once per decision (action ``fail``: refused), and
    ``TimeToRecover`` (Milliseconds, fault to training running again) once training runs again.

    Dimensions: ``ClusterArn`` (a handful per account), ``Action`` (five values) and ``FaultKind``
    (five): bounded. Not the job: every job is a new name, and each name would be a new metric
    (billed per metric, and unbounded); the job is in the log line and the history instead.

    Its own metric set, flushed at once: these dimensions must not apply to the handler's other
    metrics, and the set is printed through the EMF provider's ``print`` as ``metrics``' is."""
    emf = EphemeralMetrics(namespace=metrics_namespace(), service=service_name())
    emf.add_dimension(name="ClusterArn", value=cluster_arn)
    emf.add_dimension(name="Action", value=outcome.action)
    emf.add_dimension(name="FaultKind", value=outcome.fault)
    if outcome.decided:
        emf.add_metric(name="Remediations", unit=MetricUnit.Count, value=1)
    if outcome.recovery_ms is not None:
        emf.add_metric(name="TimeToRecover", unit=MetricUnit.Milliseconds, value=outcome.recovery_ms)
    emf.flush_metrics()


def emit_jobs_by_phase(cluster_arn: str, phases: dict[str, int]) -> None:
    """``Jobs`` (Count) by ``ClusterArn`` and ``Phase`` (six values): how many live jobs each phase
    holds, every phase each run (a gauge: read its Maximum or Average per period, not its Sum, as
    ReconcileJobs runs every minute and on job events). One metric set per phase: the phase is a
    dimension, and a set's dimensions hold for all its metrics."""
    for phase, count in sorted(phases.items()):
        emf = EphemeralMetrics(namespace=metrics_namespace(), service=service_name())
        emf.add_dimension(name="ClusterArn", value=cluster_arn)
        emf.add_dimension(name="Phase", value=phase)
        emf.add_metric(name="Jobs", unit=MetricUnit.Count, value=count)
        emf.flush_metrics()


def emit_step_duration(cluster_arn: str, step: str, milliseconds: float) -> None:
    """``SupervisorStepDuration`` (Milliseconds) by ``ClusterArn`` and ``Step`` (the supervise-job
    workflow's steps, a dozen names): ``Step=poll`` is one supervisor round (every agent asked,
    the round judged), the number that grows with a job's size."""
    emf = EphemeralMetrics(namespace=metrics_namespace(), service=service_name())
    emf.add_dimension(name="ClusterArn", value=cluster_arn)
    emf.add_dimension(name="Step", value=step)
    emf.add_metric(name="SupervisorStepDuration", unit=MetricUnit.Milliseconds, value=milliseconds)
    emf.flush_metrics()


def emit_node_actions(cluster_arn: str, actions: list[str]) -> None:
    """``NodeActions`` (Count) by ``ClusterArn`` and ``Action``: one per thing node_health did to a
    node (``cordon``, ``uncordon``, ``taint``, ``untaint``, ``label=<HyperPod's health value>``,
    ``node-not-in-kubernetes``, and a requested repair as ``repair:<Reboot|Replace>``): bounded.
    The node is no dimension: instances come and go. Nothing is emitted when nothing was done."""
    for action in sorted(set(actions)):
        emf = EphemeralMetrics(namespace=metrics_namespace(), service=service_name())
        emf.add_dimension(name="ClusterArn", value=cluster_arn)
        emf.add_dimension(name="Action", value=action)
        emf.add_metric(name="NodeActions", unit=MetricUnit.Count, value=actions.count(action))
        emf.flush_metrics()


__all__ = [
    "SegmentlessTracer",
    "emit_jobs_by_phase",
    "emit_node_actions",
    "emit_remediation",
    "emit_step_duration",
    "logger",
    "metrics",
    "tracer",
    "xray_subsegments_enabled",
]
