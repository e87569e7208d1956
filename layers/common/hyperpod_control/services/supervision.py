"""Pure decisions of the serverless supervisor: plain data in (the job, its JOB item, its pods,
their nodes, the agents' answers), plain data out. The steps in ``supervisor.py`` read, call these,
and act; the remediation decisions are in ``remediation.py``.

- what the job's pods are (``build_pod``: labels, owner, the agent's environment, one pod per
  Schedulable node), who may reach them (``build_network_policy``) and what each ``/start`` says
  (``start_calls``);
- what a poll round says (``judge_round``): a pod lost or Terminating, a node NotReady,
  unreachable or marked by HyperPod (``node_trouble``), an agent FAULTED since the current start
  (``stale_status`` fences older reports by ``ipVersion``) or silent too many rounds (``silence``);
- when the agents may start (``agents_ready``), what cleanPodPolicy deletes (``clean_targets``),
  and the job's conditions after an event (``conditions_after``).
"""

from __future__ import annotations

import contextlib
import ipaddress
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import Field

from hyperpod_control.adapters.agents import AgentCall, SharedJson
from hyperpod_control.exceptions import InvalidInputError
from hyperpod_control.models.agent import (
    AGENT_PORT,
    AgentAnswer,
    AgentState,
    AgentStatus,
    RankIp,
    StartRequest,
)
from hyperpod_control.models.job import CleanPodPolicy, HyperPodPytorchJob, set_condition
from hyperpod_control.models.names import INDEX_LABEL, JOB_LABEL, ROLE_LABEL, UID_LABEL
from hyperpod_control.models.node_health import HEALTH_LABEL, SCHEDULABLE
from hyperpod_control.models.records import JobRecord, PodSlot, utcnow
from hyperpod_control.models.tasks import TaskModel
from hyperpod_control.services.faults import JobFault, agent_fault_kind

#: The taints Kubernetes' node lifecycle controller puts on a node whose kubelet went silent
#: (unreachable) or reports NotReady; pods tolerate them 300 s (DefaultTolerationSeconds), then are
#: evicted and stay Terminating while the node is gone.
NODE_TROUBLE_TAINTS = ("node.kubernetes.io/unreachable", "node.kubernetes.io/not-ready")
MASTER_PORT = 23456
#: What differs between the agents' /start bodies of one round.
PER_AGENT_START_FIELDS = ("rank", "spare")
#: The items a reason names before "and N more": a reason travels in the execution's state (Step
#: Functions' 256 KiB), where one line per pod of a 4,096-rank job would not fit; the JOB item's
#: history keeps the details.
LISTED = 10


def listed(items: Sequence[str], sep: str = ", ", limit: int = LISTED) -> str:
    """Pure: the first ``limit`` items joined, and how many more there are."""
    items = list(items)
    more = len(items) - limit
    return sep.join(items[:limit]) + (f"{sep}and {more} more" if more > 0 else "")


