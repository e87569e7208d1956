"""RecordOperator task: write the cluster's OPERATOR item (mode, workflow), one operator only."""

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from hyperpod_control import wiring
from hyperpod_control.models.tasks import RecordOperatorInput
from hyperpod_control.models.validation import parse_input
from hyperpod_control.observability import logger, metrics, tracer
from hyperpod_control.services import registration


@logger.inject_lambda_context(log_event=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    request = parse_input(RecordOperatorInput, event)
    record = registration.record_operator(request, wiring.store())
    metrics.add_metric(name="ClustersRegistered", unit=MetricUnit.Count, value=1)
    return record.model_dump(mode="json", exclude_none=True)
