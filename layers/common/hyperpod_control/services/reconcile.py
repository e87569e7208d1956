"""reconcile_jobs: find every HyperPodPyTorchJob of every registered cluster and make sure each
has exactly what its cluster's mode says.

- ``serverless`` clusters: each job generation gets one ``supervise_job`` execution. The JOB item
  is claimed first with a conditional put, so two reconcilers (the schedule and a job event at
  once) cannot both start one; the execution's name ``<uid>-g<generation>-<segment>`` makes the
  start itself idempotent. An execution that died while its job still runs (a bug, a manual
  stop) is followed by the next segment, which resumes from the JOB item. A job deleted from the
  cluster has its execution stopped, its pods deleted and its JOB item removed; its history stays.
- ``addon`` clusters: AWS's operator runs the jobs. We only record each job's conditions and
  restart count on its JOB item, and never touch a pod.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

from pydantic import Field

from hyperpod_control.adapters.stepfunctions import execution_arn, execution_name
from hyperpod_control.exceptions import ControlPlaneError, VersionConflictError
from hyperpod_control.models.install import JOB_GROUP, JOB_PLURAL, JOB_VERSION
from hyperpod_control.models.records import (
    JobPhase,
    JobRecord,
    OperatorMode,
    OperatorRecord,
    OperatorStatus,
    utcnow,
)
from hyperpod_control.models.tasks import TaskModel
from hyperpod_control.services.supervisor import JobRef, Supervisor, delete_job_resources, new_job_record

DEAD_STATUSES = ("FAILED", "TIMED_OUT", "ABORTED")


class ClusterReport(TaskModel):
    cluster_arn: str
    mode: str
    jobs: int = 0
    started: list[str] = Field(default_factory=list)
    resumed: list[str] = Field(default_factory=list)
    deleted: list[str] = Field(default_factory=list)
    observed: list[str] = Field(default_factory=list)
    error: str | None = None


class ReconcileReport(TaskModel):
    clusters: list[ClusterReport] = Field(default_factory=list)


def job_ref(obj: dict[str, Any], cluster_arn: str, segment: int = 0) -> JobRef:
    meta = obj.get("metadata") or {}
    return JobRef(
        cluster_arn=cluster_arn,
        namespace=meta.get("namespace") or "default",
        name=meta["name"],
        uid=meta["uid"],
        generation=int(meta.get("generation") or 1),
        segment=segment,
    )


def observed_record(existing: JobRecord | None, obj: dict[str, Any], cluster_arn: str) -> JobRecord:
    """Pure (addon mode): the JOB item of a job AWS's operator runs, from its status."""
    status = obj.get("status") or {}
    conditions = list(status.get("conditions") or [])
    ref = job_ref(obj, cluster_arn)
    base = existing or new_job_record(ref, OperatorMode.ADDON)
    last_true = [c for c in conditions if c.get("status") == "True"]
    phase = JobPhase.OBSERVED
    if last_true and last_true[-1].get("type") in ("Completed", "Succeeded"):
        phase = JobPhase.COMPLETED
    elif last_true and last_true[-1].get("type") == "Failed":
        phase = JobPhase.FAILED
    return base.model_copy(
        update={
            "mode": OperatorMode.ADDON,
            "phase": phase,
            "conditions": conditions,
            "restart_count": int(status.get("restartCount") or 0),
            "generation": ref.generation,
            "updated_at": utcnow(),
        }
    )


def reconcile(
    store: Any,
    sfn: Any,
    state_machine_arn: str,
    supervisor_for: Callable[[OperatorRecord], Supervisor],
) -> ReconcileReport:
    report = ReconcileReport()
    for operator in store.list_operators():
        if operator.status is not OperatorStatus.ACTIVE:
            continue
        cluster = ClusterReport(cluster_arn=operator.cluster_arn, mode=operator.mode.value)
        report.clusters.append(cluster)
        try:
            sup = supervisor_for(operator)
            with contextlib.closing(sup.kube):
                _reconcile_cluster(operator, sup, sfn, state_machine_arn, cluster)
        except ControlPlaneError as exc:
            # One unreachable cluster must not stop the others; the next run tries it again.
            cluster.error = str(exc)
    return report


def _reconcile_cluster(
    operator: OperatorRecord, sup: Supervisor, sfn: Any, state_machine_arn: str, report: ClusterReport
) -> None:
    store = sup.store
    jobs = sup.kube.custom_objects(JOB_GROUP, JOB_VERSION, JOB_PLURAL)
    records = {r.uid: r for r in store.list_jobs(operator.cluster_arn)}
    report.jobs = len(jobs)
    live_uids = set()
    for obj in jobs:
        meta = obj.get("metadata") or {}
        if not meta.get("uid") or meta.get("deletionTimestamp"):
            continue
        live_uids.add(meta["uid"])
        record = records.get(meta["uid"])
        if operator.mode is OperatorMode.ADDON:
            updated = observed_record(record, obj, operator.cluster_arn)
            if record is None or _observed_changed(record, updated):
                with contextlib.suppress(VersionConflictError):
                    store.put(updated, expected_version=record.version if record else None)
                report.observed.append(meta["name"])
            continue
        _ensure_execution(obj, record, operator, store, sfn, state_machine_arn, report)
    if operator.mode is OperatorMode.SERVERLESS:
        for uid, record in records.items():
            if uid in live_uids or record.mode is not OperatorMode.SERVERLESS:
                continue
            if record.execution_arn:
                sfn.stop(record.execution_arn, f"job {record.namespace}/{record.name} was deleted")
            delete_job_resources(sup, record)
            report.deleted.append(record.name)


def _observed_changed(old: JobRecord, new: JobRecord) -> bool:
    return (old.phase, old.conditions, old.restart_count) != (new.phase, new.conditions, new.restart_count)


def _ensure_execution(
    obj: dict[str, Any],
    record: JobRecord | None,
    operator: OperatorRecord,
    store: Any,
    sfn: Any,
    state_machine_arn: str,
    report: ClusterReport,
) -> None:
    ref = job_ref(obj, operator.cluster_arn)
    if record is None:
        try:
            record = store.put(new_job_record(ref), expected_version=None)
        except VersionConflictError:
            return  # another reconciler claimed it a moment ago and starts it
        sfn.start_execution(
            state_machine_arn, execution_name(ref.uid, ref.generation, 0), {"job": ref.dump()}
        )
        report.started.append(ref.name)
        return
    if record.phase.finished:
        return
    # The segment the JOB item names owns the job; its execution's ARN follows from its name
    # (record.execution_arn lags until that segment's Admit runs).
    name = execution_name(record.uid, record.generation, record.segment)
    status = sfn.status(execution_arn(state_machine_arn, name))
    if status is None:
        # Claimed, but the start was lost (the reconciler died in between): start it now.
        sfn.start_execution(
            state_machine_arn, name, {"job": ref.model_copy(update={"segment": record.segment}).dump()}
        )
        report.started.append(ref.name)
    elif status in DEAD_STATUSES or status == "SUCCEEDED":
        # The execution ended but the job did not: the next segment takes over from the JOB item.
        segment = record.segment + 1
        try:
            store.put(
                record.model_copy(update={"segment": segment, "task_token": None}),
                expected_version=record.version,
            )
        except VersionConflictError:
            return
        payload = {"job": ref.model_copy(update={"segment": segment}).dump()}
        sfn.start_execution(
            state_machine_arn, execution_name(record.uid, record.generation, segment), payload
        )
        report.resumed.append(ref.name)
