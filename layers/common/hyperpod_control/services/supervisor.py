"""The serverless supervisor of one HyperPodPyTorchJob: the steps of the ``supervise_job`` state
machine (Admit, CreatePods, CheckAgents, StartAgents, Arm, Poll, Complete, Fail, Cleanup).

Each step reads the job (Kubernetes) and its JOB item (DynamoDB), decides with the pure functions
at the top of this module, acts, and writes the JOB item conditionally on the version it read: a
concurrent writer (node_health adding a fault, a second segment) makes the write fail with
``VersionConflictError`` and Step Functions runs the step again on fresh state. Steps are
idempotent for the same reason: a retried CreatePods finds the pods it made, a retried Complete
finds the job completed.

The execution is the only writer to Kubernetes for its job. Pods are named ``<job>-<index>``,
labelled ``HPJob=<job>`` (what ``hyp list-pods`` selects) and the job's uid, and owned by the job,
so deleting the job lets Kubernetes' garbage collector remove them even if we are gone.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pydantic import Field

from hyperpod_control.adapters.agents import AGENT_TIMEOUT, AgentCall, AgentClient
from hyperpod_control.deadline import Deadline
from hyperpod_control.exceptions import InvalidInputError
from hyperpod_control.models.agent import AGENT_PORT, AgentAnswer, AgentState, RankIp, StartRequest
from hyperpod_control.models.install import JOB_GROUP, JOB_PLURAL, JOB_VERSION
from hyperpod_control.models.job import (
    CleanPodPolicy,
    HyperPodPytorchJob,
    JobCondition,
    JobSpecError,
    parse_job,
    set_condition,
    validation_message,
)
from hyperpod_control.models.node_health import HEALTH_LABEL, SCHEDULABLE
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
from hyperpod_control.services.faults import JobFault, agent_fault_kind
from hyperpod_control.services.remediation import Action, Decision, aggregate_progress, decide

JOB_LABEL = "HPJob"
UID_LABEL = "hyperpod.control-plane/job-uid"
INDEX_LABEL = "hyperpod.control-plane/pod-index"
#: The taints Kubernetes' node lifecycle controller puts on a node whose kubelet went silent
#: (unreachable) or reports NotReady; pods tolerate them 300 s (DefaultTolerationSeconds), then are
#: evicted and stay Terminating while the node is gone.
NODE_TROUBLE_TAINTS = ("node.kubernetes.io/unreachable", "node.kubernetes.io/not-ready")
KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
MASTER_PORT = 23456


def master_port(fault_count: int) -> int:
    """Pure: the rendezvous port of a restart. Each restart moves to the next port, so the new
    rank-0 store never races the old one's socket still closing on the same pod."""
    return MASTER_PORT + fault_count % 100


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


