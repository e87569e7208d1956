"""What the ``supervise_job`` state machine and its Lambda steps hand each other: the execution's
input (``SupervisedJob``, in ``StepInput``) and each step's answer (``StepResult``, which the
ASL's Choice states branch on), with the remediation a step carried out for the handler's metrics;
and what a poll round says about the job (``RoundVerdict``), which Poll and Remediate act on.

The steps themselves are in ``services/supervisor/``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from hyperpod_control.models.job_faults import JobFault
from hyperpod_control.models.tasks import TaskModel


class SupervisedJob(TaskModel):
    """Which job, and which execution segment of it (the execution's input)."""

    cluster_arn: str
    namespace: str
    name: str
    uid: str
    generation: int = 1
    segment: int = Field(default=0, ge=0)


class StepInput(TaskModel):
    """What a step gets: the job, and what the state machine adds for some steps (the execution
    and state machine for Admit and NextSegment, the task token for Arm, the reason or the caught
    error for Fail)."""

    job: SupervisedJob
    execution: str | None = None
    state_machine: str | None = None
    token: str | None = None
    reason: str | None = None
    error: dict[str, Any] | None = None


#: The longest reason a step answers: it travels in the execution's state (Step Functions caps a
#: state at 256 KiB); reasons name at most ``LISTED`` pods, this bounds whatever else grows.
REASON_LIMIT = 4000


class RemediationOutcome(TaskModel):
    """What a remediation did, as plain data for the handler's metrics (observability.py): the
    action, the kind of the fault it answered, and how long training stood still (``recovery_ms``,
    None until training runs again: a refusal, or a full restart that waits for its new pods)."""

    action: str
    fault: str
    recovery_ms: int | None = None
    #: False where a step reports the end of a remediation decided by an earlier step (a full
    #: restart's StartAgents), so that each decision is counted once.
    decided: bool = True


class StepResult(TaskModel):
    """Every step answers ``next`` (the ASL Choice branches on it) and, when it matters, why."""

    next: str
    reason: str | None = None
    poll_seconds: int | None = None
    segment_due: bool = False
    #: For the handler's metrics only: never in the execution's state (``dump`` leaves it out).
    remediation: RemediationOutcome | None = Field(default=None, exclude=True)

    @field_validator("reason")
    @classmethod
    def _bounded(cls, reason: str | None) -> str | None:
        if reason is None or len(reason) <= REASON_LIMIT:
            return reason
        # its end kept too: a listed reason ends with how many more there were
        return f"{reason[: REASON_LIMIT - 160]} ... {reason[-100:]} ({len(reason)} characters in all)"

    def dump(self) -> dict:
        # Every key present, None included: the ASL's ResultSelector reads each by path.
        return self.model_dump(mode="json", by_alias=True)


class RoundVerdict(TaskModel):
    """What one poll round says about the job (``services/supervision.judge_round``): it runs, it
    completed, it has faults (each named), or it is gone."""

    next: Literal["running", "completed", "fault", "gone"]
    reason: str | None = None
    faulty_pods: list[str] = Field(default_factory=list)
    faults: list[JobFault] = Field(default_factory=list)
    completed: int = 0
