"""job_events: the agent's pushed state changes and Kubernetes pod events wake their job the same
way a node's fault does (``services/faults.report_fault``: the fault on the JOB item's
``pending_faults``, conditional on its version, then ``SendTaskSuccess`` on the Monitor state's
token).

- **Parsing** (``parse_job_event``): pydantic validation into ``models/job_events``. The agent's
  source or detail-type selects the agent model; anything else the rule let through is a
  Kubernetes Event. A malformed event raises ``MalformedJobEvent`` naming the field; the handler
  logs it and returns ``accepted: false`` without raising, since a retry would send the same bytes
  again and only move a hopeless event into the dead-letter queue. Nothing is written for it.
- **Finding the job**: an agent event names its job's uid (the API server's, unique across
  clusters), tried on every registered cluster (``Store.list_operators``; a few per account), and
  its namespace must be the job's. A pod event names a namespace and a pod, which two clusters may
  share: the exporter's ``clusterName`` (the HyperPod cluster's name or ARN, or the EKS cluster's
  name) narrows the search to that cluster, and one naming no supervised cluster is dropped. Its
  job is the JOB item of the event's namespace with that pod in a slot (``JobRecord.pods``);
  failing that, the uid label (``hyperpod.control-plane/job-uid``) the exporter copied into
  ``involvedObject.labels``, or the pod read from each cluster's Kubernetes API (its uid label,
  else ``HPJob`` = the job's name). An event with no ``clusterName`` is matched only when exactly
  one supervised cluster has that pod (the pod's uid, ``involvedObject.uid``, tells two clusters'
  pods of one name apart); otherwise it is dropped (``dropped: ambiguous cluster``) with the
  clusters named in its reason.
- **Unknown jobs**: with a uid but no JOB item, a ``UnknownJobEvent`` history entry is written
  (``JOB#<uid>``), then the event is dropped; without a uid there is nowhere to write one, so the
  log line and the ``UnknownJobEvents`` metric record it.
- **Confirmation**: a pushed ``faulted`` is acted on only when the agent's ``GET /status`` still
  says ``faulted`` (or the pod is gone): a push may be stale (the supervisor restarted the rank
  since) or forged, and the poll is the source of truth. A ``completed`` push only wakes the job:
  its next poll sees the completion.
- **Confirming a pod fault**: the bus is not a trusted channel (anyone allowed to put events on it
  could fail a job, and an event may be stale), so before a pod event is acted on the cluster's
  Kubernetes API must show the fault (``confirm_pod_fault``): the pod gone, being deleted or
  evicted, Failed, or a container of it terminated as the event says; a pod of that name with
  another uid than the event's is a newer pod. Unconfirmed, the event changes nothing and its
  result says what the API showed (``confirmed: false``); the poll stays the source of truth.
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
    OOM_REASONS,
    AgentStateEvent,
    JobEventResult,
    KubernetesEventDetail,
    ObservedPod,
    PodEvent,
)
from hyperpod_control.models.job_faults import JobFault, agent_fault_kind
from hyperpod_control.models.names import JOB_LABEL, UID_LABEL
from hyperpod_control.models.records import (
    JobEventRecord,
    JobRecord,
    OperatorMode,
    OperatorRecord,
    PodSlot,
    utcnow,
)
from hyperpod_control.models.validation import describe_errors
from hyperpod_control.services.faults import report_fault

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
    if not isinstance(event, dict):
        raise MalformedJobEvent(f"(event): not a JSON object but {type(event).__name__}")
    is_agent = (
        event.get("source") == AGENT_EVENT_SOURCE or event.get("detail-type") == AGENT_EVENT_DETAIL_TYPE
    )
    model: type[AgentStateEvent] | type[PodEvent] = AgentStateEvent if is_agent else PodEvent
    try:
        # What Powertools' parser ``parse`` does for a dict, without importing the parser (about
        # 35 ms of job_events' cold start, README "Performance").
        return model.model_validate(event)
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
    if detail.namespace != record.namespace:
        return JobEventResult(
            **base,
            action="ignored",
            reason=f"the event's namespace {detail.namespace} is not the job's ({record.namespace})",
        )
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
            confirmed=False,
            confirmed_status=said,
            reason=f"pushed fault not confirmed: the agent's /status says {said}; the next poll decides",
        )
    report = report_fault(adapters.store, adapters.sfn, record, fault)
    return JobEventResult(
        **base,
        action="fault" if report.recorded else "ignored",
        confirmed=True,
        confirmed_status=said,
        recorded=report.recorded,
        woken=report.woken,
        reason=fault.reason if report.recorded else report.note,
    )


# ============================================================== pod events


def clusters_named(operators: Iterable[OperatorRecord], name: str) -> list[OperatorRecord]:
    """Pure: the supervised clusters an exporter's ``clusterName`` names: the HyperPod cluster's
    name or ARN, or its EKS cluster's name (whichever the exporter was configured with)."""
    return [op for op in operators if name in (op.cluster_name, op.cluster_arn, op.eks_cluster_name)]


