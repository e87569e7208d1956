"""The HyperPodPyTorchJob custom resource as typed models: its spec, its status and conditions, and
the resource itself. No I/O.

Shapes follow docs/hyperpod-contract.md, "The HyperPodPyTorchJob resource" (spec and status of the
operator's CRD) and "Log-monitoring rules". The models read real objects from the API server, so
they are lenient: unknown fields are kept (``extra="allow"``) and survive a dump, and defaults match
the CRD's. Strictness lives in validation.py.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.alias_generators import to_camel

from hyperpod_control.models.job.errors import JobSpecError, problem
from hyperpod_control.models.names import JOB_GROUP, JOB_KIND, JOB_VERSION

#: Both spellings are in use: ``HyperPodPyTorchJob`` in the SDK and most docs, ``HyperPodPytorchJob``
#: in Kueue's ``externalFrameworks`` string and the task-governance sample.
JOB_KINDS = ("HyperPodPyTorchJob", "HyperPodPytorchJob")
JOB_API_VERSION = f"{JOB_GROUP}/{JOB_VERSION}"
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
PRIORITY_LABEL = "kueue.x-k8s.io/priority-class"

ConditionStatus = Literal["True", "False", "Unknown"]


class K8sModel(BaseModel):
    """Base of the resource's parts: camelCase on the wire, unknown fields kept, not rejected."""

    # Schema built on first use, not at import (cold start: README, Performance).
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="allow", defer_build=True
    )

    def dump(self) -> dict:
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


# -- spec ------------------------------------------------------------------------------------------


class LogMonitoringRule(K8sModel):
    """One rule the elastic agent evaluates on the workers' log lines (docs/hyperpod-contract.md,
    "Log-monitoring rules")."""

    name: str
    log_pattern: str
    expected_start_cut_off_in_seconds: int | None = None
    expected_recurring_frequency_in_seconds: int | None = None
    stop_pattern: str | None = None
    metric_threshold: float | None = None
    operator: Literal["gt", "lt", "eq", "gteq", "lteq"] | None = None
    metric_evaluation_data_points: int | None = None
    fault_on_match: bool | None = None


class RestartPolicy(K8sModel):
    eval_period_seconds: int | None = None
    num_restart_before_full_job_restart: int | None = None
    max_full_job_restarts: int | None = None
    max_num_repeat_offenders_to_avoid: int | None = None
    scale_up_snooze_time_in_seconds: int | None = None


class CleanPodPolicy(StrEnum):
    ALL = "All"
    ONLY_COMPLETE = "OnlyComplete"
    NONE = "None"


class RunPolicy(K8sModel):
    clean_pod_policy: CleanPodPolicy = CleanPodPolicy.ALL
    job_max_retry_count: int | None = None
    restart_policy: RestartPolicy | None = None
    log_monitoring_configuration: list[LogMonitoringRule] | None = None
    fault_deadline_seconds: int | None = None
    startup_deadline_seconds: int | None = None
    active_deadline_seconds: int | None = None
    ttl_seconds_after_finished: int | None = None
    suspend: bool | None = None
    workload_mode: str | None = None


class ElasticPolicy(K8sModel):
    min_replicas: int | None = None
    max_replicas: int | None = None
    replica_increment_step: int | None = None
    replica_discrete_values: list[int] | None = None
    scaling_timeout_in_seconds: int | None = None
    graceful_shutdown_timeout_in_seconds: int | None = None
    faulty_scale_down_timeout_in_seconds: int | None = None


class ReplicaSpec(K8sModel):
    name: str
    replicas: int = 0
    max_replicas: int | None = None
    spares: int = 0
    #: A Kubernetes PodTemplateSpec, kept as the plain dict the API server returned: the supervisor
    #: copies it into pods, and typing all of core/v1 here would only lose fields.
    template: dict = Field(default_factory=dict)


class JobSpec(K8sModel):
    nproc_per_node: str = "auto"
    replica_specs: list[ReplicaSpec] = Field(default_factory=list)
    run_policy: RunPolicy = Field(default_factory=RunPolicy)
    elastic_policy: ElasticPolicy | None = None

    @field_validator("nproc_per_node", mode="before")
    @classmethod
    def _number_as_text(cls, value: Any) -> Any:
        # The CRD types it as a string, but YAML turns an unquoted 8 into a number.
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


# -- status ----------------------------------------------------------------------------------------


class JobCondition(K8sModel):
    type: str
    status: ConditionStatus
    reason: str = ""
    message: str = ""
    # Optional although Kubernetes requires it, so that a status another writer left without one
    # still parses; set_condition always fills it.
    last_transition_time: str | None = None
    last_probe_time: str | None = None


class RestartStatus(K8sModel):
    current_eval_period: str | int | None = None
    restart_count: int = 0
    full_job_restart_count: int = 0


