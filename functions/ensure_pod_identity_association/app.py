"""EnsurePodIdentityAssociation task: aws-hyperpod/hp-training-operator-controller-manager -> role,
standalone (never inline in the add-on call)."""

from aws_lambda_powertools.utilities.typing import LambdaContext

from hyperpod_control.adapters.eks import EksAdapter
from hyperpod_control.models.install import EnsureAssociationInput
from hyperpod_control.observability import logger, tracer
from hyperpod_control.services import install
from hyperpod_control.services.workflow_lock import locked_step_input


@logger.inject_lambda_context(log_event=True)
@tracer.capture_lambda_handler
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    request = locked_step_input(EnsureAssociationInput, event)
    return install.ensure_pod_identity_association(request, EksAdapter()).dump()
