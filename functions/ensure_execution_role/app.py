"""EnsureExecutionRole task: the operator's EKS Pod Identity role, created or validated."""

from aws_lambda_powertools.utilities.typing import LambdaContext

from hyperpod_control.adapters.eks import EksAdapter
from hyperpod_control.adapters.iam import IamAdapter
from hyperpod_control.models.install import EnsureRoleInput
from hyperpod_control.observability import logger, tracer
from hyperpod_control.services import install
from hyperpod_control.services.workflow_lock import locked_step_input


@logger.inject_lambda_context(log_event=True)
@tracer.capture_lambda_handler
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    request = locked_step_input(EnsureRoleInput, event)
    return install.ensure_execution_role(request, IamAdapter(), EksAdapter()).dump()
