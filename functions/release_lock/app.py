"""ReleaseLock task: give the cluster's lock back (every path of the workflow ends here)."""

from aws_lambda_powertools.utilities.typing import LambdaContext

from hyperpod_control import wiring
from hyperpod_control.models.install import ReleaseLockInput
from hyperpod_control.models.validation import parse_input
from hyperpod_control.observability import logger, tracer
from hyperpod_control.services import install


@logger.inject_lambda_context(log_event=True)
@tracer.capture_lambda_handler
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    request = parse_input(ReleaseLockInput, event)
    return install.release_lock(request, wiring.store()).dump()
