"""RecordUpgrade task: the OPERATOR item at the new add-on version; an "Operator Upgraded" event."""

from aws_lambda_powertools.utilities.typing import LambdaContext

from hyperpod_control.adapters.aws import get_client
from hyperpod_control.adapters.store import Store
from hyperpod_control.models.upgrade import RecordUpgradeInput
from hyperpod_control.observability import logger, tracer
from hyperpod_control.services import upgrade
from hyperpod_control.services.workflow_lock import locked_step_input
from hyperpod_control.settings import get_settings


@logger.inject_lambda_context(log_event=True)
@tracer.capture_lambda_handler
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    request, settings = locked_step_input(RecordUpgradeInput, event), get_settings()
    store = Store(settings.table_name)
    return upgrade.record_upgrade(request, store, get_client("events"), settings.event_bus_name).dump()