def master_port(fault_count: int) -> int:
    """Pure: the rendezvous port of a restart. Each restart moves to the next port, so the new
    rank-0 store never races the old one's socket still closing on the same pod."""
    return MASTER_PORT + fault_count % 100


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def ip_version_at(moment: datetime) -> str:
    """The ``ipVersion`` of an IP table made at ``moment``: a timestamp, to the microsecond so two
    starts in one second never share a version (agents compare it to the version they hold)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def pod_name(job_name: str, index: int) -> str:
    return f"{job_name}-{index}"


def service_account(job: HyperPodPytorchJob) -> str:
    """Pure: the service account the job's pods run as: their template's ``serviceAccountName``
    (or the deprecated ``serviceAccount``), else the namespace's ``default``, as Kubernetes
    defaults it."""
    spec = (job.replica_spec.template or {}).get("spec") or {}
    return spec.get("serviceAccountName") or spec.get("serviceAccount") or "default"


AgentAssociation = Literal["create", "ours", "foreign"]


def decide_agent_association(existing: dict[str, Any] | None, role_arn: str) -> AgentAssociation:
    """Pure: what the job's service account needs so its agents can push (EKS Pod Identity):
    ``create`` an association to the agent role, nothing (``ours``), or nothing either when the
    account is associated with another role (``foreign``): one association per service account,
    and it is the user's (their pods' own AWS access), so it is never changed. The agents' pushes
    are then refused by the bus, and faults are found by polling alone."""
    if existing is None:
        return "create"
    return "ours" if existing.get("roleArn") == role_arn else "foreign"


def build_pod(
    job: HyperPodPytorchJob, index: int, event_bus: str | None = None, position: int | None = None
) -> dict[str, Any]:
    """Pure: pod ``index`` of ``job`` from the template of the replica spec at ``position`` in a
    full set of its pods (default: ``index``; ``HyperPodPytorchJob.replica_spec_at``).

    Which pods are ranks and which are spares is decided at StartAgents (the lowest indices get
    the ranks, so the entries' pods get them in entry order), and a spare can take any rank. What
    the operator adds to the user's template: the labels, the owner, the agent's environment, the
    node-health affinity, one pod per node, and port 8080."""
    meta = job.metadata
    role = job.replica_spec_at(index if position is None else position)
    template = role.template or {}
    tmeta = dict(template.get("metadata") or {})
    spec = {**(template.get("spec") or {})}
    total = job.replicas + job.spares
    labels = {
        **(tmeta.get("labels") or {}),
        JOB_LABEL: meta.name,
        UID_LABEL: meta.uid,
        INDEX_LABEL: str(index),
        ROLE_LABEL: role.name,
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
            "ownerReferences": [_owner(job)],
        },
        "spec": spec,
    }


def _owner(job: HyperPodPytorchJob) -> dict[str, Any]:
    """What the job owns carries this: deleting the job lets Kubernetes' garbage collector remove
    it even if the control plane is gone."""
    return {
        "apiVersion": job.api_version,
        "kind": job.kind,
        "name": job.metadata.name,
        "uid": job.metadata.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def network_policy_name(job_name: str) -> str:
    return f"{job_name}-network-policy"


def build_network_policy(job: HyperPodPytorchJob, agent_cidrs: Sequence[str] = ()) -> dict[str, Any]:
    """Pure: the job's NetworkPolicy (networking.k8s.io/v1). The agent's port has no
    authentication (as AWS's agent's has none), so who may reach it is decided here: the job's
    pods admit each other on every port (rendezvous, NCCL over TCP, the agents' own traffic), and
    TCP ``AGENT_PORT`` from ``agent_cidrs`` only, where the control plane calls from: with the pod
    proxy transport, the API server (on EKS its ENIs in the cluster's subnets); with the direct
    transport, the supervisor Lambda's subnets. No ``agent_cidrs``: the port stays open to every
    source, as before (the policy still closes the pods' other ports to everything but the job).

    Ingress only (the pods' egress, to S3 and the bus, is untouched), and additive: a user who
    needs more (a metrics scraper) adds a policy of their own. Enforced only where the cluster runs
    a NetworkPolicy engine (the VPC CNI with network policy enabled, Calico...); elsewhere inert."""
    meta = job.metadata
    selector = {"matchLabels": {JOB_LABEL: meta.name, UID_LABEL: meta.uid}}
    agent_rule: dict[str, Any] = {"ports": [{"protocol": "TCP", "port": AGENT_PORT}]}
    if agent_cidrs:
        agent_rule["from"] = [{"ipBlock": {"cidr": cidr}} for cidr in agent_cidrs]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {
            "name": network_policy_name(meta.name),
            "namespace": meta.namespace,
            "labels": {JOB_LABEL: meta.name, UID_LABEL: meta.uid},
            "ownerReferences": [_owner(job)],
        },
        "spec": {
            "podSelector": selector,
            "policyTypes": ["Ingress"],
            "ingress": [{"from": [{"podSelector": selector}]}, agent_rule],
        },
    }


def rank_ips_mode(text: str) -> Literal["changed", "full"]:
    """``AGENT_RANK_IPS``: ``changed`` (the default) or ``full``."""
    mode = text.strip().lower() or "changed"
    if mode not in ("changed", "full"):
        raise InvalidInputError(
            f"AGENT_RANK_IPS: {text!r} is neither 'changed' nor 'full'.",
            remedy="set 'changed' (a restart sends agents only the ranks whose IP changed) or 'full'.",
        )
    return mode  # type: ignore[return-value]


def agent_cidrs(text: str) -> tuple[str, ...]:
    """Pure: the comma-separated CIDRs of ``AGENT_ALLOWED_CIDRS`` (the ``AgentAllowedCidrs``
    parameter), each checked as Kubernetes checks an ipBlock's cidr."""
    out = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        try:
            network = ipaddress.ip_network(part, strict=True)
        except ValueError as exc:
            raise InvalidInputError(
                f"AgentAllowedCidrs: {part!r} is not a CIDR block ({exc}).",
                remedy="give network addresses with a prefix length, comma-separated "
                "(e.g. 10.0.0.0/16,10.1.0.0/16: the cluster's subnets for the pod proxy transport, the "
                "Lambdas' subnets for the direct transport).",
            ) from None
        out.append(str(network))
    return tuple(out)


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
    ordered = sorted(slots, key=lambda s: pod_index(s.pod))
    return [s.model_copy(update={"rank": i if i < nnodes else None}) for i, s in enumerate(ordered)]


def pod_index(pod: str) -> int:
    tail = pod.rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() else 1 << 30


def spares_held(answers: dict[str, AgentAnswer]) -> set[str]:
    """Pure: the pods whose ``/status`` says their agent holds a spare's workers
    (``AgentStatus.holds_spares``): only those get a ``/start`` with ``spare: true``."""
    return {pod for pod, a in answers.items() if a.ok and a.status is not None and a.status.holds_spares()}


def start_calls(
    record: JobRecord,
    job: HyperPodPytorchJob,
    ip_version: str,
    spares_held: Collection[str] = (),
    held: HeldTable | None = None,
) -> list[AgentCall]:
    """Pure: the ``/start`` of every pod: ranks with the IP table, and the spares in
    ``spares_held`` (those whose agents hold a spare's workers, ``AgentStatus.holds_spares``)
    flagged spare. The agent requires a rank below nnodes even of a spare; a spare's is only a
    placeholder (it runs no workers until a later /start or /update promotes it), and the JOB item
    records it as a spare. Other spares get no ``/start`` at all: they stay READY until promoted
    (AWS's process-restart agent ignores ``spare`` and would run workers with the placeholder).

    An agent that holds the table of ``held`` (the job's previous start) gets only the ranks whose
    IP changed since (``rankIps`` empty when none did: the agent keeps its table and takes the new
    ``ipVersion``), every other agent the whole table; without ``held`` every agent gets it all.

    Only ``rank`` and ``spare`` differ between the agents: the rest (the IP table above all) is
    built and validated once, each call's body shares its values, and ``SharedJson`` serialises
    them once for the round (twice with ``held``: the whole table and the changed ranks)."""
    ranked = record.ranked()
    rank_ips = [RankIp(rank=s.rank or 0, ip=s.ip or "") for s in ranked]
    rules = [r.dump() for r in job.spec.run_policy.log_monitoring_configuration or []]
    calls = []
    for standby, slot in enumerate(s for s in record.spare_pods() if s.pod in spares_held):
        calls.append((slot, standby % max(record.nnodes, 1), True))
    calls = [(s, s.rank or 0, False) for s in ranked] + calls
    base = StartRequest(
        rank=0,
        nnodes=record.nnodes,
        faultCount=record.fault_count,
        master_addr=record.master_addr or "",
        master_port=master_port(record.fault_count),
        spare=False,
        ipVersion=ip_version,
        rankIps=rank_ips,
        log_monitoring_configuration=rules,
        progress=record.progress,
    ).body()
    shared = SharedJson({k: v for k, v in base.items() if k not in PER_AGENT_START_FIELDS})
    bodies = {False: (base, shared)}
    if held is not None:
        changed = {**base, "rankIps": [r.model_dump() for r in rank_ips if held.ips.get(r.rank) != r.ip]}
        bodies[True] = (changed, SharedJson({k: changed[k] for k in shared.keys}))
    out = []
    for slot, rank, spare in calls:
        body, keys = bodies[held is not None and slot.pod in held.pods]
        out.append(
            AgentCall(
                pod=slot.pod,
                method="POST",
                path="/start",
                ip=slot.ip,
                namespace=record.namespace,
                body={**body, "rank": rank, "spare": spare},
                shared=keys,
            )
        )
    return out


@dataclass(frozen=True)
class HeldTable:
    """The IP table of the job's previous start and the pods whose agents hold it: what a
    ``/start`` may leave out (``start_calls``). The agent merges a ``rankIps`` into the table it
    holds ("first call full, later calls only the changed ranks") and reports the table's version
    as ``ipversion``."""

    version: str
    ips: dict[int, str]
    pods: frozenset[str]


def held_table(record: JobRecord, answers: dict[str, AgentAnswer]) -> HeldTable | None:
    """Pure: the table ``record`` was last started with (its ``ip_version``) and the agents whose
    ``/status`` in ``answers`` reports holding that version. An agent that reports another version
    or none (a new pod, a restarted container that lost its table) is not among them and gets the
    whole table again."""
    if not record.ip_version:
        return None
    pods = frozenset(
        pod
        for pod, answer in answers.items()
        if answer.ok and answer.status is not None and answer.status.ipversion == record.ip_version
    )
    return HeldTable(record.ip_version, {s.rank or 0: s.ip or "" for s in record.ranked()}, pods)


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


def _slot_fault(slot: PodSlot, kind: str, reason: str, at: datetime) -> JobFault:
    return JobFault(kind=kind, reason=reason, pod=slot.pod, node=slot.node, rank=slot.rank, at=at)


def _since(status: AgentStatus, state: str, until: datetime) -> float | None:
    """Seconds from the agent's last entry into ``state`` (its transitions) to ``until``."""
    stamp = status.transitions.get(state)
    if not stamp:
        return None
    try:
        return (until - datetime.fromisoformat(stamp.replace("Z", "+00:00"))).total_seconds()
    except (TypeError, ValueError):
        return None


def _run_seconds(status: AgentStatus) -> float | None:
    """How long a COMPLETED agent ran: its RUNNING to its COMPLETED transition (one clock)."""
    done = status.transitions.get("COMPLETED")
    if not done:
        return None
    with contextlib.suppress(ValueError):
        return _since(status, "RUNNING", datetime.fromisoformat(done.replace("Z", "+00:00")))
    return None


def misbehaviour(
    record: JobRecord, statuses: dict[str, AgentStatus], now: datetime, straggler_s: float | None = None
) -> dict[str, JobFault]:
    """Pure: faults of a job that stopped making sense while no agent says FAULTED (``statuses``:
    this round's answers of the current start). Each reason starts with which:

    - ``SpareRunsWorkers``: a spare's agent runs workers while it should stand by (one that ignores
      ``spare`` was started anyway, or one that holds spares was told it is none);
    - ``DuplicateRank``: two agents run the same assigned rank; the fault is the one whose slot holds
      another rank (or none);
    - ``RankStraggling``: some ranks COMPLETED and a rank still RUNNING has run ``straggler_s``
      longer than the longest of them took (its peers are gone: it can only wait forever).
    """
    faults: dict[str, JobFault] = {}
    slots = {s.pod: s for s in record.pods}

    def fault(slot: PodSlot, kind: str, reason: str) -> None:
        where = f"rank {slot.rank}" if slot.rank is not None else "spare"
        faults.setdefault(slot.pod, _slot_fault(slot, kind, f"{where} ({slot.pod}): {reason}", now))

    for slot in record.spare_pods():
        status = statuses.get(slot.pod)
        # Judged only for agents that say how they restart (AWS's and ours always do): of one that
        # does not, nothing tells whether RUNNING means workers.
        if status is not None and status.restart_mode and status.runs_workers():
            rank = f" as rank {status.assigned_rank}" if status.assigned_rank is not None else ""
            fault(
                slot,
                "agent",
                f"SpareRunsWorkers: its agent runs workers{rank} while the spare should stand by "
                f"({status.describe()}, spare {status.spare})",
            )
    by_rank: dict[int, list[str]] = {}
    for pod, status in sorted(statuses.items()):
        if pod in slots and status.runs_workers() and status.assigned_rank is not None:
            by_rank.setdefault(status.assigned_rank, []).append(pod)
    for rank, holders in sorted(by_rank.items()):
        if len(holders) < 2:
            continue
        for pod in [p for p in holders if slots[p].rank != rank] or holders:
            fault(slots[pod], "agent", f"DuplicateRank: rank {rank} is run by {', '.join(holders)} at once")
    if straggler_s is None:
        return faults
    took = [
        t
        for s in record.ranked()
        if (st := statuses.get(s.pod)) is not None and st.status is AgentState.COMPLETED
        if (t := _run_seconds(st)) is not None
    ]
    if not took:
        return faults
    longest = max(took)
    for slot in record.ranked():
        status = statuses.get(slot.pod)
        if status is None or status.status is not AgentState.RUNNING:
            continue
        running = _since(status, "RUNNING", now)
        if running is not None and running > longest + straggler_s:
            fault(
                slot,
                "hang",
                f"RankStraggling: still running after {running:.0f} s while {len(took)} rank(s) "
                f"completed within {longest:.0f} s (bound: {straggler_s:.0f} s more)",
            )
    return faults


def judge_round(
    record: JobRecord,
    pods: dict[str, dict[str, Any]],
    answers: dict[str, AgentAnswer],
    now: datetime | None = None,
    *,
    troubles: dict[str, str] | None = None,
    silent_limit: int = 3,
    straggler_s: float | None = None,
) -> RoundVerdict:
    """Pure: what one poll round says about the job. A pod lost, Terminating or on a troubled node
    (``troubles``: NotReady, unreachable, marked by HyperPod's health monitoring) is a fault of its
    rank now, without waiting for its agent; so is an agent that reports FAULTED since the current
    start, and one silent ``silent_limit`` rounds in a row (hung: its node looked healthy). All
    ranks COMPLETED is completion. An agent failing to answer fewer rounds, or for another reason
    than silence, is judged again next round. A lost spare is a fault too (remediation replaces
    it), and so is every fault reported from outside (``pending_faults``). A job that stopped
    making sense (``misbehaviour``: a spare running workers, a rank run twice, a rank straggling
    ``straggler_s`` behind completed peers) is a fault too."""
    now = now or utcnow()
    troubles = troubles or {}
    faults: dict[str, JobFault] = {}
    current: dict[str, AgentStatus] = {}
    completed = 0
    ranked = record.ranked()
    for slot in record.pods:
        failure = pod_failure(pods.get(slot.pod))
        answer = answers.get(slot.pod)
        status = answer.status if answer and answer.ok else None
        if status is not None and stale_status(status.ipversion, record.ip_version):
            status = None  # said before the current /start reached it: no news of this start
        if status is not None and not failure and slot.pod not in troubles:
            current[slot.pod] = status
        where = f"rank {slot.rank}" if slot.rank is not None else "spare"
        if status is not None and status.status is AgentState.COMPLETED and slot.rank is not None:
            completed += 1
            continue
        on = f"{where} ({slot.pod} on {slot.node or 'no node'})"
        if failure and (failure != "PodExited" or slot.rank is not None):
            text = "the container exited before the job completed" if failure == "PodExited" else failure
            faults[slot.pod] = _slot_fault(slot, "pod", f"{on}: {text}", now)
        elif slot.pod in troubles:
            faults[slot.pod] = _slot_fault(slot, "node", f"{where} ({slot.pod}): {troubles[slot.pod]}", now)
        elif answer is not None and answer.silent and slot.silent_rounds + 1 >= silent_limit:
            silence_text = (
                f"{on}: its agent has not answered {slot.silent_rounds + 1} rounds in a row while its "
                "node looks healthy (hung)"
            )
            faults[slot.pod] = _slot_fault(slot, "pod", silence_text, now)
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
    for pod, fault in misbehaviour(record, current, now, straggler_s).items():
        faults.setdefault(pod, fault)
    present = {s.pod for s in record.pods}
    for raw in record.pending_faults:
        fault = JobFault.model_validate(raw)
        if fault.pod and fault.pod not in present:
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
            reason=listed([f.reason for f in found], "; "),
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
        return "wait", listed(waiting)
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


def job_selector(record: JobRecord) -> str:
    """The label selector of the job's pods: its name and its uid."""
    return f"{JOB_LABEL}={record.name},{UID_LABEL}={record.uid}"


def pod_ip(pod: dict[str, Any] | None) -> str | None:
    return ((pod or {}).get("status") or {}).get("podIP")


def instance_id(node: str | None) -> str | None:
    return node.removeprefix("hyperpod-") if node else None


def avoid_nodes(body: dict[str, Any], nodes: list[str]) -> None:
    """Add 'not on these nodes' to every required node-selector term of ``body``."""
    terms = body["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"
    ]
    for term in terms:
        term["matchExpressions"] = [
            *term.get("matchExpressions", []),
            {"key": "kubernetes.io/hostname", "operator": "NotIn", "values": sorted(nodes)},
        ]


def pod_refs(namespace: str, pods: list[str]) -> list[dict[str, Any]]:
    """Pure: ``status.jobPods`` as AWS's CRD types it: ObjectReferences, not names."""
    return [{"apiVersion": "v1", "kind": "Pod", "name": pod, "namespace": namespace} for pod in pods]


def status_master_port(fault_count: int) -> str:
    """Pure: ``status.masterPort``, a string in AWS's CRD."""
    return str(master_port(fault_count))


def rank_list(ranks: set[int]) -> list[str]:
    """Pure: ``faultyRankList``, strings in AWS's CRD, in rank order."""
    return [str(r) for r in sorted(ranks)]
