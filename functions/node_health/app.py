"""node_health: a HyperPod node-health event updates the cluster's NODE item, once per change,
then acts on the node (services/node_health.py): cordon and taint it (both modes), label it for
the AWS operator (addon mode), ask SageMaker to repair it when configured to and the circuit
breaker allows; a Healthy event undoes the marks.

Powertools idempotency drops redeliveries of the same event id; the store's condition on status
and event time drops AWS's duplicates (same change, new id) and late, older events. A Kubernetes or
SageMaker failure raises ``NodeActionError`` (retryable) after recording what succeeded, so Lambda's
asynchronous retries run the event again (resuming it: the NODE item records it as unhandled) and
the dead-letter queue keeps it when they are spent.

Settings (environment, all optional): NODE_REPAIR_ENABLED (false), NODE_REPAIR_ALLOW_REPLACE
(false), NODE_REPAIR_BREAKER_MAX_NODES (3), NODE_REPAIR_BREAKER_WINDOW_SECONDS (3600).
"""

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from hyperpod_control.adapters.idempotency import idempotent_handler
from hyperpod_control.adapters.store import Store
from hyperpod_control.exceptions import NodeActionError
from hyperpod_control.models.events import NodeHealthEvent
from hyperpod_control.models.node_health import NodeRepairConfig
from hyperpod_control.models.validation import parse_input
from hyperpod_control.observability import logger, metrics, tracer
from hyperpod_control.services.node_health import (
    NodeHealthAdapters,
    NodeHealthResult,
    act_on_node_change,
    node_record_from_event,
)
from hyperpod_control.settings import get_settings


def _adapters(store: Store) -> NodeHealthAdapters:
    from hyperpod_control.adapters.sagemaker import SageMakerAdapter

    def kube(eks_cluster_name: str):
        from hyperpod_control.adapters.eks import EksAdapter
        from hyperpod_control.adapters.kube import KubeAdapter

        return KubeAdapter(eks_cluster_name, eks=EksAdapter())

    return NodeHealthAdapters(store=store, sagemaker=SageMakerAdapter(), kube_factory=kube)


def _report(node: str, result: NodeHealthResult) -> None:
    """Logs and metrics of what was done; the loud ones: a Replace (wipes volumes), the breaker."""
    plan, outcome = result.plan, result.outcome
    if plan is None:
        return
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
    if plan.wake_jobs:
        # serverless mode: jobs_to_wake is issue 9/10's follow-up and finds no job yet
        logger.info("serverless mode: no jobs woken (supervisor not built yet)", extra={"node": node})


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
@idempotent_handler("node_health", event_key_jmespath="id")
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    parsed = parse_input(NodeHealthEvent, event)
    config = NodeRepairConfig.from_env()  # read per event: cheap, and tests change it
    record = node_record_from_event(parsed)
    store = Store(get_settings().table_name)
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
            _report(record.node_name, partial)
        logger.error("node health actions failed; the event will be retried", extra={"error": str(exc)})
        metrics.add_metric(name="NodeActionFailures", unit=MetricUnit.Count, value=1)
        raise
    _report(record.node_name, result)
    return {"node": record.node_name, "healthStatus": record.health_status.value, "changed": changed}
