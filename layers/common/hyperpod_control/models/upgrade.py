"""Inputs, outputs and items of the upgrade_operator workflow. No I/O.

The rule it enforces (docs/hyperpod-contract.md, "The training-operator add-on"): any version
upgrades to 1.2.0 or later; elastic training and in-process (checkpointless) restart need 1.2.0 or
later; a downgrade from 1.2.0 or later to an older version requires deleting the jobs first and
resubmitting them after.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from hyperpod_control.models.install import (
    CLUSTER_NAME_PATTERN,
    VERSION_PATTERN,
    ClusterRef,
    LockedClusterInput,
)
from hyperpod_control.models.records import Record
from hyperpod_control.models.tasks import TaskModel

#: The first release with elastic training and in-process restart; crossing it downward drains.
FEATURE_VERSION = (1, 2, 0)
#: The jobs a plan or a step's outcome names; the rest are counted. Both travel in the workflow's
#: state, which Step Functions caps at 256 KiB: a 2,000-job cluster's references would not fit
#: (the steps list the jobs from the cluster themselves; the plan only shows them).
SHOWN_JOBS = 100

UpgradeAction = Literal["noop", "upgrade", "downgrade", "draining_downgrade"]


class UpgradeRequest(TaskModel):
    """Input of ``upgrade_operator`` (and of PlanUpgrade, which ``hpctl upgrade --dry-run`` calls)."""

    model_config = TaskModel.model_config | {"extra": "ignore"}

    cluster_name: str = Field(min_length=1, max_length=63, pattern=CLUSTER_NAME_PATTERN)
    addon_version: str | None = Field(
        default=None, pattern=VERSION_PATTERN, description="target version (default: latest compatible)"
    )
    force: bool = Field(default=False, description="go ahead although jobs use what the target lacks")
    owner: str | None = Field(default=None, description="the execution; names the upgrade's snapshot")


class JobRef(TaskModel):
    """A HyperPodPyTorchJob as the plan shows it."""

    namespace: str
    name: str
    uid: str | None = None
    features: list[str] = Field(default_factory=list)


class PlanDecision(TaskModel):
    """What the pure planning function decides (``services.upgrade.decide_plan``)."""

    action: UpgradeAction
    current_version: str
    target_version: str
    #: The update crosses 1.2.0 (either way): the jobs are snapshotted first.
    crosses: bool = False
    snapshot: bool = False
    #: Delete the jobs before the update (a draining downgrade) and resubmit them after.
    drain: bool = False
    #: A rollback of this update would cross 1.2.0 downward: it drains first.
    rollback_drain: bool = False
    #: The first ``SHOWN_JOBS`` jobs (those using what needs 1.2.0 first); ``job_count`` counts all.
    jobs: list[JobRef] = Field(default_factory=list)
    job_count: int = 0
    forced: list[str] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)

    def dump(self) -> dict:
        return self.model_dump(mode="json", by_alias=True)


class UpgradePlan(PlanDecision):
    """The decision with what the workflow's steps need (cluster, role, configuration, snapshot id)."""

    cluster: ClusterRef
    upgrade_id: str
    role_arn: str | None = None
    configuration_values: dict[str, Any] | None = None


class JobsTaskInput(LockedClusterInput):
    """SnapshotJobs, DrainJobs and ResubmitJobs: the cluster and the upgrade's snapshot id."""

    upgrade_id: str = Field(min_length=1, max_length=80)
    action: Literal["snapshot", "delete", "check", "resubmit"] = "snapshot"


class JobsTaskOutcome(TaskModel):
    snapshotted: int = 0
    deleted: int = 0
    remaining: int = 0
    resubmitted: int = 0
    present: int = 0
    done: bool = True
    #: The jobs acted on, the first ``SHOWN_JOBS`` of them (the counts above count them all).
    jobs: list[str] = Field(default_factory=list)

    @field_validator("jobs")
    @classmethod
    def _shown(cls, jobs: list[str]) -> list[str]:
        return jobs[:SHOWN_JOBS]


class RecordUpgradeInput(LockedClusterInput):
    owner: str
    addon_version: str = Field(pattern=VERSION_PATTERN)
    previous_version: str | None = None


def upgrade_pk(cluster_name: str, upgrade_id: str) -> str:
    return f"UPGRADE#{cluster_name}#{upgrade_id}"


def job_sk(uid: str) -> str:
    return f"JOB#{uid}"


class JobSnapshotRecord(Record):
    """``UPGRADE#<cluster>#<id>`` / ``JOB#<uid>``: one job's manifest kept in the snapshot bucket
    until its resubmission (or its survival) is confirmed; then the item and the object go."""

    cluster_name: str
    upgrade_id: str
    uid: str
    namespace: str
    name: str
    s3_key: str
    size: int = 0
    #: ``snapshotted``: saved; ``deleted``: the workflow deleted it (it must come back);
    #: ``resubmitted``: created again, under ``new_uid``.
    state: Literal["snapshotted", "deleted", "resubmitted"] = "snapshotted"
    new_uid: str | None = None

    @property
    def pk(self) -> str:
        return upgrade_pk(self.cluster_name, self.upgrade_id)

    @property
    def sk(self) -> str:
        return job_sk(self.uid)
