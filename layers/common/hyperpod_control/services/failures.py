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


def readable(cause: str) -> str:
    """Pure: ``cause`` with every Lambda error object in it (``{"errorMessage": ...,
    "stackTrace": ...}``, whole or embedded by a States.Format) replaced by its message."""
    decoder = json.JSONDecoder()
    parts: list[str] = []
    i = 0
    while (start := cause.find("{", i)) != -1:
        try:
            value, end = decoder.raw_decode(cause, start)
        except ValueError:
            parts.append(cause[i : start + 1])
            i = start + 1
            continue
        parts.append(cause[i:start])
        if isinstance(value, dict) and (value.get("errorMessage") or value.get("message")):
            parts.append(str(value.get("errorMessage") or value.get("message")))
        else:
            parts.append(cause[start:end])
        i = end
    parts.append(cause[i:])
    return "".join(parts)


def summarise(request: RecordFailureInput) -> FailureOutcome:
    """Pure: the error name and a one-line cause from Step Functions' ``{Error, Cause}``."""
    error = str(request.error.get("Error", "UnknownError"))
    cause = readable(str(request.error.get("Cause", "")))
    return FailureOutcome(step=request.step, error=error, cause=cause[:1000])


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
