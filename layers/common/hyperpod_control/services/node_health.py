"""What a HyperPod node-health event means: the NODE item, then what to do about the node and the
jobs on it.

Pure decisions first (``plan_node_actions`` and the functions it uses, over plain models: the NODE
record, the OPERATOR record, the cluster's NodeRecovery, the repair circuit breaker's state and
``NodeRepairConfig``); ``act_on_node_change`` at the end carries a plan out through the adapters.

Both operator modes: an Unhealthy node is cordoned (annotated as ours) and gets HyperPod's
``sagemaker.amazonaws.com/node-health-status=Unschedulable:NoSchedule`` taint where HyperPod has
not put it yet; with ``NODE_REPAIR_ENABLED`` and the cluster's NodeRecovery ``None``, SageMaker is
asked to reboot or replace it per the event's RepairAction, unless a Replace is not allowed
(``NODE_REPAIR_ALLOW_REPLACE``) or the circuit breaker is open. A Healthy node is uncordoned (only
if we cordoned it), untainted and labelled Schedulable.

The jobs on an Unhealthy node (its pods, found with the field selector ``spec.nodeName``; a pod is
never deleted or patched here, in either mode):

- ``serverless`` mode: each pod labelled ``HPJob`` and with the job uid label names its job's JOB
  item; the fault (kind ``node``, the pod, the node, the pod's rank) is appended to the item's
  ``pending_faults`` and the job's execution, waiting in its Monitor state, is woken with
  ``SendTaskSuccess`` (``services/faults.report_fault``: a fault already pending for the same pod
  and node is not added again, so a retried event neither duplicates it nor wakes twice). Jobs
  whose JOB item is missing or finished are skipped.
- ``addon`` mode: the node also gets the node-health-status label the AWS operator reacts to (the
  operator restarts the job itself); for each job with a pod on the node (label ``HPJob=<job>``)
  a ``NodeFault`` entry is written to the job's history and, where reconcile_jobs recorded the job,
  the fault is appended to its JOB item (no token: nothing is woken). ``addon_recovery_ms`` reads
  how long the AWS operator took to recover from the job's conditions.
"""

from __future__ import annotations

import contextlib
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from hyperpod_control.exceptions import ControlPlaneError, NodeActionError, VersionConflictError
from hyperpod_control.models.events import NodeHealthEvent
from hyperpod_control.models.names import JOB_GROUP, JOB_LABEL, JOB_PLURAL, JOB_VERSION, UID_LABEL
from hyperpod_control.models.node_health import (
    CORDONED_BY_ANNOTATION,
    HEALTH_LABEL,
    HEALTH_TAINT_EFFECT,
    HEALTH_TAINT_VALUE,
    PENDING_LABEL,
    REPAIR_BATCH_SIZE,
    REPLACE_WIPES,
    SCHEDULABLE,
    UNSCHEDULABLE,
    BreakerState,
    NodeMarks,
    NodeOutcome,
    NodePlan,
    NodeRepairConfig,
    NodeView,
    RepairDecision,
)
from hyperpod_control.models.records import (
    JobEventRecord,
    JobRecord,
    NodeHealth,
    NodeRecord,
    OperatorMode,
    OperatorRecord,
)
from hyperpod_control.services.faults import FaultReport, JobFault, report_fault

# -- the NODE item --------------------------------------------------------------------------------


def node_record_from_event(event: NodeHealthEvent) -> NodeRecord:
    """Pure: the NODE item an event asks for (the store decides whether it changes anything)."""
    detail = event.detail
    summary = detail.HealthSummary
    when = _aware(event.time)
    return NodeRecord(
        cluster_arn=detail.ClusterArn,
        instance_id=detail.InstanceId,
        health_status=summary.HealthStatus,
        health_reason=summary.HealthStatusReason,
        repair_action=summary.RepairAction or "None",
        last_event_time=when,
        last_event_id=event.id,
        failed_at=when if summary.HealthStatus is NodeHealth.UNHEALTHY else None,
    )


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def is_unfinished_retry(stored: NodeRecord | None, record: NodeRecord) -> bool:
    """Pure: the store refused ``record`` as no change, yet the item records this very event and
    its actions never completed: a retry of an attempt that failed half way, to be resumed
    (without this, Lambda's retry would find "no change" and the event's actions would be lost)."""
    return (
        stored is not None
        and stored.last_event_id == record.last_event_id
        and stored.handled_event_id != record.last_event_id
    )


