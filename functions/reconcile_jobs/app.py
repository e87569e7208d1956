"""reconcile_jobs: every minute (EventBridge Scheduler) and on job events, one supervise_job
execution per job of each serverless cluster, job records for addon clusters, deleted jobs
cleaned up (services/reconcile.py)."""

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from hyperpod_control import wiring
from hyperpod_control.adapters.stepfunctions import StepFunctionsAdapter
from hyperpod_control.observability import emit_jobs_by_phase, logger, metrics, tracer
from hyperpod_control.services.reconcile import reconcile
from hyperpod_control.services.supervisor import open_supervisor
from hyperpod_control.settings import supervise_job_state_machine_arn


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    store = wiring.store()
    report = reconcile(
        store,
        StepFunctionsAdapter(),
        supervise_job_state_machine_arn(),
        lambda operator: open_supervisor(operator, store),
    )
    metrics.add_metric(name="JobsSeen", unit=MetricUnit.Count, value=sum(c.jobs for c in report.clusters))
    for cluster in report.clusters:
        logger.info("reconciled", extra=cluster.dump())
        metrics.add_metric(name="JobExecutionsStarted", unit=MetricUnit.Count, value=len(cluster.started))
        metrics.add_metric(name="JobExecutionsResumed", unit=MetricUnit.Count, value=len(cluster.resumed))
        if cluster.phases:  # none when the cluster could not be read
            emit_jobs_by_phase(cluster.cluster_arn, cluster.phases)
        if cluster.error:
            logger.error(
                "cluster not reconciled", extra={"cluster": cluster.cluster_arn, "error": cluster.error}
            )
    return report.dump()