def confirm_pod_fault(detail: KubernetesEventDetail, pod: ObservedPod | None) -> tuple[bool, str]:
    """Pure: (confirmed, what the Kubernetes API says) for a pod-fault event. Confirmed: the pod is
    gone, being deleted or evicted, Failed, or one of its containers terminated as the event says
    (``OOMKilled`` for an OOM reason, a non-zero exit code for ``Error``). A pod of that name with
    another uid than the event's is a newer pod: the event is stale."""
    if pod is None:
        return True, "pod gone"
    event_uid = detail.involved_object.uid
    if event_uid and pod.uid and pod.uid != event_uid:
        return False, f"stale: pod {pod.name} is uid {pod.uid} now, the event is about uid {event_uid}"
    if pod.terminating:
        return True, "pod terminating (deleted or evicted)"
    if pod.reason == "Evicted":
        return True, "pod evicted" + (f": {pod.message}" if pod.message else "")
    for t in pod.terminations:
        if (detail.reason in OOM_REASONS and t.reason == "OOMKilled") or (
            detail.reason not in OOM_REASONS and t.exit_code not in (None, 0)
        ):
            return True, f"container {t.container} terminated {t.reason or '?'} (exit code {t.exit_code})"
    if pod.phase == "Failed":
        return True, "pod Failed" + (f" ({pod.reason})" if pod.reason else "")
    wanted = "OOMKilled" if detail.reason in OOM_REASONS else "with a non-zero exit code"
    return False, f"pod {pod.phase or 'in no phase'}, no container terminated {wanted}"


def _read_pod(adapters: JobEventAdapters, operator: OperatorRecord, namespace: str, pod: str) -> dict | None:
    """The pod as the operator's cluster's Kubernetes API has it; None when it is not there."""
    kube = adapters.kube_for(operator)
    try:
        pods = kube.pods(namespace, field_selector=f"metadata.name={pod}")
    finally:
        _close(kube)
    return pods[0] if pods else None


def _observed_pod(
    adapters: JobEventAdapters, operator: OperatorRecord, namespace: str, pod: str
) -> ObservedPod | None:
    found = _read_pod(adapters, operator, namespace, pod)
    return ObservedPod.from_api(found) if found is not None else None


def _pod_uid(adapters: JobEventAdapters, operator: OperatorRecord, namespace: str, pod: str) -> str | None:
    """The uid of the pod of that name on the operator's cluster (None: not there, or no access)."""
    try:
        found = _read_pod(adapters, operator, namespace, pod)
    except RetryableError:
        raise
    except ControlPlaneError:
        return None
    return (found.get("metadata") or {}).get("uid") if found else None


@dataclass
class PodMatch:
    """Which job a pod event is about (``_find_job_of_pod``)."""

    operator: OperatorRecord | None = None
    #: None when no JOB item was found; ``uid`` None when not even a uid was.
    record: JobRecord | None = None
    uid: str | None = None
    how: str = "not found"
    #: Why the event cannot be tied to one cluster (``dropped`` and ``reason`` of the result).
    dropped: str | None = None
    reason: str | None = None


def _names(operators: Iterable[OperatorRecord]) -> str:
    return ", ".join(sorted(op.cluster_name for op in operators))


def _ambiguous(event: PodEvent, operators: list[OperatorRecord], how: str) -> PodMatch:
    detail = event.detail
    return PodMatch(
        how=how,
        dropped="ambiguous cluster",
        reason=f"pod {detail.namespace}/{detail.involved_object.name} is in {len(operators)} supervised "
        f"clusters ({_names(operators)}, by {how}) and the event names none: set the exporter's "
        "clusterName to the HyperPod cluster's name",
    )


