"""The HyperPodPyTorchJob custom resource as typed models, and the checks a job must pass before the
control plane runs it. No I/O.

Shapes follow docs/hyperpod-contract.md, "The HyperPodPyTorchJob resource" (spec and status of the
operator's CRD) and "Log-monitoring rules". The models read real objects from the API server, so
they are lenient: unknown fields are kept (``extra="allow"``) and survive a dump, and defaults match
the CRD's. Strictness lives in :func:`parse_job`, which collects every problem of a job (type errors
and rule breaks alike) into one :class:`JobSpecError` whose lines name the Kubernetes path and the
fix, so a user fixes the manifest in one pass instead of one error per apply.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic.alias_generators import to_camel, to_snake

from hyperpod_control.exceptions import InvalidInputError
from hyperpod_control.models.names import JOB_GROUP, JOB_KIND, JOB_VERSION

#: Both spellings are in use: ``HyperPodPyTorchJob`` in the SDK and most docs, ``HyperPodPytorchJob``
#: in Kueue's ``externalFrameworks`` string and the task-governance sample.
JOB_KINDS = ("HyperPodPyTorchJob", "HyperPodPytorchJob")
JOB_API_VERSION = f"{JOB_GROUP}/{JOB_VERSION}"
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
PRIORITY_LABEL = "kueue.x-k8s.io/priority-class"
NPROC_KEYWORDS = ("auto", "cpu", "gpu")
#: A Failed condition's message must stay readable in ``kubectl describe`` and fit the status.
MESSAGE_LIMIT = 1000

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
            raise JobSpecError([_problem("spec.replicaSpecs", "must list at least one replica spec")])
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


# -- validation ------------------------------------------------------------------------------------


class JobSpecError(InvalidInputError):
    """A HyperPodPyTorchJob the control plane will not run; ``problems`` has one line per fault,
    each ``<path>: <what is wrong>; <the fix>``."""

    def __init__(self, problems: list[str], *, job: str | None = None) -> None:
        self.problems = list(problems)
        self.job = job
        subject = f"HyperPodPyTorchJob {job}" if job else "HyperPodPyTorchJob"
        super().__init__(f"{subject} is invalid: " + "; ".join(self.problems))


def _problem(path: str, what: str, fix: str | None = None) -> str:
    return f"{path}: {what}; {fix}" if fix else f"{path}: {what}"


def _get(obj: Any, key: str) -> Any:
    """``obj[key]`` by its camelCase name or, as the models accept both, its snake_case one."""
    if not isinstance(obj, dict):
        return None
    return obj[key] if key in obj else obj.get(to_snake(key))


def _int(value: Any) -> int | None:
    """The value as an integer the way pydantic would read it, or None (then pydantic reports it)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and re.fullmatch(r"\s*-?\d+\s*", value):
        return int(value)
    return None


# Fixes for type errors, by field name: pydantic says what is wrong, these say what to write.
_FIXES = {
    "replicas": "set the number of nodes the job runs on (an integer)",
    "spares": "set the number of spare nodes Kueue reserves (an integer, 0 for none)",
    "maxReplicas": "set the elastic upper bound on nodes (an integer)",
    "nprocPerNode": 'write "auto", "cpu", "gpu" or a number of processes per node, quoted',
    "template": "give a PodTemplateSpec (metadata and spec with containers)",
    "cleanPodPolicy": "use All, OnlyComplete or None",
    "operator": "use one of gt, lt, eq, gteq, lteq",
    "restartType": "use PLR or JLR",
    "labels": "label values are strings; quote numbers and booleans",
    "annotations": "annotation values are strings; quote numbers and booleans",
    "name": "give a name",
    "logPattern": "give a regular expression matched against each log line",
}


