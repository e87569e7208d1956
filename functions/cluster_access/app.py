"""EnsureAccess / RemoveAccess task: the control plane's access entries and its narrow RBAC."""

from aws_lambda_powertools.utilities.typing import LambdaContext

from hyperpod_control.adapters.aws import get_client
from hyperpod_control.adapters.eks import EksAdapter
from hyperpod_control.adapters.kube import KubeAdapter
from hyperpod_control.models.install import ClusterActionInput
from hyperpod_control.observability import logger, tracer
from hyperpod_control.services import install
from hyperpod_control.services.workflow_lock import locked_step_input


@logger.inject_lambda_context(log_event=True)
@tracer.capture_lambda_handler
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    request = locked_step_input(ClusterActionInput, event)
    eks = EksAdapter()
    principals = install.control_plane_principals(install.kubernetes_functions(), get_client("lambda"))
    me = install.canonical_principal(get_client("sts").get_caller_identity()["Arn"])
    with (
        install.installer_admin(request.cluster, me, eks, keep=request.action != "remove"),
        KubeAdapter(request.cluster.eks_cluster_name, eks=eks) as kube,
    ):
        if request.action == "remove":
            return install.remove_access(request.cluster, principals, eks, kube).dump()
        return install.ensure_access(request.cluster, principals, eks, kube).dump()
