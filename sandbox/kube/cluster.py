"""What a HyperPod EKS cluster holds before anyone deploys to it, for the sandbox API server.

- ``hyperpod_node``: a Node as HyperPod registers it (``hyperpod-<instance-id>``, the
  ``sagemaker.amazonaws.com/*`` labels of docs/hyperpod-contract.md, "Events and node marks",
  instance type, hostname, allocatable cpu/memory/pods/GPUs by instance type, a Ready condition);
  ``sync_hyperpod_nodes`` mirrors SageMaker's ``list_cluster_nodes`` into Nodes.
- ``seed_cluster``: cert-manager (its CRDs and ready Deployments) and the EKS Pod Identity Agent
  (a ready DaemonSet in kube-system) by default, Kueue's CRDs on request; each can be left out to
  test preflight failures.
- CRD builders: ``hyperpod_pytorch_job_crd`` (sagemaker.amazonaws.com/v1 hyperpodpytorchjobs)
  and the cert-manager and Kueue ones.
- ``point_eks_cluster_at``: make moto's EKS ``describe_cluster`` return this server's endpoint and
  CA, so production code connects the production way, TLS verification on.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from sandbox.kube.store import ApiError, Store

#: (vCPU, memory GiB, GPUs, Neuron devices) per instance type (the ones moto accepts and a few more)
INSTANCE_RESOURCES: dict[str, tuple[int, int, int, int]] = {
    "ml.p4d.24xlarge": (96, 1152, 8, 0),
    "ml.p4de.24xlarge": (96, 1152, 8, 0),
    "ml.p5.48xlarge": (192, 2048, 8, 0),
    "ml.p5e.48xlarge": (192, 2048, 8, 0),
    "ml.p5en.48xlarge": (192, 2048, 8, 0),
    "ml.trn1.32xlarge": (128, 512, 0, 16),
    "ml.trn1n.32xlarge": (128, 512, 0, 16),
    "ml.g5.xlarge": (4, 16, 1, 0),
    "ml.g5.2xlarge": (8, 32, 1, 0),
    "ml.g5.4xlarge": (16, 64, 1, 0),
    "ml.g5.8xlarge": (32, 128, 1, 0),
    "ml.g5.12xlarge": (48, 192, 4, 0),
    "ml.g5.16xlarge": (64, 256, 1, 0),
    "ml.g5.24xlarge": (96, 384, 4, 0),
    "ml.g5.48xlarge": (192, 768, 8, 0),
    "ml.c5.xlarge": (4, 8, 0, 0),
    "ml.c5.2xlarge": (8, 16, 0, 0),
    "ml.c5.4xlarge": (16, 32, 0, 0),
    "ml.m5.xlarge": (4, 16, 0, 0),
    "ml.m5.2xlarge": (8, 32, 0, 0),
    "ml.m5.4xlarge": (16, 64, 0, 0),
    "ml.t3.medium": (2, 4, 0, 0),
    "ml.t3.large": (2, 8, 0, 0),
}
KUBELET_VERSION = "v1.33.0-eks-sandbox"


def node_name(instance_id: str) -> str:
    return f"hyperpod-{instance_id}"


def hyperpod_node(
    instance_id: str,
    instance_type: str = "ml.g5.8xlarge",
    instance_group: str = "worker",
    *,
    zone: str = "us-west-2a",
    ip: str | None = None,
    extra_labels: dict[str, str] | None = None,
) -> dict:
    """A Node object as HyperPod registers an instance with the EKS cluster."""
    cpu, mem_gib, gpus, neuron = INSTANCE_RESOURCES.get(instance_type, (8, 32, 0, 0))
    name = node_name(instance_id)
    capacity = {"cpu": str(cpu), "memory": f"{mem_gib}Gi", "pods": "110", "ephemeral-storage": "500Gi"}
    if gpus:
        capacity["nvidia.com/gpu"] = str(gpus)
    if neuron:
        capacity["aws.amazon.com/neuron"] = str(neuron)
    # a stable private address per instance id, for status.addresses
    digest = sum(ord(c) * (i + 1) for i, c in enumerate(instance_id))
    ip = ip or f"10.1.{digest % 250 + 1}.{digest // 250 % 250 + 1}"
    labels = {
        "kubernetes.io/hostname": name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "node.kubernetes.io/instance-type": instance_type,
        "topology.kubernetes.io/zone": zone,
        "topology.kubernetes.io/region": zone[:-1],
        "sagemaker.amazonaws.com/compute-type": "HyperPod",
        "sagemaker.amazonaws.com/node-health-status": "Schedulable",
        "sagemaker.amazonaws.com/instance-group-name": instance_group,
        **(extra_labels or {}),
    }
    conditions = [
        {
            "type": t,
            "status": "False",
            "reason": f"KubeletHasSufficient{r}",
            "message": f"kubelet has sufficient {r}",
        }
        for t, r in (("MemoryPressure", "Memory"), ("DiskPressure", "Disk"), ("PIDPressure", "PID"))
    ] + [
        {
            "type": "Ready",
            "status": "True",
            "reason": "KubeletReady",
            "message": "kubelet is posting ready status",
        }
    ]
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": labels},
        "spec": {"providerID": f"aws:///{zone}/{instance_id}"},
        "status": {
            "capacity": capacity,
            "allocatable": dict(capacity),
            "conditions": conditions,
            "addresses": [{"type": "InternalIP", "address": ip}, {"type": "Hostname", "address": name}],
            "nodeInfo": {
                "kubeletVersion": KUBELET_VERSION,
                "kubeProxyVersion": KUBELET_VERSION,
                "architecture": "amd64",
                "operatingSystem": "linux",
                "osImage": "Amazon Linux 2023",
                "containerRuntimeVersion": "containerd://1.7.27",
                "kernelVersion": "6.1.0",
                "machineID": instance_id,
                "systemUUID": instance_id,
                "bootID": instance_id,
            },
        },
    }


def add_node(store: Store, node: dict) -> dict:
    """Create a Node, or replace an existing one's labels/spec/status (idempotent)."""
    rt = store.rt("", "nodes")
    name = node["metadata"]["name"]
    current = store.find(rt, None, name)
    if current is None:
        return store.create(rt, None, node)
    body = copy.deepcopy(node)
    body["metadata"] = {**current["metadata"], "labels": node["metadata"].get("labels", {})}
    store.update(rt, None, name, body)
    return store.update(rt, None, name, {**store.get(rt, None, name), "status": node["status"]}, "status")


