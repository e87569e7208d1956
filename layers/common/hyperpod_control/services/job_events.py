"""job_events: the agent's pushed state changes and Kubernetes pod events wake their job the same
way a node's fault does (``services/faults.report_fault``: the fault on the JOB item's
``pending_faults``, conditional on its version, then ``SendTaskSuccess`` on the Monitor state's
token).

- **Parsing** (``parse_job_event``): Powertools' parser into ``models/job_events``. The agent's
  source or detail-type selects the agent model; anything else the rule let through is a
  Kubernetes Event. A malformed event raises ``MalformedJobEvent`` naming the field; the handler
  logs it and returns ``accepted: false`` without raising, since a retry would send the same bytes
  again and only move a hopeless event into the dead-letter queue. Nothing is written for it.
- **Finding the job**: events carry no cluster ARN, so every registered cluster is tried
  (``Store.list_operators``; a few per account). An agent event names its job's uid. A pod event
  names the pod: its job is the JOB item of the event's namespace with that pod in a slot
  (``JobRecord.pods``); failing that, the uid label (``hyperpod.control-plane/job-uid``) the
  exporter copied into ``involvedObject.labels``, or the pod read from each cluster's Kubernetes
  API (its uid label, else ``HPJob`` = the job's name).
- **Unknown jobs**: with a uid but no JOB item, a ``UnknownJobEvent`` history entry is written
  (``JOB#<uid>``), then the event is dropped; without a uid there is nowhere to write one, so the
  log line and the ``UnknownJobEvents`` metric record it.
- **Confirmation**: a pushed ``faulted`` is acted on only when the agent's ``GET /status`` still
  says ``faulted`` (or the pod is gone): a push may be stale (the supervisor restarted the rank
  since) or forged, and the poll is the source of truth. A ``completed`` push only wakes the job:
  its next poll sees the completion.
- **addon-mode jobs** (AWS's operator runs them): a history entry only.

Failures of DynamoDB, Kubernetes or Step Functions raise (retryable ones are retried by Lambda,
then kept in the dead-letter queue); a retried event neither adds its fault twice (report_fault
dedupes per pod) nor writes its history entry twice (the entry's id derives from the event's).
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pydantic import ValidationError

from hyperpod_control.exceptions import ControlPlaneError, RetryableError, VersionConflictError
from hyperpod_control.models.agent import AgentState
from hyperpod_control.models.job_events import (
    AGENT_EVENT_DETAIL_TYPE,
    AGENT_EVENT_SOURCE,
    AgentStateEvent,
    JobEventResult,
    PodEvent,
)
from hyperpod_control.models.records import (
    JobEventRecord,
    JobRecord,
    OperatorMode,
    OperatorRecord,
    PodSlot,
    utcnow,
)
from hyperpod_control.models.validation import describe_errors
from hyperpod_control.services.faults import JobFault, agent_fault_kind, report_fault

#: Labels the supervisor puts on every pod it creates (services/supervisor.py JOB_LABEL, UID_LABEL).
JOB_LABEL = "HPJob"
UID_LABEL = "hyperpod.control-plane/job-uid"
SOURCE = "job_events"
DEFAULT_HISTORY_TTL_SECONDS = 90 * 24 * 3600


class MalformedJobEvent(ValueError):
    """The event cannot be read; ``reason`` names the field."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class JobEventAdapters:
    store: Any
    #: wake(token, output) -> bool (StepFunctionsAdapter)
    sfn: Any
    #: The Kubernetes API of an OPERATOR item's cluster (KubeAdapter); built only when needed.
    kube_for: Callable[[OperatorRecord], Any]
    #: The agent client over a cluster's Kubernetes API (AgentClient(ProxyTransport(kube))).
    agents_for: Callable[[Any], Any]
    history_ttl_seconds: int = DEFAULT_HISTORY_TTL_SECONDS
    now: Callable[[], datetime] = utcnow


# ============================================================== parsing


