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

The jobs on an Unhealthy node are ``services/node_jobs.py``'s: their faults recorded and, in
``serverless`` mode, their executions woken.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from hyperpod_control.exceptions import ControlPlaneError, NodeActionError, VersionConflictError
from hyperpod_control.models.events import NodeHealthEvent
from hyperpod_control.models.job_faults import FaultReport
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
    DescribedCluster,
    NodeHealthResult,
    NodeMarks,
    NodeOutcome,
    NodePlan,
    NodeRepairConfig,
    NodeView,
    RepairDecision,
)
from hyperpod_control.models.records import NodeHealth, NodeRecord, OperatorMode, OperatorRecord, aware
from hyperpod_control.services.node_jobs import (
    JobFaultStore,
    JobPodsKube,
    Waker,
    record_addon_job_faults,
    wake_jobs_on_node,
)

# -- the NODE item --------------------------------------------------------------------------------


def node_record_from_event(event: NodeHealthEvent) -> NodeRecord:
    """Pure: the NODE item an event asks for (the store decides whether it changes anything)."""
    detail = event.detail
    summary = detail.HealthSummary
    when = aware(event.time)
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


def is_unfinished_retry(stored: NodeRecord | None, record: NodeRecord) -> bool:
    """Pure: the store refused ``record`` as no change, yet the item records this very event and
    its actions never completed: a retry of an attempt that failed half way, to be resumed
    (without this, Lambda's retry would find "no change" and the event's actions would be lost)."""
    return (
        stored is not None
        and stored.last_event_id == record.last_event_id
        and stored.handled_event_id != record.last_event_id
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


# -- carrying a plan out ----------------------------------------------------------------------------


class NodeStore(JobFaultStore, Protocol):
    """The calls made on the store (``adapters.store.Store``): the NODE items, the OPERATOR item,
    and the JOB items and history of the jobs on the node (``JobFaultStore``)."""

    def get_node(self, cluster_arn: str, instance_id: str) -> NodeRecord | None: ...

    def list_nodes(self, cluster_arn: str) -> list[NodeRecord]: ...

    def get_operator(self, cluster_arn: str) -> OperatorRecord | None: ...

    def record_node_outcome(
        self, cluster_arn: str, instance_id: str, event_id: str, outcome: NodeOutcome
    ) -> bool: ...


class NodeKube(JobPodsKube, Protocol):
    """The calls made on the cluster's Kubernetes API (``adapters.kube.KubeAdapter``): the node
    read and patched, the pods on it and their jobs read (``JobPodsKube``), the client closed."""

    def node(self, name: str) -> dict[str, Any] | None: ...

    def patch_node(self, name: str, patch: dict[str, Any]) -> dict[str, Any]: ...

    def close(self) -> None: ...


class NodeRepairs(Protocol):
    """The calls made on SageMaker (``adapters.sagemaker.SageMakerAdapter``)."""

    def describe_cluster(self, name: str) -> dict[str, Any]: ...

    def batch_repair_nodes(self, cluster: str, action: str, node_ids: list[str]) -> dict[str, list[Any]]: ...


@dataclass
class NodeHealthAdapters:
    """What ``act_on_node_change`` acts through."""

    store: NodeStore
    sagemaker: NodeRepairs
    #: EKS cluster name -> a KubeAdapter for it
    kube_factory: Callable[[str], NodeKube]
    #: wakes a serverless job's execution (adapters.stepfunctions.StepFunctionsAdapter)
    sfn: Waker | None = None


MAX_PATCH_ATTEMPTS = 5


def apply_marks(kube: NodeKube, node_name: str, marks: NodeMarks, event_id: str) -> list[str] | None:
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
        facts = DescribedCluster.from_api(adapters.sagemaker.describe_cluster(record.cluster_arn))
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
