"""Inputs and outputs of the Step Functions Lambda tasks.

Task inputs are camelCase JSON (what a user types into the console or ``hpctl``); models validate
them so that a bad request fails at its first step with the field named.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from hyperpod_control.models.records import OperatorMode


class TaskModel(BaseModel):
    # Schema built on first use, not at import (cold start: README, Performance).
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", defer_build=True
    )

    def dump(self) -> dict:
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class RegisterClusterInput(TaskModel):
    """Input of the ``register_cluster`` workflow and its CheckCluster task."""

    cluster_name: str = Field(
        min_length=1,
        max_length=63,
        pattern=r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$",
        description="The HyperPod cluster's name (not the EKS cluster's).",
    )
    mode: OperatorMode = Field(description="Which training operator runs this cluster's jobs.")


class ClusterCheck(TaskModel):
    cluster_name: str
    cluster_arn: str
    cluster_status: str
    ready: bool
    node_count: int = 0


class RecordOperatorInput(TaskModel):
    cluster_name: str
    cluster_arn: str
    mode: OperatorMode
    execution: str | None = None


class RecordFailureInput(TaskModel):
    """What a workflow's Catch hands to RecordFailure: the failed step, Step Functions' error
    object (``{"Error", "Cause"}``) and the workflow's state at that point."""

    model_config = ConfigDict(extra="ignore")

    step: str = "unknown"
    error: dict = Field(default_factory=dict)
    execution: str | None = None
    state: dict = Field(default_factory=dict)

    def cluster_arn(self) -> str | None:
        for source in (self.state.get("check") or {}, self.state):
            if isinstance(source, dict) and source.get("clusterArn"):
                return str(source["clusterArn"])
        return None
