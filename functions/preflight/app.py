"""Preflight task (install_operator's first step): check every prerequisite, report each result.

Returns the report (camelCase) when no error-severity check failed and every check could run;
otherwise raises PreflightFailedError listing each failed check with its resource and remedy
(PreflightUncheckedError when none failed but some could not run: AWS could not be called), which
the state machine's Catch records.
"""

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from hyperpod_control.exceptions import PreflightFailedError, PreflightUncheckedError
from hyperpod_control.models.preflight import PreflightInput
from hyperpod_control.models.validation import parse_input
from hyperpod_control.observability import logger, metrics, tracer
from hyperpod_control.services import preflight


@logger.inject_lambda_context(log_event=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    request = parse_input(PreflightInput, event)
    report = preflight.run_preflight(
        request, preflight.PreflightAdapters.default(), preflight.options_from_env()
    )
    logger.info("preflight results", extra={"report": report.dump()})
    metrics.add_metric(
        name="PreflightFailed" if not report.ok else "PreflightPassed", unit=MetricUnit.Count, value=1
    )
    if not report.ok:
        error = PreflightUncheckedError if not report.failures else PreflightFailedError
        raise error(
            preflight.failure_message(report),
            remedy="fix each check as its line says, then start the workflow again.",
        )
    return report.dump()
