"""job_events: the agent's pushed FAULTED/COMPLETED and Kubernetes pod events (OOMKilled,
Evicted, Error, from kubernetes-event-exporter) wake their job (services/job_events.py), each on
the cluster it names and once the agent's /status or the Kubernetes API confirms the fault.

A malformed event is rejected before anything is written (not even an idempotency record): the
reason, naming the field, is logged and returned, and the handler does not raise, since a retry
would only carry the same bytes into the dead-letter queue. Powertools idempotency on the event id
drops redeliveries of a well-formed event; failures of DynamoDB, Kubernetes or Step Functions raise,
so Lambda retries the event and the dead-letter queue keeps it when the retries are spent.

Settings (environment, optional): AGENT_TRANSPORT (proxy: through the API server's pod proxy;
direct: pod IPs, for a function in the cluster's VPC), EVENT_RETENTION_DAYS (history TTL).
"""

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from hyperpod_control import wiring
from hyperpod_control.adapters.aws import prewarm_when_provisioned
from hyperpod_control.adapters.idempotency import idempotent_handler
from hyperpod_control.models.job_events import JobEventResult
from hyperpod_control.observability import logger, metrics, tracer
from hyperpod_control.services.job_events import (
    JobEventAdapters,
    MalformedJobEvent,
    handle_job_event,
    parse_job_event,
)
from hyperpod_control.settings import get_settings

# Only under provisioned concurrency (FaultPathProvisionedConcurrency): what the first event needs.
prewarm_when_provisioned("dynamodb", "stepfunctions", "eks", kube=True)


def _adapters() -> JobEventAdapters:
    from hyperpod_control.adapters.stepfunctions import StepFunctionsAdapter

    def kube_for(operator):
        from hyperpod_control.adapters.eks import EksAdapter
        from hyperpod_control.adapters.kube import KubeAdapter

        return KubeAdapter(operator.eks_cluster_name or "", eks=EksAdapter())

    return JobEventAdapters(
        store=wiring.store(),
        sfn=StepFunctionsAdapter(),
        kube_for=kube_for,
        agents_for=wiring.agent_client,
        history_ttl_seconds=get_settings().event_ttl_seconds,
    )


def _report(result: JobEventResult) -> dict:
    answer = result.dump()
    if result.action == "dropped":
        logger.warning(f"job event dropped: {result.dropped}", extra=answer)
        # unknown job; or a pod event tied to no single supervised cluster (unknown, ambiguous)
        name = "UnknownJobEvents" if result.dropped == "unknown job" else "UnmatchedClusterJobEvents"
        metrics.add_metric(name=name, unit=MetricUnit.Count, value=1)
    elif result.confirmed is False:
        logger.warning("job event: fault not confirmed", extra=answer)
    else:
        logger.info("job event", extra=answer)
    if result.recorded:
        metrics.add_metric(name="JobFaultsReported", unit=MetricUnit.Count, value=1)
    if result.woken:
        metrics.add_metric(name="JobsWoken", unit=MetricUnit.Count, value=1)
    if result.confirmed is False:
        name = "UnconfirmedAgentFaults" if result.source == "agent" else "UnconfirmedPodFaults"
        metrics.add_metric(name=name, unit=MetricUnit.Count, value=1)
    return answer


@idempotent_handler("job_events", event_key_jmespath="id")
def _handle(event: dict, context: LambdaContext) -> dict:
    return _report(handle_job_event(parse_job_event(event), _adapters()))


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    try:
        parse_job_event(event)
    except MalformedJobEvent as exc:
        event_id = str(event["id"]) if isinstance(event, dict) and event.get("id") else None
        logger.warning("malformed job event rejected", extra={"reason": exc.reason, "eventId": event_id})
        metrics.add_metric(name="MalformedJobEvents", unit=MetricUnit.Count, value=1)
        return JobEventResult(accepted=False, action="rejected", reason=exc.reason, event_id=event_id).dump()
    return _handle(event, context)
