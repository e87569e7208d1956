"""supervise_job's steps (services/supervisor/): one function, the step named in the payload,
so one role and one EKS access entry serve the whole workflow."""

import time

from aws_lambda_powertools.utilities.typing import LambdaContext

from hyperpod_control import wiring
from hyperpod_control.adapters.aws import prewarm_when_provisioned
from hyperpod_control.deadline import Deadline
from hyperpod_control.exceptions import InvalidInputError
from hyperpod_control.models.supervisor import StepInput
from hyperpod_control.models.validation import parse_input
from hyperpod_control.observability import emit_remediation, emit_step_duration, logger, tracer
from hyperpod_control.services.supervisor import STEPS, open_supervisor

# Only under provisioned concurrency (FaultPathProvisionedConcurrency): what the first step needs.
prewarm_when_provisioned("dynamodb", "stepfunctions", "eks", kube=True)


@logger.inject_lambda_context
@tracer.capture_lambda_handler
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    step = event.get("step")
    if step not in STEPS:
        raise InvalidInputError(f"step: unknown step {step!r}", remedy=f"use one of {', '.join(STEPS)}")
    request = parse_input(StepInput, {k: v for k, v in event.items() if k != "step"})
    store = wiring.store()
    operator = store.get_operator(request.job.cluster_arn)
    if operator is None:
        raise InvalidInputError(
            f"job.clusterArn: no registered cluster {request.job.cluster_arn}",
            remedy="register the cluster and install the serverless operator first.",
        )
    # Every call the step makes is bounded by what is left of this invocation (deadline.py).
    sup = open_supervisor(operator, store, deadline=Deadline.of(context))
    started = time.perf_counter()
    with sup.kube:
        result = STEPS[step](request, sup)
    emit_step_duration(request.job.cluster_arn, step, (time.perf_counter() - started) * 1000)
    logger.info(
        "supervise step",
        extra={"job": f"{request.job.namespace}/{request.job.name}", "step": step, **result.dump()},
    )
    if result.remediation is not None:
        emit_remediation(request.job.cluster_arn, result.remediation)
    return result.dump()
