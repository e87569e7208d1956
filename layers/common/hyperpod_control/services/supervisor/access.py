"""What the supervisor's steps read and write: the job object (``read_job``, ``load_job``), its JOB
item (``job_record``, ``save``: conditional on the version read, so a concurrent writer makes the
step fail with ``VersionConflictError`` and run again on fresh state), its pods, and one look at
all of it judged (``observe_round``).
"""

from __future__ import annotations

from typing import Any

from hyperpod_control.exceptions import InvalidInputError
from hyperpod_control.models.agent import AgentAnswer
from hyperpod_control.models.job import HyperPodPytorchJob, parse_job
from hyperpod_control.models.names import JOB_GROUP, JOB_PLURAL, JOB_VERSION
from hyperpod_control.models.records import JobRecord, OperatorMode
from hyperpod_control.models.supervisor import RoundVerdict, StepResult, SupervisedJob
from hyperpod_control.services.supervision import (
    job_selector,
    judge_round,
    node_names,
    node_troubles,
    unreachable,
)
from hyperpod_control.services.supervisor.context import Supervisor

GONE = StepResult(next="gone", reason="the job was deleted")


def read_job(sup: Supervisor, ref: SupervisedJob) -> dict[str, Any] | None:
    """The job object, or None when it is gone (or replaced by another job of the same name)."""
    obj = sup.kube.custom_object(JOB_GROUP, JOB_VERSION, JOB_PLURAL, ref.namespace, ref.name)
    if obj is None or (obj.get("metadata") or {}).get("uid") != ref.uid:
        return None
    if (obj.get("metadata") or {}).get("deletionTimestamp"):
        return None
    return obj


def load_job(
    sup: Supervisor, ref: SupervisedJob
) -> tuple[JobRecord, HyperPodPytorchJob, dict[str, Any]] | None:
    """What most steps start with: the JOB item, the job (validated) and its raw object; None
    when the job was deleted."""
    record = job_record(sup, ref)
    obj = read_job(sup, ref)
    if obj is None:
        return None
    return record, parse_job(obj), obj


def lenient_job(obj: dict[str, Any] | None) -> HyperPodPytorchJob | None:
    """The job for finishing steps: types checked, rules not (an invalid job still gets its
    Failed condition), None when it is gone or unreadable."""
    if obj is None:
        return None
    try:
        return HyperPodPytorchJob.model_validate(obj)
    except ValueError:
        return None


def job_record(sup: Supervisor, ref: SupervisedJob) -> JobRecord:
    record = sup.store.get_job(ref.cluster_arn, ref.uid)
    if record is None:
        raise InvalidInputError(
            f"job {ref.namespace}/{ref.name} ({ref.uid}) has no JOB item.",
            remedy="start supervise_job through reconcile_jobs, which claims the job first.",
        )
    sup.fit_transport(record)
    return record


def save(sup: Supervisor, record: JobRecord, **update: Any) -> JobRecord:
    return sup.store.put(
        record.model_copy(update={**update, "updated_at": sup.now()}), expected_version=record.version
    )


def new_job_record(ref: SupervisedJob, mode: OperatorMode = OperatorMode.SERVERLESS) -> JobRecord:
    return JobRecord(
        cluster_arn=ref.cluster_arn,
        uid=ref.uid,
        namespace=ref.namespace,
        name=ref.name,
        generation=ref.generation,
        mode=mode,
    )


def pods_by_name(sup: Supervisor, record: JobRecord) -> dict[str, dict[str, Any]]:
    return {
        p["metadata"]["name"]: p for p in sup.kube.pods(record.namespace, label_selector=job_selector(record))
    }


def observe_round(
    sup: Supervisor, record: JobRecord
) -> tuple[dict[str, dict[str, Any]], dict[str, AgentAnswer], RoundVerdict]:
    """One look at the job and what it says (``judge_round``): its pods, their nodes' troubles, and
    the agents worth asking (not those of pods lost or on troubled nodes: their connections would
    hang, and the fault is known). The Poll and Remediate steps both judge the job this way."""
    pods = pods_by_name(sup, record)
    wanted = node_names(record, pods)

    def troubles_now() -> dict[str, str]:
        nodes = {n["metadata"]["name"]: n for n in sup.kube.nodes()} if wanted else {}
        return node_troubles(record, pods, {name: nodes.get(name) for name in wanted})

    troubles = troubles_now()
    skip = unreachable(record, pods, troubles)
    answers = sup.statuses(record, [s for s in record.pods if s.pod not in skip], pods)
    if any(a.silent for a in answers.values()):
        # Silence may be a node dying: its NotReady may have come while we waited on it.
        troubles = troubles_now()
    verdict = judge_round(
        record,
        pods,
        answers,
        sup.now(),
        troubles=troubles,
        silent_limit=sup.config.silent_rounds,
        straggler_s=sup.config.straggler_seconds,
    )
    return pods, answers, verdict
