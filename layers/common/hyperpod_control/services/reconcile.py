"""reconcile_jobs: find every HyperPodPyTorchJob of every registered cluster and make sure each
has exactly what its cluster's mode says.

- ``serverless`` clusters: each job generation gets one ``supervise_job`` execution. The JOB item
  is claimed first with a conditional put, so two reconcilers (the schedule and a job event at
  once) cannot both start one; the execution's name ``<uid>-g<generation>-<segment>`` makes the
  start itself idempotent. An execution that died while its job still runs (a bug, a manual
  stop) is followed by the next segment, which resumes from the JOB item. A job deleted from the
  cluster has its execution stopped, its pods deleted and its JOB item removed; its history stays.
- ``addon`` clusters: AWS's operator runs the jobs. We only record each job's conditions and
  restart count on its JOB item, and never touch a pod. A node fault node_health left pending on
  the item is settled once the conditions show the operator recovered the job: one ``Recovered``
  history entry with the time it took, and the fault cleared from the item.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from hyperpod_control.adapters.stepfunctions import execution_arn, execution_name
from hyperpod_control.exceptions import ControlPlaneError, VersionConflictError
from hyperpod_control.models.install import JOB_GROUP, JOB_PLURAL, JOB_VERSION
from hyperpod_control.models.job import JobCondition, set_condition
from hyperpod_control.models.records import (
    JobEventRecord,
    JobPhase,
    JobRecord,
    OperatorMode,
    OperatorRecord,
    OperatorStatus,
    parse_time,
    utcnow,
)
from hyperpod_control.models.supervisor import SupervisedJob
from hyperpod_control.models.tasks import TaskModel
from hyperpod_control.services.node_jobs import HISTORY_TTL_SECONDS, addon_recovery_ms
from hyperpod_control.services.supervision import rfc3339
from hyperpod_control.services.supervisor import (
    Supervisor,
    delete_job_resources,
    expire_finished_job,
    new_job_record,
)

DEAD_STATUSES = ("FAILED", "TIMED_OUT", "ABORTED")


class ClusterReport(TaskModel):
    cluster_arn: str
    mode: str
    jobs: int = 0
    started: list[str] = Field(default_factory=list)
    resumed: list[str] = Field(default_factory=list)
    deleted: list[str] = Field(default_factory=list)
    observed: list[str] = Field(default_factory=list)
    #: addon mode: jobs whose pending fault AWS's operator recovered from in this run
    recovered: list[str] = Field(default_factory=list)
    #: serverless: running jobs whose spec edit got the SpecChangeRejected condition in this run
    refused: list[str] = Field(default_factory=list)
    #: serverless: finished jobs deleted in this run, their ttlSecondsAfterFinished passed
    expired: list[str] = Field(default_factory=list)
    #: the cluster's live jobs by their JOB item's phase at the start of this run (``jobs_by_phase``)
    phases: dict[str, int] = Field(default_factory=dict)
    error: str | None = None


class ReconcileReport(TaskModel):
    clusters: list[ClusterReport] = Field(default_factory=list)


def job_ref(obj: dict[str, Any], cluster_arn: str, segment: int = 0) -> SupervisedJob:
    meta = obj.get("metadata") or {}
    return SupervisedJob(
        cluster_arn=cluster_arn,
        namespace=meta.get("namespace") or "default",
        name=meta["name"],
        uid=meta["uid"],
        generation=int(meta.get("generation") or 1),
        segment=segment,
    )


SPEC_CHANGE_CONDITION = "SpecChangeRejected"


def spec_change_conditions(obj: dict[str, Any], record: JobRecord, now: str) -> list[dict[str, Any]] | None:
    """Pure (serverless): the job's conditions saying why an edit of its spec is not applied, or
    None when there is nothing to say (no edit, the job finished, or it is said already). The
    supervisor runs the generation it admitted until it ends; a changed spec would need another
    rank table, other pods, another budget: deleting and resubmitting the job is the way."""
    generation = int((obj.get("metadata") or {}).get("generation") or 1)
    if record.phase.finished or generation <= max(record.generation, record.honoured_generation):
        return None
    message = (
        f"spec changed to generation {generation} while generation {record.generation} runs: the "
        "serverless operator does not change a running job; delete the job and create it again "
        "to apply the change"
    )
    conditions = [JobCondition.model_validate(c) for c in (obj.get("status") or {}).get("conditions") or []]
    said = next((c for c in conditions if c.type == SPEC_CHANGE_CONDITION), None)
    if said is not None and said.status == "True" and said.message == message:
        return None
    updated = set_condition(conditions, SPEC_CHANGE_CONDITION, "True", "SpecChangeNotSupported", message, now)
    return [c.model_dump(mode="json", by_alias=True, exclude_none=True) for c in updated]


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


class AddonRecovery(BaseModel):
    """What the conditions of an addon job say about its pending faults (``addon_recovery``)."""

    # Schema built on first use, not at import (cold start: README, Performance).
    model_config = ConfigDict(defer_build=True)

    #: How long AWS's operator took to recover from the oldest pending fault.
    recovery_ms: int
    #: When the oldest pending fault happened; the recovery ended ``recovery_ms`` later.
    fault_at: datetime
    #: The pending faults that recovery settled (every one that happened before it ended).
    recovered: list[dict[str, Any]]
    #: The faults that happened after it: still pending, for a later recovery.
    remaining: list[dict[str, Any]]

    @property
    def recovered_at(self) -> datetime:
        return self.fault_at + timedelta(milliseconds=self.recovery_ms)


def _fault_time(fault: dict[str, Any]) -> datetime | None:
    return parse_time(fault.get("at"))


def addon_recovery(
    pending_faults: list[dict[str, Any]], conditions: list[dict[str, Any]]
) -> AddonRecovery | None:
    """Pure (addon mode): the recovery the job's ``conditions`` show from the oldest of its
    ``pending_faults``, or None while there is none (no fault pending, or not recovered yet).

    The recovery settles every fault that happened before it ended; a fault with no readable time
    goes with them (it could never be timed, and must not stay pending forever)."""
    timed = sorted(
        ((when, fault) for fault in pending_faults if (when := _fault_time(fault)) is not None),
        key=lambda pair: pair[0],
    )
    if not timed:
        return None
    fault_at = timed[0][0]
    ms = addon_recovery_ms(fault_at, conditions)
    if ms is None:
        return None
    ended = fault_at + timedelta(milliseconds=ms)
    recovered: list[dict[str, Any]] = []
    remaining: list[dict[str, Any]] = []
    for fault in pending_faults:
        when = _fault_time(fault)
        (remaining if when is not None and when > ended else recovered).append(fault)
    return AddonRecovery(recovery_ms=ms, fault_at=fault_at, recovered=recovered, remaining=remaining)


def recovered_event(record: JobRecord, recovery: AddonRecovery) -> JobEventRecord:
    """Pure: the ``Recovered`` history entry of ``recovery``. Its time (the recovery's end) and id
    (from the job and the oldest fault) are fixed, so a retried run writes the same entry, which the
    store refuses as existing, rather than a second one."""
    at = recovery.recovered_at
    oldest = recovery.recovered[0] if recovery.recovered else {}
    seed = f"{record.uid}|{recovery.fault_at.isoformat()}|{oldest.get('node')}|{oldest.get('pod')}"
    faults = [
        {key: fault.get(key) for key in ("at", "reason", "node", "pod") if key in fault}
        for fault in recovery.recovered
    ]
    return JobEventRecord(
        uid=record.uid,
        event_id=hashlib.sha256(seed.encode()).hexdigest()[:12],
        at=at,
        cluster_arn=record.cluster_arn,
        namespace=record.namespace,
        name=record.name,
        kind="Recovered",
        message=f"AWS's operator recovered the job in {recovery.recovery_ms} ms",
        details={"recovery_ms": recovery.recovery_ms, "faults": faults},
        expiration=int((at + timedelta(seconds=HISTORY_TTL_SECONDS)).timestamp()),
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


def jobs_by_phase(
    records: dict[str, JobRecord], live_uids: set[str], new: JobPhase = JobPhase.PENDING
) -> dict[str, int]:
    """Pure: how many live jobs are in each phase, every phase named (a phase emptied reads 0, not
    a gap); a job with no JOB item yet is in phase ``new`` (what this run's item will say)."""
    counts = dict.fromkeys((phase.value for phase in JobPhase), 0)
    for uid in live_uids:
        record = records.get(uid)
        counts[(record.phase if record else new).value] += 1
    return counts


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
            _observe(store, record, obj, operator.cluster_arn, report)
            continue
        if record is not None and record.phase.finished:
            if expire_finished_job(sup, record, obj):
                report.expired.append(record.name)
            continue
        if record is not None:
            _refuse_spec_change(sup, obj, record, report)
        _ensure_execution(obj, record, operator, store, sfn, state_machine_arn, report)
    new = JobPhase.OBSERVED if operator.mode is OperatorMode.ADDON else JobPhase.PENDING
    report.phases = jobs_by_phase(records, live_uids, new)
    if operator.mode is OperatorMode.SERVERLESS:
        for uid, record in records.items():
            if uid in live_uids or record.mode is not OperatorMode.SERVERLESS:
                continue
            if record.execution_arn:
                sfn.stop(record.execution_arn, f"job {record.namespace}/{record.name} was deleted")
            delete_job_resources(sup, record)
            report.deleted.append(record.name)


def _refuse_spec_change(
    sup: Supervisor, obj: dict[str, Any], record: JobRecord, report: ClusterReport
) -> None:
    conditions = spec_change_conditions(obj, record, rfc3339(sup.now()))
    if conditions is None:
        return
    meta = obj["metadata"]
    try:
        # Conditional on the object as listed: the supervisor may have changed the conditions since
        # (a resume sets Suspended False), and this whole-list write would put the old ones back.
        sup.kube.patch_custom_object_status(
            JOB_GROUP,
            JOB_VERSION,
            JOB_PLURAL,
            meta.get("namespace") or "default",
            meta["name"],
            {"conditions": conditions},
            resource_version=meta.get("resourceVersion"),
        )
    except VersionConflictError:
        return  # changed since the list: the next run decides on what it reads then
    report.refused.append(meta["name"])


def _observe(
    store: Any, record: JobRecord | None, obj: dict[str, Any], cluster_arn: str, report: ClusterReport
) -> None:
    """addon mode: write the job's observed item when it changed, settling the pending faults its
    conditions show recovered (the history entry first: it is idempotent, and the item's
    conditional put then clears the faults; a lost race leaves them for the next run)."""
    updated = observed_record(record, obj, cluster_arn)
    recovery = addon_recovery(updated.pending_faults, updated.conditions)
    if recovery is not None:
        updated = updated.model_copy(update={"pending_faults": recovery.remaining})
        with contextlib.suppress(VersionConflictError):  # written by an earlier run
            store.add_job_event(recovered_event(updated, recovery))
    if record is None or recovery is not None or _observed_changed(record, updated):
        report.observed.append(updated.name)
        try:
            store.put(updated, expected_version=record.version if record else None)
        except VersionConflictError:
            return  # another writer (node_health adding a fault) got there first: next run
        if recovery is not None:
            report.recovered.append(updated.name)


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
