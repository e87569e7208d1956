"""Fault injection: fail-node as HyperPod reports it, end to end to the node_health
Lambda through the sandbox's EventBridge; heal-node, crash, hang and repeated events."""

from __future__ import annotations

import json
from collections.abc import Iterator
from types import SimpleNamespace

import pytest

from sandbox.cluster_faults import (
    FAULT_DETAILS_ANNOTATION,
    FAULT_TYPES_LABEL,
    HEALTH_LABEL,
    Faults,
    failed_node,
    healed_node,
    instance_id_of,
)
from sandbox.kube import KubeApiServer, hyperpod_node
from sandbox.kube.cluster import add_node
from sandbox.kube.kubelet import running_processes
from sandbox.kube.runtime import KubeRuntime
from sandbox.testing import eventually
from tests.sandbox.kube.pods import create_pod, pod_body, pod_status, wait_gone, wait_phase

pytestmark = pytest.mark.integration

INSTANCES = ["i-0ccccccccccccccc1", "i-0ccccccccccccccc2"]
CLUSTER = {
    "ClusterName": "fault-cluster",
    "ClusterArn": "arn:aws:sagemaker:us-west-2:123456789012:cluster/faultcluster1",
}
SLEEP = ["python", "-c", "import time; time.sleep(600)"]


@pytest.fixture(scope="module")
def world() -> Iterator[tuple[object, KubeRuntime, Faults]]:
    """The project's stack in a Sandbox, a Kubernetes cluster of two HyperPod nodes, and Faults
    putting events on the sandbox's default bus."""
    from sandbox import Sandbox, SandboxConfig

    with Sandbox(SandboxConfig(parameters={"LogLevel": "ERROR"})) as sb:
        server = KubeApiServer().start()
        for instance_id in INSTANCES:
            add_node(server.store, hyperpod_node(instance_id))
        runtime = KubeRuntime(server).start()
        try:
            yield sb, runtime, Faults(runtime, sb.client("events"), CLUSTER)
        finally:
            runtime.stop()
            server.stop()
            assert running_processes(runtime.runtime_id) == []


def node_item(sb: object, instance_id: str) -> dict | None:
    from hyperpod_control.adapters.store import Store

    store = Store(sb.output("TableName"), client=sb.client("dynamodb"))  # type: ignore[attr-defined]
    record = store.get_node(CLUSTER["ClusterArn"], instance_id)
    return None if record is None else record.model_dump(mode="json")