def parse_job_event(event: Any) -> AgentStateEvent | PodEvent:
    """The event as a model, or ``MalformedJobEvent`` naming what is wrong."""
    from aws_lambda_powertools.utilities.parser import parse

    if not isinstance(event, dict):
        raise MalformedJobEvent(f"(event): not a JSON object but {type(event).__name__}")
    is_agent = (
        event.get("source") == AGENT_EVENT_SOURCE or event.get("detail-type") == AGENT_EVENT_DETAIL_TYPE
    )
    model: type[AgentStateEvent] | type[PodEvent] = AgentStateEvent if is_agent else PodEvent
    try:
        return parse(event=event, model=model)
    except ValidationError as exc:
        raise MalformedJobEvent(describe_errors(exc)) from None


# ============================================================== pure helpers


def slot_of(record: JobRecord, pod: str) -> PodSlot | None:
    return next((slot for slot in record.pods if slot.pod == pod), None)


def where(slot: PodSlot | None) -> str:
    if slot is None:
        return "pod"
    return f"rank {slot.rank}" if slot.rank is not None else "spare"


def history_id(event_id: str, uid: str) -> str:
    """One id per (event, job): a retried event writes the same entry, which the store refuses."""
    return uuid.uuid5(uuid.NAMESPACE_URL, f"job_events/{event_id}/{uid}").hex[:12]


def _transition_time(status: Any) -> datetime | None:
    stamp = (getattr(status, "transitions", None) or {}).get("FAULTED")
    if stamp:
        with contextlib.suppress(ValueError):
            return datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    return None


def _close(kube: Any) -> None:
    close = getattr(kube, "close", None)
    if callable(close):
        close()


# ============================================================== the handler's entry point


def handle_job_event(event: AgentStateEvent | PodEvent, adapters: JobEventAdapters) -> JobEventResult:
    if isinstance(event, AgentStateEvent):
        return handle_agent_event(event, adapters)
    return handle_pod_event(event, adapters)


def _find_job_by_uid(
    store: Any, operators: Iterable[OperatorRecord], uid: str
) -> tuple[OperatorRecord, JobRecord] | None:
    for operator in operators:
        record = store.get_job(operator.cluster_arn, uid)
        if record is not None:
            return operator, record
    return None


def _history(
    adapters: JobEventAdapters,
    *,
    uid: str,
    event_id: str,
    at: datetime,
    cluster_arn: str,
    namespace: str,
    name: str,
    kind: str,
    message: str,
    details: dict[str, Any],
) -> None:
    entry = JobEventRecord(
        uid=uid,
        event_id=history_id(event_id, uid),
        at=at,
        cluster_arn=cluster_arn,
        namespace=namespace,
        name=name,
        kind=kind,
        message=message,
        details={"eventId": event_id, **{k: v for k, v in details.items() if v is not None}},
        expiration=int((at + timedelta(seconds=adapters.history_ttl_seconds)).timestamp()),
    )
    with contextlib.suppress(VersionConflictError):  # written by an earlier delivery of this event
        adapters.store.add_job_event(entry)


# ============================================================== agent events