# -- the cluster ----------------------------------------------------------------------------------


class ClusterFacts(BaseModel):
    # Schema built on first use, not at import (cold start: README, Performance).
    model_config = ConfigDict(defer_build=True)

    node_recovery: str = "Automatic"
    eks_cluster_name: str | None = None


def cluster_facts(described: dict[str, Any]) -> ClusterFacts:
    """Pure: NodeRecovery and the orchestrating EKS cluster's name from DescribeCluster."""
    eks_arn = ((described.get("Orchestrator") or {}).get("Eks") or {}).get("ClusterArn") or ""
    return ClusterFacts(
        node_recovery=described.get("NodeRecovery") or "Automatic",
        eks_cluster_name=eks_arn.rsplit("/", 1)[-1] if "/" in eks_arn else None,
    )


# -- decisions ------------------------------------------------------------------------------------


def breaker_state(nodes: list[NodeRecord], record: NodeRecord, config: NodeRepairConfig) -> BreakerState:
    """Pure: the cluster's nodes that went Unhealthy within the window ending at this event (healed
    since or not; the node of this event counts)."""
    since = record.last_event_time - timedelta(seconds=config.breaker_window_seconds)
    failed = {n.instance_id for n in nodes if n.failed_at is not None and n.failed_at >= since}
    if record.health_status is NodeHealth.UNHEALTHY:
        failed.add(record.instance_id)
    return BreakerState(
        failed_nodes=sorted(failed),
        max_nodes=config.breaker_max_nodes,
        window_seconds=config.breaker_window_seconds,
    )


def decide_repair(
    record: NodeRecord, node_recovery: str, breaker: BreakerState | None, config: NodeRepairConfig
) -> RepairDecision:
    """Pure: ask SageMaker to repair the node, or why not. ``breaker`` None: not counted yet (the
    answer then says whether counting is needed: an action means every other condition holds)."""
    if record.health_status is not NodeHealth.UNHEALTHY:
        return RepairDecision()
    action = record.repair_action
    if action not in ("Reboot", "Replace"):
        return RepairDecision(skipped_reason=f"HyperPod asks for no repair (RepairAction {action}).")
    if node_recovery != "None":
        return RepairDecision(
            skipped_reason=f"the cluster's NodeRecovery is {node_recovery}: HyperPod repairs the node itself."
        )
    if not config.enabled:
        return RepairDecision(
            skipped_reason=f"HyperPod recommends {action}, but automatic repair is off "
            "(NODE_REPAIR_ENABLED); repair the node by hand or turn it on."
        )
    if action == "Replace" and not config.allow_replace:
        return RepairDecision(
            skipped_reason="HyperPod recommends Replace, which NODE_REPAIR_ALLOW_REPLACE does not allow: "
            f"{REPLACE_WIPES}. Replace the node by hand (aws sagemaker batch-replace-cluster-nodes) "
            "once its data is safe, or allow it."
        )
    if breaker is not None and breaker.open:
        return RepairDecision(skipped_reason=breaker.reason, breaker_open=True)
    warning = f"{REPLACE_WIPES}." if action == "Replace" else None
    return RepairDecision(action=action, warning=warning)  # type: ignore[arg-type]


