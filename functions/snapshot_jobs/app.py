"""SnapshotJobs task: every HyperPodPyTorchJob's manifest to the snapshot bucket, indexed in
DynamoDB, before an update that crosses 1.2.0."""

from aws_lambda_powertools.utilities.typing import LambdaContext

from hyperpod_control import wiring
from hyperpod_control.adapters.kube import KubeAdapter
from hyperpod_control.models.upgrade import JobsTaskInput
from hyperpod_control.observability import logger, tracer
from hyperpod_control.services import upgrade
from hyperpod_control.services.workflow_lock import locked_step_input


@logger.inject_lambda_context(log_event=True)
@tracer.capture_lambda_handler
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    request = locked_step_input(JobsTaskInput, event)
    bucket, store = wiring.snapshot_bucket(), wiring.store()
    with KubeAdapter(request.cluster.eks_cluster_name) as kube:
        return upgrade.snapshot_jobs(request, kube, bucket, store).dump()
