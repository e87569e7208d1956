"""What the supervisor's steps act through: ``SupervisorConfig`` (its settings, from the
environment), ``Supervisor`` (the store, one cluster's Kubernetes API, the agents' client, Step
Functions and EKS, each typed by the calls the steps make on it) and ``open_supervisor``, which
builds it with the production adapters.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol

from hyperpod_control.adapters.agents import AGENT_TIMEOUT, AgentCall, AgentClient
from hyperpod_control.deadline import Deadline
from hyperpod_control.models.agent import AgentAnswer
from hyperpod_control.models.records import JobEventRecord, JobRecord, OperatorRecord, PodSlot, utcnow
from hyperpod_control.services.supervision import agent_cidrs, pod_ip, rank_ips_mode
from hyperpod_control.settings import agent_pool_size, agent_transport, environment


class SupervisorStore(Protocol):
    """The calls made on the store (``adapters.store.Store``): the OPERATOR item, the JOB items
    (written conditionally on the version read) and the job's history."""

    def get_operator(self, cluster_arn: str) -> OperatorRecord | None: ...

    def get_job(self, cluster_arn: str, uid: str) -> JobRecord | None: ...

    def list_jobs(self, cluster_arn: str) -> list[JobRecord]: ...

    def put(self, record: JobRecord, *, expected_version: int | None) -> JobRecord: ...

    def delete(self, pk: str, sk: str) -> None: ...

    def add_job_event(self, event: JobEventRecord) -> JobEventRecord: ...


class SupervisorKube(Protocol):
    """The calls made on one cluster's Kubernetes API (``adapters.kube.KubeAdapter``): the job
    object and its status, its pods and NetworkPolicy, the nodes, Events."""

    def custom_object(
        self, group: str, version: str, plural: str, namespace: str, name: str
    ) -> dict[str, Any] | None: ...

    def custom_objects(self, group: str, version: str, plural: str) -> list[dict[str, Any]]: ...

    def patch_custom_object_status(
        self,
        group: str,
        version: str,
        plural: str,
        namespace: str,
        name: str,
        status: dict[str, Any],
        resource_version: str | None = None,
    ) -> dict[str, Any] | None: ...

    def delete_custom_object(
        self, group: str, version: str, plural: str, namespace: str, name: str
    ) -> bool: ...

    def pods(
        self, namespace: str | None = None, *, label_selector: str = "", field_selector: str = ""
    ) -> list[dict[str, Any]]: ...

    def create_pod(self, namespace: str, body: dict[str, Any]) -> dict[str, Any] | None: ...

    def delete_pod(self, namespace: str, name: str, grace_period_seconds: int | None = None) -> bool: ...

    def ensure_network_policy(self, namespace: str, body: dict[str, Any]) -> str: ...

    def nodes(self, label_selector: str = "") -> list[dict[str, Any]]: ...

    def create_event(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]: ...

    def close(self) -> None: ...


class AgentCaller(Protocol):
    """The calls made on the agents (``adapters.agents.AgentClient``): many at once, each answer
    by pod."""

    def call_all(self, calls: Iterable[AgentCall]) -> dict[str, AgentAnswer]: ...

    def statuses(self, namespace: str, pods: Iterable[tuple[str, str | None]]) -> dict[str, AgentAnswer]: ...


class SegmentStarter(Protocol):
    """The call made on Step Functions (``adapters.stepfunctions.StepFunctionsAdapter``): the next
    execution segment's start."""

    def start_execution(self, state_machine_arn: str, name: str, payload: dict[str, Any]) -> str: ...


class PodIdentity(Protocol):
    """The calls made on EKS (``adapters.eks.EksAdapter``): the agents' Pod Identity association."""

    def find_association(
        self, cluster: str, namespace: str, service_account: str
    ) -> dict[str, Any] | None: ...

    def create_association(
        self, cluster: str, namespace: str, service_account: str, role_arn: str, tags: dict[str, str]
    ) -> dict[str, Any]: ...


@dataclass
class SupervisorConfig:
    """The supervisor's settings (``from_env``: the Lambda's environment, which template.yaml sets)."""

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
        env = environment(env)
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

    store: SupervisorStore
    kube: SupervisorKube
    agents: AgentCaller
    config: SupervisorConfig = field(default_factory=SupervisorConfig)
    now: Callable[[], datetime] = utcnow
    #: StepFunctionsAdapter: the next segment's start (NextSegment step)
    sfn: SegmentStarter | None = None
    #: The invocation's time budget; ``kube`` and ``agents`` bound every call by it too.
    deadline: Deadline = field(default_factory=Deadline)
    #: EksAdapter and the EKS cluster's name: the agents' Pod Identity association (CreatePods)
    eks: PodIdentity | None = None
    eks_cluster: str = ""
    #: The agents at their pod IPs, for jobs of ``config.direct_min_ranks`` ranks or more (where
    #: the functions run in the cluster's VPC); None: ``agents`` calls every job's agents.
    direct_agents: AgentCaller | None = None
    _usual_agents: AgentCaller | None = field(default=None, repr=False)

    def fit_transport(self, record: JobRecord) -> None:
        """Call ``record``'s agents directly when the job is large enough: a proxied round is an
        API server request per agent (README, "Operations")."""
        if self.direct_agents is None:
            return
        self._usual_agents = self._usual_agents or self.agents
        large = 0 < self.config.direct_min_ranks <= record.nnodes
        self.agents = self.direct_agents if large else self._usual_agents

    def statuses(
        self, record: JobRecord, slots: Iterable[PodSlot], pods: dict[str, dict[str, Any]]
    ) -> dict[str, AgentAnswer]:
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
    operator: OperatorRecord,
    store: SupervisorStore,
    config: SupervisorConfig | None = None,
    deadline: Deadline | None = None,
) -> Supervisor:
    """A Supervisor for ``operator``'s cluster with the production adapters: the cluster's
    Kubernetes API (EKS token), and the agents through the pod proxy, or at their pod IPs when
    ``AGENT_TRANSPORT=direct`` (Lambdas in the cluster's VPC) or the job has at least
    ``AGENT_DIRECT_MIN_RANKS`` ranks (the template sets it only where the functions are in the VPC)."""
    from hyperpod_control.adapters.agents import DirectTransport, ProxyTransport
    from hyperpod_control.adapters.eks import EksAdapter
    from hyperpod_control.adapters.kube import KubeAdapter
    from hyperpod_control.adapters.stepfunctions import StepFunctionsAdapter

    eks_name = operator.eks_cluster_name
    if not eks_name:  # an OPERATOR item written before the install recorded the EKS cluster
        from hyperpod_control.adapters.sagemaker import SageMakerAdapter
        from hyperpod_control.models.node_health import DescribedCluster

        described = SageMakerAdapter().describe_cluster(operator.cluster_name)
        eks_name = DescribedCluster.from_api(described).eks_cluster_name
    deadline = deadline or Deadline()
    # A timed-out call is never retried by the client: the state machine retries a failed step,
    # the agent client its calls, each within the deadline.
    kube = KubeAdapter(eks_name or "", deadline=deadline, retry_timeouts=False)
    config = config or SupervisorConfig.from_env()
    direct = agent_transport() == "direct"

    transport = DirectTransport() if direct else ProxyTransport(kube)
    pool = agent_pool_size()
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