def _find_job_of_pod(event: PodEvent, adapters: JobEventAdapters) -> PodMatch:
    """The job of the event's pod, on the cluster the event names (the exporter's ``clusterName``);
    an event naming none is matched only when exactly one supervised cluster has that pod."""
    store = adapters.store
    detail = event.detail
    namespace, pod = detail.namespace, detail.involved_object.name
    uid_of = detail.involved_object.uid
    operators = store.list_operators()
    if detail.cluster_name:
        operators = clusters_named(operators, detail.cluster_name)
        if len(operators) != 1:
            return PodMatch(
                dropped="unknown cluster" if not operators else "ambiguous cluster",
                reason=f"the event's clusterName '{detail.cluster_name}' names "
                + ("no supervised cluster" if not operators else f"{len(operators)} ({_names(operators)})"),
            )
    # 1. the JOB items' pod slots (no Kubernetes call); a job still running wins over a finished one
    candidates: list[tuple[OperatorRecord, JobRecord]] = []
    for operator in operators:
        for record in store.list_jobs(operator.cluster_arn):
            if record.namespace == namespace and slot_of(record, pod) is not None:
                candidates.append((operator, record))
    clusters = list({op.cluster_arn: op for op, _ in candidates}.values())
    if len(clusters) > 1 and uid_of:
        # the pod's uid tells the clusters apart: only one of them has a pod with that uid
        holding = {op.cluster_arn for op in clusters if _pod_uid(adapters, op, namespace, pod) == uid_of}
        if len(holding) == 1:
            candidates = [(op, r) for op, r in candidates if op.cluster_arn in holding]
            clusters = [op for op in clusters if op.cluster_arn in holding]
    if len(clusters) > 1:
        return _ambiguous(event, clusters, "their jobs' pods")
    if candidates:
        operator, record = sorted(candidates, key=lambda c: c[1].phase.finished)[0]
        return PodMatch(operator, record, record.uid, "pod slot")
    # 2. the uid label the exporter copied from the pod (a uid is unique across clusters)
    uid = detail.involved_object.labels.get(UID_LABEL)
    if uid:
        found = [(op, r) for op in operators if (r := store.get_job(op.cluster_arn, uid)) is not None]
        found = [(op, r) for op, r in found if r.namespace == namespace]
        if len(found) > 1:
            return _ambiguous(event, [op for op, _ in found], "the job uid label")
        return PodMatch(*found[0], uid, "event labels") if found else PodMatch(uid=uid, how="event labels")
    # 3. the pod itself, from each cluster's Kubernetes API
    holders: list[tuple[OperatorRecord, dict]] = []
    for operator in operators:
        if not operator.eks_cluster_name:
            continue
        try:
            found = _read_pod(adapters, operator, namespace, pod)
        except RetryableError:
            raise  # throttled or unavailable: Lambda retries the event
        except ControlPlaneError:
            continue  # no access to that cluster (a permanent error): try the others
        meta = (found or {}).get("metadata") or {}
        if found is not None and (not uid_of or meta.get("uid") in (None, uid_of)):
            holders.append((operator, dict(meta.get("labels") or {})))
    if len(holders) > 1:
        return _ambiguous(event, [op for op, _ in holders], "their Kubernetes APIs")
    if not holders:
        return PodMatch()
    operator, labels = holders[0]
    uid = labels.get(UID_LABEL)
    if uid:
        return PodMatch(operator, store.get_job(operator.cluster_arn, uid), uid, "pod labels")
    job_name = labels.get(JOB_LABEL)
    if job_name:
        for record in store.list_jobs(operator.cluster_arn):
            if record.namespace == namespace and record.name == job_name:
                return PodMatch(operator, record, record.uid, "pod labels")
    return PodMatch(operator, how="pod labels")


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
    match = _find_job_of_pod(event, adapters)
    if match.dropped:
        return JobEventResult(**base, action="dropped", dropped=match.dropped, reason=match.reason)
    operator, record, uid = match.operator, match.record, match.uid
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
            **base, action="dropped", dropped="unknown job", uid=uid, reason=f"job not found ({match.how})"
        )
    assert operator is not None  # a JOB item is only ever found on a cluster
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
    # the bus is not a trusted channel: the cluster's Kubernetes API must show the fault
    confirmed, said = confirm_pod_fault(detail, _observed_pod(adapters, operator, record.namespace, pod))
    if not confirmed:
        return JobEventResult(
            **base,
            action="ignored",
            confirmed=False,
            confirmed_status=said,
            reason=f"pod fault not confirmed: the Kubernetes API says {said}; the next poll decides",
        )
    fault = JobFault(
        kind="pod",
        reason=f"{where(slot)} ({pod} on {slot.node or 'no node'}): {text} ({said})",
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
        confirmed=True,
        confirmed_status=said,
        recorded=report.recorded,
        woken=report.woken,
        reason=fault.reason if report.recorded else report.note,
    )