def _kube_path(loc: tuple, data: Any) -> str:
    """Render a pydantic error location as a Kubernetes field path (``spec.replicaSpecs[0].replicas``).

    Walks the input alongside, so that pydantic's internal tags (union members, validator names)
    are dropped and only keys and indexes that exist in the object, or the missing key, remain.
    Without the input (``data`` None) the location is rendered as it is.
    """
    path = ""
    current = data
    for part in loc:
        if isinstance(current, list) and isinstance(part, int):
            path += f"[{part}]"
            current = current[part] if 0 <= part < len(current) else None
        elif isinstance(current, dict | None) and isinstance(part, str) and "[" not in part:
            # label and annotation keys hold dots and slashes: bracket them to keep the path readable
            path += f'["{part}"]' if "." in part or "/" in part else (f".{part}" if path else part)
            current = current.get(part) if current is not None else None
        elif current is None and isinstance(part, int):
            path += f"[{part}]"
        # anything else is a tag pydantic adds to the location (a union member, a validator's
        # name), met where the input is already a scalar: not a field
    return path or "(job)"


def _type_problems(exc: ValidationError, data: Any) -> list[str]:
    lines = []
    for err in exc.errors(include_url=False):
        path = _kube_path(tuple(err["loc"]), data)
        # the fix of the nearest named field: "labels" for metadata.labels["a/b"]
        fields = reversed(re.findall(r"[A-Za-z_]\w*", re.sub(r'\["[^"]*"\]', "", path)))
        fix = next((_FIXES[f] for f in fields if f in _FIXES), "correct the value")
        what = err["msg"][:1].lower() + err["msg"][1:]
        if err["type"] != "missing":
            what += f" (got {err['input']!r:.60})"
        lines.append(_problem(path, what, fix))
    return lines


def _check_not_negative(lines: list[str], obj: Any, base: str, keys: tuple[str, ...], fix: str) -> None:
    for key in keys:
        value = _int(_get(obj, key))
        if value is not None and value < 0:
            lines.append(_problem(f"{base}.{key}", f"must not be negative (got {value})", fix))


def _check_rules(lines: list[str], rules: Any, base: str) -> None:
    if not isinstance(rules, list):
        return
    for i, rule in enumerate(rules):
        path = f"{base}[{i}]"
        _check_not_negative(
            lines,
            rule,
            path,
            ("expectedStartCutOffInSeconds", "expectedRecurringFrequencyInSeconds"),
            "give a number of seconds, or leave it out",
        )
        points = _int(_get(rule, "metricEvaluationDataPoints"))
        if points is not None and points < 1:
            lines.append(
                _problem(
                    f"{path}.metricEvaluationDataPoints",
                    f"must be at least 1 (got {points})",
                    "set how many consecutive matches count as slow",
                )
            )
        has_threshold = _get(rule, "metricThreshold") is not None
        if has_threshold != (_get(rule, "operator") is not None):
            lines.append(
                _problem(
                    path,
                    "metricThreshold and operator go together",
                    "give both (the agent compares the captured metric with the threshold), or neither",
                )
            )


def _check_run_policy(lines: list[str], run: Any) -> None:
    if not isinstance(run, dict):
        return
    _check_not_negative(
        lines,
        run,
        "spec.runPolicy",
        ("jobMaxRetryCount", "faultDeadlineSeconds", "startupDeadlineSeconds", "activeDeadlineSeconds"),
        "use 0 or a positive number, or leave it out",
    )
    ttl = _int(_get(run, "ttlSecondsAfterFinished"))
    if ttl is not None and ttl < -1:
        lines.append(
            _problem(
                "spec.runPolicy.ttlSecondsAfterFinished",
                f"must be -1 or more (got {ttl})",
                "use -1 to keep the finished job forever, or the seconds to keep it",
            )
        )
    restart = _get(run, "restartPolicy")
    if isinstance(restart, dict):
        if _get(restart, "evalPeriodSeconds") is None:
            lines.append(
                _problem(
                    "spec.runPolicy.restartPolicy.evalPeriodSeconds",
                    "is required when restartPolicy is given",
                    "set the window in seconds the restart limits count over (e.g. 21600), "
                    "or remove restartPolicy",
                )
            )
        else:
            period = _int(_get(restart, "evalPeriodSeconds"))
            if period is not None and period < 1:
                lines.append(
                    _problem(
                        "spec.runPolicy.restartPolicy.evalPeriodSeconds",
                        f"must be at least 1 (got {period})",
                        "set the window in seconds the restart limits count over (e.g. 21600)",
                    )
                )
        _check_not_negative(
            lines,
            restart,
            "spec.runPolicy.restartPolicy",
            (
                "numRestartBeforeFullJobRestart",
                "maxFullJobRestarts",
                "maxNumRepeatOffendersToAvoid",
                "scaleUpSnoozeTimeInSeconds",
            ),
            "use 0 or a positive number, or leave it out",
        )
    _check_rules(lines, _get(run, "logMonitoringConfiguration"), "spec.runPolicy.logMonitoringConfiguration")


