"""RecordUpgrade task: the OPERATOR item at the new add-on version; an "Operator Upgraded" event."""

from aws_lambda_powertools.utilities.typing import LambdaContext

from hyperpod_control import wiring
from hyperpod_control.models.upgrade import RecordUpgradeInput
from hyperpod_control.observability import logger, tracer
from hyperpod_control.services import upgrade
from hyperpod_control.services.workflow_lock import locked_step_input


@logger.inject_lambda_context(log_event=True)
@tracer.capture_lambda_handler
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    request = locked_step_input(RecordUpgradeInput, event)
    return upgrade.record_upgrade(request, wiring.store(), *wiring.event_bus()).dump()
