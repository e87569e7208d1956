"""Recording a workflow's failure: the defined end state every Catch leads to."""

from __future__ import annotations

import json

from hyperpod_control.adapters.store import Store
from hyperpod_control.models.records import utcnow
from hyperpod_control.models.tasks import RecordFailureInput, TaskModel


class FailureOutcome(TaskModel):
    step: str
    error: str
    cause: str


def summarise(request: RecordFailureInput) -> FailureOutcome:
    """Pure: the error name and a one-line cause from Step Functions' ``{Error, Cause}``."""
    error = str(request.error.get("Error", "UnknownError"))
    raw = request.error.get("Cause", "")
    cause = raw
    try:
        parsed = json.loads(raw) if isinstance(raw, str) and raw.startswith("{") else None
    except ValueError:
        parsed = None
    if isinstance(parsed, dict):
        cause = parsed.get("errorMessage") or parsed.get("message") or raw
    return FailureOutcome(step=request.step, error=error, cause=str(cause)[:1000])


def record_failure(request: RecordFailureInput, store: Store) -> FailureOutcome:
    """Keep the reason on the cluster's OPERATOR item, if it has one; the status stays as it was,
    since a failed workflow (a refused second registration, say) leaves the operator unchanged."""
    outcome = summarise(request)
    cluster_arn = request.cluster_arn()
    existing = store.get_operator(cluster_arn) if cluster_arn else None
    if existing is not None:
        store.put(
            existing.model_copy(
                update={
                    "reason": f"{outcome.step}: {outcome.error}: {outcome.cause}",
                    "last_workflow": request.execution,
                    "updated_at": utcnow(),
                }
            ),
            expected_version=existing.version,
        )
    return outcome