def _check_elastic(lines: list[str], elastic: Any) -> None:
    if not isinstance(elastic, dict):
        return
    base = "spec.elasticPolicy"
    if (
        _get(elastic, "replicaIncrementStep") is not None
        and _get(elastic, "replicaDiscreteValues") is not None
    ):
        lines.append(
            _problem(
                base,
                "replicaIncrementStep and replicaDiscreteValues are mutually exclusive",
                "keep one: a step to grow by, or the list of allowed replica counts",
            )
        )
    low, high = _int(_get(elastic, "minReplicas")), _int(_get(elastic, "maxReplicas"))
    if low is not None and low < 1:
        lines.append(
            _problem(f"{base}.minReplicas", f"must be at least 1 (got {low})", "set the fewest nodes")
        )
    if low is not None and high is not None and high < low:
        lines.append(
            _problem(
                f"{base}.maxReplicas",
                f"must not be below minReplicas (got {high} < {low})",
                "raise maxReplicas or lower minReplicas",
            )
        )
    step = _int(_get(elastic, "replicaIncrementStep"))
    if step is not None and step < 1:
        lines.append(
            _problem(
                f"{base}.replicaIncrementStep", f"must be at least 1 (got {step})", "set a positive step"
            )
        )
    _check_not_negative(
        lines,
        elastic,
        base,
        ("scalingTimeoutInSeconds", "gracefulShutdownTimeoutInSeconds", "faultyScaleDownTimeoutInSeconds"),
        "give a number of seconds, or leave it out",
    )


def _check_replica_spec(lines: list[str], replica: Any, base: str) -> None:
    if not isinstance(replica, dict):
        return  # pydantic names the type error
    replicas = _get(replica, "replicas")
    count = _int(replicas)
    if replicas is None or (count is not None and count < 1):
        lines.append(
            _problem(
                f"{base}.replicas",
                f"must be at least 1 (got {count if replicas is not None else 'none'})",
                "set the number of nodes the job runs on",
            )
        )
    spares = _int(_get(replica, "spares"))
    if spares is not None and spares < 0:
        lines.append(
            _problem(
                f"{base}.spares",
                f"must not be negative (got {spares})",
                "set the number of spare nodes Kueue reserves, or 0 for none",
            )
        )
    template = _get(replica, "template")
    if template is None or isinstance(template, dict):
        pod_spec = (template or {}).get("spec")
        containers = pod_spec.get("containers") if isinstance(pod_spec, dict) else None
        if not containers:
            lines.append(
                _problem(
                    f"{base}.template.spec.containers",
                    "must list at least one container",
                    "add the training container (it runs hyperpodrun and exposes port 8080)",
                )
            )


def _check_nproc(lines: list[str], value: Any) -> None:
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        value = "auto" if value is None else str(value)
    if not isinstance(value, str):
        return  # pydantic names the type error
    if value in NPROC_KEYWORDS or (value.isdigit() and int(value) > 0):
        return
    lines.append(
        _problem(
            "spec.nprocPerNode",
            f"must be auto, cpu, gpu or a positive integer (got {value!r})",
            'use "auto" (one process per GPU, else per CPU) or the number of processes per node',
        )
    )


