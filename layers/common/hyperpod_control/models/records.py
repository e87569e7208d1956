"""Items of the single DynamoDB table (docs/hyperpod-contract.md, "Data model").

Each record knows its keys; the store turns records into items and back. ``version`` is the
optimistic-concurrency attribute: a write that changes a decision is conditional on it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


def utcnow() -> datetime:
    return datetime.now(UTC)


def aware(value: datetime) -> datetime:
    """``value`` with a time zone: a naive time is UTC."""
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def parse_time(value: Any) -> datetime | None:
    """A time as an item or an API keeps it (a datetime, or ISO 8601 text with or without ``Z``),
    in UTC where it names no zone; None when it is missing or unreadable."""
    if isinstance(value, datetime):
        return aware(value)
    if not isinstance(value, str) or not value:
        return None
    try:
        return aware(datetime.fromisoformat(value.replace("Z", "+00:00")))
    except ValueError:
        return None


def cluster_pk(cluster_arn: str) -> str:
    return f"CLUSTER#{cluster_arn}"


OPERATOR_SK = "OPERATOR"
#: A sparse global secondary index of the OPERATOR items only (template.yaml ``Operators``):
#: listing the registered clusters is a Query on it, not a Scan of the whole table and its history.
OPERATORS_INDEX = "Operators"
#: Its partition key, an attribute only OPERATOR items carry (always ``OPERATOR_SK``).
OPERATORS_INDEX_KEY = "operator_index"


def node_sk(instance_id: str) -> str:
    return f"NODE#{instance_id}"


class OperatorMode(StrEnum):
    """Which training operator runs a cluster's jobs (exactly one per cluster)."""

    ADDON = "addon"
    SERVERLESS = "serverless"


class OperatorStatus(StrEnum):
    REGISTERED = "REGISTERED"
    INSTALLING = "INSTALLING"
    ACTIVE = "ACTIVE"
    FAILED = "FAILED"


class NodeHealth(StrEnum):
    HEALTHY = "Healthy"
    UNHEALTHY = "Unhealthy"


class Record(BaseModel):
    # Schema built on first use, not at import (cold start: README, Performance).
    model_config = ConfigDict(extra="ignore", populate_by_name=True, defer_build=True)

    version: int = Field(default=0, ge=0, description="Optimistic-concurrency counter of the item.")
    updated_at: datetime = Field(default_factory=utcnow)

    def index_keys(self) -> dict[str, str]:
        """Attributes the item carries for a secondary index (none: in no index)."""
        return {}


class OperatorRecord(Record):
    """``CLUSTER#<arn>`` / ``OPERATOR``: the cluster's training operator and its last workflow."""

    cluster_arn: str
    cluster_name: str
    #: The orchestrating EKS cluster (its Kubernetes API); recorded by the install workflow.
    eks_cluster_name: str | None = None
    mode: OperatorMode
    status: OperatorStatus = OperatorStatus.REGISTERED
    addon_version: str | None = None
    role_arn: str | None = None
    association_id: str | None = None
    lock_owner: str | None = None
    last_workflow: str | None = None
    reason: str | None = None

    @property
    def pk(self) -> str:
        return cluster_pk(self.cluster_arn)

    @property
    def sk(self) -> str:
        return OPERATOR_SK

    def index_keys(self) -> dict[str, str]:
        return {OPERATORS_INDEX_KEY: OPERATOR_SK}


JOB_WATCH_SK = "WATCH#jobs"


class JobWatchRecord(Record):
    """``CLUSTER#<arn>`` / ``WATCH#jobs``: where the cluster's job watch resumes, and who holds it.

    One watcher per cluster at a time (``holder`` until ``held_until``, taken with a conditional
    write); the next resumes from ``resource_version``, so no change falls between two of them."""

    cluster_arn: str
    resource_version: str | None = None
    holder: str | None = None
    held_until: datetime | None = None

    @property
    def pk(self) -> str:
        return cluster_pk(self.cluster_arn)

    @property
    def sk(self) -> str:
        return JOB_WATCH_SK


class NodeRecord(Record):
    """``CLUSTER#<arn>`` / ``NODE#<instance-id>``: a node's health as HyperPod last reported it."""

    cluster_arn: str
    instance_id: str
    health_status: NodeHealth
    health_reason: str = ""
    repair_action: str = "None"
    last_event_time: datetime
    last_event_id: str
    repair_requested: bool = False
    #: When the node last went Unhealthy; kept when it heals (a Healthy write leaves None fields
    #: alone), so the repair circuit breaker counts nodes that failed in its window, healed or not.
    failed_at: datetime | None = None
    # -- what node_health did about the last change (``Store.record_node_outcome``) --
    #: The event whose actions all succeeded (a retry of an event that failed half way resumes).
    handled_event_id: str | None = None
    kube_actions: list[str] | None = None
    repair_requested_action: str | None = None
    repair_requested_at: datetime | None = None
    #: Why no repair was requested (disabled, NodeRecovery Automatic, replace not allowed, breaker).
    repair_skipped_reason: str | None = None
    #: A requested repair that destroys data says so here (a Replace wipes the node's volumes).
    repair_warning: str | None = None
    #: The repair circuit breaker stopped automatic repair for this change.
    breaker_open: bool = False
    #: The Kubernetes or SageMaker failure of the last attempt (the event is retried, then DLQ'd).
    action_error: str | None = None

    @property
    def node_name(self) -> str:
        # HyperPod's events carry no Kubernetes node name; HyperPod EKS names nodes this way.
        return f"hyperpod-{self.instance_id}"

    @property
    def pk(self) -> str:
        return cluster_pk(self.cluster_arn)

    @property
    def sk(self) -> str:
        return node_sk(self.instance_id)


