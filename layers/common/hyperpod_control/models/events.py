"""EventBridge events the control plane consumes: pydantic models of their envelope and detail.

Field names follow AWS's event reference (docs/hyperpod-contract.md, "Events and node marks").
HyperPod writes the health status as "Unhealthy" or "Healthy"; other spellings are normalised so
a casing change on AWS's side does not turn into a validation failure at 3 a.m.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from hyperpod_control.models.records import NodeHealth

NODE_HEALTH_DETAIL_TYPE = "SageMaker HyperPod Cluster Node Health Event"


class EventBridgeEnvelope(BaseModel):
    """An EventBridge event's envelope: the fields of Powertools' parser ``EventBridgeModel``.

    Defined here because importing that one imports Powertools' parser and builds all its models
    (20 to 40 ms of node_health's and job_events' cold starts, README "Performance"); their events
    (here and models/job_events.py) are validated against subclasses of this one."""

    # Schema built on first use, not at import (cold start: README, Performance).
    model_config = ConfigDict(populate_by_name=True, defer_build=True)

    version: str
    id: str
    source: str
    account: str
    time: datetime
    region: str
    resources: list[str]
    detail_type: str = Field(alias="detail-type")
    detail: Any
    replay_name: str | None = Field(None, alias="replay-name")


class HealthSummary(BaseModel):
    model_config = ConfigDict(extra="allow", defer_build=True)

    #: Healthy or Unhealthy; a value HyperPod may add later stays a plain string, so the event is
    #: recorded and left alone rather than refused (and retried into the dead-letter queue).
    HealthStatus: NodeHealth | str = Field(union_mode="left_to_right")
    HealthStatusReason: str = ""
    RepairAction: str = "None"
    Recommendation: str = ""

    @field_validator("HealthStatus", mode="before")
    @classmethod
    def _normalise(cls, value: object) -> object:
        if isinstance(value, str):
            known = value.strip().capitalize()
            return known if known in NodeHealth._value2member_map_ else value
        return value

    @property
    def known(self) -> bool:
        return isinstance(self.HealthStatus, NodeHealth)


class NodeHealthDetail(BaseModel):
    model_config = ConfigDict(extra="allow", defer_build=True)

    ClusterName: str = Field(min_length=1)
    ClusterArn: str = Field(pattern=r"^arn:aws[a-z-]*:sagemaker:[a-z0-9-]+:\d{12}:cluster/.+")
    InstanceId: str = Field(min_length=1)
    Tags: dict[str, str] = Field(default_factory=dict)
    HealthSummary: HealthSummary


class NodeHealthEvent(EventBridgeEnvelope):
    source: Literal["aws.sagemaker"]
    detail_type: Literal["SageMaker HyperPod Cluster Node Health Event"] = Field(alias="detail-type")
    detail: NodeHealthDetail