def job_problems(obj: Any) -> list[str]:
    """Every problem of a raw HyperPodPyTorchJob object, one line each; empty when it is fine.

    Checks run on the raw dict, next to pydantic's type checks, so that a type error in one field
    does not hide a rule broken in another.
    """
    if not isinstance(obj, dict):
        return [_problem("(job)", f"must be an object (got {type(obj).__name__})", "pass the job's manifest")]
    lines: list[str] = []
    api_version = _get(obj, "apiVersion")
    if api_version != JOB_API_VERSION:
        lines.append(
            _problem(
                "apiVersion",
                f"must be {JOB_API_VERSION} (got {api_version!r})",
                f"set apiVersion: {JOB_API_VERSION}",
            )
        )
    kind = _get(obj, "kind")
    if kind not in JOB_KINDS:
        lines.append(_problem("kind", f"must be {JOB_KINDS[0]} (got {kind!r})", f"set kind: {JOB_KINDS[0]}"))
    meta = _get(obj, "metadata")
    for key, fix in (
        ("name", "give the job a name"),
        ("uid", "pass the job as read from the API server, which assigns the uid"),
    ):
        if not _get(meta, key):
            lines.append(_problem(f"metadata.{key}", "is required", fix))
    spec = _get(obj, "spec")
    if not isinstance(spec, dict):
        if spec is not None:
            return lines  # pydantic names the type error
        spec = {}
    _check_nproc(lines, _get(spec, "nprocPerNode"))
    replica_specs = _get(spec, "replicaSpecs")
    if replica_specs is None or (isinstance(replica_specs, list) and not replica_specs):
        lines.append(
            _problem(
                "spec.replicaSpecs",
                "must list at least one replica spec",
                "add one with replicas and a pod template (hyp names it pod)",
            )
        )
    elif isinstance(replica_specs, list):
        for i, replica in enumerate(replica_specs):
            _check_replica_spec(lines, replica, f"spec.replicaSpecs[{i}]")
    _check_run_policy(lines, _get(spec, "runPolicy"))
    _check_elastic(lines, _get(spec, "elasticPolicy"))
    return lines


def _job_ref(obj: Any) -> str | None:
    meta = _get(obj, "metadata")
    name = _get(meta, "name")
    if not isinstance(name, str) or not name:
        return None
    namespace = _get(meta, "namespace")
    return f"{namespace if isinstance(namespace, str) and namespace else 'default'}/{name}"


def parse_job(obj: dict) -> HyperPodPytorchJob:
    """The job as a model, or :class:`JobSpecError` listing every problem found (types and rules)."""
    lines = job_problems(obj)
    if not isinstance(obj, dict):
        raise JobSpecError(lines)
    job = None
    try:
        job = HyperPodPytorchJob.model_validate(obj)
    except ValidationError as exc:
        # a field the rules already named (kind: None) needs no second line from pydantic
        named = {line.split(": ", 1)[0] for line in lines}
        lines.extend(line for line in _type_problems(exc, obj) if line.split(": ", 1)[0] not in named)
    if lines or job is None:
        raise JobSpecError(list(dict.fromkeys(lines)), job=_job_ref(obj))
    return job


def validation_message(exc: BaseException, limit: int = MESSAGE_LIMIT) -> str:
    """A short text for a Failed condition's message: the problems, as many as fit in ``limit``."""
    if isinstance(exc, JobSpecError):
        problems = exc.problems
    elif isinstance(exc, ValidationError):
        problems = _type_problems(exc, None)
    else:
        problems = [str(exc)]
    text = ""
    for i, line in enumerate(problems):
        more = len(problems) - i
        candidate = f"{text}; {line}" if text else line
        tail = f" (and {more - 1} more)" if more > 1 else ""
        if len(candidate) + len(tail) > limit:
            if not text:  # even the first line does not fit: cut it short
                return line[: max(limit - len(tail) - 3, 0)] + "..." + tail
            return f"{text} (and {more} more)"
        text = candidate
    return text
