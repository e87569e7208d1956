"""The sandbox scheduler: its filters as pure functions, and the loop that binds pods
or leaves them Pending with a FailedScheduling event."""

from __future__ import annotations

import pytest

from sandbox.kube import hyperpod_node
from sandbox.kube.scheduler import (
    ANTI_AFFINITY,
    NOT_MATCH_AFFINITY,
    UNSCHEDULABLE,
    choose_node,
    failed_scheduling_message,
    filter_reasons,
    tolerates,
)
from sandbox.testing import eventually
from tests.sandbox.kube.pods import create_pod, pod_body, wait_phase

HEALTH = "sagemaker.amazonaws.com/node-health-status"


def node(i: int, **labels: str) -> dict:
    n = hyperpod_node(f"i-0aaaaaaaaaaaaaa{i:02d}", "ml.g5.8xlarge", extra_labels=labels)  # 32 cpu, 1 GPU
    return n


def pod(
    name: str = "p", ns: str = "default", labels: dict | None = None, node_name: str | None = None, **spec
) -> dict:
    containers = spec.pop("containers", [{"name": "c", "image": "x"}])
    body = {
        "metadata": {"name": name, "namespace": ns, "labels": labels or {}},
        "spec": {"containers": containers, **spec},
        "status": {"phase": "Running"},
    }
    if node_name:
        body["spec"]["nodeName"] = node_name
    return body


def reasons(p: dict, n: dict, placed: list[dict] | None = None, nodes: list[dict] | None = None) -> list[str]:
    nodes = nodes or [n]
    return filter_reasons(p, n, {x["metadata"]["name"]: x for x in nodes}, placed or [])


@pytest.mark.unit
def test_node_selector_and_required_node_affinity():
    a, b = node(1, team="a"), node(2, team="b")
    assert reasons(pod(nodeSelector={"team": "a"}), a) == []
    assert reasons(pod(nodeSelector={"team": "a"}), b) == [NOT_MATCH_AFFINITY]
    affinity = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "team", "operator": "In", "values": ["b", "c"]}]},
                    {
                        "matchFields": [
                            {"key": "metadata.name", "operator": "In", "values": [a["metadata"]["name"]]}
                        ]
                    },
                ]
            }
        }
    }
    assert reasons(pod(affinity=affinity), a) == [] and reasons(pod(affinity=affinity), b) == []
    not_schedulable = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {"matchExpressions": [{"key": HEALTH, "operator": "NotIn", "values": ["Schedulable"]}]}
                ]
            }
        }
    }
    assert reasons(pod(affinity=not_schedulable), a) == [NOT_MATCH_AFFINITY]


@pytest.mark.unit
def test_taints_tolerations_and_cordon():
    n = node(1)
    n["spec"]["taints"] = [
        {"key": HEALTH, "value": "Unschedulable", "effect": "NoSchedule"},
        {"key": "soft", "effect": "PreferNoSchedule"},
    ]
    assert reasons(pod(), n) == [f"node(s) had untolerated taint {{{HEALTH}: Unschedulable}}"]
    assert reasons(pod(tolerations=[{"key": HEALTH, "operator": "Exists"}]), n) == []
    assert reasons(pod(tolerations=[{"key": HEALTH, "value": "Other"}]), n) != []
    assert tolerates({"operator": "Exists"}, {"key": "any", "effect": "NoExecute"})
    assert not tolerates({"key": HEALTH, "operator": "Exists", "effect": "NoExecute"}, n["spec"]["taints"][0])
    cordoned = node(2)
    cordoned["spec"]["unschedulable"] = True
    assert reasons(pod(), cordoned) == [UNSCHEDULABLE]
    tolerant = pod(
        tolerations=[
            {"key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoSchedule"}
        ]
    )
    assert reasons(tolerant, cordoned) == []


@pytest.mark.unit
def test_allocatable_pods_cpu_memory_and_gpus():
    n = node(1)
    name = n["metadata"]["name"]
    gpu = [{"name": "c", "image": "x", "resources": {"limits": {"nvidia.com/gpu": 1}}}]
    assert reasons(pod(containers=gpu), n) == []
    assert reasons(pod(containers=gpu), n, [pod("other", containers=gpu, node_name=name)]) == [
        "Insufficient nvidia.com/gpu"
    ]
    # a finished pod holds nothing
    done = pod("done", containers=gpu, node_name=name)
    done["status"]["phase"] = "Succeeded"
    assert reasons(pod(containers=gpu), n, [done]) == []
    big = [{"name": "c", "image": "x", "resources": {"requests": {"cpu": "33", "memory": "200Gi"}}}]
    assert reasons(pod(containers=big), n) == ["Insufficient cpu", "Insufficient memory"]
    n["status"]["allocatable"]["pods"] = "1"
    assert reasons(pod(), n, [pod("other", node_name=name)]) == ["Too many pods"]


