"""What the node_health function decides about a node whose health changed.

Plain data in, plain data out: ``services/node_health.py`` turns the NODE item, the OPERATOR item,
the cluster's ``NodeRecovery``, the circuit breaker's state and this configuration into a
``NodePlan``; the handler carries it out through the Kubernetes and SageMaker adapters.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from hyperpod_control.exceptions import InvalidInputError
from hyperpod_control.models.job_faults import FaultReport

#: HyperPod's label and taint on a node its health agent found faulty (the AWS operator reacts to
#: the label's ``UnschedulablePending*`` values).
HEALTH_LABEL = "sagemaker.amazonaws.com/node-health-status"
HEALTH_TAINT_VALUE = "Unschedulable"
HEALTH_TAINT_EFFECT = "NoSchedule"
SCHEDULABLE = "Schedulable"
#: Unhealthy, no repair asked: AWS's operator reacts to it; HyperPod starts no reboot or replace.
UNSCHEDULABLE = "Unschedulable"
#: RepairAction of the event -> the node-health-status label while the repair is pending
PENDING_LABEL = {
    "Replace": "UnschedulablePendingReplacement",
    "Reboot": "UnschedulablePendingReboot",
    "None": UNSCHEDULABLE,
}
#: Set on a node when this control plane cordoned it, so a Healthy event uncordons only what we
#: cordoned (a node a person cordoned stays cordoned). Its value is the event id that cordoned it.
CORDONED_BY_ANNOTATION = "hyperpod-control-plane/cordoned-by-event"
#: SageMaker takes at most this many node ids per BatchReboot/BatchReplaceClusterNodes call.
REPAIR_BATCH_SIZE = 25
REPLACE_WIPES = (
    "BatchReplaceClusterNodes gives the node a new instance: its root volume, instance-store volumes "
    "and the secondary EBS volume HyperPod mounts are wiped (anything not on shared storage such as "
    "FSx or S3 is lost)"
)

RepairActionName = Literal["Reboot", "Replace"]

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"", "0", "false", "no", "off"}


def _flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise InvalidInputError(
        f"environment variable {name}={raw!r} is not a boolean.", remedy=f"set {name} to true or false."
    )


class NodeRepairConfig(BaseModel):
    """The function's repair settings (environment variables; every one has a default, so the
    function works without them: automatic repair is off unless a person turns it on)."""

    # Schema built on first use, not at import (cold start: README, Performance).
    model_config = ConfigDict(frozen=True, defer_build=True)

    #: NODE_REPAIR_ENABLED: ask SageMaker to reboot/replace a node when the cluster's NodeRecovery
    #: is None (with Automatic, HyperPod repairs on its own and we never do).
    enabled: bool = False
    #: NODE_REPAIR_ALLOW_REPLACE: a Replace may be requested (it wipes the node's volumes).
    allow_replace: bool = False
    #: NODE_REPAIR_BREAKER_MAX_NODES: automatic repair stops while more nodes than this failed in
    #: the window (the breaker "opens"); the failed node itself counts.
    breaker_max_nodes: int = Field(default=3, ge=1)
    #: NODE_REPAIR_BREAKER_WINDOW_SECONDS: how far back failures count.
    breaker_window_seconds: int = Field(default=3600, ge=1)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> NodeRepairConfig:
        """From the function's environment, as settings.py ``node_repair_config`` reads it."""
        try:
            return cls(
                enabled=_flag(env, "NODE_REPAIR_ENABLED", False),
                allow_replace=_flag(env, "NODE_REPAIR_ALLOW_REPLACE", False),
                breaker_max_nodes=env.get("NODE_REPAIR_BREAKER_MAX_NODES") or 3,
                breaker_window_seconds=env.get("NODE_REPAIR_BREAKER_WINDOW_SECONDS") or 3600,
            )
        except ValidationError as exc:
            raise InvalidInputError(
                f"node repair settings are invalid: {exc.errors()[0]['loc'][0]}: {exc.errors()[0]['msg']}",
                remedy="set NODE_REPAIR_BREAKER_MAX_NODES and NODE_REPAIR_BREAKER_WINDOW_SECONDS to "
                "positive integers.",
            ) from None


