"""node_health: a HyperPod node-health event updates the cluster's NODE item, once per change,
then acts on the node (services/node_health.py) and its jobs (services/node_jobs.py), by the cluster's
operator mode:

- both modes: cordon and taint an Unhealthy node, ask SageMaker to repair it when configured to and
  the circuit breaker allows; a Healthy event undoes the marks.
- ``serverless``: the fault is added to the JOB item of each job with a pod on the Unhealthy node
  (``pending_faults``) and the job's execution, waiting in its Monitor state, is woken with
  ``SendTaskSuccess``; the execution then remediates (a stale token is normal: its next poll reads
  the item).
- ``addon``: the node is also labelled for the AWS operator, which restarts the jobs itself; each
  affected job gets a ``NodeFault`` history entry (and the fault on its JOB item, woken never).

No pod is deleted or patched here, in either mode.

Powertools idempotency drops redeliveries of the same event id; the store's condition on status
and event time drops AWS's duplicates (same change, new id) and late, older events. A Kubernetes,
SageMaker, DynamoDB or Step Functions failure raises ``NodeActionError`` (retryable) after
recording what succeeded, so Lambda's asynchronous retries run the event again (resuming it: the
NODE item records it as unhandled; a job's fault is not added twice) and the dead-letter queue
keeps it when they are spent.

Settings (environment, all optional): NODE_REPAIR_ENABLED (false), NODE_REPAIR_ALLOW_REPLACE
(false), NODE_REPAIR_BREAKER_MAX_NODES (3), NODE_REPAIR_BREAKER_WINDOW_SECONDS (3600).
"""

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from hyperpod_control import wiring
from hyperpod_control.adapters.aws import prewarm_when_provisioned
from hyperpod_control.adapters.idempotency import idempotent_handler
from hyperpod_control.adapters.store import Store
from hyperpod_control.exceptions import NodeActionError
from hyperpod_control.models.events import NodeHealthEvent
from hyperpod_control.models.node_health import NodeHealthResult
from hyperpod_control.models.validation import parse_input
from hyperpod_control.observability import emit_node_actions, logger, metrics, tracer
from hyperpod_control.services.node_health import (
    NodeHealthAdapters,
    act_on_node_change,
    node_record_from_event,
)
from hyperpod_control.settings import node_repair_config

# Only under provisioned concurrency (FaultPathProvisionedConcurrency): what the first event needs.
prewarm_when_provisioned("dynamodb", "stepfunctions", "sagemaker", "eks", kube=True)


def _adapters(store: Store) -> NodeHealthAdapters:
    from hyperpod_control.adapters.sagemaker import SageMakerAdapter
    from hyperpod_control.adapters.stepfunctions import StepFunctionsAdapter

    def kube(eks_cluster_name: str):
        from hyperpod_control.adapters.eks import EksAdapter
        from hyperpod_control.adapters.kube import KubeAdapter

        return KubeAdapter(eks_cluster_name, eks=EksAdapter())

    # the clients are built on first use (AwsAdapter), not here
    return NodeHealthAdapters(
        store=store, sagemaker=SageMakerAdapter(), kube_factory=kube, sfn=StepFunctionsAdapter()
    )


def _report(cluster_arn: str, node: str, result: NodeHealthResult) -> None:
    """Logs and metrics of what was done; the loud ones: a Replace (wipes volumes), the breaker."""
    plan, outcome = result.plan, result.outcome
    if plan is None:
        return
    # A retry resuming a half-done attempt is not counted: its list holds the earlier attempt's
    # actions, counted when that attempt reported (what only the retry adds goes uncounted).
    if outcome is not None and not result.resumed:
        done = list(outcome.kube_actions or [])
        if outcome.repair_requested:
            done.append(f"repair:{outcome.repair_requested_action}")
        emit_node_actions(cluster_arn, done)
    if not plan.managed:
        logger.info("node health: cluster not managed", extra={"node": node, "note": plan.note})
        return
    repair = plan.repair
    details = {
        "node": node,
        "mode": plan.mode,
        "resumed": result.resumed,
        "kubeActions": outcome.kube_actions if outcome else None,
        "repairAction": repair.action,
        "repairRequested": bool(outcome and outcome.repair_requested),
        "repairSkippedReason": outcome.repair_skipped_reason if outcome else repair.skipped_reason,
    }
    logger.info("node health actions", extra=details)
    if outcome and outcome.repair_requested:
        metrics.add_metric(name="NodeRepairsRequested", unit=MetricUnit.Count, value=1)
    if repair.warning:
        logger.warning(
            "node replacement requested: data on the node is lost",
            extra={**details, "warning": repair.warning},
        )
        metrics.add_metric(name="NodeReplacementsRequested", unit=MetricUnit.Count, value=1)
    if repair.breaker_open:
        breaker = result.breaker
        logger.error(
            "node repair circuit breaker open: automatic repair stopped",
            extra={**details, "failedNodes": breaker.failed_nodes if breaker else None},
        )
        metrics.add_metric(name="NodeRepairBreakerOpen", unit=MetricUnit.Count, value=1)
    faults = [r.model_dump() for r in result.job_faults]
    if plan.wake_jobs:
        logger.info(
            "node health: jobs woken",
            extra={"node": node, "jobsWoken": result.jobs_woken, "jobFaults": faults},
        )
        metrics.add_metric(name="JobsWoken", unit=MetricUnit.Count, value=len(result.jobs_woken))
    elif plan.record_job_faults:
        logger.info(
            "node health: job faults recorded for the AWS operator", extra={"node": node, "jobFaults": faults}
        )
    for skipped in (r for r in result.job_faults if not r.recorded):
        logger.info(
            "node health: job skipped", extra={"node": node, "job": skipped.job, "note": skipped.note}
        )


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
@idempotent_handler("node_health", event_key_jmespath="id")
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    parsed = parse_input(NodeHealthEvent, event)
    summary = parsed.detail.HealthSummary
    if not summary.known:
        # A health value this version does not know: acting on a guess could cordon or repair a
        # node wrongly, and refusing would only retry it into the dead-letter queue.
        logger.warning(
            "node health event with an unknown HealthStatus: recorded, no action",
            extra={
                "instanceId": parsed.detail.InstanceId,
                "healthStatus": summary.HealthStatus,
                "event": event,
            },
        )
        metrics.add_metric(name="NodeHealthUnknown", unit=MetricUnit.Count, value=1)
        return {"node": parsed.detail.InstanceId, "healthStatus": summary.HealthStatus, "changed": False}
    config = node_repair_config()  # read per event: cheap, and tests change it
    record = node_record_from_event(parsed)
    store = wiring.store()
    changed = store.record_node_health(record)
    logger.info(
        "node health event",
        extra={"node": record.node_name, "status": record.health_status, "changed": changed},
    )
    metrics.add_metric(
        name="NodeHealthChanges" if changed else "NodeHealthDuplicates", unit=MetricUnit.Count, value=1
    )
    try:
        result = act_on_node_change(record, changed, _adapters(store), config)
    except NodeActionError as exc:
        partial = getattr(exc, "result", None)
        if partial is not None:
            _report(record.cluster_arn, record.node_name, partial)
        logger.error("node health actions failed; the event will be retried", extra={"error": str(exc)})
        metrics.add_metric(name="NodeActionFailures", unit=MetricUnit.Count, value=1)
        raise
    _report(record.cluster_arn, record.node_name, result)
    return {"node": record.node_name, "healthStatus": record.health_status.value, "changed": changed}