class FaultyPodInstanceList(K8sModel):
    restart_type: Literal["PLR", "JLR"] | None = None
    faulty_instance_id_list: list[str] = Field(default_factory=list)
    faulty_pod_list: list[str] = Field(default_factory=list)
    faulty_rank_list: list[int | str] = Field(default_factory=list)


class JobStatus(K8sModel):
    start_time: str | None = None
    completion_time: str | None = None
    conditions: list[JobCondition] = Field(default_factory=list)
    restart_count: int = 0
    restart_status: RestartStatus | None = None
    latest_faulty_pod_instance_list: FaultyPodInstanceList | None = None
    master_addr: str | None = None
    #: A string in AWS's CRD; a number from an older writer still parses.
    master_port: int | str | None = None
    #: ObjectReferences in AWS's CRD; pod names from an older writer still parse.
    job_pods: list[dict[str, Any] | str] = Field(default_factory=list)


# -- the resource ----------------------------------------------------------------------------------


class JobMeta(K8sModel):
    name: str = ""
    namespace: str = "default"
    uid: str | None = None
    generation: int = 1
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    deletion_timestamp: str | None = None
    resource_version: str | None = None


class HyperPodPytorchJob(K8sModel):
    """A HyperPodPyTorchJob as read from the API server. ``model_validate`` only checks types; use
    :func:`parse_job` to also enforce what the control plane needs to run it."""

    api_version: str = JOB_API_VERSION
    kind: str = JOB_KIND
    metadata: JobMeta = Field(default_factory=JobMeta)
    spec: JobSpec = Field(default_factory=JobSpec)
    status: JobStatus | None = None

    @property
    def replicas(self) -> int:
        """Pods (nodes) the job runs on, over all replica specs."""
        return sum(r.replicas for r in self.spec.replica_specs)

    @property
    def spares(self) -> int:
        """Spare pods Kueue reserves beyond ``replicas``, over all replica specs."""
        return sum(r.spares for r in self.spec.replica_specs)

    @property
    def replica_spec(self) -> ReplicaSpec:
        """The replica spec whose pod template the supervisor uses.

        Jobs written by ``hyp`` have exactly one (named ``pod``). A job with several has its
        replicas summed, and each pod built from its own entry's template (``replica_spec_at``).
        """
        if not self.spec.replica_specs:
            raise JobSpecError([problem("spec.replicaSpecs", "must list at least one replica spec")])
        return self.spec.replica_specs[0]

    def replica_spec_at(self, position: int) -> ReplicaSpec:
        """The replica spec whose template builds pod ``position`` of a full set of pods: the
        entries' ``replicas`` in order (ranks are assigned in that order), then their ``spares``
        in order; beyond (a pod added later: a replacement spare, an elastic scale-up) the
        first entry's."""
        specs = self.spec.replica_specs
        if not specs:
            return self.replica_spec  # raises, naming the field
        offset = position
        for counts in ([r.replicas for r in specs], [r.spares for r in specs]):
            for spec, count in zip(specs, counts, strict=True):
                if offset < count:
                    return spec
                offset -= count
        return specs[0]

    @property
    def queue_name(self) -> str | None:
        return self.metadata.labels.get(QUEUE_LABEL)

    @property
    def priority_class(self) -> str | None:
        return self.metadata.labels.get(PRIORITY_LABEL)

    @property
    def nproc_per_node_value(self) -> int | str:
        """``nprocPerNode`` as a number when it is one, else the keyword (``auto``/``cpu``/``gpu``)."""
        text = self.spec.nproc_per_node
        return int(text) if text.isdigit() else text

    @property
    def is_being_deleted(self) -> bool:
        return self.metadata.deletion_timestamp is not None

    def condition(self, type: str) -> JobCondition | None:
        if self.status is None:
            return None
        return next((c for c in self.status.conditions if c.type == type), None)


def set_condition(
    conditions: list[JobCondition],
    type: str,
    status: ConditionStatus | bool,
    reason: str,
    message: str,
    now: str,
) -> list[JobCondition]:
    """``conditions`` with the one of ``type`` replaced (or appended); the input is not changed.

    Kubernetes convention: ``lastTransitionTime`` moves only when the status changes, so it tells
    how long the job has been in that state; a new reason or message alone keeps it.
    """
    if isinstance(status, bool):
        status = "True" if status else "False"
    old = next((c for c in conditions if c.type == type), None)
    since = old.last_transition_time if old is not None and old.status == status else None
    new = JobCondition(
        type=type,
        status=status,
        reason=reason,
        message=message,
        last_transition_time=since or now,
        last_probe_time=old.last_probe_time if old is not None else None,
    )
    result: list[JobCondition] = []
    for c in conditions:
        if c.type != type:
            result.append(c.model_copy(deep=True))
        elif c is old:
            result.append(new)
        # later duplicates of the type are dropped: a type appears once
    if old is None:
        result.append(new)
    return result
