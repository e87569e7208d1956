"""EnsureCRD / RemoveCRD task: the HyperPodPyTorchJob CRD the serverless operator serves."""

from aws_lambda_powertools.utilities.typing import LambdaContext

from hyperpod_control.adapters.kube import KubeAdapter
from hyperpod_control.models.install import ClusterActionInput
from hyperpod_control.observability import logger, tracer
from hyperpod_control.services import install
from hyperpod_control.services.workflow_lock import locked_step_input


@logger.inject_lambda_context(log_event=True)
@tracer.capture_lambda_handler
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    request = locked_step_input(ClusterActionInput, event)
    with KubeAdapter(request.cluster.eks_cluster_name) as kube:
        outcome = install.remove_crd(kube) if request.action == "remove" else install.ensure_crd(kube)
        return outcome.dump()
