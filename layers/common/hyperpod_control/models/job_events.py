"""Job events: what wakes a job besides its own poll, parsed with
pydantic models (``EventBridgeEnvelope`` subclasses whose ``detail`` is one of the models here).

Two producers put them on EventBridge:

- **The agent** in every training pod (``agent/hyperpod_agent/events.py``; its states:
  docs/hyperpod-contract.md, "Agent protocol"): with ``HYPERPOD_EVENT_BUS`` set (the supervisor
  sets it to the control plane's bus, ``ControlPlaneBus``) each FAULTED or COMPLETED transition
  is one event, source ``hyperpod-control.agent``, detail-type ``HyperPod Agent State Change``, detail
  ``{jobName, namespace, jobUid, pod, rank, status, reason, message, faultCount, time}`` with the
  status lower case (``faulted`` / ``completed``).
- **kubernetes-event-exporter** (resmoio/kubernetes-event-exporter, its ``eventbridge`` receiver):
  each core/v1 Event is put as the detail, JSON as the API serves it (``involvedObject`` {kind,
  name, namespace, uid}, ``reason``, ``message``, ``type``, ``lastTimestamp``, ``eventTime``,
  ``metadata``...), plus the exporter's own ``clusterName`` and, when it could read the object,
  ``involvedObject.labels``/``annotations``. The exporter has no default source or detail-type:
  both are set in its receiver (``source:``, ``detailType:``, ``eventBusName:``); this project's
  rule expects ``POD_EVENT_SOURCE``/``POD_EVENT_DETAIL_TYPE`` on the control plane's bus (see the
  receiver in ``JobEventsPodRule``'s comment in template.yaml). A receiver with a ``details:``
  layout changes the detail's shape: leave it out so the whole Event is sent.

Which cluster an event is about: the agent's event names its job's uid (``jobUid``, assigned by the
API server, unique across clusters), which is how it is matched. A pod event names a namespace and
a pod name, which two clusters may share; the exporter adds its ``clusterName`` setting (empty unless
configured): set it to the HyperPod cluster's name (or its ARN, or the EKS cluster's name) so the
event is matched on that cluster only. An event without one is matched only when exactly one
supervised cluster has that pod. Either way a pod fault is acted on only once the Kubernetes API
shows it (``ObservedPod``): the bus is not a trusted channel.

Field names are the producers' own (camelCase); models ignore unknown keys, so a newer agent or
exporter adding one does not turn into a rejection.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from hyperpod_control.models.events import EventBridgeEnvelope
from hyperpod_control.models.tasks import TaskModel

#: The agent's push (agent/hyperpod_agent/events.py SOURCE and DETAIL_TYPE).
AGENT_EVENT_SOURCE = "hyperpod-control.agent"
AGENT_EVENT_DETAIL_TYPE = "HyperPod Agent State Change"
#: What JobEventsPodRule expects kubernetes-event-exporter's EventBridge receiver to be configured
#: with (the exporter has no default for either). The function itself accepts any source and
#: detail-type that is not the agent's: the rule is what selects.
POD_EVENT_SOURCE = "kubernetes-event-exporter"
POD_EVENT_DETAIL_TYPE = "Kubernetes Event"
#: Reasons of a pod's Warning event that mean the pod's training process is lost: the kernel's OOM
#: killer (``OOMKilling`` as node-problem-detector names it, ``OOMKilled`` as the container's
#: termination reason), the kubelet's eviction, a container that exited in error.
POD_FAULT_REASONS = frozenset({"OOMKilled", "OOMKilling", "Evicted", "Error"})


class AgentStateDetail(BaseModel):
    """The detail of the agent's ``HyperPod Agent State Change``."""

    # Schema built on first use, not at import (cold start: README, Performance).
    model_config = ConfigDict(extra="ignore", populate_by_name=True, defer_build=True)

    job_name: str = Field(default="", alias="jobName")
    namespace: str = Field(min_length=1)
    job_uid: str = Field(min_length=1, alias="jobUid", description="The HyperPodPyTorchJob's uid.")
    pod: str = Field(min_length=1)
    rank: int | None = None
    status: Literal["faulted", "completed"] = Field(description="The agent pushes only these two.")
    reason: str | None = None
    message: str | None = None
    fault_count: int = Field(default=0, ge=0, alias="faultCount")
    time: datetime | None = None

    @field_validator("status", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value


class AgentStateEvent(EventBridgeEnvelope):
    source: Literal["hyperpod-control.agent"]
    detail_type: Literal["HyperPod Agent State Change"] = Field(alias="detail-type")
    detail: AgentStateDetail


class InvolvedObject(BaseModel):
    """``involvedObject``: a core/v1 ObjectReference, with the exporter's labels when it read them."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True, defer_build=True)

    kind: str = Field(min_length=1)
    name: str = Field(min_length=1)
    namespace: str | None = None
    uid: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)


class KubernetesEventDetail(BaseModel):
    """A core/v1 Event as kubernetes-event-exporter sends it (no ``details:`` layout)."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True, defer_build=True)

    involved_object: InvolvedObject = Field(alias="involvedObject")
    reason: str = ""
    message: str = ""
    type: str = "Normal"
    count: int | None = None
    first_timestamp: datetime | None = Field(default=None, alias="firstTimestamp")
    last_timestamp: datetime | None = Field(default=None, alias="lastTimestamp")
    event_time: datetime | None = Field(default=None, alias="eventTime")
    metadata: dict = Field(default_factory=dict)
    #: The exporter's ``clusterName`` setting ("" when not configured): which cluster sent it.
    cluster_name: str = Field(default="", alias="clusterName")

    @field_validator("cluster_name", mode="before")
    @classmethod
    def _no_null_cluster(cls, value: object) -> object:
        return "" if value is None else value.strip() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _namespaced(self) -> KubernetesEventDetail:
        # omitempty in the API's JSON: an Event about a pod lives in the pod's namespace.
        if not self.involved_object.namespace:
            namespace = self.metadata.get("namespace") if isinstance(self.metadata, dict) else None
            if not namespace:
                raise ValueError("involvedObject.namespace: the event names no namespace")
            self.involved_object.namespace = namespace
        return self

    @property
    def namespace(self) -> str:
        return self.involved_object.namespace or ""

    @property
    def happened_at(self) -> datetime | None:
        return self.last_timestamp or self.event_time or self.first_timestamp

    @property
    def is_pod_fault(self) -> bool:
        return (
            self.involved_object.kind == "Pod" and self.type == "Warning" and self.reason in POD_FAULT_REASONS
        )


class PodEvent(EventBridgeEnvelope):
    """Any source and detail-type (the rule selects them; see POD_EVENT_SOURCE)."""

    detail: KubernetesEventDetail


#: Event reasons that name an OOM kill (confirmed by a container terminated ``OOMKilled``).
OOM_REASONS = frozenset({"OOMKilled", "OOMKilling"})


class ContainerTermination(BaseModel):
    """``containerStatuses[].state.terminated`` (or ``lastState.terminated``) of a core/v1 Pod."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True, defer_build=True)

    container: str = ""
    exit_code: int | None = Field(default=None, alias="exitCode")
    reason: str | None = None
    signal: int | None = None


class ObservedPod(BaseModel):
    """What the Kubernetes API says of a pod, as far as confirming a pod event needs it (read from
    the API's JSON with ``from_api``; None stands for a pod that is not there)."""

    model_config = ConfigDict(extra="ignore", defer_build=True)

    name: str
    uid: str | None = None
    phase: str | None = None
    #: ``status.reason``: ``Evicted`` when the kubelet evicted it.
    reason: str | None = None
    message: str | None = None
    terminating: bool = False
    #: Every container termination the status shows (current state first, then the last one).
    terminations: list[ContainerTermination] = Field(default_factory=list)

    @classmethod
    def from_api(cls, pod: dict) -> ObservedPod:
        meta = pod.get("metadata") or {}
        status = pod.get("status") or {}
        terminations = []
        for cs in status.get("containerStatuses") or []:
            for state in ("state", "lastState"):
                terminated = (cs.get(state) or {}).get("terminated")
                if terminated:
                    terminations.append(
                        ContainerTermination.model_validate({**terminated, "container": cs.get("name") or ""})
                    )
        return cls(
            name=meta.get("name") or "",
            uid=meta.get("uid"),
            phase=status.get("phase"),
            reason=status.get("reason"),
            message=status.get("message"),
            terminating=bool(meta.get("deletionTimestamp")),
            terminations=terminations,
        )


JobEventAction = Literal["fault", "woken", "history", "ignored", "dropped", "rejected"]


class JobEventResult(TaskModel):
    """What job_events did with one event (the handler's answer; logs and tests read it)."""

    accepted: bool = True
    event_id: str | None = None
    #: ``agent`` or ``pod``; None for a rejected event.
    source: Literal["agent", "pod"] | None = None
    action: JobEventAction
    #: Why a rejected event was refused (the field), or why an accepted one was dropped/ignored.
    reason: str | None = None
    dropped: str | None = None
    job: str | None = None
    uid: str | None = None
    cluster_arn: str | None = None
    pod: str | None = None
    #: The fault was added to the JOB item's pending_faults / the execution was woken.
    recorded: bool = False
    woken: bool = False
    #: A fault event: whether the agent's /status (agent) or the Kubernetes API (pod) confirmed
    #: it, and what they said; None when no confirmation was needed or reached.
    confirmed: bool | None = None
    confirmed_status: str | None = None
