"""The jobs on a node HyperPod found Unhealthy: which of them have a pod there (found with the
field selector ``spec.nodeName``; a pod is never deleted or patched here, in either mode), and the
fault that means for each, by the cluster's operator mode:

- ``serverless`` mode (``wake_jobs_on_node``): each pod labelled ``HPJob`` and with the job uid
  label names its job's JOB item; the fault (kind ``node``, the pod, the node, the pod's rank) is
  appended to the item's ``pending_faults`` and the job's execution, waiting in its Monitor
  state, is woken with ``SendTaskSuccess`` (``services/faults.report_fault``: a fault already
  pending for the same pod and node is not added again, so a retried event neither duplicates it
  nor wakes twice). Jobs whose JOB item is missing or finished are skipped.
- ``addon`` mode (``record_addon_job_faults``): for each job with a pod on the node (label
  ``HPJob=<job>``) a ``NodeFault`` entry is written to the job's history and, where
  reconcile_jobs recorded the job, the fault is appended to its JOB item (no token: the AWS
  operator restarts the job itself). ``addon_recovery_ms`` reads how long the AWS operator took
  to recover from the job's conditions.

``services/node_health.py`` calls these once it has marked the node.
"""

from __future__ import annotations

import contextlib
import re
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from hyperpod_control.exceptions import ControlPlaneError, VersionConflictError
from hyperpod_control.models.job_faults import FaultReport, JobFault
from hyperpod_control.models.names import JOB_GROUP, JOB_LABEL, JOB_PLURAL, JOB_VERSION, UID_LABEL
from hyperpod_control.models.records import JobEventRecord, JobRecord, NodeRecord, aware, parse_time
from hyperpod_control.services.faults import report_fault


class JobPodsKube(Protocol):
    """The calls made on the cluster's Kubernetes API (``adapters.kube.KubeAdapter``): the pods on
    the node, and the job each belongs to. Only reads."""

    def pods(
        self, namespace: str | None = None, *, label_selector: str = "", field_selector: str = ""
    ) -> list[dict[str, Any]]: ...

    def custom_object(
        self, group: str, version: str, plural: str, namespace: str, name: str
    ) -> dict[str, Any] | None: ...


class JobFaultStore(Protocol):
    """The calls made on the store (``adapters.store.Store``): the JOB item (a fault appended
    conditionally on its version) and the job's history."""

    def get_job(self, cluster_arn: str, uid: str) -> JobRecord | None: ...

    def put(self, record: JobRecord, *, expected_version: int | None) -> JobRecord: ...

    def add_job_event(self, event: JobEventRecord) -> JobEventRecord: ...


class Waker(Protocol):
    """The call made on Step Functions (``adapters.stepfunctions.StepFunctionsAdapter``): an
    execution waiting on a task token woken (False when the token was no longer live)."""

    def wake(self, token: str, output: dict[str, Any]) -> bool: ...


#: How long a job's history entries are kept (as the supervisor's: 90 days).
HISTORY_TTL_SECONDS = 90 * 24 * 3600


_REMEDIATED = re.compile(r"remediated in (\d+) milliseconds", re.IGNORECASE)


@dataclass(frozen=True)
class PodOnNode:
    """A job's pod on the failed node (from the pod's labels)."""

    namespace: str
    pod: str
    job: str
    uid: str | None = None

    @property
    def job_key(self) -> str:
        return f"{self.namespace}/{self.job}"


def job_pods_on_node(pods: list[dict[str, Any]], node_name: str, *, need_uid: bool) -> list[PodOnNode]:
    """Pure: the pods of ``pods`` bound to ``node_name`` that belong to a HyperPodPyTorchJob: labelled
    ``HPJob`` (and, ``need_uid``, with the control plane's job uid label). Others are ignored."""
    found: list[PodOnNode] = []
    for pod in pods:
        meta = pod.get("metadata") or {}
        labels = meta.get("labels") or {}
        if (pod.get("spec") or {}).get("nodeName") != node_name or not labels.get(JOB_LABEL):
            continue
        if need_uid and not labels.get(UID_LABEL):
            continue
        found.append(
            PodOnNode(
                namespace=meta.get("namespace") or "default",
                pod=meta.get("name") or "",
                job=labels[JOB_LABEL],
                uid=labels.get(UID_LABEL),
            )
        )
    return sorted(found, key=lambda p: (p.namespace, p.job, p.pod))


def node_fault(record: NodeRecord, pod: str, rank: int | None) -> JobFault:
    """Pure: the fault a node-health change means for one pod of a job."""
    return JobFault(
        kind="node",
        reason=f"NodeUnhealthy: {record.health_reason}",
        pod=pod,
        node=record.node_name,
        rank=rank,
        source="node_health",
        event_id=record.last_event_id,
        at=record.last_event_time,
    )


def slot_rank(job: JobRecord, pod: str) -> int | None:
    return next((slot.rank for slot in job.pods if slot.pod == pod), None)