class StepResult(TaskModel):
    """Every step answers ``next`` (the ASL Choice branches on it) and, when it matters, why."""

    next: str
    reason: str | None = None
    poll_seconds: int | None = None
    segment_due: bool = False

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
    event_ttl_seconds: int = 90 * 24 * 3600
    #: An agent that has not answered /status (within ``status_timeout_s``) this many rounds in a
    #: row, while its pod runs and its node looks healthy, is hung: a fault of its rank.
    silent_rounds: int = 3
    #: The read timeout of a poll's /status calls (a healthy agent answers in milliseconds).
    status_timeout_s: float = 5.0

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> SupervisorConfig:
        import os

        env = os.environ if env is None else env
        return cls(
            poll_seconds=int(env.get("SUPERVISOR_POLL_SECONDS", 30)),
            segment_rounds=int(env.get("SUPERVISOR_SEGMENT_ROUNDS", 1000)),
            startup_deadline_seconds=int(env.get("SUPERVISOR_STARTUP_DEADLINE_SECONDS", 1800)),
            event_bus=env.get("AGENT_EVENT_BUS") or None,
            event_ttl_seconds=int(
                env.get("EVENT_TTL_SECONDS") or int(env.get("EVENT_RETENTION_DAYS", 90)) * 24 * 3600
            ),
            silent_rounds=int(env.get("SUPERVISOR_SILENT_ROUNDS", 3)),
            status_timeout_s=float(env.get("AGENT_STATUS_TIMEOUT_SECONDS", 5)),
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

    def statuses(self, record: JobRecord, slots: Iterable[PodSlot], pods: dict[str, dict[str, Any]]) -> Any:
        """``/status`` of each slot's agent, with the poll's short timeout."""
        read = (AGENT_TIMEOUT[0], self.config.status_timeout_s)
        return self.agents.call_all(
            AgentCall(
                s.pod,
                "GET",
                "/status",
                ip=_pod_ip(pods.get(s.pod)) or s.ip,
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
    ``AGENT_TRANSPORT=direct`` (Lambdas in the cluster's VPC)."""
    import os

    from hyperpod_control.adapters.agents import DirectTransport, ProxyTransport
    from hyperpod_control.adapters.kube import KubeAdapter
    from hyperpod_control.adapters.stepfunctions import StepFunctionsAdapter

    eks_name = operator.eks_cluster_name
    if not eks_name:  # an OPERATOR item written before the install recorded the EKS cluster
        from hyperpod_control.adapters.sagemaker import SageMakerAdapter
        from hyperpod_control.services.node_health import cluster_facts

        eks_name = cluster_facts(SageMakerAdapter().describe_cluster(operator.cluster_name)).eks_cluster_name
    deadline = deadline or Deadline()
    # No client retries: the state machine retries a failed step, the agent client its calls.
    kube = KubeAdapter(eks_name or "", deadline=deadline, retries=0)
    config = config or SupervisorConfig.from_env()
    direct = os.environ.get("AGENT_TRANSPORT", "proxy") == "direct"

    transport = DirectTransport() if direct else ProxyTransport(kube)
    pool = int(os.environ.get("AGENT_POOL_SIZE", 32))
    return Supervisor(
        store=store,
        kube=kube,
        agents=AgentClient(transport, pool_size=pool, deadline=deadline),
        config=config,
        sfn=StepFunctionsAdapter(),
        deadline=deadline,
    )


# ============================================================== pure decisions


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def pod_name(job_name: str, index: int) -> str:
    return f"{job_name}-{index}"


def build_pod(job: HyperPodPytorchJob, index: int, event_bus: str | None = None) -> dict[str, Any]:
    """Pure: pod ``index`` of ``job`` from its replica spec's template.

    Every pod is the same: which are ranks and which are spares is decided at StartAgents, so a
    spare can take any rank. What the operator adds to the user's template: the labels, the owner,
    the agent's environment, the node-health affinity, one pod per node, and port 8080."""
    meta = job.metadata
    template = job.replica_spec.template or {}
    tmeta = dict(template.get("metadata") or {})
    spec = {**(template.get("spec") or {})}
    total = job.replicas + job.spares
    labels = {
        **(tmeta.get("labels") or {}),
        JOB_LABEL: meta.name,
        UID_LABEL: meta.uid,
        INDEX_LABEL: str(index),
    }
    env_add = [
        {"name": "NNODES", "value": str(job.replicas)},
        {"name": "HYPERPOD_JOB_NAME", "value": meta.name},
        {"name": "HYPERPOD_JOB_NAMESPACE", "value": meta.namespace},
        {"name": "HYPERPOD_JOB_UID", "value": meta.uid},
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
    ]
    if event_bus:
        env_add.append({"name": "HYPERPOD_EVENT_BUS", "value": event_bus})
    ours = {e["name"] for e in env_add}
    containers = []
    for i, container in enumerate(spec.get("containers") or []):
        container = {**container}
        container["env"] = [e for e in container.get("env") or [] if e.get("name") not in ours] + env_add
        if i == 0:
            ports = list(container.get("ports") or [])
            if not any(p.get("containerPort") == AGENT_PORT for p in ports):
                ports.append({"name": "agent", "containerPort": AGENT_PORT, "protocol": "TCP"})
            container["ports"] = ports
        containers.append(container)
    spec["containers"] = containers
    # A failed container is a fault the supervisor handles; the kubelet must not restart it behind
    # the supervisor's back (the agent itself restarts workers).
    spec["restartPolicy"] = "Never"
    spec["affinity"] = _affinity(spec.get("affinity") or {}, meta.name)
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": pod_name(meta.name, index),
            "namespace": meta.namespace,
            "labels": labels,
            "annotations": {**(tmeta.get("annotations") or {}), "hyperpod.control-plane/pods": str(total)},
            "ownerReferences": [
                {
                    "apiVersion": job.api_version,
                    "kind": job.kind,
                    "name": meta.name,
                    "uid": meta.uid,
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": spec,
    }


def _affinity(existing: dict[str, Any], job_name: str) -> dict[str, Any]:
    """The template's affinity plus: nodes HyperPod calls Schedulable, and one pod of the job per
    node (a replica is a node: two ranks on one node would share its GPUs and its fate)."""
    affinity = {**existing}
    node = {**(affinity.get("nodeAffinity") or {})}
    required = {**(node.get("requiredDuringSchedulingIgnoredDuringExecution") or {})}
    health = {"key": HEALTH_LABEL, "operator": "In", "values": ["Schedulable"]}
    terms = [dict(t) for t in required.get("nodeSelectorTerms") or []] or [{}]
    for term in terms:  # terms are ORed: the health requirement goes into each
        term["matchExpressions"] = [*(term.get("matchExpressions") or []), health]
    required["nodeSelectorTerms"] = terms
    node["requiredDuringSchedulingIgnoredDuringExecution"] = required
    affinity["nodeAffinity"] = node
    anti = {**(affinity.get("podAntiAffinity") or {})}
    anti["requiredDuringSchedulingIgnoredDuringExecution"] = [
        *(anti.get("requiredDuringSchedulingIgnoredDuringExecution") or []),
        {"labelSelector": {"matchLabels": {JOB_LABEL: job_name}}, "topologyKey": "kubernetes.io/hostname"},
    ]
    affinity["podAntiAffinity"] = anti
    return affinity


def pod_phase(pod: dict[str, Any] | None) -> str:
    return ((pod or {}).get("status") or {}).get("phase") or "Missing"


def pod_failure(pod: dict[str, Any] | None) -> str | None:
    """Pure: why a pod can no longer run its part (None while it can)."""
    if pod is None:
        return "PodDeleted"
    if (pod.get("metadata") or {}).get("deletionTimestamp"):
        return "PodTerminating"
    phase = pod_phase(pod)
    if phase == "Failed":
        for cs in (pod.get("status") or {}).get("containerStatuses") or []:
            terminated = (cs.get("state") or {}).get("terminated") or {}
            if terminated.get("reason"):
                return f"Pod{terminated['reason']}"
        return "PodFailed"
    if phase == "Succeeded":
        return "PodExited"
    return None


def _condition(obj: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in (obj.get("status") or {}).get("conditions") or [] if c.get("type") == kind), {})


def node_trouble(name: str | None, node: dict[str, Any] | None) -> str | None:
    """Pure: why pods on node ``name`` cannot go on (None while it looks healthy). A node whose
    instance died stays Ready until the node-monitor grace period ends, so this is one signal among
    the agents' silence and the health events, never the only one."""
    if not name:
        return None
    if node is None:
        return f"node {name} is gone"
    health = ((node.get("metadata") or {}).get("labels") or {}).get(HEALTH_LABEL)
    if health and health != SCHEDULABLE:
        return f"node {name} is {health} (HyperPod health monitoring)"
    for taint in (node.get("spec") or {}).get("taints") or []:
        if taint.get("key") in NODE_TROUBLE_TAINTS and taint.get("effect") == "NoExecute":
            what = taint["key"].rsplit("/", 1)[-1]
            return f"node {name} is {what} (taint since {taint.get('timeAdded', '?')})"
    ready = _condition(node, "Ready")
    if ready and ready.get("status") != "True":
        return f"node {name} is NotReady ({ready.get('reason') or ready.get('status')})"
    return None


def node_names(record: JobRecord, pods: dict[str, dict[str, Any]]) -> set[str]:
    """Pure: the nodes the job's pods are bound to."""
    found = {((pods.get(s.pod) or {}).get("spec") or {}).get("nodeName") or s.node for s in record.pods}
    return {n for n in found if n}


def node_troubles(
    record: JobRecord, pods: dict[str, dict[str, Any]], nodes: dict[str, dict[str, Any] | None]
) -> dict[str, str]:
    """Pure: pod -> why its node cannot carry it (``nodes``: the nodes read, None for one gone)."""
    troubled = {}
    for slot in record.pods:
        node = ((pods.get(slot.pod) or {}).get("spec") or {}).get("nodeName") or slot.node
        why = node_trouble(node, nodes.get(node)) if node in nodes else None
        if why:
            troubled[slot.pod] = why
    return troubled


def unreachable(record: JobRecord, pods: dict[str, dict[str, Any]], troubles: dict[str, str]) -> set[str]:
    """Pure: pods whose agents are not asked this round: gone, Terminating or finished, or on a
    troubled node (a dead node's connections hang; the fault is known without them)."""
    return {s.pod for s in record.pods if s.pod not in pods or pod_failure(pods[s.pod]) or s.pod in troubles}


def silence(record: JobRecord, answers: dict[str, AgentAnswer]) -> list[PodSlot]:
    """Pure: the slots with their count of silent rounds after this round's answers (a timed-out
    /status adds one; any answer, or a failure that is not silence, resets it)."""
    updated = []
    for slot in record.pods:
        answer = answers.get(slot.pod)
        rounds = slot.silent_rounds + 1 if answer is not None and answer.silent else 0
        updated.append(
            slot if rounds == slot.silent_rounds else slot.model_copy(update={"silent_rounds": rounds})
        )
    return updated


def assign_ranks(slots: list[PodSlot], nnodes: int) -> list[PodSlot]:
    """Pure: ranks 0..nnodes-1 to the first ``nnodes`` pods by index, the rest are spares. A slot
    that already holds a rank keeps it (a retried StartAgents must not reshuffle)."""
    if any(s.rank is not None for s in slots):
        return slots
    ordered = sorted(slots, key=lambda s: _index(s.pod))
    return [s.model_copy(update={"rank": i if i < nnodes else None}) for i, s in enumerate(ordered)]


def _index(pod: str) -> int:
    tail = pod.rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() else 1 << 30


def start_calls(record: JobRecord, job: HyperPodPytorchJob, ip_version: str) -> list[AgentCall]:
    """Pure: the ``/start`` of every pod: ranks with the full IP table, spares flagged spare. The
    agent requires a rank below nnodes even of a spare; a spare's is only a placeholder (it runs no
    workers until a later /start or /update promotes it), and the JOB item records it as a spare."""
    ranked = record.ranked()
    rank_ips = [RankIp(rank=s.rank or 0, ip=s.ip or "") for s in ranked]
    rules = [r.dump() for r in job.spec.run_policy.log_monitoring_configuration or []]
    calls = []
    for standby, slot in enumerate(record.spare_pods()):
        calls.append((slot, standby % max(record.nnodes, 1), True))
    calls = [(s, s.rank or 0, False) for s in ranked] + calls
    return [
        AgentCall(
            pod=slot.pod,
            method="POST",
            path="/start",
            ip=slot.ip,
            namespace=record.namespace,
            body=StartRequest(
                rank=rank,
                nnodes=record.nnodes,
                faultCount=record.fault_count,
                master_addr=record.master_addr or "",
                master_port=master_port(record.fault_count),
                spare=spare,
                ipVersion=ip_version,
                rankIps=rank_ips,
                log_monitoring_configuration=rules,
                progress=record.progress,
            ).body(),
        )
        for slot, rank, spare in calls
    ]


class RoundVerdict(TaskModel):
    next: Literal["running", "completed", "fault", "gone"]
    reason: str | None = None
    faulty_pods: list[str] = Field(default_factory=list)
    faults: list[JobFault] = Field(default_factory=list)
    completed: int = 0


def _fault_time(status: Any, now: datetime) -> datetime:
    """When the agent went FAULTED (its transitions say), else now."""
    stamp = (status.transitions or {}).get("FAULTED") if status is not None else None
    if stamp:
        with contextlib.suppress(ValueError):
            return datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    return now


def stale_status(reported: str | None, current: str | None) -> bool:
    """Pure: an agent's ``/status`` speaks of an earlier start than the job's current one (its
    ``ipversion`` is not the ``ipVersion`` of the last ``/start``): a FAULTED or COMPLETED in it
    is about workers a remediation already replaced."""
    return bool(reported and current and reported != current)


def judge_round(
    record: JobRecord,
    pods: dict[str, dict[str, Any]],
    answers: dict[str, AgentAnswer],
    now: datetime | None = None,
    *,
    troubles: dict[str, str] | None = None,
    silent_limit: int = 3,
) -> RoundVerdict:
    """Pure: what one poll round says about the job. A pod lost, Terminating or on a troubled node
    (``troubles``: NotReady, unreachable, marked by HyperPod's health monitoring) is a fault of its
    rank now, without waiting for its agent; so is an agent that reports FAULTED since the current
    start, and one silent ``silent_limit`` rounds in a row (hung: its node looked healthy). All
    ranks COMPLETED is completion. An agent failing to answer fewer rounds, or for another reason
    than silence, is judged again next round. A lost spare is a fault too (remediation replaces
    it), and so is every fault reported from outside (``pending_faults``)."""
    now = now or utcnow()
    troubles = troubles or {}
    faults: dict[str, JobFault] = {}
    completed = 0
    ranked = record.ranked()
    for slot in record.pods:
        failure = pod_failure(pods.get(slot.pod))
        answer = answers.get(slot.pod)
        status = answer.status if answer and answer.ok else None
        if status is not None and stale_status(status.ipversion, record.ip_version):
            status = None  # said before the current /start reached it: no news of this start
        where = f"rank {slot.rank}" if slot.rank is not None else "spare"
        if status is not None and status.status is AgentState.COMPLETED and slot.rank is not None:
            completed += 1
            continue
        if failure and (failure != "PodExited" or slot.rank is not None):
            text = "the container exited before the job completed" if failure == "PodExited" else failure
            faults[slot.pod] = JobFault(
                kind="pod",
                reason=f"{where} ({slot.pod} on {slot.node or 'no node'}): {text}",
                pod=slot.pod,
                node=slot.node,
                rank=slot.rank,
                at=now,
            )
        elif slot.pod in troubles:
            faults[slot.pod] = JobFault(
                kind="node",
                reason=f"{where} ({slot.pod}): {troubles[slot.pod]}",
                pod=slot.pod,
                node=slot.node,
                rank=slot.rank,
                at=now,
            )
        elif answer is not None and answer.silent and slot.silent_rounds + 1 >= silent_limit:
            faults[slot.pod] = JobFault(
                kind="pod",
                reason=f"{where} ({slot.pod} on {slot.node or 'no node'}): its agent has not answered "
                f"{slot.silent_rounds + 1} rounds in a row while its node looks healthy (hung)",
                pod=slot.pod,
                node=slot.node,
                rank=slot.rank,
                at=now,
            )
        elif status is not None and status.status is AgentState.FAULTED and slot.rank is not None:
            detail = f"{status.reason or 'WorkerFault'}" + (f": {status.message}" if status.message else "")
            faults[slot.pod] = JobFault(
                kind=agent_fault_kind(status.reason),
                ip_version=status.ipversion,
                reason=f"{where} ({slot.pod}): {detail}",
                pod=slot.pod,
                node=slot.node,
                rank=slot.rank,
                at=_fault_time(status, now),
            )
    current = {s.pod for s in record.pods}
    for raw in record.pending_faults:
        fault = JobFault.model_validate(raw)
        if fault.pod and fault.pod not in current:
            continue  # a late report about a pod a remediation already replaced
        if fault.stale(record.ip_version):
            continue  # reported before the restart that already remediated it
        known = faults.get(fault.pod or "")
        # A node's fault names the cause better than the lost pod it explains; keep its time.
        if known is None or fault.kind == "node":
            faults[fault.pod or f"node:{fault.node}"] = fault
    if faults:
        found = list(faults.values())
        return RoundVerdict(
            next="fault",
            reason="; ".join(f.reason for f in found),
            faulty_pods=[f.pod for f in found if f.pod],
            faults=found,
            completed=completed,
        )
    if ranked and completed == len(ranked):
        return RoundVerdict(next="completed", completed=completed)
    return RoundVerdict(next="running", completed=completed)


def agents_ready(
    record: JobRecord, pods: dict[str, dict[str, Any]], answers: dict[str, AgentAnswer]
) -> tuple[str, str | None]:
    """Pure: ("start", None) when every pod runs and its agent is READY, ("fail", why) when a pod
    can no longer start, ("wait", what is missing) otherwise."""
    waiting = []
    for slot in record.pods:
        pod = pods.get(slot.pod)
        failure = pod_failure(pod)
        if failure:
            return "fail", f"{slot.pod}: {failure} before its agent started"
        if pod_phase(pod) != "Running":
            waiting.append(f"{slot.pod} {pod_phase(pod)}")
            continue
        answer = answers.get(slot.pod)
        if not answer or not answer.ok or answer.status is None:
            waiting.append(f"{slot.pod} agent not answering")
        elif answer.status.status is not AgentState.READY:
            waiting.append(f"{slot.pod} agent {answer.status.status.value}")
    if waiting:
        return "wait", ", ".join(waiting)
    return "start", None


def clean_targets(policy: CleanPodPolicy, slots: list[PodSlot], completed: set[str]) -> list[str]:
    """Pure: the pods cleanPodPolicy says to delete when the job ends."""
    if policy is CleanPodPolicy.ALL:
        return [s.pod for s in slots]
    if policy is CleanPodPolicy.ONLY_COMPLETE:
        return [s.pod for s in slots if s.pod in completed]
    return []


def conditions_after(
    job: HyperPodPytorchJob, kind: str, reason: str, message: str, now: str
) -> list[dict[str, Any]]:
    """Pure: the job's conditions once ``kind`` happened (the others it implies set False)."""
    conditions = list(job.status.conditions) if job.status else []
    implied_false = {
        "Running": ["Completed", "Failed"],
        "Completed": ["Running"],
        "Failed": ["Running"],
    }.get(kind, [])
    for other in implied_false:
        if any(c.type == other for c in conditions):
            conditions = set_condition(conditions, other, "False", reason, message, now)
    conditions = set_condition(conditions, kind, "True", reason, message, now)
    return [c.model_dump(mode="json", by_alias=True, exclude_none=True) for c in conditions]


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
    # An Event is a courtesy (the status and the history say it too): never fail a step for it.
    with contextlib.suppress(Exception):
        sup.kube.create_event(meta.namespace, body)


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
    nxt = {JobPhase.RUNNING: "monitor", JobPhase.CREATING: "wait"}.get(record.phase, "create")
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
        sup, record, "PodsCreated", f"{total} pods ({job.replicas} ranks + {job.spares} spares)", pods=created
    )
    return StepResult(next="wait")


def job_selector(record: JobRecord) -> str:
    """The label selector of the job's pods: its name and its uid."""
    return f"{JOB_LABEL}={record.name},{UID_LABEL}={record.uid}"


def _pods_by_name(sup: Supervisor, record: JobRecord) -> dict[str, dict[str, Any]]:
    return {
        p["metadata"]["name"]: p for p in sup.kube.pods(record.namespace, label_selector=job_selector(record))
    }


def check_agents(request: StepInput, sup: Supervisor) -> StepResult:
    ref = request.job
    loaded = _load(sup, ref)
    if loaded is None:
        return GONE
    record, job, _obj = loaded
    pods = _pods_by_name(sup, record)
    running = [
        (s.pod, _pod_ip(pods.get(s.pod))) for s in record.pods if pod_phase(pods.get(s.pod)) == "Running"
    ]
    answers = sup.agents.statuses(ref.namespace, running)
    verdict, why = agents_ready(record, pods, answers)
    if verdict == "wait":
        deadline = job.spec.run_policy.startup_deadline_seconds or sup.config.startup_deadline_seconds
        waited = (sup.now() - record.created_at).total_seconds()
        if waited > deadline:
            return StepResult(
                next="fail", reason=f"StartupDeadlineExceeded: after {int(waited)} s still {why}"
            )
        return StepResult(next="wait", reason=why)
    if verdict == "fail":
        return StepResult(next="fail", reason=why)
    slots = [
        s.model_copy(
            update={"node": (pods[s.pod].get("spec") or {}).get("nodeName"), "ip": _pod_ip(pods[s.pod])}
        )
        for s in record.pods
    ]
    _save(sup, record, pods=slots)
    return StepResult(next="start")


def _pod_ip(pod: dict[str, Any] | None) -> str | None:
    return ((pod or {}).get("status") or {}).get("podIP")


def start_agents(request: StepInput, sup: Supervisor) -> StepResult:
    ref = request.job
    loaded = _load(sup, ref)
    if loaded is None:
        return GONE
    record, job, obj = loaded
    slots = assign_ranks(record.pods, record.nnodes)
    master = next((s.ip for s in slots if s.rank == 0), None)
    now = sup.now()
    ip_version = now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    record = record.model_copy(update={"pods": slots, "master_addr": master, "ip_version": ip_version})
    answers = sup.agents.call_all(start_calls(record, job, ip_version))
    refused = [f"{pod}: {a.error}" for pod, a in answers.items() if not a.ok]
    if refused:
        return StepResult(next="fail", reason="agents refused /start: " + "; ".join(refused))
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
            "masterPort": master_port(record.fault_count),
            "jobPods": [s.pod for s in slots],
            "restartCount": record.restart_count,
        },
    )
    ranks = {str(s.rank): s.pod for s in record.ranked()}
    if record.recovery:  # the end of a full job restart: training runs again
        recovery = record.recovery
        record = _save(sup, record, recovery=None)
        _report_recovery(
            sup,
            record,
            parse_job(_read_job(sup, ref) or obj),
            Decision.model_validate(recovery["decision"]),
            [JobFault.model_validate(f) for f in recovery["faults"]],
            datetime.fromisoformat(recovery["fault_at"]),
            now,
            [*recovery["actions"], f"started {record.nnodes} ranks with faultCount {record.fault_count}"],
        )
    _history(
        sup,
        record,
        "Started",
        f"{record.nnodes} ranks started, {len(record.spare_pods())} spares standing by",
        ranks=ranks,
        spares=[s.pod for s in record.spare_pods()],
        master=master,
    )
    return StepResult(next="monitor", poll_seconds=sup.config.poll_seconds)


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
    pods, troubles, answers = _observe(sup, record)
    verdict = judge_round(
        record, pods, answers, sup.now(), troubles=troubles, silent_limit=sup.config.silent_rounds
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
    if verdict.next == "running":
        staged = record.model_copy(update={"pods": update["pods"]})
        update["pods"] = _start_new_spares(sup, staged, pods, answers, parse_job(obj))
    _save(sup, record, **update)
    due = verdict.next == "running" and update["poll_rounds"] >= (ref.segment + 1) * sup.config.segment_rounds
    return StepResult(
        next=verdict.next, reason=verdict.reason, segment_due=due, poll_seconds=sup.config.poll_seconds
    )


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
    /start it as a spare, with the current IP table."""
    slots = []
    fresh = []
    for slot in record.pods:
        answer = answers.get(slot.pod)
        status = answer.status.status if answer and answer.ok and answer.status else None
        if slot.rank is None and status is AgentState.READY:
            slot = slot.model_copy(
                update={
                    "node": (pods[slot.pod].get("spec") or {}).get("nodeName"),
                    "ip": _pod_ip(pods[slot.pod]),
                }
            )
            fresh.append(slot.pod)
        slots.append(slot)
    if fresh:
        staged = record.model_copy(update={"pods": slots})
        calls = [c for c in start_calls(staged, job, record.ip_version or "") if c.pod in fresh]
        sup.agents.call_all(calls)
        _history(sup, record, "SpareJoined", f"spare(s) {', '.join(fresh)} standing by", pods=fresh)
    return slots


# ============================================================== remediation

STOP_WAIT_S = 90.0


def _stop_and_wait(sup: Supervisor, record: JobRecord, slots: list[PodSlot], mode: str) -> list[str]:
    """/stop ``slots``' agents and wait until each is READY again (its workers stopped). Agents
    that cannot answer are returned: their pods are dying with their node."""
    from hyperpod_control.models.agent import StopRequest

    body = StopRequest(restart_mode=mode).body()
    calls = [AgentCall(s.pod, "POST", "/stop", body=body, ip=s.ip, namespace=record.namespace) for s in slots]
    answers = sup.agents.call_all(calls)
    pending = {s.pod: s.ip for s in slots if answers.get(s.pod) and answers[s.pod].ok}
    unreachable = [s.pod for s in slots if s.pod not in pending]
    deadline = time.monotonic() + STOP_WAIT_S
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
                f"agents {', '.join(pending)} did not stop within {STOP_WAIT_S:.0f} s (retried)."
            )
        time.sleep(sup.deadline.timeout(0.05, f"waiting for agents {', '.join(pending)} to stop"))
    return unreachable


def _instance_id(node: str | None) -> str | None:
    return node.removeprefix("hyperpod-") if node else None


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
        record, pods, answers, sup.now(), troubles=troubles, silent_limit=sup.config.silent_rounds
    )
    if verdict.next != "fault":
        return StepResult(
            next="monitor" if verdict.next == "running" else verdict.next,
            poll_seconds=sup.config.poll_seconds,
        )
    # When a pod or node is lost, its peers' workers fail too (their collectives break): those
    # faults are consequences, fixed by the same restart, not faults of their own.
    lost = [f for f in verdict.faults if f.kind in ("node", "pod")]
    faults = lost or verdict.faults
    known = {(f.get("pod"), f.get("node")) for f in record.pending_faults}
    new = [f.model_dump(mode="json") for f in faults if f.key() not in known]
    if new:
        record = sup.store.put(
            record.model_copy(update={"pending_faults": [*record.pending_faults, *new]}),
            expected_version=record.version,
        )
    ready_spares = {
        s.pod
        for s in record.spare_pods()
        if (a := answers.get(s.pod))
        and a.ok
        and a.status
        and a.status.status in (AgentState.RUNNING, AgentState.READY)
    }
    modes = {
        a.status.restart_mode
        for s in record.ranked()
        if (a := answers.get(s.pod)) and a.ok and a.status and a.status.restart_mode
    }
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
        return StepResult(next="fail", reason=decision.reason)
    for fault in faults:
        if fault.kind == "node" and fault.node:
            _k8s_event(sup, job, "Warning", "NodeFault", f"Found unhealthy node {fault.node}: {fault.reason}")
    actions: list[str] = []
    counters = {
        "fault_count": record.fault_count + 1,
        "restart_count": record.restart_count + 1,
        "restart_times": [*record.restart_times, now][-50:],
        "offenders": _offenders(record, faults),
        "pending_faults": [],
        "task_token": None,
    }
    if decision.action is Action.FULL_JOB_RESTART:
        return _full_restart(sup, record, job, decision, faults, fault_at, counters, actions)
    slots = list(record.pods)
    if decision.action is Action.SPARE_SWAP:
        promoted = set(decision.moves.values())
        lost = set(decision.delete_pods)
        keep = [s for s in slots if s.pod not in lost]
        alive = [s for s in keep if s.rank is not None or s.pod in promoted]
        _stop_and_wait(sup, record, alive, "process_level_restart")
        actions.append(f"stopped {len(alive)} agents")
        for pod in decision.delete_pods:
            sup.kube.delete_pod(record.namespace, pod, grace_period_seconds=0)
            actions.append(f"deleted {pod}")
        by_pod = {pod: rank for rank, pod in decision.moves.items()}
        slots = [s.model_copy(update={"rank": by_pod[s.pod]}) if s.pod in by_pod else s for s in keep]
        for rank, pod in sorted(decision.moves.items()):
            actions.append(f"spare {pod} promoted to rank {rank}")
        targets = [s for s in slots if s.rank is not None]
    else:
        mode = (
            "in_process_restart" if decision.action is Action.IN_PROCESS_RESTART else "process_level_restart"
        )
        targets = record.ranked()
        _stop_and_wait(sup, record, targets, mode)
        actions.append(f"stopped {len(targets)} agents ({mode})")
    master = next((s.ip for s in slots if s.rank == 0), record.master_addr)
    ip_version = sup.now().strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    staged = record.model_copy(
        update={"pods": slots, "master_addr": master, "ip_version": ip_version, **counters}
    )
    calls = [c for c in start_calls(staged, job, ip_version) if c.pod in {t.pod for t in targets}]
    started = sup.agents.call_all(calls)
    refused = [f"{pod}: {a.error}" for pod, a in started.items() if not a.ok]
    if refused:
        from hyperpod_control.exceptions import DependencyUnavailableError

        raise DependencyUnavailableError("agents refused /start after remediation: " + "; ".join(refused))
    resumed = sup.now()
    actions.append(f"started {len(targets)} ranks with faultCount {staged.fault_count}")
    if decision.action is Action.SPARE_SWAP and decision.delete_pods:
        slots = slots + _replacement_spares(sup, job, slots, len(decision.delete_pods))
        actions.append(
            f"created replacement spare(s) {', '.join(s.pod for s in slots[-len(decision.delete_pods) :])}"
        )
    record = _save(
        sup, record, **{**counters, "pods": slots, "master_addr": master, "ip_version": ip_version}
    )
    _report_recovery(sup, record, job, decision, faults, fault_at, resumed, actions)
    return StepResult(next="monitor", reason=decision.reason, poll_seconds=sup.config.poll_seconds)


def _offenders(record: JobRecord, faults: list[JobFault]) -> dict[str, int]:
    counts = dict(record.offenders)
    for fault in faults:
        if fault.node and fault.kind in ("node", "pod"):
            counts[fault.node] = counts.get(fault.node, 0) + 1
    return counts


def _replacement_spares(
    sup: Supervisor, job: HyperPodPytorchJob, slots: list[PodSlot], count: int
) -> list[PodSlot]:
    """New spare pods, indexed after every pod the job had; Pending until capacity returns."""
    start = max((_index(s.pod) for s in slots), default=-1) + 1
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
    start = max((_index(s.pod) for s in record.pods), default=-1) + 1
    total = job.replicas + job.spares
    slots = []
    for index in range(start, start + total):
        body = build_pod(job, index, sup.config.event_bus)
        if decision.avoid_nodes:
            _avoid(body, decision.avoid_nodes)
        sup.kube.create_pod(job.metadata.namespace, body)
        slots.append(PodSlot(pod=pod_name(job.metadata.name, index)))
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
    )
    return StepResult(next="wait", reason=decision.reason, poll_seconds=sup.config.poll_seconds)


def _avoid(body: dict[str, Any], nodes: list[str]) -> None:
    """Add 'not on these nodes' to every required node-selector term of ``body``."""
    terms = body["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"
    ]
    for term in terms:
        term["matchExpressions"] = [
            *term.get("matchExpressions", []),
            {"key": "kubernetes.io/hostname", "operator": "NotIn", "values": sorted(nodes)},
        ]


def _report_recovery(
    sup: Supervisor,
    record: JobRecord,
    job: HyperPodPytorchJob,
    decision: Decision,
    faults: list[JobFault],
    fault_at: datetime,
    resumed: datetime,
    actions: list[str],
) -> None:
    """The job's status, a Kubernetes Event and a history item once training runs again."""
    took_ms = max(0, int((resumed - fault_at).total_seconds() * 1000))
    kinds = sorted({f.kind for f in faults})
    reason = {"node": "NodeFault", "pod": "PodFault", "hang": "HangFault"}.get(kinds[0], "WorkerFault")
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
            "faultyInstanceIdList": sorted({i for f in faults if (i := _instance_id(f.node))}),
            "faultyPodList": sorted({f.pod for f in faults if f.pod}),
            "faultyRankList": sorted({f.rank for f in faults if f.rank is not None}),
        },
        "masterAddr": record.master_addr,
        "masterPort": master_port(record.fault_count),
        "jobPods": [s.pod for s in record.pods],
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
