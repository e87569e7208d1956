"""RecordInstall task: the OPERATOR item ACTIVE with mode, version, role and association; an
"Operator Installed" event on the stack's bus."""

from aws_lambda_powertools.utilities.typing import LambdaContext

from hyperpod_control import wiring
from hyperpod_control.models.install import RecordInstallInput
from hyperpod_control.observability import logger, tracer
from hyperpod_control.services import install
from hyperpod_control.services.workflow_lock import locked_step_input


@logger.inject_lambda_context(log_event=True)
@tracer.capture_lambda_handler
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    request = locked_step_input(RecordInstallInput, event)
    return install.record_install(request, wiring.store(), *wiring.event_bus()).dump()