class BreakerState(BaseModel):
    """How many of the cluster's nodes failed within the window, and whether that stops repair."""

    model_config = ConfigDict(defer_build=True)

    failed_nodes: list[str] = Field(default_factory=list)
    max_nodes: int
    window_seconds: int

    @property
    def open(self) -> bool:
        return len(self.failed_nodes) > self.max_nodes

    @property
    def reason(self) -> str:
        return (
            f"circuit breaker open: {len(self.failed_nodes)} nodes of the cluster failed within "
            f"{self.window_seconds} s (more than {self.max_nodes}); automatic repair stopped until fewer "
            "fail in the window. Investigate the cluster, then reboot/replace nodes by hand."
        )


class RepairDecision(BaseModel):
    """Whether to ask SageMaker to repair the node, and if not, why (recorded on the NODE item)."""

    model_config = ConfigDict(defer_build=True)

    action: RepairActionName | None = None
    skipped_reason: str | None = None
    #: Said loudly (log warning + NODE item) when the repair destroys data: a Replace.
    warning: str | None = None
    breaker_open: bool = False


class NodeMarks(BaseModel):
    """What the node should carry in Kubernetes after this event."""

    model_config = ConfigDict(defer_build=True)

    cordon: bool = False
    #: Uncordon, but only a node this control plane cordoned (CORDONED_BY_ANNOTATION).
    uncordon: bool = False
    add_health_taint: bool = False
    remove_health_taint: bool = False
    #: The node-health-status label to set (None: leave it); ``only_if_present`` for Schedulable.
    label: str | None = None
    label_only_if_present: bool = False


class NodePlan(BaseModel):
    """Everything the handler does for one node-health change."""

    model_config = ConfigDict(defer_build=True)

    managed: bool
    mode: str | None = None
    marks: NodeMarks = Field(default_factory=NodeMarks)
    repair: RepairDecision = Field(default_factory=RepairDecision)
    #: serverless mode, Unhealthy: record the fault on the JOB item of each job with a pod on the
    #: node and wake its execution.
    wake_jobs: bool = False
    #: addon mode, Unhealthy: write a NodeFault history entry for each job with a pod on the node
    #: (and the fault on its JOB item where there is one); the AWS operator restarts the job.
    record_job_faults: bool = False
    note: str | None = None


class NodeView(BaseModel):
    """The parts of a Kubernetes Node the decisions read (from the API's JSON)."""

    model_config = ConfigDict(defer_build=True)

    name: str
    resource_version: str | None = None
    unschedulable: bool = False
    taints: list[dict[str, Any]] = Field(default_factory=list)
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)

    @classmethod
    def from_api(cls, node: dict[str, Any]) -> NodeView:
        meta = node.get("metadata") or {}
        spec = node.get("spec") or {}
        return cls(
            name=meta.get("name", ""),
            resource_version=meta.get("resourceVersion"),
            unschedulable=bool(spec.get("unschedulable")),
            taints=list(spec.get("taints") or []),
            labels=dict(meta.get("labels") or {}),
            annotations=dict(meta.get("annotations") or {}),
        )


class DescribedCluster(BaseModel):
    """What the control plane reads of a HyperPod cluster's DescribeCluster: who repairs its nodes
    (``NodeRecovery``) and the EKS cluster that orchestrates it."""

    # Schema built on first use, not at import (cold start: README, Performance).
    model_config = ConfigDict(defer_build=True)

    node_recovery: str = "Automatic"
    eks_cluster_name: str | None = None

    @classmethod
    def from_api(cls, described: dict[str, Any]) -> DescribedCluster:
        """Pure: from DescribeCluster's answer."""
        eks_arn = ((described.get("Orchestrator") or {}).get("Eks") or {}).get("ClusterArn") or ""
        return cls(
            node_recovery=described.get("NodeRecovery") or "Automatic",
            eks_cluster_name=eks_arn.rsplit("/", 1)[-1] if "/" in eks_arn else None,
        )


class NodeOutcome(BaseModel):
    """What was done, written on the NODE item (guarded by the event id it answers)."""

    model_config = ConfigDict(defer_build=True)

    handled_event_id: str | None = None
    kube_actions: list[str] | None = None
    repair_requested: bool = False
    repair_requested_action: str | None = None
    repair_requested_at: datetime | None = None
    repair_skipped_reason: str | None = None
    repair_warning: str | None = None
    breaker_open: bool = False
    action_error: str | None = None


class NodeHealthResult(BaseModel):
    """What the node_health function did about one event (its answer, logged, and its metrics)."""

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
