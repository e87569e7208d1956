"""PlanUpgrade task: the add-on's version change decided from live data (no-op, upgrade, downgrade,
draining downgrade), or refused with the reason. Changes nothing; hpctl upgrade --dry-run calls it."""

from aws_lambda_powertools.utilities.typing import LambdaContext

from hyperpod_control import wiring
from hyperpod_control.adapters.eks import EksAdapter
from hyperpod_control.adapters.kube import KubeAdapter
from hyperpod_control.adapters.sagemaker import SageMakerAdapter
from hyperpod_control.models.upgrade import UpgradeRequest
from hyperpod_control.models.validation import parse_input
from hyperpod_control.observability import logger, tracer
from hyperpod_control.services import upgrade


@logger.inject_lambda_context(log_event=True)
@tracer.capture_lambda_handler
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    request = parse_input(UpgradeRequest, event)
    eks = EksAdapter()
    store = wiring.store()
    plan = upgrade.plan_upgrade(
        request, SageMakerAdapter(), eks, store, lambda name: KubeAdapter(name, eks=eks)
    )
    return plan.dump()
