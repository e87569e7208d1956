"""CheckCluster task: is the HyperPod cluster there and InService? (register_cluster workflow)"""

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from hyperpod_control.adapters.sagemaker import SageMakerAdapter
from hyperpod_control.models.tasks import RegisterClusterInput
from hyperpod_control.models.validation import parse_input
from hyperpod_control.observability import logger, metrics, tracer
from hyperpod_control.services import registration


@logger.inject_lambda_context(log_event=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    request = parse_input(RegisterClusterInput, event)
    check = registration.check_cluster(request, SageMakerAdapter())
    metrics.add_metric(
        name="ClusterReady" if check.ready else "ClusterNotReady", unit=MetricUnit.Count, value=1
    )
    return check.dump()