def handle_agent_event(event: AgentStateEvent, adapters: JobEventAdapters) -> JobEventResult:
    detail = event.detail
    base = {"event_id": event.id, "source": "agent", "uid": detail.job_uid, "pod": detail.pod}
    at = detail.time or event.time
    found = _find_job_by_uid(adapters.store, adapters.store.list_operators(), detail.job_uid)
    if found is None:
        _history(
            adapters,
            uid=detail.job_uid,
            event_id=event.id,
            at=at,
            cluster_arn="",
            namespace=detail.namespace,
            name=detail.job_name,
            kind="UnknownJobEvent",
            message=f"agent of pod {detail.pod} reported {detail.status} for a job with no JOB item",
            details={"source": "agent", "pod": detail.pod, "status": detail.status, "reason": detail.reason},
        )
        return JobEventResult(
            **base, action="dropped", dropped="unknown job", job=f"{detail.namespace}/{detail.job_name}"
        )
    operator, record = found
    base.update(job=f"{record.namespace}/{record.name}", cluster_arn=record.cluster_arn)
    slot = slot_of(record, detail.pod)

    if record.mode is OperatorMode.ADDON:
        _history(
            adapters,
            uid=record.uid,
            event_id=event.id,
            at=at,
            cluster_arn=record.cluster_arn,
            namespace=record.namespace,
            name=record.name,
            kind="AgentEvent",
            message=f"agent of {where(slot)} ({detail.pod}) reported {detail.status}"
            + (f": {detail.reason}" if detail.reason else ""),
            details={
                "pod": detail.pod,
                "rank": detail.rank,
                "status": detail.status,
                "reason": detail.reason,
            },
        )
        return JobEventResult(**base, action="history", reason="addon mode: AWS's operator runs the job")
    if record.phase.finished:
        return JobEventResult(**base, action="ignored", reason=f"job finished ({record.phase.value})")
    if slot is None:
        return JobEventResult(**base, action="ignored", reason="the pod is not one of the job's pods now")

    if detail.status == "completed":
        woken = bool(record.task_token) and adapters.sfn.wake(
            record.task_token, {"wokenBy": SOURCE, "reason": f"agent of {where(slot)} completed"}
        )
        return JobEventResult(**base, action="woken", woken=woken, reason="agent completed")

    # faulted: ask the agent before anything acts on the push
    kube = adapters.kube_for(operator)
    try:
        answers = adapters.agents_for(kube).statuses(record.namespace, [(slot.pod, slot.ip)])
    finally:
        _close(kube)
    answer = answers.get(slot.pod)
    status = answer.status if answer is not None and answer.ok else None
    if answer is not None and answer.pod_gone:
        confirmed, said = True, "pod gone"
        fault = JobFault(
            kind="pod",
            reason=f"{where(slot)} ({slot.pod} on {slot.node or 'no node'}): the pod is gone after its "
            f"agent reported {detail.reason or 'a fault'}",
            pod=slot.pod,
            node=slot.node,
            rank=slot.rank,
            source=SOURCE,
            event_id=event.id,
            at=at,
        )
    elif status is not None and status.status is AgentState.FAULTED:
        confirmed, said = True, status.status.value
        reason = status.reason or detail.reason or "WorkerFault"
        message = status.message or detail.message
        fault = JobFault(
            kind=agent_fault_kind(reason),
            ip_version=status.ipversion,
            reason=f"{where(slot)} ({slot.pod}): {reason}" + (f": {message}" if message else ""),
            pod=slot.pod,
            node=slot.node,
            rank=slot.rank,
            source=SOURCE,
            event_id=event.id,
            at=_transition_time(status) or at,
        )
    else:
        confirmed = False
        said = (
            status.status.value if status is not None else f"unreachable ({answer.error if answer else '?'})"
        )
    if not confirmed:
        return JobEventResult(
            **base,
            action="ignored",
            confirmed_status=said,
            reason=f"pushed fault not confirmed: the agent's /status says {said}; the next poll decides",
        )
    report = report_fault(adapters.store, adapters.sfn, record, fault)
    return JobEventResult(
        **base,
        action="fault" if report.recorded else "ignored",
        confirmed_status=said,
        recorded=report.recorded,
        woken=report.woken,
        reason=fault.reason if report.recorded else report.note,
    )


# ============================================================== pod events


def _pod_labels(
    adapters: JobEventAdapters, operator: OperatorRecord, namespace: str, pod: str
) -> dict | None:
    """The pod's labels read from the operator's cluster; None when the pod is not there."""
    kube = adapters.kube_for(operator)
    try:
        pods = kube.pods(namespace, field_selector=f"metadata.name={pod}")
    finally:
        _close(kube)
    if not pods:
        return None
    return dict((pods[0].get("metadata") or {}).get("labels") or {})