def addon_recovery_ms(fault_at: datetime, conditions: list[dict[str, Any]]) -> int | None:
    """Pure: how long the AWS operator took to recover a job from a fault at ``fault_at``, from the
    job's status conditions; None while it has not recovered.

    Only conditions whose ``lastTransitionTime`` is after the fault count. A message such as "The
    fault of reason NodeFault was remediated in 94283 milliseconds" (the operator's own figure) is
    preferred; otherwise the first ``Running=True`` condition's time minus ``fault_at``.

    Not called yet: the lead wires it into reconcile_jobs (addon jobs' Running condition after a
    recorded NodeFault), which is where the recovery is seen.
    """
    fault_at = aware(fault_at)
    after = sorted(
        (
            (when, condition)
            for condition in conditions
            if (when := parse_time(condition.get("lastTransitionTime"))) is not None and when > fault_at
        ),
        key=lambda pair: pair[0],
    )
    for _, condition in after:
        match = _REMEDIATED.search(str(condition.get("message") or ""))
        if match:
            return int(match.group(1))
    for when, condition in after:
        if condition.get("type") == "Running" and str(condition.get("status")) == "True":
            return int((when - fault_at).total_seconds() * 1000)
    return None


class _NoWake:
    """addon mode: the AWS operator runs the job; nothing of ours waits on a token."""

    def wake(self, token: str, output: dict[str, Any]) -> bool:  # pragma: no cover - never called
        return False


def _pods_on(kube: JobPodsKube, node_name: str, label_selector: str) -> list[dict[str, Any]]:
    return kube.pods(None, label_selector=label_selector, field_selector=f"spec.nodeName={node_name}")


def wake_jobs_on_node(
    kube: JobPodsKube, store: JobFaultStore, sfn: Waker, record: NodeRecord, errors: list[str]
) -> list[FaultReport]:
    """serverless mode: add the node's fault to each affected job's JOB item and wake its
    execution. A failing call is added to ``errors`` (the event is then retried; the fault is not
    added twice). Pods are only read."""
    pods = job_pods_on_node(
        _pods_on(kube, record.node_name, f"{JOB_LABEL},{UID_LABEL}"), record.node_name, need_uid=True
    )
    reports: list[FaultReport] = []
    for pod in pods:
        try:
            job = store.get_job(record.cluster_arn, pod.uid)
            if job is None:
                reports.append(FaultReport(job=pod.job_key, recorded=False, woken=False, note="no JOB item"))
                continue
            if job.phase.finished:
                note = f"job finished ({job.phase.value})"
                reports.append(FaultReport(job=pod.job_key, recorded=False, woken=False, note=note))
                continue
            fault = node_fault(record, pod.pod, slot_rank(job, pod.pod))
            reports.append(report_fault(store, sfn, job, fault))
        except ControlPlaneError as exc:
            errors.append(f"job {pod.job_key}, pod {pod.pod}: {exc}")
    return reports


def _history_entry(record: NodeRecord, pod: PodOnNode, uid: str) -> JobEventRecord:
    at = record.last_event_time
    # one id per (event, pod): a retried event writes the same entry, which the store refuses
    event_id = uuid.uuid5(uuid.NAMESPACE_URL, f"{record.last_event_id}/{pod.namespace}/{pod.pod}").hex[:12]
    return JobEventRecord(
        uid=uid,
        event_id=event_id,
        at=at,
        cluster_arn=record.cluster_arn,
        namespace=pod.namespace,
        name=pod.job,
        kind="NodeFault",
        message=f"node {record.node_name} is unhealthy: {record.health_reason}",
        details={
            "node": record.node_name,
            "pod": pod.pod,
            "eventId": record.last_event_id,
            "healthReason": record.health_reason,
        },
        expiration=int((at + timedelta(seconds=HISTORY_TTL_SECONDS)).timestamp()),
    )


def record_addon_job_faults(
    kube: JobPodsKube, store: JobFaultStore, record: NodeRecord, errors: list[str]
) -> list[FaultReport]:
    """addon mode: a NodeFault history entry for each job with a pod on the node, and the fault on
    its JOB item where reconcile_jobs recorded it (nothing is woken: the AWS operator restarts the
    job). Pods are only read."""
    pods = job_pods_on_node(_pods_on(kube, record.node_name, JOB_LABEL), record.node_name, need_uid=False)
    reports: list[FaultReport] = []
    uids: dict[str, str | None] = {}
    for pod in pods:
        try:
            if pod.job_key not in uids:
                found = kube.custom_object(JOB_GROUP, JOB_VERSION, JOB_PLURAL, pod.namespace, pod.job)
                uids[pod.job_key] = ((found or {}).get("metadata") or {}).get("uid")
            uid = uids[pod.job_key]
            if uid is None:
                note = "no HyperPodPyTorchJob of that name"
                reports.append(FaultReport(job=pod.job_key, recorded=False, woken=False, note=note))
                continue
            with contextlib.suppress(VersionConflictError):  # written by an earlier try of the event
                store.add_job_event(_history_entry(record, pod, uid))
            job = store.get_job(record.cluster_arn, uid)
            if job is None:
                note = "history written; no JOB item"
                reports.append(FaultReport(job=pod.job_key, recorded=False, woken=False, note=note))
                continue
            fault = node_fault(record, pod.pod, slot_rank(job, pod.pod))
            reports.append(report_fault(store, _NoWake(), job, fault))
        except ControlPlaneError as exc:
            errors.append(f"job {pod.job_key}, pod {pod.pod}: {exc}")
    return reports
