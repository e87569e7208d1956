"""RecordFailure task: every workflow's Catch lands here, so the failure is kept with its reason.

Returns ``{"error": ..., "cause": ...}`` for the Fail state that follows; never raises for a
missing cluster ARN (the failure may have happened before the ARN was known).
"""

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from hyperpod_control import wiring
from hyperpod_control.models.tasks import RecordFailureInput
from hyperpod_control.models.validation import parse_input
from hyperpod_control.observability import logger, metrics, tracer
from hyperpod_control.services import failures


@logger.inject_lambda_context(log_event=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    request = parse_input(RecordFailureInput, event)
    outcome = failures.record_failure(request, wiring.store())
    metrics.add_metric(name="WorkflowFailures", unit=MetricUnit.Count, value=1)
    logger.warning("workflow failed", extra=outcome.model_dump())
    return outcome.dump()