def plan_node_actions(
    record: NodeRecord,
    operator: OperatorRecord | None,
    node_recovery: str,
    breaker: BreakerState | None,
    config: NodeRepairConfig,
) -> NodePlan:
    """Pure: everything to do about one node-health change."""
    if operator is None:
        return NodePlan(
            managed=False,
            note="the cluster is not registered with the control plane: node recorded, nothing else done.",
        )
    mode = operator.mode
    if record.health_status is NodeHealth.UNHEALTHY:
        repair = decide_repair(record, node_recovery, breaker, config)
        # addon: AWS's operator restarts the job on the label. A Pending* value also asks HyperPod
        # to reboot or replace the node (a replace wipes its volumes), so it is written only when
        # this project's own repair decision (opt-in, circuit breaker) approved that very action.
        label = None
        if mode is OperatorMode.ADDON:
            label = PENDING_LABEL[repair.action] if repair.action else UNSCHEDULABLE
        marks = NodeMarks(cordon=True, add_health_taint=True, label=label)
        return NodePlan(
            managed=True,
            mode=mode.value,
            marks=marks,
            repair=repair,
            wake_jobs=mode is OperatorMode.SERVERLESS,
            record_job_faults=mode is OperatorMode.ADDON,
        )
    marks = NodeMarks(
        uncordon=True,
        remove_health_taint=True,
        label=SCHEDULABLE,
        # addon: the operator reads the label, so it is always set; serverless: only corrected
        label_only_if_present=mode is not OperatorMode.ADDON,
    )
    return NodePlan(managed=True, mode=mode.value, marks=marks)


def _is_health_taint(taint: dict[str, Any]) -> bool:
    return taint.get("key") == HEALTH_LABEL


def node_patch(view: NodeView, marks: NodeMarks, event_id: str) -> tuple[dict[str, Any] | None, list[str]]:
    """Pure: the JSON merge patch that gives the node ``marks`` (None when it has them already)
    and the actions it stands for. Conditional on the node's resourceVersion."""
    spec: dict[str, Any] = {}
    labels: dict[str, Any] = {}
    annotations: dict[str, Any] = {}
    actions: list[str] = []
    ours = CORDONED_BY_ANNOTATION in view.annotations
    if marks.cordon and not view.unschedulable:
        spec["unschedulable"] = True
        annotations[CORDONED_BY_ANNOTATION] = event_id
        actions.append("cordon")
    if marks.uncordon and ours:
        annotations[CORDONED_BY_ANNOTATION] = None
        if view.unschedulable:
            spec["unschedulable"] = None
            actions.append("uncordon")
    has_taint = any(_is_health_taint(t) and t.get("effect") == HEALTH_TAINT_EFFECT for t in view.taints)
    if marks.add_health_taint and not has_taint:
        taint = {"key": HEALTH_LABEL, "value": HEALTH_TAINT_VALUE, "effect": HEALTH_TAINT_EFFECT}
        spec["taints"] = [*view.taints, taint]
        actions.append("taint")
    if marks.remove_health_taint and any(_is_health_taint(t) for t in view.taints):
        kept = [t for t in view.taints if not _is_health_taint(t)]
        spec["taints"] = kept or None
        actions.append("untaint")
    current = view.labels.get(HEALTH_LABEL)
    # HyperPod's own Pending* label (its automatic recovery under way) is never downgraded.
    keeps_pending = marks.label == UNSCHEDULABLE and (current or "").startswith(UNSCHEDULABLE + "Pending")
    if (
        marks.label is not None
        and (HEALTH_LABEL in view.labels or not marks.label_only_if_present)
        and current != marks.label
        and not keeps_pending
    ):
        labels[HEALTH_LABEL] = marks.label
        actions.append(f"label={marks.label}")
    if not (spec or labels or annotations):
        return None, []
    metadata: dict[str, Any] = {}
    if view.resource_version:
        metadata["resourceVersion"] = view.resource_version
    if labels:
        metadata["labels"] = labels
    if annotations:
        metadata["annotations"] = annotations
    patch: dict[str, Any] = {"metadata": metadata}
    if spec:
        patch["spec"] = spec
    return patch, actions


def repair_batches(node_ids: list[str], size: int = REPAIR_BATCH_SIZE) -> list[list[str]]:
    """Pure: node ids in the groups one BatchReboot/BatchReplaceClusterNodes call takes."""
    return [node_ids[i : i + size] for i in range(0, len(node_ids), size)]


# -- the jobs on a failed node ----------------------------------------------------------------------

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


