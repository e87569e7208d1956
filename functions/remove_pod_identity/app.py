"""RemovePodIdentity task: the operator's association, and its role when the install created it."""

from aws_lambda_powertools.utilities.typing import LambdaContext

from hyperpod_control.adapters.eks import EksAdapter
from hyperpod_control.adapters.iam import IamAdapter
from hyperpod_control.models.install import RemoveIdentityInput
from hyperpod_control.observability import logger, tracer
from hyperpod_control.services import install
from hyperpod_control.services.workflow_lock import locked_step_input


@logger.inject_lambda_context(log_event=True)
@tracer.capture_lambda_handler
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    request = locked_step_input(RemoveIdentityInput, event)
    return install.remove_pod_identity(request, EksAdapter(), IamAdapter()).dump()
