"""watch_jobs: every minute (EventBridge Scheduler), each active cluster's HyperPodPyTorchJobs
watched for most of the invocation, every job added or deleted put on the stack's bus as a
"HyperPodPyTorchJob Change" that starts reconcile_jobs at once (services/job_watch.py)."""

import uuid
from concurrent.futures import ThreadPoolExecutor

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from hyperpod_control import wiring
from hyperpod_control.deadline import Deadline
from hyperpod_control.models.records import OperatorStatus
from hyperpod_control.observability import logger, metrics, tracer
from hyperpod_control.services.job_watch import WatchReport, watch_cluster
from hyperpod_control.settings import get_settings, job_watch_seconds

#: Seconds kept back after the watches end: the handover writes and the answer.
MARGIN_S = 10


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    from hyperpod_control.adapters.events import EventsAdapter
    from hyperpod_control.adapters.kube import KubeAdapter

    deadline = Deadline.of(context)
    seconds = int(min(job_watch_seconds(), deadline.remaining() - MARGIN_S))
    store = wiring.store()
    bus = get_settings().event_bus_name
    events = EventsAdapter()
    holder = getattr(context, "aws_request_id", None) or uuid.uuid4().hex
    clusters = [o for o in store.list_operators() if o.status is OperatorStatus.ACTIVE and o.eks_cluster_name]
    if seconds < 1 or not clusters:
        return {"clusters": [], "seconds": max(seconds, 0)}

    def one(operator) -> WatchReport:
        try:
            with KubeAdapter(operator.eks_cluster_name, deadline=deadline) as kube:
                return watch_cluster(
                    operator, store=store, kube=kube, put=events.put, bus=bus, holder=holder, seconds=seconds
                )
        except Exception as exc:  # one cluster's failure must not stop the others' watches
            logger.exception("job watch failed", extra={"cluster": operator.cluster_arn})
            return WatchReport(
                cluster_arn=operator.cluster_arn, watched=False, note=f"{type(exc).__name__}: {exc}"
            )

    with ThreadPoolExecutor(max_workers=min(len(clusters), 16), thread_name_prefix="watch") as pool:
        reports = list(pool.map(one, clusters))
    changes = sum(len(r.changes) for r in reports)
    metrics.add_metric(name="JobChangesSeen", unit=MetricUnit.Count, value=changes)
    for report in reports:
        logger.info("job watch", extra=report.model_dump(mode="json"))
    return {"clusters": [r.model_dump(mode="json") for r in reports], "seconds": seconds}
