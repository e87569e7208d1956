"""What the job's pods are and who may reach them, as pure functions: each pod built from the
job's template (``build_pod``: labels, owner, the agent's environment, the node-health affinity,
one pod per node), its NetworkPolicy (``build_network_policy``), the agents' Pod Identity
(``decide_agent_association``), and what a pod's JSON says (``pod_phase``, ``pod_failure``,
``pod_ip``).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import Any, Literal

from hyperpod_control.exceptions import InvalidInputError
from hyperpod_control.models.agent import AGENT_PORT
from hyperpod_control.models.job import HyperPodPytorchJob
from hyperpod_control.models.names import INDEX_LABEL, JOB_LABEL, ROLE_LABEL, UID_LABEL
from hyperpod_control.models.node_health import HEALTH_LABEL
from hyperpod_control.models.records import JobRecord


def pod_name(job_name: str, index: int) -> str:
    return f"{job_name}-{index}"


def pod_index(pod: str) -> int:
    tail = pod.rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() else 1 << 30


def pod_ip(pod: dict[str, Any] | None) -> str | None:
    return ((pod or {}).get("status") or {}).get("podIP")


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


def job_selector(record: JobRecord) -> str:
    """The label selector of the job's pods: its name and its uid."""
    return f"{JOB_LABEL}={record.name},{UID_LABEL}={record.uid}"


def instance_id(node: str | None) -> str | None:
    return node.removeprefix("hyperpod-") if node else None


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