def job_sk(uid: str) -> str:
    return f"JOB#{uid}"


def job_history_pk(uid: str) -> str:
    return f"JOB#{uid}"


class JobPhase(StrEnum):
    """Where the supervisor is with a job (the JOB item's ``phase``)."""

    PENDING = "Pending"  # claimed; the execution has not admitted it yet
    CREATING = "Creating"  # pods created, waiting for every agent to answer
    RUNNING = "Running"  # agents started
    #: runPolicy.suspend: pods removed until it is unset; the JOB item keeps the last pods' names
    SUSPENDED = "Suspended"
    COMPLETED = "Completed"
    FAILED = "Failed"
    #: addon mode: AWS's operator runs the job; we only record what its status says
    OBSERVED = "Observed"

    @property
    def finished(self) -> bool:
        return self in (JobPhase.COMPLETED, JobPhase.FAILED)


class PodSlot(BaseModel):
    """One pod of a job: a rank's, or a spare's (``rank`` None)."""

    model_config = ConfigDict(defer_build=True)

    pod: str
    rank: int | None = None
    node: str | None = None
    ip: str | None = None
    #: Poll rounds in a row whose /status got no answer in time (supervisor.silence).
    silent_rounds: int = 0


class JobRecord(Record):
    """``CLUSTER#<arn>`` / ``JOB#<uid>``: one HyperPodPyTorchJob as the supervisor runs it.

    Claimed by reconcile_jobs with a conditional put (one execution per job generation); every
    later write is conditional on ``version``, so two writers (the execution and node_health, or
    two faults) cannot both decide."""

    cluster_arn: str
    uid: str
    namespace: str
    name: str
    generation: int = 1
    #: The job's generation after an edit the supervisor honours on a running job (runPolicy.suspend);
    #: the execution keeps ``generation`` (its name carries it).
    honoured_generation: int = 0
    mode: OperatorMode = OperatorMode.SERVERLESS
    phase: JobPhase = JobPhase.PENDING
    reason: str | None = None
    #: The execution segment that owns the job now, and its ARN.
    segment: int = 0
    execution_arn: str | None = None
    #: The Monitor state's task token while the execution waits (SendTaskSuccess wakes it).
    task_token: str | None = None
    nnodes: int = 0
    spares: int = 0
    pods: list[PodSlot] = Field(default_factory=list)
    master_addr: str | None = None
    ip_version: str | None = None
    fault_count: int = 0
    restart_count: int = 0
    #: Faults reported from outside the execution (node_health, job_events) not yet acted on.
    pending_faults: list[dict] = Field(default_factory=list)
    #: addon mode: the AWS operator's conditions, as last seen.
    conditions: list[dict] = Field(default_factory=list)
    created_at: datetime = Field(default_factory=utcnow)
    started_at: datetime | None = None
    completed_at: datetime | None = None
    poll_rounds: int = 0
    # -- remediation ------------------------------------------------------------------------
    #: The checkpoint every rank finished, per prefix ({prefix: {progressData, progressCount}}),
    #: aggregated over the ranks' /status; sent in the next /start so restarted workers resume.
    progress: dict | None = None
    full_restart_count: int = 0
    #: When each restart happened (restartPolicy.evalPeriodSeconds counts those in its window).
    restart_times: list[datetime] = Field(default_factory=list)
    #: Faults per node name (repeat offenders are avoided on a full job restart).
    offenders: dict[str, int] = Field(default_factory=dict)
    #: A full job restart in progress: when the fault happened and what was decided, so that
    #: StartAgents can report the time to recover once the new pods run.
    recovery: dict | None = None
    # -- elastic training (services/elastic.py) ----------------------------------------------
    #: A scale-up under way: ``{"target": ranks, "since": ISO time, "pods": [the new pods]}``.
    scaling: dict | None = None
    #: Scale-ups in a row whose new pods did not run in ``scalingTimeoutInSeconds``.
    scaling_failures: int = 0
    #: When the job last changed size (``scaleUpSnoozeTimeInSeconds`` counts from here too).
    last_resize_at: datetime | None = None

    @property
    def pk(self) -> str:
        return cluster_pk(self.cluster_arn)

    @property
    def sk(self) -> str:
        return job_sk(self.uid)

    def ranked(self) -> list[PodSlot]:
        return sorted((p for p in self.pods if p.rank is not None), key=lambda p: p.rank or 0)

    def spare_pods(self) -> list[PodSlot]:
        return [p for p in self.pods if p.rank is None]


class JobEventRecord(Record):
    """``JOB#<uid>`` / ``EVENT#<time>#<id>``: one entry of a job's history (kept after the job is
    deleted; DynamoDB's TTL removes it at ``expiration``)."""

    uid: str
    event_id: str
    at: datetime = Field(default_factory=utcnow)
    cluster_arn: str
    namespace: str
    name: str
    kind: str
    message: str
    details: dict = Field(default_factory=dict)
    expiration: int | None = None

    @property
    def pk(self) -> str:
        return job_history_pk(self.uid)

    @property
    def sk(self) -> str:
        return f"EVENT#{self.at.strftime('%Y-%m-%dT%H:%M:%S.%fZ')}#{self.event_id}"
