"""PlanUninstall task: which operator the cluster runs, and what the install created for it."""

from aws_lambda_powertools.utilities.typing import LambdaContext

from hyperpod_control import wiring
from hyperpod_control.adapters.sagemaker import SageMakerAdapter
from hyperpod_control.models.install import PlanUninstallInput
from hyperpod_control.models.validation import parse_input
from hyperpod_control.observability import logger, tracer
from hyperpod_control.services import install


@logger.inject_lambda_context(log_event=True)
@tracer.capture_lambda_handler
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    request = parse_input(PlanUninstallInput, event)
    return install.plan_uninstall(request, SageMakerAdapter(), wiring.store()).dump()
