"""RecordUninstall task: the OPERATOR item back to REGISTERED; "Operator Uninstalled" on the bus."""

from aws_lambda_powertools.utilities.typing import LambdaContext

from hyperpod_control import wiring
from hyperpod_control.models.install import RecordUninstallInput
from hyperpod_control.observability import logger, tracer
from hyperpod_control.services import install
from hyperpod_control.services.workflow_lock import locked_step_input


@logger.inject_lambda_context(log_event=True)
@tracer.capture_lambda_handler
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    request = locked_step_input(RecordUninstallInput, event)
    return install.record_uninstall(request, wiring.store(), *wiring.event_bus()).dump()
