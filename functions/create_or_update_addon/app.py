"""CreateOrUpdateAddon task: the training operator add-on at the chosen version and configuration."""

from aws_lambda_powertools.utilities.typing import LambdaContext

from hyperpod_control.adapters.eks import EksAdapter
from hyperpod_control.models.install import AddonInput
from hyperpod_control.observability import logger, tracer
from hyperpod_control.services import install
from hyperpod_control.services.workflow_lock import locked_step_input


@logger.inject_lambda_context(log_event=True)
@tracer.capture_lambda_handler
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    request = locked_step_input(AddonInput, event)
    return install.create_or_update_addon(request, EksAdapter()).dump()
