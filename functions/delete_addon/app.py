"""DeleteAddon task: remove the training operator add-on (the wait loop then sees it gone)."""

from aws_lambda_powertools.utilities.typing import LambdaContext

from hyperpod_control.adapters.eks import EksAdapter
from hyperpod_control.models.install import ADDON_NAME, ClusterTaskInput
from hyperpod_control.observability import logger, tracer
from hyperpod_control.services.workflow_lock import locked_step_input


@logger.inject_lambda_context(log_event=True)
@tracer.capture_lambda_handler
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    request = locked_step_input(ClusterTaskInput, event)
    return {"deleted": EksAdapter().delete_addon(request.cluster.eks_cluster_name, ADDON_NAME)}