@pytest.mark.unit
def test_required_pod_anti_affinity_on_hostname():
    a, b = node(1), node(2)
    term = {"labelSelector": {"matchLabels": {"job": "train"}}, "topologyKey": "kubernetes.io/hostname"}
    anti = {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [term]}}
    running = pod("w0", labels={"job": "train"}, node_name=a["metadata"]["name"], affinity=anti)
    new = pod("w1", labels={"job": "train"}, affinity=anti)
    assert reasons(new, a, [running], [a, b]) == [ANTI_AFFINITY]
    assert reasons(new, b, [running], [a, b]) == []
    # the existing pod's own anti-affinity also keeps a matching newcomer away (symmetry)
    plain = pod("w2", labels={"job": "train"})
    assert reasons(plain, a, [running], [a, b]) == [
        "node(s) didn't satisfy existing pods anti-affinity rules"
    ]
    # a term selects pods of its owner's namespace only, unless it names others
    assert reasons(pod("w3", ns="other", labels={"job": "train"}, affinity=anti), a, [running], [a, b]) == []
    wide = {
        "podAntiAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": [{**term, "namespaces": ["default"]}]
        }
    }
    assert reasons(pod("w4", ns="other", labels={"job": "x"}, affinity=wide), a, [running], [a, b]) == [
        ANTI_AFFINITY
    ]


@pytest.mark.unit
def test_failed_scheduling_message_and_spreading():
    message = failed_scheduling_message(
        4,
        {
            "a": ["Insufficient nvidia.com/gpu"],
            "b": [NOT_MATCH_AFFINITY],
            "c": [NOT_MATCH_AFFINITY],
            "d": [NOT_MATCH_AFFINITY],
        },
    )
    assert message == (
        "0/4 nodes are available: 1 Insufficient nvidia.com/gpu, 3 node(s) didn't match Pod's node "
        "affinity/selector. preemption: 0/4 nodes are available: 4 Preemption is not helpful for scheduling."
    )
    a, b = node(1), node(2)
    chosen, rejected = choose_node(pod(), [a, b], [pod("x", node_name=a["metadata"]["name"])])
    assert chosen == b["metadata"]["name"] and rejected == {}


# --- the loop, on the API server --------------------------------------------------------------------


@pytest.mark.integration
def test_unschedulable_pod_gets_failed_scheduling_then_binds_when_a_node_frees(cluster, pod_ns):
    gpu = {"resources": {"limits": {"nvidia.com/gpu": 1}}}
    sleep = ["python", "-c", "import time; time.sleep(600)"]
    # the cluster fixture has three 1-GPU nodes; earlier tests' pods hold no GPU
    for i in range(3):
        create_pod(cluster, pod_ns, pod_body(f"gpu-{i}", sleep, container=gpu))
    nodes = {
        wait_phase(cluster, pod_ns, f"gpu-{i}", "Running")
        and cluster.store.get(cluster.store.rt("", "pods"), pod_ns, f"gpu-{i}")["spec"]["nodeName"]
        for i in range(3)
    }
    assert len(nodes) == 3
    create_pod(cluster, pod_ns, pod_body("gpu-3", sleep, container=gpu))
    store = cluster.store

    def failed_scheduling() -> dict | None:
        events = store.list(store.rt("", "events"), pod_ns).items
        return next(
            (
                e
                for e in events
                if e["reason"] == "FailedScheduling" and e["involvedObject"]["name"] == "gpu-3"
            ),
            None,
        )

    event = eventually(failed_scheduling, 10, "a FailedScheduling event")
    assert event["type"] == "Warning"
    assert event["message"].startswith("0/3 nodes are available: 3 Insufficient nvidia.com/gpu.")
    pending = store.get(store.rt("", "pods"), pod_ns, "gpu-3")
    assert pending["status"]["phase"] == "Pending"
    scheduled = next(c for c in pending["status"]["conditions"] if c["type"] == "PodScheduled")
    assert (scheduled["status"], scheduled["reason"]) == ("False", "Unschedulable")
    # cordon one node, free another's GPU: the pod goes to the freed, schedulable one
    freed = store.get(store.rt("", "pods"), pod_ns, "gpu-0")["spec"]["nodeName"]
    cordoned = store.get(store.rt("", "pods"), pod_ns, "gpu-1")["spec"]["nodeName"]
    store.patch(
        store.rt("", "nodes"), None, cordoned, lambda n: {**n, "spec": {**n["spec"], "unschedulable": True}}
    )
    store.delete(store.rt("", "pods"), pod_ns, "gpu-0", {"gracePeriodSeconds": 0})
    wait_phase(cluster, pod_ns, "gpu-3", "Running")
    assert store.get(store.rt("", "pods"), pod_ns, "gpu-3")["spec"]["nodeName"] == freed
    store.patch(
        store.rt("", "nodes"), None, cordoned, lambda n: {**n, "spec": {**n["spec"], "unschedulable": False}}
    )
    for i in (1, 2, 3):
        store.delete(store.rt("", "pods"), pod_ns, f"gpu-{i}", {"gracePeriodSeconds": 0})