def _parse_time(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return _aware(value)
    if not isinstance(value, str) or not value:
        return None
    try:
        return _aware(datetime.fromisoformat(value.replace("Z", "+00:00")))
    except ValueError:
        return None


def addon_recovery_ms(fault_at: datetime, conditions: list[dict[str, Any]]) -> int | None:
    """Pure: how long the AWS operator took to recover a job from a fault at ``fault_at``, from the
    job's status conditions; None while it has not recovered.

    Only conditions whose ``lastTransitionTime`` is after the fault count. A message such as "The
    fault of reason NodeFault was remediated in 94283 milliseconds" (the operator's own figure) is
    preferred; otherwise the first ``Running=True`` condition's time minus ``fault_at``.

    Not called yet: the lead wires it into reconcile_jobs (addon jobs' Running condition after a
    recorded NodeFault), which is where the recovery is seen.
    """
    fault_at = _aware(fault_at)
    after = sorted(
        (
            (when, condition)
            for condition in conditions
            if (when := _parse_time(condition.get("lastTransitionTime"))) is not None and when > fault_at
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


def _pods_on(kube: Any, node_name: str, label_selector: str) -> list[dict[str, Any]]:
    return kube.pods(None, label_selector=label_selector, field_selector=f"spec.nodeName={node_name}")


def wake_jobs_on_node(
    kube: Any, store: Any, sfn: Any, record: NodeRecord, errors: list[str]
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
    kube: Any, store: Any, record: NodeRecord, errors: list[str]
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


# -- carrying a plan out ----------------------------------------------------------------------------


@dataclass
class NodeHealthAdapters:
    store: Any  # adapters.store.Store
    sagemaker: Any  # adapters.sagemaker.SageMakerAdapter
    #: EKS cluster name -> a KubeAdapter for it
    kube_factory: Callable[[str], Any]
    #: adapters.stepfunctions.StepFunctionsAdapter: wakes a serverless job's execution
    sfn: Any = None


class NodeHealthResult(BaseModel):
    model_config = ConfigDict(defer_build=True)

    acted: bool = False
    resumed: bool = False
    plan: NodePlan | None = None
    outcome: NodeOutcome | None = None
    breaker: BreakerState | None = None
    #: serverless mode: "namespace/name" of the jobs whose JOB item got this fault (their
    #: execution woken where it waited on a live token; see ``job_faults``)
    jobs_woken: list[str] = Field(default_factory=list)
    #: per affected pod: recorded on the JOB item, woken, or why not (both modes)
    job_faults: list[FaultReport] = Field(default_factory=list)


MAX_PATCH_ATTEMPTS = 5


def apply_marks(kube: Any, node_name: str, marks: NodeMarks, event_id: str) -> list[str] | None:
    """Read the node, patch what it lacks; a concurrent writer (409) means read and try again.
    None when the cluster has no such node."""
    for attempt in range(MAX_PATCH_ATTEMPTS):
        current = kube.node(node_name)
        if current is None:
            return None
        patch, actions = node_patch(NodeView.from_api(current), marks, event_id)
        if patch is None:
            return []
        try:
            kube.patch_node(node_name, patch)
        except VersionConflictError:
            if attempt == MAX_PATCH_ATTEMPTS - 1:
                raise
            continue
        return actions
    return []  # pragma: no cover - the loop returns or raises


def _repair_outcome(
    record: NodeRecord, action: str, result: dict[str, list[Any]], now: datetime
) -> dict[str, Any]:
    """Pure: NODE item fields from a batch call's answer for this node."""
    if record.instance_id in result.get("Successful", []):
        return {"repair_requested": True, "repair_requested_action": action, "repair_requested_at": now}
    failed = next((f for f in result.get("Failed", []) if f.get("NodeId") == record.instance_id), None)
    code = (failed or {}).get("ErrorCode", "Unknown")
    if code == "InstanceIdInUse":  # a reboot or replacement is already under way: ours, or HyperPod's
        return {"repair_requested": True, "repair_requested_action": action, "repair_requested_at": now}
    message = (failed or {}).get("Message", "no answer for the node")
    return {"repair_skipped_reason": f"SageMaker refused the {action}: {code}: {message}"}


def act_on_node_change(
    record: NodeRecord,
    changed: bool,
    adapters: NodeHealthAdapters,
    config: NodeRepairConfig,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> NodeHealthResult:
    """After ``Store.record_node_health``: plan and act. Raises ``NodeActionError`` (retryable)
    when a Kubernetes or SageMaker call failed, after recording what did succeed."""
    resumed = False
    if not changed:
        stored = adapters.store.get_node(record.cluster_arn, record.instance_id)
        if not is_unfinished_retry(stored, record):
            return NodeHealthResult()
        record, resumed = stored, True
    operator = adapters.store.get_operator(record.cluster_arn)
    if operator is None:
        plan = plan_node_actions(record, None, "Automatic", None, config)
        return NodeHealthResult(resumed=resumed, plan=plan)
    try:
        facts = cluster_facts(adapters.sagemaker.describe_cluster(record.cluster_arn))
    except ControlPlaneError as exc:
        raise NodeActionError(f"SageMaker DescribeCluster {record.cluster_arn}: {exc}") from exc
    breaker = None
    if decide_repair(record, facts.node_recovery, None, config).action:
        breaker = breaker_state(adapters.store.list_nodes(record.cluster_arn), record, config)
    plan = plan_node_actions(record, operator, facts.node_recovery, breaker, config)

    errors: list[str] = []
    job_faults: list[FaultReport] = []
    kube_actions: list[str] = list(record.kube_actions or []) if resumed else []
    if facts.eks_cluster_name:
        try:
            with contextlib.closing(adapters.kube_factory(facts.eks_cluster_name)) as kube:
                try:
                    done = apply_marks(kube, record.node_name, plan.marks, record.last_event_id)
                except ControlPlaneError as exc:
                    done = []
                    errors.append(f"Kubernetes, node {record.node_name}: {exc}")
                if done is None:
                    kube_actions.append("node-not-in-kubernetes")
                else:
                    kube_actions += [a for a in done if a not in kube_actions]
                if plan.wake_jobs:
                    job_faults = wake_jobs_on_node(kube, adapters.store, adapters.sfn, record, errors)
                elif plan.record_job_faults:
                    job_faults = record_addon_job_faults(kube, adapters.store, record, errors)
        except ControlPlaneError as exc:
            errors.append(f"Kubernetes, node {record.node_name}: {exc}")

    fields: dict[str, Any] = {
        "repair_skipped_reason": plan.repair.skipped_reason,
        "repair_warning": plan.repair.warning,
        "breaker_open": plan.repair.breaker_open,
    }
    action = plan.repair.action
    if action and record.repair_requested:  # a previous attempt of this event asked already
        fields.update(
            repair_requested=True,
            repair_requested_action=record.repair_requested_action,
            repair_requested_at=record.repair_requested_at,
        )
    elif action:
        try:
            result = adapters.sagemaker.batch_repair_nodes(record.cluster_arn, action, [record.instance_id])
            fields.update(_repair_outcome(record, action, result, now()))
        except ControlPlaneError as exc:
            errors.append(f"SageMaker {action} of {record.instance_id}: {exc}")

    outcome = NodeOutcome(
        handled_event_id=None if errors else record.last_event_id,
        kube_actions=kube_actions,
        action_error="; ".join(errors) or None,
        **fields,
    )
    adapters.store.record_node_outcome(record.cluster_arn, record.instance_id, record.last_event_id, outcome)
    jobs = sorted({r.job for r in job_faults if r.recorded}) if plan.wake_jobs else []
    result = NodeHealthResult(
        acted=True,
        resumed=resumed,
        plan=plan,
        outcome=outcome,
        breaker=breaker,
        jobs_woken=jobs,
        job_faults=job_faults,
    )
    if errors:
        failure = NodeActionError(f"node {record.node_name}: " + "; ".join(errors))
        failure.result = result  # type: ignore[attr-defined]  # for the handler's log and metrics
        raise failure
    return result