def sync_hyperpod_nodes(store: Store, sagemaker: Any, cluster_name: str) -> list[str]:
    """Mirror ``list_cluster_nodes`` into Nodes: add the missing ones, remove the ones gone."""
    summaries: list[dict] = []
    kwargs: dict[str, Any] = {"ClusterName": cluster_name}
    while True:
        page = sagemaker.list_cluster_nodes(**kwargs)
        summaries += page.get("ClusterNodeSummaries", [])
        if not page.get("NextToken"):
            break
        kwargs["NextToken"] = page["NextToken"]
    wanted = {node_name(s["InstanceId"]): s for s in summaries}
    rt = store.rt("", "nodes")
    for name, s in wanted.items():
        if store.find(rt, None, name) is None:
            store.create(
                rt,
                None,
                hyperpod_node(s["InstanceId"], s.get("InstanceType", ""), s.get("InstanceGroupName", "")),
            )
    for node in store.list(rt, None).items:
        labels = node["metadata"].get("labels") or {}
        name = node["metadata"]["name"]
        if labels.get("sagemaker.amazonaws.com/compute-type") == "HyperPod" and name not in wanted:
            store.delete(rt, None, name)
    return sorted(wanted)


# --- CRDs -------------------------------------------------------------------------------------------


def crd(
    group: str,
    kind: str,
    plural: str,
    versions: list[str],
    *,
    namespaced: bool = True,
    short_names: list[str] | None = None,
    status: bool = True,
    columns: list[dict] | None = None,
    labels: dict[str, str] | None = None,
    schema: dict | None = None,
) -> dict:
    """A CustomResourceDefinition; without ``schema`` a permissive one (any field kept). The API
    server prunes and validates custom objects against it (``sandbox/kube/schema.py``)."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{group}", "labels": labels or {}},
        "spec": {
            "group": group,
            "scope": "Namespaced" if namespaced else "Cluster",
            "names": {
                "kind": kind,
                "plural": plural,
                "singular": kind.lower(),
                "listKind": f"{kind}List",
                **({"shortNames": short_names} if short_names else {}),
            },
            "versions": [
                {
                    "name": v,
                    "served": True,
                    "storage": i == 0,
                    "schema": {
                        "openAPIV3Schema": schema
                        or {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
                    },
                    **({"subresources": {"status": {}}} if status else {}),
                    **({"additionalPrinterColumns": columns} if columns else {}),
                }
                for i, v in enumerate(versions)
            ],
        },
    }


def hyperpod_pytorch_job_crd() -> dict:
    """AWS's add-on CRD, with the job schema the serverless operator installs too (one schema:
    a job the one refuses or prunes, the other does as well)."""
    from hyperpod_control.models.job_schema import job_schema

    return crd(
        "sagemaker.amazonaws.com",
        "HyperPodPyTorchJob",
        "hyperpodpytorchjobs",
        ["v1"],
        short_names=["hyperpodpytorchjob", "hpj"],
        schema=job_schema(),
    )


def cert_manager_crds() -> list[dict]:
    labels = {"app.kubernetes.io/name": "cert-manager", "app.kubernetes.io/instance": "cert-manager"}
    return [
        crd(
            "cert-manager.io",
            "Certificate",
            "certificates",
            ["v1"],
            short_names=["cert", "certs"],
            labels=labels,
        ),
        crd(
            "cert-manager.io",
            "CertificateRequest",
            "certificaterequests",
            ["v1"],
            short_names=["cr", "crs"],
            labels=labels,
        ),
        crd("cert-manager.io", "Issuer", "issuers", ["v1"], labels=labels),
        crd("cert-manager.io", "ClusterIssuer", "clusterissuers", ["v1"], namespaced=False, labels=labels),
        crd("acme.cert-manager.io", "Order", "orders", ["v1"], labels=labels),
        crd("acme.cert-manager.io", "Challenge", "challenges", ["v1"], labels=labels),
    ]


def kueue_crds() -> list[dict]:
    g = "kueue.x-k8s.io"
    return [
        crd(g, "ClusterQueue", "clusterqueues", ["v1beta1"], namespaced=False, short_names=["cq"]),
        crd(g, "LocalQueue", "localqueues", ["v1beta1"], short_names=["lq"]),
        crd(g, "ResourceFlavor", "resourceflavors", ["v1beta1"], namespaced=False, short_names=["flavor"]),
        crd(g, "Workload", "workloads", ["v1beta1"], short_names=["wl"]),
        crd(g, "WorkloadPriorityClass", "workloadpriorityclasses", ["v1beta1"], namespaced=False),
    ]


# --- seeding ------------------------------------------------------------------------------------------


@dataclass
class ClusterSeed:
    """What the cluster holds at start; leave a piece out to test a preflight failure."""

    cert_manager: bool = True
    pod_identity_agent: bool = True
    kueue: bool = False
    hyperpod_job_crd: bool = False  # AddonMirror installs it when the operator add-on is ACTIVE


def _ensure(store: Store, group: str, plural: str, namespace: str | None, body: dict) -> dict:
    rt = store.rt(group, plural)
    try:
        return store.create(rt, namespace, body)
    except ApiError as exc:
        if exc.code != 409:
            raise
        return store.get(rt, namespace, body["metadata"]["name"])


def ready_deployment(
    store: Store, namespace: str, name: str, labels: dict[str, str], replicas: int = 1
) -> dict:
    """A Deployment whose status says its replicas are available (no pods run for it)."""
    body = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": name, "image": f"sandbox/{name}:latest"}]},
            },
        },
    }
    obj = _ensure(store, "apps", "deployments", namespace, body)
    status = {
        "observedGeneration": obj["metadata"].get("generation", 1),
        "replicas": replicas,
        "readyReplicas": replicas,
        "availableReplicas": replicas,
        "updatedReplicas": replicas,
        "conditions": [
            {
                "type": "Available",
                "status": "True",
                "reason": "MinimumReplicasAvailable",
                "message": "Deployment has minimum availability.",
            },
            {
                "type": "Progressing",
                "status": "True",
                "reason": "NewReplicaSetAvailable",
                "message": f'ReplicaSet "{name}" has successfully progressed.',
            },
        ],
    }
    rt = store.rt("apps", "deployments")
    return store.update(rt, namespace, name, {**obj, "status": status}, "status")


def ready_daemonset(store: Store, namespace: str, name: str, labels: dict[str, str], nodes: int) -> dict:
    body = {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": name, "image": f"sandbox/{name}:latest"}]},
            },
        },
    }
    obj = _ensure(store, "apps", "daemonsets", namespace, body)
    status = {
        "desiredNumberScheduled": nodes,
        "currentNumberScheduled": nodes,
        "numberReady": nodes,
        "numberAvailable": nodes,
        "updatedNumberScheduled": nodes,
        "numberMisscheduled": 0,
        "observedGeneration": obj["metadata"].get("generation", 1),
    }
    return store.update(store.rt("apps", "daemonsets"), namespace, name, {**obj, "status": status}, "status")


def seed_cluster(store: Store, seed: ClusterSeed | None = None, node_count: int | None = None) -> None:
    seed = seed or ClusterSeed()
    crds: list[dict] = []
    if seed.cert_manager:
        crds += cert_manager_crds()
    if seed.kueue:
        crds += kueue_crds()
    if seed.hyperpod_job_crd:
        crds.append(hyperpod_pytorch_job_crd())
    for c in crds:
        _ensure(store, "apiextensions.k8s.io", "customresourcedefinitions", None, c)
    if seed.cert_manager:
        _ensure(store, "", "namespaces", None, {"metadata": {"name": "cert-manager"}})
        for name in ("cert-manager", "cert-manager-cainjector", "cert-manager-webhook"):
            component = name.removeprefix("cert-manager-") if name != "cert-manager" else "controller"
            ready_deployment(
                store,
                "cert-manager",
                name,
                {
                    "app.kubernetes.io/name": name.replace("cert-manager-", ""),
                    "app.kubernetes.io/instance": "cert-manager",
                    "app.kubernetes.io/component": component,
                },
            )
    if seed.kueue:
        _ensure(store, "", "namespaces", None, {"metadata": {"name": "kueue-system"}})
        ready_deployment(
            store, "kueue-system", "kueue-controller-manager", {"control-plane": "controller-manager"}
        )
    if seed.pod_identity_agent:
        nodes = node_count if node_count is not None else len(store.list(store.rt("", "nodes"), None).items)
        ready_daemonset(
            store,
            "kube-system",
            "eks-pod-identity-agent",
            {
                "app.kubernetes.io/name": "eks-pod-identity-agent",
                "app.kubernetes.io/instance": "eks-pod-identity-agent",
            },
            nodes,
        )


def point_eks_cluster_at(server: Any, cluster_name: str, region: str, account: str = "123456789012") -> None:
    """Make moto's EKS cluster answer ``describe_cluster`` with this server's endpoint and CA."""
    from moto.eks.models import eks_backends

    cluster = eks_backends[account][region].clusters[cluster_name]
    cluster.endpoint = server.url
    cluster.certificate_authority = {"data": server.ca_data}
