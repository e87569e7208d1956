"""node_health: a HyperPod node-health event updates the cluster's NODE item, once per change.

Powertools idempotency drops redeliveries of the same event id; the store's condition on status
and event time drops AWS's duplicates (same change, new id) and late, older events.
"""

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from hyperpod_control.adapters.idempotency import idempotent_handler
from hyperpod_control.adapters.store import Store
from hyperpod_control.models.events import NodeHealthEvent
from hyperpod_control.models.validation import parse_input
from hyperpod_control.observability import logger, metrics, tracer
from hyperpod_control.services.node_health import node_record_from_event
from hyperpod_control.settings import get_settings


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
@idempotent_handler("node_health", event_key_jmespath="id")
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    parsed = parse_input(NodeHealthEvent, event)
    record = node_record_from_event(parsed)
    changed = Store(get_settings().table_name).record_node_health(record)
    logger.info(
        "node health event",
        extra={"node": record.node_name, "status": record.health_status, "changed": changed},
    )
    metrics.add_metric(
        name="NodeHealthChanges" if changed else "NodeHealthDuplicates", unit=MetricUnit.Count, value=1
    )
    return {"node": record.node_name, "healthStatus": record.health_status.value, "changed": changed}
