"""The serverless supervisor of one HyperPodPyTorchJob: the steps of the ``supervise_job`` state
machine (Admit, CreatePods, CheckAgents, StartAgents, Arm, Poll, Complete, Fail, Cleanup).

Each step reads the job (Kubernetes) and its JOB item (DynamoDB), decides with the pure functions
of ``supervision.py`` and ``remediation.py``, acts, and writes the JOB item conditionally on the
version it read: a
concurrent writer (node_health adding a fault, a second segment) makes the write fail with
``VersionConflictError`` and Step Functions runs the step again on fresh state. Steps are
idempotent for the same reason: a retried CreatePods finds the pods it made, a retried Complete
finds the job completed.

The execution is the only writer to Kubernetes for its job. Pods are named ``<job>-<index>``,
labelled ``HPJob=<job>`` (what ``hyp list-pods`` selects) and the job's uid, and owned by the job,
so deleting the job lets Kubernetes' garbage collector remove them even if we are gone.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import Field, field_validator

from hyperpod_control.adapters.agents import AGENT_TIMEOUT, AgentCall, AgentClient
from hyperpod_control.deadline import Deadline
from hyperpod_control.exceptions import (
    AccessDeniedError,
    InvalidInputError,
    PermanentError,
    ResourceNotFoundError,
    RetryableError,
)
from hyperpod_control.models.agent import AGENT_PORT, AgentAnswer, AgentState
from hyperpod_control.models.job import (
    CleanPodPolicy,
    HyperPodPytorchJob,
    JobCondition,
    JobSpecError,
    parse_job,
    set_condition,
    validation_message,
)
from hyperpod_control.models.names import JOB_GROUP, JOB_PLURAL, JOB_VERSION, MANAGED_BY, MANAGED_TAG
from hyperpod_control.models.records import (
    JobEventRecord,
    JobPhase,
    JobRecord,
    OperatorMode,
    OperatorStatus,
    PodSlot,
    utcnow,
)
from hyperpod_control.models.tasks import TaskModel
from hyperpod_control.observability import logger
from hyperpod_control.services import elastic, run_policy
from hyperpod_control.services.faults import JobFault
from hyperpod_control.services.remediation import (
    Action,
    Decision,
    aggregate_progress,
    decide,
    restart_counters,
    restart_modes,
    root_faults,
    standing_spares,
    swap_plan,
    unrecorded,
)
from hyperpod_control.services.supervision import (
    agent_cidrs,
    agents_ready,
    assign_ranks,
    avoid_nodes,
    build_network_policy,
    build_pod,
    clean_targets,
    conditions_after,
    decide_agent_association,
    held_table,
    instance_id,
    ip_version_at,
    job_selector,
    judge_round,
    listed,
    node_names,
    node_troubles,
    pod_failure,
    pod_index,
    pod_ip,
    pod_name,
    pod_phase,
    pod_refs,
    rank_ips_mode,
    rank_list,
    rfc3339,
    service_account,
    silence,
    spares_held,
    start_calls,
    status_master_port,
    unreachable,
)

EVENT_SOURCE_COMPONENT = "hyperpod-control-plane-supervisor"


# ============================================================== inputs and outputs


class JobRef(TaskModel):
    """Which job, and which execution segment of it (the execution's input)."""

    cluster_arn: str
    namespace: str
    name: str
    uid: str
    generation: int = 1
    segment: int = Field(default=0, ge=0)


class StepInput(TaskModel):
    job: JobRef
    execution: str | None = None
    state_machine: str | None = None
    token: str | None = None
    reason: str | None = None
    error: dict[str, Any] | None = None


#: The longest reason a step answers: it travels in the execution's state (Step Functions caps a
#: state at 256 KiB); reasons name at most ``LISTED`` pods, this bounds whatever else grows.
REASON_LIMIT = 4000


class RemediationOutcome(TaskModel):
    """What a remediation did, as plain data for the handler's metrics (observability.py): the
    action, the kind of the fault it answered, and how long training stood still (``recovery_ms``,
    None until training runs again: a refusal, or a full restart that waits for its new pods)."""

    action: str
    fault: str
    recovery_ms: int | None = None
    #: False where a step reports the end of a remediation decided by an earlier step (a full
    #: restart's StartAgents), so that each decision is counted once.
    decided: bool = True


class StepResult(TaskModel):
    """Every step answers ``next`` (the ASL Choice branches on it) and, when it matters, why."""

    next: str
    reason: str | None = None
    poll_seconds: int | None = None
    segment_due: bool = False
    #: For the handler's metrics only: never in the execution's state (``dump`` leaves it out).
    remediation: RemediationOutcome | None = Field(default=None, exclude=True)

    @field_validator("reason")
    @classmethod
    def _bounded(cls, reason: str | None) -> str | None:
        if reason is None or len(reason) <= REASON_LIMIT:
            return reason
        # its end kept too: a listed reason ends with how many more there were
        return f"{reason[: REASON_LIMIT - 160]} ... {reason[-100:]} ({len(reason)} characters in all)"

    def dump(self) -> dict:
        # Every key present, None included: the ASL's ResultSelector reads each by path.
        return self.model_dump(mode="json", by_alias=True)


@dataclass
class SupervisorConfig:
    poll_seconds: int = 30
    #: Poll rounds per execution segment: a round is about 14 history events, so 1,000 rounds
    #: stay far below Step Functions' 25,000-event limit.
    segment_rounds: int = 1000
    #: Agents not all ready this long after the pods were created (the job's
    #: runPolicy.startupDeadlineSeconds overrides it) fail the job.
    startup_deadline_seconds: int = 1800
    event_bus: str | None = None
    #: The role the agents push with (AGENT_POD_ROLE_ARN): the job's service account is associated
    #: with it (EKS Pod Identity) before its pods are created. None: no association is made.
    agent_role_arn: str | None = None
    event_ttl_seconds: int = 90 * 24 * 3600
    #: An agent that has not answered /status (within ``status_timeout_s``) this many rounds in a
    #: row, while its pod runs and its node looks healthy, is hung: a fault of its rank.
    silent_rounds: int = 3
    #: The read timeout of a poll's /status calls (a healthy agent answers in milliseconds).
    status_timeout_s: float = 5.0
    #: Where the control plane calls the agents from (AgentAllowedCidrs): the only sources each
    #: job's NetworkPolicy admits to the agent's port; empty admits every source.
    agent_cidrs: tuple[str, ...] = ()
    #: Some ranks COMPLETED and another still RUNNING this many seconds longer than the longest of
    #: them took: a fault (``RankStraggling``), not a wait forever (supervision.misbehaviour).
    straggler_seconds: float = 300.0
    #: What a remediation's /start carries (AGENT_RANK_IPS): ``changed`` sends an agent that holds
    #: the previous table only the ranks whose IP changed, ``full`` every agent the whole table
    #: (README, "Operations").
    rank_ips: Literal["changed", "full"] = "changed"
    #: Jobs of at least this many ranks call their agents at the pod IPs (AGENT_DIRECT_MIN_RANKS,
    #: set where the functions run in the cluster's VPC); 0: the transport AGENT_TRANSPORT names.
    direct_min_ranks: int = 0

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> SupervisorConfig:
        import os

        env = os.environ if env is None else env
        return cls(
            poll_seconds=int(env.get("SUPERVISOR_POLL_SECONDS", 30)),
            segment_rounds=int(env.get("SUPERVISOR_SEGMENT_ROUNDS", 1000)),
            startup_deadline_seconds=int(env.get("SUPERVISOR_STARTUP_DEADLINE_SECONDS", 1800)),
            event_bus=env.get("AGENT_EVENT_BUS") or None,
            agent_role_arn=env.get("AGENT_POD_ROLE_ARN") or None,
            event_ttl_seconds=int(
                env.get("EVENT_TTL_SECONDS") or int(env.get("EVENT_RETENTION_DAYS", 90)) * 24 * 3600
            ),
            silent_rounds=int(env.get("SUPERVISOR_SILENT_ROUNDS", 3)),
            status_timeout_s=float(env.get("AGENT_STATUS_TIMEOUT_SECONDS", 5)),
            agent_cidrs=agent_cidrs(env.get("AGENT_ALLOWED_CIDRS", "")),
            straggler_seconds=float(env.get("SUPERVISOR_STRAGGLER_SECONDS", 300)),
            rank_ips=rank_ips_mode(env.get("AGENT_RANK_IPS", "")),
            direct_min_ranks=int(env.get("AGENT_DIRECT_MIN_RANKS") or 0),
        )


@dataclass
class Supervisor:
    """What the steps act through: the store, one cluster's KubeAdapter, the agents' client."""

    store: Any
    kube: Any
    agents: AgentClient
    config: SupervisorConfig = field(default_factory=SupervisorConfig)
    now: Callable[[], datetime] = utcnow
    #: StepFunctionsAdapter: the next segment's start (NextSegment step)
    sfn: Any = None
    #: The invocation's time budget; ``kube`` and ``agents`` bound every call by it too.
    deadline: Deadline = field(default_factory=Deadline)
    #: EksAdapter and the EKS cluster's name: the agents' Pod Identity association (CreatePods)
    eks: Any = None
    eks_cluster: str = ""
    #: The agents at their pod IPs, for jobs of ``config.direct_min_ranks`` ranks or more (where
    #: the functions run in the cluster's VPC); None: ``agents`` calls every job's agents.
    direct_agents: AgentClient | None = None
    _usual_agents: AgentClient | None = field(default=None, repr=False)

    def fit_transport(self, record: JobRecord) -> None:
        """Call ``record``'s agents directly when the job is large enough: a proxied round is an
        API server request per agent (README, "Operations")."""
        if self.direct_agents is None:
            return
        self._usual_agents = self._usual_agents or self.agents
        large = 0 < self.config.direct_min_ranks <= record.nnodes
        self.agents = self.direct_agents if large else self._usual_agents

    def statuses(self, record: JobRecord, slots: Iterable[PodSlot], pods: dict[str, dict[str, Any]]) -> Any:
        """``/status`` of each slot's agent, with the poll's short timeout."""
        read = (AGENT_TIMEOUT[0], self.config.status_timeout_s)
        return self.agents.call_all(
            AgentCall(
                s.pod,
                "GET",
                "/status",
                ip=pod_ip(pods.get(s.pod)) or s.ip,
                namespace=record.namespace,
                timeout=read,
            )
            for s in slots
        )


def open_supervisor(
    operator: Any, store: Any, config: SupervisorConfig | None = None, deadline: Deadline | None = None
) -> Supervisor:
    """A Supervisor for ``operator``'s cluster with the production adapters: the cluster's
    Kubernetes API (EKS token), and the agents through the pod proxy, or at their pod IPs when
    ``AGENT_TRANSPORT=direct`` (Lambdas in the cluster's VPC) or the job has at least
    ``AGENT_DIRECT_MIN_RANKS`` ranks (the template sets it only where the functions are in the VPC)."""
    import os

    from hyperpod_control.adapters.agents import DirectTransport, ProxyTransport
    from hyperpod_control.adapters.eks import EksAdapter
    from hyperpod_control.adapters.kube import KubeAdapter
    from hyperpod_control.adapters.stepfunctions import StepFunctionsAdapter

    eks_name = operator.eks_cluster_name
    if not eks_name:  # an OPERATOR item written before the install recorded the EKS cluster
        from hyperpod_control.adapters.sagemaker import SageMakerAdapter
        from hyperpod_control.services.node_health import cluster_facts

        eks_name = cluster_facts(SageMakerAdapter().describe_cluster(operator.cluster_name)).eks_cluster_name
    deadline = deadline or Deadline()
    # A timed-out call is never retried by the client: the state machine retries a failed step,
    # the agent client its calls, each within the deadline.
    kube = KubeAdapter(eks_name or "", deadline=deadline, retry_timeouts=False)
    config = config or SupervisorConfig.from_env()
    direct = os.environ.get("AGENT_TRANSPORT", "proxy") == "direct"

    transport = DirectTransport() if direct else ProxyTransport(kube)
    pool = int(os.environ.get("AGENT_POOL_SIZE", 32))
    return Supervisor(
        store=store,
        kube=kube,
        agents=AgentClient(transport, pool_size=pool, deadline=deadline),
        direct_agents=(
            AgentClient(DirectTransport(), pool_size=pool, deadline=deadline)
            if config.direct_min_ranks and not direct
            else None
        ),
        config=config,
        sfn=StepFunctionsAdapter(),
        deadline=deadline,
        eks=EksAdapter(),
        eks_cluster=eks_name or "",
    )


# ============================================================== the steps


def _history(sup: Supervisor, record: JobRecord, kind: str, message: str, **details: Any) -> None:
    now = sup.now()
    sup.store.add_job_event(
        JobEventRecord(
            uid=record.uid,
            event_id=uuid.uuid4().hex[:12],
            at=now,
            cluster_arn=record.cluster_arn,
            namespace=record.namespace,
            name=record.name,
            kind=kind,
            message=message,
            details=details,
            expiration=int((now + timedelta(seconds=sup.config.event_ttl_seconds)).timestamp()),
        )
    )


def _k8s_event(sup: Supervisor, job: HyperPodPytorchJob, kind: str, reason: str, message: str) -> None:
    """A Kubernetes Event on the job; best effort (the status and the history already say it)."""
    now = rfc3339(sup.now())
    meta = job.metadata
    body = {
        "metadata": {"generateName": f"{meta.name}.", "namespace": meta.namespace},
        "involvedObject": {
            "apiVersion": job.api_version,
            "kind": job.kind,
            "name": meta.name,
            "namespace": meta.namespace,
            "uid": meta.uid,
        },
        "type": kind,
        "reason": reason,
        "message": message[:1024],
        "source": {"component": EVENT_SOURCE_COMPONENT},
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    }
    # An Event is a courtesy (the status and the history say it too): a step that has acted must
    # not fail, and be retried into acting twice, for it. What the API server answers is sorted:
    # Events refused (RBAC) or absent (the namespace going away) are said once per environment;
    # a throttled or unavailable API server each time. Anything else is a bug of ours (a body the
    # API server refuses, a TypeError) and fails the step, where the tests see it.
    try:
        sup.kube.create_event(meta.namespace, body)
    except (AccessDeniedError, ResourceNotFoundError) as exc:
        refusal = (type(exc).__name__, meta.namespace)
        if refusal not in _EVENTS_REFUSED:
            _EVENTS_REFUSED.add(refusal)
            logger.warning(
                "Kubernetes Events cannot be created: kubectl describe will not show the supervisor's",
                extra={"namespace": meta.namespace, "reason": reason, "error": str(exc)},
            )
    except RetryableError as exc:
        logger.warning(
            "Kubernetes Event not created: the API server is busy or unavailable",
            extra={"namespace": meta.namespace, "reason": reason, "error": str(exc)},
        )


#: (error, namespace) pairs whose refused Events were logged already in this environment.
_EVENTS_REFUSED: set[tuple[str, str]] = set()


def _read_job(sup: Supervisor, ref: JobRef) -> dict[str, Any] | None:
    """The job object, or None when it is gone (or replaced by another job of the same name)."""
    obj = sup.kube.custom_object(JOB_GROUP, JOB_VERSION, JOB_PLURAL, ref.namespace, ref.name)
    if obj is None or (obj.get("metadata") or {}).get("uid") != ref.uid:
        return None
    if (obj.get("metadata") or {}).get("deletionTimestamp"):
        return None
    return obj


GONE = StepResult(next="gone", reason="the job was deleted")


def _load(sup: Supervisor, ref: JobRef) -> tuple[JobRecord, HyperPodPytorchJob, dict[str, Any]] | None:
    """What most steps start with: the JOB item, the job (validated) and its raw object; None
    when the job was deleted."""
    record = _record(sup, ref)
    obj = _read_job(sup, ref)
    if obj is None:
        return None
    return record, parse_job(obj), obj


def _lenient(obj: dict[str, Any] | None) -> HyperPodPytorchJob | None:
    """The job for finishing steps: types checked, rules not (an invalid job still gets its
    Failed condition), None when it is gone or unreadable."""
    if obj is None:
        return None
    try:
        return HyperPodPytorchJob.model_validate(obj)
    except ValueError:
        return None


def _patch_status(sup: Supervisor, job: HyperPodPytorchJob, status: dict[str, Any]) -> None:
    sup.kube.patch_custom_object_status(
        JOB_GROUP, JOB_VERSION, JOB_PLURAL, job.metadata.namespace, job.metadata.name, status
    )


def _record(sup: Supervisor, ref: JobRef) -> JobRecord:
    record = sup.store.get_job(ref.cluster_arn, ref.uid)
    if record is None:
        raise InvalidInputError(
            f"job {ref.namespace}/{ref.name} ({ref.uid}) has no JOB item.",
            remedy="start supervise_job through reconcile_jobs, which claims the job first.",
        )
    sup.fit_transport(record)
    return record


def _save(sup: Supervisor, record: JobRecord, **update: Any) -> JobRecord:
    return sup.store.put(
        record.model_copy(update={**update, "updated_at": sup.now()}), expected_version=record.version
    )


def new_job_record(ref: JobRef, mode: OperatorMode = OperatorMode.SERVERLESS) -> JobRecord:
    return JobRecord(
        cluster_arn=ref.cluster_arn,
        uid=ref.uid,
        namespace=ref.namespace,
        name=ref.name,
        generation=ref.generation,
        mode=mode,
    )


def admit(request: StepInput, sup: Supervisor) -> StepResult:
    ref = request.job
    poll = sup.config.poll_seconds
    operator = sup.store.get_operator(ref.cluster_arn)
    if (
        operator is None
        or operator.mode is not OperatorMode.SERVERLESS
        or operator.status is not OperatorStatus.ACTIVE
    ):
        return StepResult(
            next="notManaged", reason="the cluster has no active serverless operator", poll_seconds=poll
        )
    record = sup.store.get_job(ref.cluster_arn, ref.uid)
    if record is None:  # started by hand rather than by reconcile_jobs: claim it now
        record = sup.store.put(new_job_record(ref), expected_version=None)
    if ref.segment < record.segment:
        return StepResult(
            next="superseded", reason=f"segment {record.segment} owns the job", poll_seconds=poll
        )
    if record.phase.finished:
        return StepResult(
            next="finished", reason=f"the job is already {record.phase.value}", poll_seconds=poll
        )
    obj = _read_job(sup, ref)
    if obj is None:
        return StepResult(next="gone", reason="the job was deleted", poll_seconds=poll)
    try:
        job = parse_job(obj)
    except JobSpecError as exc:
        message = validation_message(exc)
        now = rfc3339(sup.now())
        raw_conditions = ((obj.get("status") or {}).get("conditions")) or []
        conditions = set_condition(
            [JobCondition.model_validate(c) for c in raw_conditions],
            "Failed",
            "True",
            "InvalidSpec",
            message,
            now,
        )
        sup.kube.patch_custom_object_status(
            JOB_GROUP,
            JOB_VERSION,
            JOB_PLURAL,
            ref.namespace,
            ref.name,
            {"conditions": [c.model_dump(mode="json", by_alias=True, exclude_none=True) for c in conditions]},
        )
        _save(sup, record, phase=JobPhase.FAILED, reason=message, completed_at=sup.now())
        _history(sup, record, "Rejected", message)
        return StepResult(next="rejected", reason=message, poll_seconds=poll)
    first = record.execution_arn is None and record.segment == 0
    record = _save(
        sup,
        record,
        execution_arn=request.execution,
        segment=ref.segment,
        nnodes=job.replicas,
        spares=job.spares,
    )
    if first:
        if job.queue_name:
            reason = "AdmittedWithoutKueue"
            message = (
                f"the job names Kueue queue '{job.queue_name}'; Kueue admission is not supported by the "
                "serverless operator yet, so the job was admitted directly"
            )
        else:
            reason, message = "Admitted", "the serverless operator admitted the job"
        _patch_status(
            sup, job, {"conditions": conditions_after(job, "Created", reason, message, rfc3339(sup.now()))}
        )
        _history(sup, record, "Admitted", message, reason=reason, execution=request.execution)
    else:
        _history(
            sup,
            record,
            "SegmentStarted",
            f"execution segment {ref.segment} took over",
            execution=request.execution,
        )
    nxt = {JobPhase.RUNNING: "monitor", JobPhase.SUSPENDED: "monitor", JobPhase.CREATING: "wait"}.get(
        record.phase, "create"
    )
    return StepResult(next=nxt, poll_seconds=poll)


def create_pods(request: StepInput, sup: Supervisor) -> StepResult:
    ref = request.job
    loaded = _load(sup, ref)
    if loaded is None:
        return GONE
    record, job, _obj = loaded
    # By uid, as every read: a job deleted and recreated under the same name owns none of the
    # old job's pods still terminating.
    existing = set(_pods_by_name(sup, record))
    total = job.replicas + job.spares
    # Before the pods, so none of them is ever reachable outside the policy.
    policy = _ensure_network_policy(sup, record, job)
    if len(existing) < total:
        _ensure_agent_identity(sup, record, job)
    created = []
    for index in range(total):
        name = pod_name(ref.name, index)
        if name in existing:
            continue
        if sup.kube.create_pod(ref.namespace, build_pod(job, index, sup.config.event_bus)) is not None:
            created.append(name)
    slots = [PodSlot(pod=pod_name(ref.name, i)) for i in range(total)]
    record = _save(sup, record, phase=JobPhase.CREATING, pods=slots, created_at=sup.now())
    _history(
        sup,
        record,
        "PodsCreated",
        f"{total} pods ({job.replicas} ranks + {job.spares} spares)",
        pods=created,
        network_policy=policy,
    )
    return StepResult(next="wait")


def _ensure_network_policy(sup: Supervisor, record: JobRecord, job: HyperPodPytorchJob) -> str | None:
    """The job's NetworkPolicy (supervision.build_network_policy), created or brought up to date;
    its name, or None when the cluster's RBAC does not allow it: a cluster installed before the
    control plane's ClusterRole granted networkpolicies. The job then runs as jobs did before
    (its agents' port open in the cluster), with a Warning saying how to close it."""
    body = build_network_policy(job, sup.config.agent_cidrs)
    try:
        sup.kube.ensure_network_policy(record.namespace, body)
    except AccessDeniedError as exc:
        message = (
            f"NetworkPolicy {body['metadata']['name']} not created, the agents' port {AGENT_PORT} stays "
            f"open to the cluster: {exc.message} Re-run the operator install (or upgrade) to update the "
            "control plane's ClusterRoles."
        )
        _k8s_event(sup, job, "Warning", "NetworkPolicyNotCreated", message)
        _history(sup, record, "NetworkPolicyNotCreated", message)
        return None
    return body["metadata"]["name"]


def _ensure_agent_identity(sup: Supervisor, record: JobRecord, job: HyperPodPytorchJob) -> None:
    """The job's service account associated with the agent role (EKS Pod Identity) before its
    pods exist: EKS injects credentials only into pods created after the association. Best
    effort, as the pushes it serves are: when it cannot be made the history says why and the
    pods are created anyway (polling finds every fault). A retryable error (throttling, a
    concurrent create) fails the step, which the state machine retries."""
    role = sup.config.agent_role_arn
    if not (role and sup.config.event_bus and sup.eks is not None and sup.eks_cluster):
        return
    namespace, account = record.namespace, service_account(job)
    try:
        existing = sup.eks.find_association(sup.eks_cluster, namespace, account)
        action = decide_agent_association(existing, role)
        if action == "create":
            sup.eks.create_association(sup.eks_cluster, namespace, account, role, {MANAGED_TAG: MANAGED_BY})
            _history(
                sup,
                record,
                "AgentIdentity",
                f"service account {namespace}/{account} associated with {role} (EKS Pod Identity) "
                "for the agents' pushes",
                serviceAccount=account,
                roleArn=role,
            )
        elif action == "foreign":
            assert existing is not None
            _history(
                sup,
                record,
                "AgentIdentity",
                f"service account {namespace}/{account} is associated with {existing.get('roleArn')}, not "
                f"{role}: its association is left as it is, so the agents' pushes are refused and faults "
                "are found by polling",
                serviceAccount=account,
                roleArn=existing.get("roleArn"),
            )
    except PermanentError as exc:  # access denied, cluster gone: pods run, pushes do not
        _history(
            sup,
            record,
            "AgentIdentity",
            f"no Pod Identity association for {namespace}/{account}: {exc}; the agents cannot push, "
            "faults are found by polling",
            serviceAccount=account,
        )


def _pods_by_name(sup: Supervisor, record: JobRecord) -> dict[str, dict[str, Any]]:
    return {
        p["metadata"]["name"]: p for p in sup.kube.pods(record.namespace, label_selector=job_selector(record))
    }


def check_agents(request: StepInput, sup: Supervisor) -> StepResult:
    ref = request.job
    loaded = _load(sup, ref)
    if loaded is None:
        return GONE
    record, job, obj = loaded
    suspended = _suspension(sup, record, obj)
    if suspended is not None:
        return suspended
    pods = _pods_by_name(sup, record)
    running = [
        (s.pod, pod_ip(pods.get(s.pod))) for s in record.pods if pod_phase(pods.get(s.pod)) == "Running"
    ]
    answers = sup.agents.statuses(ref.namespace, running)
    verdict, why = agents_ready(record, pods, answers)
    if verdict == "wait":
        now, policy = sup.now(), job.spec.run_policy
        over = (
            run_policy.active_deadline(record, policy, now)
            or run_policy.fault_deadline(record, policy, now)
            or run_policy.startup_deadline(record, policy, now, sup.config.startup_deadline_seconds)
        )
        if over:
            return StepResult(next="fail", reason=f"{over}; still {why}")
        return StepResult(next="wait", reason=why)
    if verdict == "fail":
        return StepResult(next="fail", reason=why)
    slots = [
        s.model_copy(
            update={"node": (pods[s.pod].get("spec") or {}).get("nodeName"), "ip": pod_ip(pods[s.pod])}
        )
        for s in record.pods
    ]
    _save(sup, record, pods=slots)
    return StepResult(next="start")


def start_agents(request: StepInput, sup: Supervisor) -> StepResult:
    ref = request.job
    loaded = _load(sup, ref)
    if loaded is None:
        return GONE
    record, job, obj = loaded
    slots = assign_ranks(record.pods, record.nnodes)
    master = next((s.ip for s in slots if s.rank == 0), None)
    now = sup.now()
    ip_version = ip_version_at(now)
    record = record.model_copy(update={"pods": slots, "master_addr": master, "ip_version": ip_version})
    spares = sup.statuses(record, record.spare_pods(), {})
    calls = start_calls(record, job, ip_version, spares_held(spares))
    answers = sup.agents.call_all(calls)
    answers.update(_start_again_if_running(sup, record, calls, answers))
    refused = [f"{pod}: {a.error}" for pod, a in answers.items() if not a.ok]
    if refused:
        return StepResult(next="fail", reason="agents refused /start: " + listed(refused, "; "))
    record = _save(sup, record, phase=JobPhase.RUNNING, started_at=record.started_at or now)
    stamp = rfc3339(now)
    conditions = conditions_after(job, "PodsRunning", "PodsRunning", f"{len(slots)} pods running", stamp)
    merged = [JobCondition.model_validate(c) for c in conditions]
    merged = set_condition(merged, "Running", "True", "Running", f"{record.nnodes} ranks started", stamp)
    _patch_status(
        sup,
        job,
        {
            "conditions": [c.model_dump(mode="json", by_alias=True, exclude_none=True) for c in merged],
            "startTime": (job.status.start_time if job.status and job.status.start_time else stamp),
            "masterAddr": master,
            "masterPort": status_master_port(record.fault_count),
            "jobPods": pod_refs(record.namespace, [s.pod for s in slots]),
            "restartCount": record.restart_count,
        },
    )
    ranks = {str(s.rank): s.pod for s in record.ranked()}
    recovered = None
    if record.recovery:  # the end of a full job restart: training runs again
        recovery = record.recovery
        record = _save(sup, record, recovery=None)
        recovered = _report_recovery(
            sup,
            record,
            parse_job(_read_job(sup, ref) or obj),
            Decision.model_validate(recovery["decision"]),
            [JobFault.model_validate(f) for f in recovery["faults"]],
            datetime.fromisoformat(recovery["fault_at"]),
            now,
            [*recovery["actions"], f"started {record.nnodes} ranks with faultCount {record.fault_count}"],
        ).model_copy(update={"decided": False})
    _history(
        sup,
        record,
        "Started",
        f"{record.nnodes} ranks started, {len(record.spare_pods())} spares standing by",
        ranks=ranks,
        spares=[s.pod for s in record.spare_pods()],
        # how each spare stands by, as its agent's /status said (README, "Images with AWS's agent")
        standby={
            pod: ("started as a spare" if a.status.holds_spares() else "READY, no /start until promoted")
            + f" ({a.status.describe()})"
            for pod, a in spares.items()
            if a.ok and a.status is not None
        },
        master=master,
    )
    return StepResult(next="monitor", poll_seconds=sup.config.poll_seconds, remediation=recovered)


def _start_again_if_running(
    sup: Supervisor, record: JobRecord, calls: list[AgentCall], answers: dict[str, AgentAnswer]
) -> dict[str, AgentAnswer]:
    """This project's agent refuses a ``/start`` while it runs one (409; AWS's agent takes it and
    starts again): a retried StartAgents whose first attempt reached it. Those agents are stopped
    and started again under this attempt's IP table; the answers of their second ``/start``."""
    busy = {pod for pod, a in answers.items() if not a.ok and "409" in (a.error or "")}
    if not busy:
        return {}
    _stop_and_wait(sup, record, [s for s in record.pods if s.pod in busy], "process_level_restart")
    return sup.agents.call_all(c for c in calls if c.pod in busy)


def arm(request: StepInput, sup: Supervisor) -> StepResult:
    """Keep the Monitor state's task token on the JOB item, so node_health and job_events can wake
    the execution with SendTaskSuccess before the poll interval ends."""
    record = _record(sup, request.job)
    current = {s.pod for s in record.pods}
    if any(not f.get("pod") or f["pod"] in current for f in record.pending_faults):
        # A fault arrived between the poll and now, and its sender found no token to wake us
        # with. Waking ourselves with SendTaskSuccess races the task's own start; an error the
        # Monitor state catches is deterministic.
        from hyperpod_control.exceptions import FaultPendingError

        raise FaultPendingError(f"{record.namespace}/{record.name}: a fault is pending; polling now.")
    _save(sup, record, task_token=request.token)
    return StepResult(next="armed")


def poll(request: StepInput, sup: Supervisor) -> StepResult:
    ref = request.job
    record = _record(sup, ref)
    obj = _read_job(sup, ref)
    if obj is None:
        return StepResult(next="gone", reason="the job was deleted")
    suspended = _suspension(sup, record, obj)
    if suspended is not None:
        return suspended
    pods, troubles, answers = _observe(sup, record)
    verdict = judge_round(
        record,
        pods,
        answers,
        sup.now(),
        troubles=troubles,
        silent_limit=sup.config.silent_rounds,
        straggler_s=sup.config.straggler_seconds,
    )
    update: dict[str, Any] = {
        "task_token": None,
        "poll_rounds": record.poll_rounds + 1,
        "pods": silence(record, answers),
    }
    current = {s.pod for s in record.pods}
    stale = [f for f in record.pending_faults if f.get("pod") and f["pod"] not in current]
    if stale:
        update["pending_faults"] = [f for f in record.pending_faults if f not in stale]
    progress = aggregate_progress(
        {
            s.pod: answers[s.pod].status.progress
            for s in record.ranked()
            if s.pod in answers and answers[s.pod].status
        }
    )
    if progress and progress != record.progress:
        update["progress"] = progress
    nxt, why = verdict.next, verdict.reason
    over = run_policy.active_deadline(record, parse_job(obj).spec.run_policy, sup.now())
    if over and verdict.next != "completed":
        nxt, why = "fail", over
    elif verdict.next == "running":
        job = parse_job(obj)
        staged = record.model_copy(update={"pods": update["pods"]})
        update["pods"] = _start_new_spares(sup, staged, pods, answers, job)
        staged = staged.model_copy(update={"pods": update["pods"]})
        grow = _scale_up_round(sup, staged, job, pods, answers)
        update.update(grow)
        if grow.get("resize"):
            update.pop("resize")
            target = (update.get("scaling") or record.scaling or {}).get("target")
            nxt, why = "resize", f"elastic scale-up to {target} ranks"
    _save(sup, record, **update)
    due = nxt == "running" and update["poll_rounds"] >= (ref.segment + 1) * sup.config.segment_rounds
    return StepResult(next=nxt, reason=why, segment_due=due, poll_seconds=sup.config.poll_seconds)


def _suspension(sup: Supervisor, record: JobRecord, obj: dict[str, Any]) -> StepResult | None:
    """``runPolicy.suspend``: set on a job that runs or starts, its agents are shut down and its
    pods deleted (the JOB item keeps the checkpoint progress); unset on a suspended job, its pods
    are created anew and it starts from that checkpoint. None: nothing to do about it. The edit
    of ``suspend`` is the one spec change honoured on a running job: the JOB item records the
    job's generation as honoured (reconcile_jobs would otherwise call it an edit not applied)."""
    job = parse_job(obj)
    wanted = bool(job.spec.run_policy.suspend)
    poll = sup.config.poll_seconds
    if wanted == (record.phase is JobPhase.SUSPENDED):
        if wanted:  # still suspended: nothing runs, nothing to observe
            rounds = record.poll_rounds + 1
            # faults reported about the deleted pods' nodes concern no running pod
            _save(sup, record, poll_rounds=rounds, task_token=None, pending_faults=[])
            due = rounds >= (record.segment + 1) * sup.config.segment_rounds
            return StepResult(
                next="suspended", reason="runPolicy.suspend", poll_seconds=poll, segment_due=due
            )
        return None
    now = sup.now()
    stamp = rfc3339(now)
    generation = job.metadata.generation
    if wanted:
        pods = _pods_by_name(sup, record)
        live = [s for s in record.pods if s.pod in pods and pod_phase(pods[s.pod]) == "Running"]
        sup.agents.call_all(
            AgentCall(s.pod, "POST", "/shutdown", ip=s.ip, namespace=record.namespace) for s in live
        )
        for slot in record.pods:
            sup.kube.delete_pod(record.namespace, slot.pod)
        record = _save(
            sup,
            record,
            phase=JobPhase.SUSPENDED,
            honoured_generation=generation,
            pending_faults=[],
            task_token=None,
            scaling=None,
            recovery=None,
            master_addr=None,
        )
        message = f"runPolicy.suspend: {len(record.pods)} pods deleted; training resumes from the checkpoint"
        conditions = conditions_after(job, "Suspended", "Suspended", message, stamp)
        if job.condition("Running") is not None:
            conditions = _with_condition(conditions, "Running", "False", "Suspended", message, stamp)
        _patch_status(sup, job, {"conditions": _edit_honoured(conditions, stamp), "jobPods": []})
        _k8s_event(sup, job, "Normal", "Suspended", message)
        _history(sup, record, "Suspended", message, progress=record.progress)
        return StepResult(next="suspended", reason=message, poll_seconds=poll)
    slots = _fresh_pods(sup, record, job)
    record = _save(
        sup,
        record,
        phase=JobPhase.CREATING,
        honoured_generation=generation,
        pods=slots,
        nnodes=job.replicas,
        created_at=now,
        # activeDeadlineSeconds counts from the start after the resume, as Kubernetes' Jobs do
        started_at=None,
        task_token=None,
    )
    message = f"runPolicy.suspend unset: {len(slots)} pods created, training resumes from the checkpoint"
    current = (
        [c.model_dump(mode="json", by_alias=True, exclude_none=True) for c in job.status.conditions]
        if job.status
        else []
    )
    conditions = _with_condition(current, "Suspended", "False", "Resumed", message, stamp)
    _patch_status(sup, job, {"conditions": _edit_honoured(conditions, stamp)})
    _k8s_event(sup, job, "Normal", "Resumed", message)
    _history(sup, record, "Resumed", message, pods=[s.pod for s in slots], progress=record.progress)
    return StepResult(next="wait", reason=message, poll_seconds=poll)


def _edit_honoured(conditions: list[dict[str, Any]], stamp: str) -> list[dict[str, Any]]:
    """Pure: reconcile_jobs may have called the suspend edit one not applied before this step
    honoured it (its ``SpecChangeRejected`` condition): no longer true."""
    if not any(c.get("type") == "SpecChangeRejected" and c.get("status") == "True" for c in conditions):
        return conditions
    message = "runPolicy.suspend was applied; other edits of a running job are not"
    return _with_condition(conditions, "SpecChangeRejected", "False", "SuspendApplied", message, stamp)


def _with_condition(
    conditions: list[dict[str, Any]], kind: str, status: str, reason: str, message: str, stamp: str
) -> list[dict[str, Any]]:
    """Pure: ``conditions`` (as the status holds them) with ``kind`` set."""
    merged = set_condition(
        [JobCondition.model_validate(c) for c in conditions], kind, status, reason, message, stamp
    )
    return [c.model_dump(mode="json", by_alias=True, exclude_none=True) for c in merged]


def _scale_up_round(
    sup: Supervisor,
    record: JobRecord,
    job: HyperPodPytorchJob,
    pods: dict[str, dict[str, Any]],
    answers: dict[str, AgentAnswer],
) -> dict[str, Any]:
    """An elastic job's growth, one poll round at a time (services/elastic.py decides): with a
    scale-up under way, ``resize`` once its new pods' agents stand by, or its pods deleted once
    ``scalingTimeoutInSeconds`` passed; else, capacity back (schedulable nodes without a pod of the
    job) and ``scaleUpSnoozeTimeInSeconds`` since the last restart: the new pods created. Returns
    the JOB item's update."""
    now = sup.now()
    scaling = record.scaling
    if scaling:
        if elastic.scale_up_ready(scaling, standing_spares(record, answers)):
            return {"resize": True}
        if not elastic.scaling_expired(scaling, job, now):
            return {}
        for pod in scaling["pods"]:
            sup.kube.delete_pod(record.namespace, pod, grace_period_seconds=0)
        failures = record.scaling_failures + 1
        message = (
            f"elastic scale-up to {scaling['target']} ranks abandoned: its pods {', '.join(scaling['pods'])} "
            f"did not run and answer within scalingTimeoutInSeconds ({failures} in a row)"
        )
        _k8s_event(sup, job, "Warning", "ScaleUpFailed", message)
        _history(sup, record, "ScaleUpFailed", message, target=scaling["target"], pods=scaling["pods"])
        return {
            "scaling": None,
            "scaling_failures": failures,
            "last_resize_at": now,  # the snooze applies before the next try too
            "pods": [s for s in record.pods if s.pod not in set(scaling["pods"])],
        }
    if not elastic.scale_up_open(record, job, now):
        return {}
    free = elastic.free_nodes(sup.kube.nodes(), pods)
    target = elastic.grow_target(record, job, len(free))
    if target is None:
        return {}
    standing = max(0, len(record.spare_pods()) - job.spares)
    count = max(0, target - record.nnodes - standing)
    new = _replacement_spares(sup, job, record.pods, count)
    message = (
        f"elastic scale-up from {record.nnodes} to {target} ranks: {len(free)} schedulable node(s) free, "
        f"{count} pod(s) created"
    )
    _history(sup, record, "ScaleUpStarted", message, target=target, pods=[s.pod for s in new], nodes=free)
    scaling = {"target": target, "since": now.isoformat(), "pods": [s.pod for s in new]}
    if not new:  # idle pods enough already: resize at once
        return {"scaling": scaling, "resize": True}
    return {"scaling": scaling, "pods": [*record.pods, *new]}


def _observe(
    sup: Supervisor, record: JobRecord
) -> tuple[dict[str, dict[str, Any]], dict[str, str], dict[str, AgentAnswer]]:
    """One look at the job: its pods, their nodes' troubles, and the agents worth asking (not those
    of pods lost or on troubled nodes: their connections would hang, and the fault is known)."""
    pods = _pods_by_name(sup, record)
    wanted = node_names(record, pods)

    def troubles_now() -> dict[str, str]:
        nodes = {n["metadata"]["name"]: n for n in sup.kube.nodes()} if wanted else {}
        return node_troubles(record, pods, {name: nodes.get(name) for name in wanted})

    troubles = troubles_now()
    skip = unreachable(record, pods, troubles)
    answers = sup.statuses(record, [s for s in record.pods if s.pod not in skip], pods)
    if any(a.silent for a in answers.values()):
        # Silence may be a node dying: its NotReady may have come while we waited on it.
        troubles = troubles_now()
    return pods, troubles, answers


def _start_new_spares(
    sup: Supervisor,
    record: JobRecord,
    pods: dict[str, dict[str, Any]],
    answers: dict[str, AgentAnswer],
    job: HyperPodPytorchJob,
) -> list[PodSlot]:
    """A replacement spare created after a swap joins once its pod runs and its agent is READY:
    /start it as a spare, with the current IP table, when its agent holds spares; otherwise it
    only joins the JOB item (its node and IP) and stays READY until promoted."""
    slots = []
    fresh = []
    held = spares_held(answers)
    for slot in record.pods:
        answer = answers.get(slot.pod)
        status = answer.status.status if answer and answer.ok and answer.status else None
        if slot.rank is None and status is AgentState.READY and (slot.pod in held or slot.ip is None):
            slot = slot.model_copy(
                update={
                    "node": (pods[slot.pod].get("spec") or {}).get("nodeName"),
                    "ip": pod_ip(pods[slot.pod]),
                }
            )
            fresh.append(slot.pod)
        slots.append(slot)
    if fresh:
        staged = record.model_copy(update={"pods": slots})
        calls = [
            c for c in start_calls(staged, job, record.ip_version or "", spares_held=held) if c.pod in fresh
        ]
        sup.agents.call_all(calls)
        _history(sup, record, "SpareJoined", f"spare(s) {', '.join(fresh)} standing by", pods=fresh)
    return slots


# ============================================================== remediation

STOP_WAIT_S = 90.0


def _stop_and_wait(
    sup: Supervisor,
    record: JobRecord,
    slots: list[PodSlot],
    mode: str,
    *,
    graceful: bool = False,
    timeout: int | None = None,
) -> list[str]:
    """/stop ``slots``' agents and wait until each is READY again (its workers stopped). Agents
    that cannot answer are returned: their pods are dying with their node. ``graceful``: the
    workers get the elastic-event signal (SIGUSR1) rather than the kill, ``timeout`` seconds to
    checkpoint and exit (the wire protocol's ``is_graceful`` and ``timeout``)."""
    from hyperpod_control.models.agent import StopRequest

    body = StopRequest(restart_mode=mode, is_graceful=graceful or None, timeout=timeout).body()
    calls = [AgentCall(s.pod, "POST", "/stop", body=body, ip=s.ip, namespace=record.namespace) for s in slots]
    answers = sup.agents.call_all(calls)
    pending = {s.pod: s.ip for s in slots if answers.get(s.pod) and answers[s.pod].ok}
    unreachable = [s.pod for s in slots if s.pod not in pending]
    deadline = time.monotonic() + STOP_WAIT_S + (timeout or 0)
    while pending:
        statuses = sup.agents.statuses(record.namespace, pending.items())
        for pod, answer in statuses.items():
            if answer.ok and answer.status and answer.status.status is AgentState.READY:
                pending.pop(pod, None)
            elif answer.pod_gone:
                pending.pop(pod, None)
                unreachable.append(pod)
        if not pending:
            break
        if time.monotonic() > deadline:
            from hyperpod_control.exceptions import DependencyUnavailableError

            raise DependencyUnavailableError(
                f"agents {listed(list(pending))} did not stop within {STOP_WAIT_S:.0f} s (retried)."
            )
        time.sleep(sup.deadline.timeout(0.05, f"waiting for agents {listed(list(pending))} to stop"))
    return unreachable


def remediate(request: StepInput, sup: Supervisor) -> StepResult:
    """One coordinated remediation of every fault the job has now (services/remediation.py
    decides; this carries it out). Faults are first made pending on the JOB item, so a retried
    step still sees a fault whose agent it already stopped."""
    ref = request.job
    loaded = _load(sup, ref)
    if loaded is None:
        return GONE
    record, job, _obj = loaded
    pods, troubles, answers = _observe(sup, record)
    verdict = judge_round(
        record,
        pods,
        answers,
        sup.now(),
        troubles=troubles,
        silent_limit=sup.config.silent_rounds,
        straggler_s=sup.config.straggler_seconds,
    )
    if verdict.next == "running" and record.scaling:
        return _scale_up(sup, record, job, answers)
    if verdict.next != "fault":
        return StepResult(
            next="monitor" if verdict.next == "running" else verdict.next,
            poll_seconds=sup.config.poll_seconds,
        )
    faults = root_faults(verdict.faults)
    new = unrecorded(faults, record)
    if new:
        record = sup.store.put(
            record.model_copy(update={"pending_faults": [*record.pending_faults, *new]}),
            expected_version=record.version,
        )
    ready_spares = standing_spares(record, answers)
    modes = restart_modes(record, answers)
    now = sup.now()
    decision = decide(
        faults, record, job.spec.run_policy, ready_spares=ready_spares, restart_modes=modes, now=now
    )
    fault_at = min(f.at for f in faults)
    if decision.action is Action.FAIL:
        _history(
            sup,
            record,
            "RemediationRefused",
            decision.reason,
            faults=[f.model_dump(mode="json") for f in faults],
        )
        outcome = RemediationOutcome(action=decision.action.value, fault=_fault_kind(faults))
        return StepResult(next="fail", reason=decision.reason, remediation=outcome)
    for fault in faults:
        if fault.kind == "node" and fault.node:
            _k8s_event(sup, job, "Warning", "NodeFault", f"Found unhealthy node {fault.node}: {fault.reason}")
    actions: list[str] = []
    counters = restart_counters(record, faults, now)
    if decision.action is Action.FULL_JOB_RESTART:
        shrink = elastic.scale_down(faults, record, job, ready_spares=ready_spares)
        if shrink is None:
            return _full_restart(sup, record, job, decision, faults, fault_at, counters, actions)
        decision = shrink
    slots = list(record.pods)
    resized: dict[str, Any] = {}
    if decision.action is Action.SCALE_DOWN:
        assert decision.nnodes is not None
        leaving = set(decision.delete_pods)
        slots = elastic.resize_slots(record, decision.nnodes, leaving)
        promoted = {s.pod for s in slots if s.rank is not None}
        stop = [s for s in record.pods if s.pod not in leaving and (s.rank is not None or s.pod in promoted)]
        _stop_and_wait(sup, record, stop, "process_level_restart")
        actions.append(f"stopped {len(stop)} agents")
        for pod in decision.delete_pods:
            sup.kube.delete_pod(record.namespace, pod, grace_period_seconds=0)
            actions.append(f"deleted {pod}")
        # every pod stopped starts again: the ranks, and former ranks now standing by
        targets = [s for s in slots if s.pod in {p.pod for p in stop}]
        resized = {"nnodes": decision.nnodes, "last_resize_at": now, "scaling": None}
    elif decision.action is Action.SPARE_SWAP:
        plan = swap_plan(record, decision)
        _stop_and_wait(sup, record, plan.stop, "process_level_restart")
        actions.append(f"stopped {len(plan.stop)} agents")
        for pod in decision.delete_pods:
            # Force deletion: a dead node's kubelet would never confirm a graceful one.
            sup.kube.delete_pod(record.namespace, pod, grace_period_seconds=0)
            actions.append(f"deleted {pod}")
        for rank, pod in sorted(decision.moves.items()):
            actions.append(f"spare {pod} promoted to rank {rank}")
        slots, targets = plan.slots, plan.start
    else:
        mode = (
            "in_process_restart" if decision.action is Action.IN_PROCESS_RESTART else "process_level_restart"
        )
        targets = record.ranked()
        # A spare found running workers is stopped too; it gets no /start (it stands by again).
        running_spares = [s for s in record.spare_pods() if s.pod in {f.pod for f in faults}]
        _stop_and_wait(sup, record, targets + running_spares, mode)
        actions.append(f"stopped {len(targets)} agents ({mode})")
    master = next((s.ip for s in slots if s.rank == 0), record.master_addr)
    ip_version = ip_version_at(sup.now())
    staged = record.model_copy(
        update={"pods": slots, "master_addr": master, "ip_version": ip_version, **counters, **resized}
    )
    chosen = {t.pod for t in targets}
    # The agents hold the table of the last start (their /status said so): they need the changes.
    held = held_table(record, answers) if sup.config.rank_ips == "changed" else None
    calls = [c for c in start_calls(staged, job, ip_version, held=held) if c.pod in chosen]
    started = sup.agents.call_all(calls)
    refused = [f"{pod}: {a.error}" for pod, a in started.items() if not a.ok]
    if refused:
        from hyperpod_control.exceptions import DependencyUnavailableError

        raise DependencyUnavailableError("agents refused /start after remediation: " + listed(refused, "; "))
    resumed = sup.now()
    actions.append(f"started {len(targets)} ranks with faultCount {staged.fault_count}")
    if decision.action is Action.SPARE_SWAP and decision.delete_pods:
        slots = slots + _replacement_spares(sup, job, slots, len(decision.delete_pods))
        actions.append(
            f"created replacement spare(s) {', '.join(s.pod for s in slots[-len(decision.delete_pods) :])}"
        )
    before = record.nnodes
    record = _save(
        sup,
        record,
        **{**counters, **resized, "pods": slots, "master_addr": master, "ip_version": ip_version},
    )
    outcome = _report_recovery(sup, record, job, decision, faults, fault_at, resumed, actions)
    if resized:
        _report_resize(sup, record, job, before, decision.reason, fault_at, resumed, faulty=True)
    return StepResult(
        next="monitor", reason=decision.reason, poll_seconds=sup.config.poll_seconds, remediation=outcome
    )


def _scale_up(
    sup: Supervisor, record: JobRecord, job: HyperPodPytorchJob, answers: dict[str, AgentAnswer]
) -> StepResult:
    """The coordinated restart of a scale-up whose new pods stand by: the ranks stopped
    gracefully (the workers get the elastic-event signal and checkpoint, within
    ``gracefulShutdownTimeoutInSeconds``), then every rank started at the new size from the
    checkpoint all of them finished."""
    scaling = record.scaling or {}
    poll = sup.config.poll_seconds
    if not elastic.scale_up_ready(scaling, standing_spares(record, answers)) and scaling.get("pods"):
        return StepResult(next="monitor", poll_seconds=poll)  # a new pod went away meanwhile
    began = sup.now()
    before = record.nnodes
    target = int(scaling["target"])
    slots = elastic.resize_slots(record, target, set())
    ranked = {s.pod for s in slots if s.rank is not None}
    stop = [s for s in record.pods if s.rank is not None or s.pod in ranked]
    _stop_and_wait(
        sup, record, stop, "process_level_restart", graceful=True, timeout=elastic.graceful_timeout(job)
    )
    # the checkpoint the workers took on the signal, as the stopped agents report it
    after = sup.statuses(record, [s for s in record.ranked()], {})
    progress = (
        aggregate_progress({pod: a.status.progress for pod, a in after.items() if a.ok and a.status})
        or record.progress
    )
    master = next((s.ip for s in slots if s.rank == 0), record.master_addr)
    ip_version = ip_version_at(sup.now())
    update = {
        "pods": slots,
        "nnodes": target,
        "master_addr": master,
        "ip_version": ip_version,
        "fault_count": record.fault_count + 1,
        "progress": progress,
        "scaling": None,
        "scaling_failures": 0,
        "last_resize_at": began,
        "task_token": None,
    }
    staged = record.model_copy(update=update)
    chosen = {s.pod for s in stop}
    started = sup.agents.call_all(c for c in start_calls(staged, job, ip_version) if c.pod in chosen)
    refused = [f"{pod}: {a.error}" for pod, a in started.items() if not a.ok]
    if refused:
        from hyperpod_control.exceptions import DependencyUnavailableError

        raise DependencyUnavailableError("agents refused /start after a scale-up: " + listed(refused, "; "))
    record = _save(sup, record, **update)
    why = f"capacity returned: {target - before} more rank(s), towards maxReplicas {elastic.max_size(job)}"
    _report_resize(sup, record, job, before, why, began, sup.now(), faulty=False)
    return StepResult(
        next="monitor", reason=f"elastic scale-up from {before} to {target} ranks", poll_seconds=poll
    )


def _report_resize(
    sup: Supervisor,
    record: JobRecord,
    job: HyperPodPytorchJob,
    before: int,
    why: str,
    began: datetime,
    resumed: datetime,
    *,
    faulty: bool,
) -> None:
    """``status.elasticScalingStatus``, a Kubernetes Event and a ``Resized`` history entry after
    the job changed size: from and to, why, and how long training stood still."""
    took_ms = max(0, int((resumed - began).total_seconds() * 1000))
    direction = "ScaledDown" if record.nnodes < before else "ScaledUp"
    message = f"elastic {direction}: {before} -> {record.nnodes} ranks in {took_ms} milliseconds"
    stamp = rfc3339(resumed)
    status = {
        "elasticScalingStatus": elastic.scaling_status(
            job,
            record.nnodes,
            stamp,
            faulty=faulty,
            pods_scaled=abs(record.nnodes - before),
            failures=record.scaling_failures,
        ),
        "masterAddr": record.master_addr,
        "masterPort": status_master_port(record.fault_count),
        "jobPods": pod_refs(record.namespace, [s.pod for s in record.pods]),
    }
    if not faulty:  # a fault's recovery has set the Running condition already (_report_recovery)
        status["conditions"] = conditions_after(job, "Running", direction, message, stamp)
    _patch_status(sup, job, status)
    _k8s_event(sup, job, "Normal", direction, f"{message}: {why}")
    _history(
        sup,
        record,
        "Resized",
        message,
        direction=direction,
        reason=why,
        **{"from": before, "to": record.nnodes},
        duration_ms=took_ms,
        ranks={str(s.rank): s.pod for s in record.ranked()},
        progress=record.progress,
    )


def _replacement_spares(
    sup: Supervisor, job: HyperPodPytorchJob, slots: list[PodSlot], count: int
) -> list[PodSlot]:
    """New spare pods, indexed after every pod the job had; Pending until capacity returns."""
    start = max((pod_index(s.pod) for s in slots), default=-1) + 1
    made = []
    for index in range(start, start + count):
        sup.kube.create_pod(job.metadata.namespace, build_pod(job, index, sup.config.event_bus))
        made.append(PodSlot(pod=pod_name(job.metadata.name, index)))
    return made


def _full_restart(
    sup: Supervisor,
    record: JobRecord,
    job: HyperPodPytorchJob,
    decision: Decision,
    faults: list[JobFault],
    fault_at: datetime,
    counters: dict[str, Any],
    actions: list[str],
) -> StepResult:
    """Every pod deleted and recreated (new names, so no old pod is mistaken for a new one), the
    repeat offenders avoided; the execution goes back to WaitForAgents and StartAgents."""
    lost = {f.pod for f in faults if f.kind in ("node", "pod")}
    live = [s for s in record.pods if s.ip and s.pod not in lost]  # a dead node's agent never answers
    sup.agents.call_all(
        AgentCall(s.pod, "POST", "/shutdown", ip=s.ip, namespace=record.namespace) for s in live
    )
    for slot in record.pods:
        sup.kube.delete_pod(record.namespace, slot.pod, grace_period_seconds=0)
    actions.append(f"deleted all {len(record.pods)} pods")
    total = job.replicas + job.spares
    slots = _fresh_pods(sup, record, job, decision.avoid_nodes)
    actions.append(
        f"created {total} pods {slots[0].pod}..{slots[-1].pod}"
        + (f" avoiding {', '.join(decision.avoid_nodes)}" if decision.avoid_nodes else "")
    )
    recovery = {
        "fault_at": fault_at.isoformat(),
        "decision": decision.model_dump(mode="json"),
        "faults": [f.model_dump(mode="json") for f in faults],
        "actions": actions,
    }
    _save(
        sup,
        record,
        **counters,
        phase=JobPhase.CREATING,
        pods=slots,
        created_at=sup.now(),
        full_restart_count=record.full_restart_count + 1,
        recovery=recovery,
        master_addr=None,
        # an elastic job that had shrunk restarts at its full size
        nnodes=job.replicas,
        scaling=None,
    )
    # decided now, recovered once StartAgents runs the new pods (it reports the time to recover)
    outcome = RemediationOutcome(action=decision.action.value, fault=_fault_kind(faults))
    return StepResult(
        next="wait", reason=decision.reason, poll_seconds=sup.config.poll_seconds, remediation=outcome
    )


def _fresh_pods(
    sup: Supervisor, record: JobRecord, job: HyperPodPytorchJob, avoid: list[str] | None = None
) -> list[PodSlot]:
    """Every pod of the job created anew (``replicas`` + ``spares``), indexed after every pod it
    had (so no old pod still terminating is mistaken for a new one), off the ``avoid`` nodes."""
    start = max((pod_index(s.pod) for s in record.pods), default=-1) + 1
    slots = []
    for index in range(start, start + job.replicas + job.spares):
        body = build_pod(job, index, sup.config.event_bus, position=index - start)
        if avoid:
            avoid_nodes(body, avoid)
        sup.kube.create_pod(job.metadata.namespace, body)
        slots.append(PodSlot(pod=pod_name(job.metadata.name, index)))
    return slots


def _fault_kind(faults: list[JobFault]) -> str:
    """The kind a remediation is counted under: the first of its faults' kinds, in name order."""
    return sorted({f.kind for f in faults})[0]


def _report_recovery(
    sup: Supervisor,
    record: JobRecord,
    job: HyperPodPytorchJob,
    decision: Decision,
    faults: list[JobFault],
    fault_at: datetime,
    resumed: datetime,
    actions: list[str],
) -> RemediationOutcome:
    """The job's status, a Kubernetes Event and a history item once training runs again."""
    took_ms = max(0, int((resumed - fault_at).total_seconds() * 1000))
    fault = _fault_kind(faults)
    reason = {"node": "NodeFault", "pod": "PodFault", "hang": "HangFault"}.get(fault, "WorkerFault")
    message = (
        f"The fault of reason {reason} was remediated in {took_ms} milliseconds ({decision.action.value})"
    )
    stamp = rfc3339(resumed)
    eval_period = None
    if job.spec.run_policy.restart_policy:
        eval_period = job.spec.run_policy.restart_policy.eval_period_seconds
    from hyperpod_control.services.remediation import DEFAULT_EVAL_PERIOD_S, restarts_in_window

    window = eval_period or DEFAULT_EVAL_PERIOD_S
    status = {
        "conditions": conditions_after(job, "Running", "Running", message, stamp),
        "restartCount": record.restart_count,
        "restartStatus": {
            "currentEvalPeriod": window,
            "restartCount": restarts_in_window(record, window, resumed),
            "fullJobRestartCount": record.full_restart_count,
        },
        "latestFaultyPodInstanceList": {
            "restartType": decision.restart_type,
            "faultyInstanceIdList": sorted({i for f in faults if (i := instance_id(f.node))}),
            "faultyPodList": sorted({f.pod for f in faults if f.pod}),
            "faultyRankList": rank_list({f.rank for f in faults if f.rank is not None}),
        },
        "masterAddr": record.master_addr,
        "masterPort": status_master_port(record.fault_count),
        "jobPods": pod_refs(record.namespace, [s.pod for s in record.pods]),
    }
    _patch_status(sup, job, status)
    _k8s_event(sup, job, "Normal", "Running", message)
    _history(
        sup,
        record,
        "Remediated",
        message,
        action=decision.action.value,
        decision=decision.reason,
        faults=[f.model_dump(mode="json") for f in faults],
        actions=actions,
        recovery_ms=took_ms,
        fault_at=fault_at.isoformat(),
        resumed_at=resumed.isoformat(),
        progress=record.progress,
    )
    return RemediationOutcome(action=decision.action.value, fault=fault, recovery_ms=took_ms)


def _shutdown_and_clean(
    sup: Supervisor, record: JobRecord, job: HyperPodPytorchJob | None, completed: set[str]
) -> list[str]:
    pods = _pods_by_name(sup, record)
    live = [s for s in record.pods if s.pod in pods and pod_phase(pods[s.pod]) == "Running"]
    sup.agents.call_all(
        AgentCall(pod=s.pod, method="POST", path="/shutdown", ip=s.ip, namespace=record.namespace)
        for s in live
    )
    policy = job.spec.run_policy.clean_pod_policy if job else CleanPodPolicy.ALL
    deleted = []
    for pod in clean_targets(policy, [s for s in record.pods if s.pod in pods], completed):
        if sup.kube.delete_pod(record.namespace, pod):
            deleted.append(pod)
    return deleted


def complete(request: StepInput, sup: Supervisor) -> StepResult:
    ref = request.job
    record = _record(sup, ref)
    if record.phase is JobPhase.COMPLETED:
        return StepResult(next="done")
    obj = _read_job(sup, ref)
    job = _lenient(obj)
    # Every pod finished its part: the ranks completed, the spares are released by /shutdown.
    deleted = _shutdown_and_clean(sup, record, job, {s.pod for s in record.pods})
    now = sup.now()
    record = _save(sup, record, phase=JobPhase.COMPLETED, completed_at=now, task_token=None, reason=None)
    took = (now - (record.started_at or now)).total_seconds()
    message = f"all {record.nnodes} ranks completed in {took:.1f} s"
    if job is not None:
        _patch_status(
            sup,
            job,
            {
                "conditions": conditions_after(job, "Completed", "JobCompleted", message, rfc3339(now)),
                "completionTime": rfc3339(now),
            },
        )
        _k8s_event(sup, job, "Normal", "Completed", message)
    _history(sup, record, "Completed", message, deleted_pods=deleted)
    return StepResult(next="done", reason=message)


def fail(request: StepInput, sup: Supervisor) -> StepResult:
    ref = request.job
    record = sup.store.get_job(ref.cluster_arn, ref.uid)
    if record is not None:
        sup.fit_transport(record)
    reason = request.reason or "the job failed"
    if request.error:
        from hyperpod_control.services.failures import readable

        reason = f"{request.error.get('Error', 'Error')}: {readable(str(request.error.get('Cause', '')))}"[
            :1000
        ]
    if record is None or record.phase.finished:
        return StepResult(next="done", reason=reason)
    obj = _read_job(sup, ref)
    job = _lenient(obj)
    pods = _pods_by_name(sup, record)
    completed = {
        s.pod for s in record.pods if s.pod in pods and pod_failure(pods[s.pod]) in (None, "PodExited")
    }
    deleted = _shutdown_and_clean(sup, record, job, completed)
    now = sup.now()
    record = _save(sup, record, phase=JobPhase.FAILED, completed_at=now, task_token=None, reason=reason)
    if job is not None:
        _patch_status(
            sup, job, {"conditions": conditions_after(job, "Failed", "JobFailed", reason, rfc3339(now))}
        )
        _k8s_event(sup, job, "Warning", "Failed", reason)
    _history(sup, record, "Failed", reason, deleted_pods=deleted)
    return StepResult(next="done", reason=reason)


def cleanup(request: StepInput, sup: Supervisor) -> StepResult:
    """The job was deleted: remove its pods (the garbage collector would too, eventually) and its
    JOB item; its history stays until DynamoDB's TTL."""
    ref = request.job
    record = sup.store.get_job(ref.cluster_arn, ref.uid) or new_job_record(ref)
    return StepResult(next="done", reason=delete_job_resources(sup, record))


def expire_finished_job(sup: Supervisor, record: JobRecord, obj: dict[str, Any]) -> bool:
    """``runPolicy.ttlSecondsAfterFinished``: the finished job's object deleted once it passed
    (reconcile_jobs then removes its pods and JOB item, as for any deleted job; its history stays).
    True when it was deleted now."""
    job = _lenient(obj)
    if job is None or not run_policy.ttl_due(job.spec.run_policy, record.completed_at, sup.now()):
        return False
    if not sup.kube.delete_custom_object(JOB_GROUP, JOB_VERSION, JOB_PLURAL, record.namespace, record.name):
        return False
    ttl = job.spec.run_policy.ttl_seconds_after_finished
    _history(sup, record, "Expired", f"deleted {ttl} s after it finished (runPolicy.ttlSecondsAfterFinished)")
    return True


def delete_job_resources(sup: Supervisor, record: JobRecord) -> str:
    pods = sup.kube.pods(record.namespace, label_selector=job_selector(record))
    for pod in pods:
        sup.kube.delete_pod(record.namespace, pod["metadata"]["name"])
    sup.store.delete(record.pk, record.sk)
    message = f"the job was deleted; {len(pods)} pods deleted and its JOB item removed"
    _history(sup, record, "Deleted", message, pods=[p["metadata"]["name"] for p in pods])
    return message


def next_segment(request: StepInput, sup: Supervisor) -> StepResult:
    """Hand the job to a new execution before this one's history grows long: the JOB item names
    the new segment first (so this execution's late writes lose), then the segment starts."""
    from hyperpod_control.adapters.stepfunctions import execution_name

    ref = request.job
    record = _record(sup, ref)
    segment = ref.segment + 1
    record = _save(sup, record, segment=segment, task_token=None, execution_arn=None)
    name = execution_name(ref.uid, ref.generation, segment)
    arn = sup.sfn.start_execution(
        request.state_machine or "", name, {"job": ref.model_copy(update={"segment": segment}).dump()}
    )
    _history(
        sup, record, "SegmentHandedOver", f"execution segment {segment} continues the job", execution=arn
    )
    return StepResult(next="handedOver")


STEPS: dict[str, Callable[[StepInput, Supervisor], StepResult]] = {
    "admit": admit,
    "create_pods": create_pods,
    "check_agents": check_agents,
    "start_agents": start_agents,
    "arm": arm,
    "poll": poll,
    "complete": complete,
    "fail": fail,
    "cleanup": cleanup,
    "next_segment": next_segment,
    "remediate": remediate,
}