def _find_job_of_pod(
    event: PodEvent, adapters: JobEventAdapters
) -> tuple[OperatorRecord | None, JobRecord | None, str | None, str]:
    """(operator, JOB item, uid, how it was found); JOB item None when unknown, uid None when not
    even a uid was found."""
    store = adapters.store
    detail = event.detail
    namespace, pod = detail.namespace, detail.involved_object.name
    operators = store.list_operators()
    # 1. the JOB items' pod slots (no Kubernetes call); a job still running wins over a finished one
    candidates: list[tuple[OperatorRecord, JobRecord]] = []
    for operator in operators:
        for record in store.list_jobs(operator.cluster_arn):
            if record.namespace == namespace and slot_of(record, pod) is not None:
                candidates.append((operator, record))
    if candidates:
        operator, record = sorted(candidates, key=lambda c: c[1].phase.finished)[0]
        return operator, record, record.uid, "pod slot"
    # 2. the uid label the exporter copied from the pod
    uid = detail.involved_object.labels.get(UID_LABEL)
    if uid:
        found = _find_job_by_uid(store, operators, uid)
        return (found[0], found[1], uid, "event labels") if found else (None, None, uid, "event labels")
    # 3. the pod itself, from each cluster's Kubernetes API
    for operator in operators:
        if not operator.eks_cluster_name:
            continue
        try:
            labels = _pod_labels(adapters, operator, namespace, pod)
        except RetryableError:
            raise  # throttled or unavailable: Lambda retries the event
        except ControlPlaneError:
            continue  # no access to that cluster (a permanent error): try the others
        if labels is None:
            continue
        uid = labels.get(UID_LABEL)
        if uid:
            record = store.get_job(operator.cluster_arn, uid)
            return operator, record, uid, "pod labels"
        job_name = labels.get(JOB_LABEL)
        if job_name:
            for record in store.list_jobs(operator.cluster_arn):
                if record.namespace == namespace and record.name == job_name:
                    return operator, record, record.uid, "pod labels"
        return operator, None, None, "pod labels"
    return None, None, None, "not found"


def handle_pod_event(event: PodEvent, adapters: JobEventAdapters) -> JobEventResult:
    detail = event.detail
    pod = detail.involved_object.name
    base: dict[str, Any] = {"event_id": event.id, "source": "pod", "pod": pod}
    if not detail.is_pod_fault:
        return JobEventResult(
            **base,
            action="ignored",
            reason=f"not a pod fault: {detail.involved_object.kind} {detail.type} {detail.reason or '-'}",
        )
    at = detail.happened_at or event.time
    text = f"{detail.reason}" + (f": {detail.message}" if detail.message else "")
    operator, record, uid, how = _find_job_of_pod(event, adapters)
    if record is None:
        if uid:
            _history(
                adapters,
                uid=uid,
                event_id=event.id,
                at=at,
                cluster_arn=operator.cluster_arn if operator else "",
                namespace=detail.namespace,
                name=detail.involved_object.labels.get(JOB_LABEL, ""),
                kind="UnknownJobEvent",
                message=f"pod {detail.namespace}/{pod}: {text} (no JOB item)",
                details={"source": "pod", "pod": pod, "reason": detail.reason},
            )
        return JobEventResult(
            **base, action="dropped", dropped="unknown job", uid=uid, reason=f"job not found ({how})"
        )
    base.update(job=f"{record.namespace}/{record.name}", uid=record.uid, cluster_arn=record.cluster_arn)
    slot = slot_of(record, pod)
    if record.mode is OperatorMode.ADDON:
        _history(
            adapters,
            uid=record.uid,
            event_id=event.id,
            at=at,
            cluster_arn=record.cluster_arn,
            namespace=record.namespace,
            name=record.name,
            kind="PodEvent",
            message=f"{where(slot)} ({pod}): {text}",
            details={"pod": pod, "reason": detail.reason, "type": detail.type},
        )
        return JobEventResult(**base, action="history", reason="addon mode: AWS's operator runs the job")
    if record.phase.finished:
        return JobEventResult(**base, action="ignored", reason=f"job finished ({record.phase.value})")
    if slot is None:
        return JobEventResult(**base, action="ignored", reason="the pod is not one of the job's pods now")
    fault = JobFault(
        kind="pod",
        reason=f"{where(slot)} ({pod} on {slot.node or 'no node'}): {text}",
        pod=pod,
        node=slot.node,
        rank=slot.rank,
        source=SOURCE,
        event_id=event.id,
        at=at,
    )
    report = report_fault(adapters.store, adapters.sfn, record, fault)
    return JobEventResult(
        **base,
        action="fault" if report.recorded else "ignored",
        recorded=report.recorded,
        woken=report.woken,
        reason=fault.reason if report.recorded else report.note,
    )