def test_fail_node_kills_its_pods_marks_the_node_and_reaches_node_health(world):
    sb, runtime, faults = world
    store = runtime.store
    node = f"hyperpod-{INSTANCES[0]}"
    ns = "default"
    for i in range(2):
        create_pod(runtime, ns, pod_body(f"victim-{i}", SLEEP, nodeName=node))
    create_pod(runtime, ns, pod_body("bystander", SLEEP, nodeName=f"hyperpod-{INSTANCES[1]}"))
    for name in ("victim-0", "victim-1", "bystander"):
        wait_phase(runtime, ns, name, "Running")
    victim_pids = runtime.kubelet(node).worker(ns, "victim-0").all_pids()
    assert victim_pids

    ids = faults.fail_node(node, mode="clean")

    assert len(ids) == 1
    # the node's pods are gone, processes and API objects; the other node's pod runs on
    wait_gone(runtime, ns, "victim-0")
    wait_gone(runtime, ns, "victim-1")
    assert all(not _alive(pid) for pid in victim_pids)
    assert pod_status(runtime, ns, "bystander")["phase"] == "Running"
    # what HyperPod and the node lifecycle controller set on the node
    obj = store.get(store.rt("", "nodes"), None, node)
    labels = obj["metadata"]["labels"]
    assert labels[HEALTH_LABEL] == "UnschedulablePendingReplacement"
    assert labels[FAULT_TYPES_LABEL] == "NvidiaErrorTerminate"
    assert {"key": HEALTH_LABEL, "value": "Unschedulable", "effect": "NoSchedule"} in obj["spec"]["taints"]
    assert (
        json.loads(obj["metadata"]["annotations"][FAULT_DETAILS_ANNOTATION])[-1]["type"]
        == "NvidiaErrorTerminate"
    )
    ready = next(c for c in obj["status"]["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "Unknown"
    # the event reached its target: the node_health Lambda recorded the NODE item
    sb.wait_idle()
    item = eventually(lambda: node_item(sb, INSTANCES[0]), 20, "the NODE item")
    assert item["health_status"] == "Unhealthy"
    assert item["repair_action"] == "Replace"
    assert item["last_event_id"] == ids[0]

    # a new pod for that node's workload lands elsewhere: the taints keep it off the failed node
    create_pod(runtime, ns, pod_body("replacement", SLEEP))
    wait_phase(runtime, ns, "replacement", "Running")
    placed = store.get(store.rt("", "pods"), ns, "replacement")["spec"]["nodeName"]
    assert placed == f"hyperpod-{INSTANCES[1]}"

    # AWS may deliver one change several times, each with its own id: the Lambda changes nothing
    repeated = faults.repeat_event(node, times=3)
    assert len(set(repeated) | set(ids)) == 4
    sb.wait_idle()
    assert node_item(sb, INSTANCES[0])["version"] == item["version"]

    faults.heal_node(node)
    healed = store.get(store.rt("", "nodes"), None, node)
    assert healed["metadata"]["labels"][HEALTH_LABEL] == "Schedulable"
    assert not any(t["key"] == HEALTH_LABEL for t in healed["spec"].get("taints") or [])
    assert next(c for c in healed["status"]["conditions"] if c["type"] == "Ready")["status"] == "True"
    # the kubelet runs again: a pod pinned to the node starts
    create_pod(runtime, ns, pod_body("after-heal", SLEEP, nodeName=node))
    wait_phase(runtime, ns, "after-heal", "Running")
    for name in ("bystander", "replacement", "after-heal"):
        store.delete(store.rt("", "pods"), ns, name, {"gracePeriodSeconds": 0})


def _state(pid: int) -> str | None:
    """The process's state letter in /proc (R, S, T, Z, ...), None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return None


def _alive(pid: int) -> bool:
    return _state(pid) not in (None, "Z")


def test_crash_pod_restarts_the_container_and_counts_it(world):
    _, runtime, faults = world
    create_pod(runtime, "default", pod_body("crashy", SLEEP))
    wait_phase(runtime, "default", "crashy", "Running")
    faults.crash_pod("default", "crashy")

    def restarted() -> dict | None:
        status = pod_status(runtime, "default", "crashy") or {}
        cs = (status.get("containerStatuses") or [{}])[0]
        return cs if cs.get("restartCount") == 1 and "running" in cs.get("state", {}) else None

    cs = eventually(restarted, 20, "the crashed container restarted")
    assert cs["lastState"]["terminated"]["exitCode"] == 137
    assert cs["lastState"]["terminated"]["reason"] == "Error"
    runtime.store.delete(runtime.store.rt("", "pods"), "default", "crashy", {"gracePeriodSeconds": 0})


def test_hang_pod_stops_its_processes_and_resume_continues_them(world):
    _, runtime, faults = world
    create_pod(runtime, "default", pod_body("hung", SLEEP))
    wait_phase(runtime, "default", "hung", "Running")
    pids = faults.hang_pod("default", "hung")
    assert pids
    # signals are delivered asynchronously: wait for the scheduler state to show it
    eventually(lambda: all(_state(pid) == "T" for pid in pids), 5, "the pod's processes stopped")
    assert pod_status(runtime, "default", "hung")["phase"] == "Running"  # a hang is silent
    faults.resume_pod("default", "hung")
    eventually(lambda: all(_state(pid) in ("S", "R") for pid in pids), 5, "the pod's processes running")
    # a hung pod still stops on deletion: SIGTERM cannot reach a stopped process, SIGKILL does
    faults.hang_pod("default", "hung")
    runtime.store.delete(runtime.store.rt("", "pods"), "default", "hung", {"gracePeriodSeconds": 1})
    wait_gone(runtime, "default", "hung")
    assert all(not _alive(pid) for pid in pids)


@pytest.mark.unit
def test_failed_and_healed_node_are_pure_and_reverse_each_other():
    node = hyperpod_node("i-0ddddddddddddddd1")
    failed = failed_node(
        node, "NvidiaErrorReboot", "XidHardwareFailure", "Reboot", "xid 79", "2026-01-01T00:00:00Z"
    )
    assert node["metadata"]["labels"][HEALTH_LABEL] == "Schedulable"  # input untouched
    assert failed["metadata"]["labels"][HEALTH_LABEL] == "UnschedulablePendingReboot"
    fault = next(c for c in failed["status"]["conditions"] if c["type"] == "NvidiaErrorReboot")
    assert fault["status"] == "True"
    healed = healed_node(failed, "2026-01-01T00:05:00Z")
    assert healed["metadata"]["labels"][HEALTH_LABEL] == "Schedulable"
    assert FAULT_TYPES_LABEL not in healed["metadata"]["labels"]
    assert "taints" not in healed["spec"]
    assert (
        next(c for c in healed["status"]["conditions"] if c["type"] == "NvidiaErrorReboot")["status"]
        == "False"
    )
    with pytest.raises(ValueError, match="not a HyperPod node name"):
        instance_id_of("ip-10-0-0-1")
    faults = Faults(SimpleNamespace(store=None), events=None, cluster=CLUSTER)  # type: ignore[arg-type]
    with pytest.raises(LookupError, match="no node-health event"):
        faults.repeat_event("hyperpod-i-0ddddddddddddddd1")


HTTP = ["python", "-m", "http.server", "8080"]


def _get(ip: str, timeout: float) -> int:
    import http.client

    conn = http.client.HTTPConnection(ip, 8080, timeout=timeout)
    try:
        conn.request("GET", "/")
        return conn.getresponse().status
    finally:
        conn.close()


def _serving(ip: str) -> bool:
    try:
        return _get(ip, 2) == 200
    except ConnectionRefusedError:  # not listening yet
        return False


def _ready(obj: dict) -> str | None:
    return next(
        (c["status"] for c in (obj.get("status") or {}).get("conditions") or [] if c["type"] == "Ready"), None
    )


def test_a_dirty_node_failure_hangs_then_goes_not_ready_then_leaves_its_pods_terminating(world):
    sb, runtime, _ = world
    # grace period 40 s and tolerations 300 s on a clock 100x faster: 0.4 s and 3 s
    faults = Faults(runtime, sb.client("events"), CLUSTER, time_scale=0.01)
    store, ns, node = runtime.store, "default", f"hyperpod-{INSTANCES[0]}"
    create_pod(runtime, ns, pod_body("frozen", HTTP, nodeName=node))
    status = wait_phase(runtime, ns, "frozen", "Running")
    pod = store.get(store.rt("", "pods"), ns, "frozen")
    unreachable = [t for t in pod["spec"]["tolerations"] if t["key"] == "node.kubernetes.io/unreachable"]
    assert unreachable == [
        {
            "key": "node.kubernetes.io/unreachable",
            "operator": "Exists",
            "effect": "NoExecute",
            "tolerationSeconds": 300,
        }
    ], "DefaultTolerationSeconds admission"
    ip = status["podIP"]
    eventually(lambda: _serving(ip), 20, "the pod serving HTTP")
    pids = runtime.kubelet(node).worker(ns, "frozen").all_pids()

    assert faults.fail_node(node, event="never") == []

    # At once: the processes stop where they are, a connection is accepted and never answered,
    # and the API still says Running (nothing reports a dead instance).
    eventually(lambda: all(_state(pid) == "T" for pid in pids), 5, "the node's processes frozen")
    with pytest.raises(TimeoutError):
        _get(ip, 0.5)
    assert pod_status(runtime, ns, "frozen")["phase"] == "Running"
    # After the grace period: NotReady with the unreachable taints, its pods not Ready, and no
    # HyperPod mark (no health event came).
    nodes = store.rt("", "nodes")
    eventually(lambda: _ready(store.get(nodes, None, node)) == "Unknown", 10, "the node NotReady")
    obj = store.get(nodes, None, node)
    assert {"NoSchedule", "NoExecute"} <= {
        t["effect"] for t in obj["spec"]["taints"] if t["key"] == "node.kubernetes.io/unreachable"
    }
    assert obj["metadata"]["labels"][HEALTH_LABEL] == "Schedulable"
    eventually(
        lambda: _ready(store.get(store.rt("", "pods"), ns, "frozen")) == "False", 10, "the pod not Ready"
    )
    # After its 300 s toleration: evicted, and Terminating, since no kubelet confirms the deletion.
    terminating = eventually(
        lambda: (
            (store.find(store.rt("", "pods"), ns, "frozen") or {})
            .get("metadata", {})
            .get("deletionTimestamp")
        ),
        20,
        "the pod marked for deletion",
    )
    assert terminating and store.find(store.rt("", "pods"), ns, "frozen") is not None
    # The node comes back: what froze with it is gone, and the Terminating pod is let go.
    faults.heal_node(node, emit=False)
    wait_gone(runtime, ns, "frozen")
    eventually(lambda: all(not _alive(pid) for pid in pids), 10, "the frozen processes gone")


def test_a_health_event_after_not_ready_marks_the_node_then(world):
    sb, runtime, _ = world
    faults = Faults(runtime, sb.client("events"), CLUSTER, time_scale=0.01)
    node = f"hyperpod-{INSTANCES[1]}"
    store = runtime.store
    assert faults.fail_node(node, event="after") == []
    obj = store.get(store.rt("", "nodes"), None, node)
    assert obj["metadata"]["labels"][HEALTH_LABEL] == "Schedulable", "not marked before NotReady"
    marked = eventually(
        lambda: (
            store.get(store.rt("", "nodes"), None, node)["metadata"]["labels"][HEALTH_LABEL] != "Schedulable"
        ),
        10,
        "HyperPod's mark after NotReady",
    )
    assert marked
    assert _ready(store.get(store.rt("", "nodes"), None, node)) == "Unknown"
    sb.wait_idle()
    item = eventually(lambda: node_item(sb, INSTANCES[1]), 20, "the NODE item from the event")
    assert item["health_status"] == "Unhealthy"
    faults.heal_node(node)
