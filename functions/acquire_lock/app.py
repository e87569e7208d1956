"""AcquireLock task: validate the request, refuse a second operator, take the per-cluster lock."""

from aws_lambda_powertools.utilities.typing import LambdaContext

from hyperpod_control import wiring
from hyperpod_control.adapters.eks import EksAdapter
from hyperpod_control.adapters.stepfunctions import StepFunctionsAdapter
from hyperpod_control.models.install import AcquireLockInput
from hyperpod_control.models.validation import parse_input
from hyperpod_control.observability import logger, tracer
from hyperpod_control.services import install


@logger.inject_lambda_context(log_event=True)
@tracer.capture_lambda_handler
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    request = parse_input(AcquireLockInput, event)
    outcome = install.acquire_lock(request, wiring.store(), EksAdapter(), StepFunctionsAdapter())
    if outcome.taken_over_from:
        logger.warning(
            "cluster lock taken over from an execution that ended without releasing it",
            extra={"cluster": request.cluster.cluster_name, "previousOwner": outcome.taken_over_from},
        )
    return outcome.dump()
