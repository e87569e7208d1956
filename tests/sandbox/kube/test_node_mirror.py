"""SageMaker reboots and replacements of HyperPod nodes take the Kubernetes Nodes through the same
states as a hardware fault: ``sandbox.kube.node_mirror.NodeRepairMirror``.

The HyperPod cluster is the sandbox's AWS emulation in process, on a manual clock the tests
advance, so "not back yet" is asserted at a sandbox instant rather than raced against wall time.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from moto import mock_aws

from sandbox import aws_ext
from sandbox.aws_ext import sagemaker_hyperpod
from sandbox.cluster_faults import FAULT_TYPES_LABEL, HEALTH_LABEL, UNREACHABLE
from sandbox.kube import KubeApiServer
from sandbox.kube.cluster import sync_hyperpod_nodes
from sandbox.kube.kubelet import running_processes
from sandbox.kube.node_mirror import NodeRepairMirror
from sandbox.kube.runtime import KubeRuntime
from sandbox.testing import eventually
from sandbox.world import WorldOptions, build_world
from tests.sandbox.kube.pods import create_pod, pod_body, wait_gone, wait_phase

pytestmark = pytest.mark.integration

CLUSTER = "mirror-hyperpod"
GROUP = "mirror-workers"
SLEEP = ["python", "-c", "import time; time.sleep(600)"]


@dataclass
class HyperPod:
    clock: aws_ext.ManualClock
    sm: Any
    runtime: KubeRuntime
    mirror: NodeRepairMirror
    ids: list[str]

    @property
    def store(self) -> Any:
        return self.runtime.store

    def node(self, instance_id: str) -> dict | None:
        return self.store.find(self.store.rt("", "nodes"), None, f"hyperpod-{instance_id}")

    def status(self, instance_id: str) -> str:
        node = self.sm.describe_cluster_node(ClusterName=CLUSTER, NodeId=instance_id)["NodeDetails"]
        return node["InstanceStatus"]["Status"]


def ready(node: dict | None) -> str | None:
    if node is None:
        return None
    return next(c["status"] for c in node["status"]["conditions"] if c["type"] == "Ready")


def on_node(name: str, instance_id: str) -> dict:
    """A pod the scheduler must place on that node (so taints and cordons count)."""
    return pod_body(name, SLEEP, nodeSelector={"kubernetes.io/hostname": f"hyperpod-{instance_id}"})


def alive(pid: int) -> bool:
    import os

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture(scope="module")
def hp() -> Iterator[HyperPod]:
    """A HyperPod world of four nodes on a manual clock, its Nodes in a sandbox API server with
    a KubeRuntime, and the mirror following it."""
    clock = aws_ext.ManualClock()
    aws_ext.configure(clock)
    with mock_aws():
        world = build_world(
            lambda service: boto3.client(service, region_name="us-west-2"),
            WorldOptions(
                hyperpod_cluster_name=CLUSTER,
                nodes=4,
                instance_group=GROUP,
                interface_endpoints=(),
                gateway_endpoints=(),
            ),
        )
        sm = boto3.client("sagemaker", region_name="us-west-2")
        server = KubeApiServer().start()
        sync_hyperpod_nodes(server.store, sm, CLUSTER)
        runtime = KubeRuntime(server).start()
        mirror = NodeRepairMirror(runtime, CLUSTER, region="us-west-2", account_id=world.account_id).start()
        try:
            yield HyperPod(clock, sm, runtime, mirror, sorted(world.node_ids))
        finally:
            mirror.stop()
            runtime.stop()
            server.stop()
            aws_ext.reset()
            assert running_processes(runtime.runtime_id) == []


def test_reboot_takes_the_node_not_ready_kills_its_pods_and_brings_it_back(hp: HyperPod) -> None:
    target, other = hp.ids[0], hp.ids[1]
    name = f"hyperpod-{target}"
    create_pod(hp.runtime, "default", on_node("reboot-victim", target))
    create_pod(hp.runtime, "default", on_node("reboot-bystander", other))
    wait_phase(hp.runtime, "default", "reboot-victim", "Running")
    wait_phase(hp.runtime, "default", "reboot-bystander", "Running")
    pids = hp.runtime.kubelet(name).worker("default", "reboot-victim").all_pids()

    result = hp.sm.batch_reboot_cluster_nodes(ClusterName=CLUSTER, NodeIds=[target])
    assert result["Successful"] == [target]

    # as on a fault: processes dead at once, pod evicted, node NotReady and marked for reboot
    wait_gone(hp.runtime, "default", "reboot-victim")
    assert pids and not any(alive(pid) for pid in pids)
    node = eventually(
        lambda: hp.node(target) if ready(hp.node(target)) == "Unknown" else None, 10, "NotReady"
    )
    assert node["metadata"]["labels"][HEALTH_LABEL] == "UnschedulablePendingReboot"
    assert node["metadata"]["labels"][FAULT_TYPES_LABEL] == "InstanceReboot"
    taints = node["spec"]["taints"]
    assert {"key": HEALTH_LABEL, "value": "Unschedulable", "effect": "NoSchedule"} in taints
    assert any(t["key"] == UNREACHABLE and t["effect"] == "NoExecute" for t in taints)
    assert hp.runtime.kubelet(name).failed
    assert (
        hp.store.get(hp.store.rt("", "pods"), "default", "reboot-bystander")["status"]["phase"] == "Running"
    )

    # a pod for that node waits: the node is unschedulable while it reboots
    create_pod(hp.runtime, "default", on_node("after-reboot", target))
    hp.clock.advance(119)
    assert hp.status(target) == "Pending"  # this read applies every change due by now
    hp.mirror.sync()
    assert ready(hp.node(target)) == "Unknown"
    assert not hp.store.get(hp.store.rt("", "pods"), "default", "after-reboot")["spec"].get("nodeName")

    hp.clock.advance(1)  # 120 sandbox seconds: the instance is Running again
    eventually(lambda: ready(hp.node(target)) == "True", 10, "the node Ready again")
    healed = hp.node(target)
    assert healed["metadata"]["labels"][HEALTH_LABEL] == "Schedulable"
    assert not any(t["key"] in (HEALTH_LABEL, UNREACHABLE) for t in healed["spec"].get("taints") or [])
    assert not hp.runtime.kubelet(name).failed
    # the kubelet runs again and the scheduler uses the node: the waiting pod lands and runs there
    wait_phase(hp.runtime, "default", "after-reboot", "Running")
    assert hp.store.get(hp.store.rt("", "pods"), "default", "after-reboot")["spec"]["nodeName"] == name


def test_replace_deletes_the_old_node_and_registers_the_new_instance(hp: HyperPod) -> None:
    old = hp.ids[1]
    old_name = f"hyperpod-{old}"
    create_pod(hp.runtime, "default", on_node("replace-victim", old))
    wait_phase(hp.runtime, "default", "replace-victim", "Running")

    result = hp.sm.batch_replace_cluster_nodes(ClusterName=CLUSTER, NodeIds=[old])
    assert result["Successful"] == [old]

    wait_gone(hp.runtime, "default", "replace-victim")
    eventually(lambda: ready(hp.node(old)) == "Unknown", 10, "the old node NotReady")
    assert hp.node(old)["metadata"]["labels"][HEALTH_LABEL] == "UnschedulablePendingReplacement"

    hp.clock.advance(300)  # half of the 600 s: the old instance is gone, the new one boots
    ids = {n["InstanceId"]: n for n in hp.sm.list_cluster_nodes(ClusterName=CLUSTER)["ClusterNodeSummaries"]}
    assert old not in ids
    [new] = [i for i in ids if i not in hp.ids]
    assert ids[new]["InstanceStatus"]["Status"] == "Pending"
    eventually(lambda: hp.node(old) is None, 10, "the old Node deleted")
    eventually(lambda: old_name not in hp.runtime.kubelets, 10, "the old node's kubelet gone")
    hp.mirror.sync()
    assert hp.node(new) is None  # no Node while the instance is still Pending

    hp.clock.advance(300)
    assert hp.status(new) == "Running"
    node = eventually(
        lambda: hp.node(new) if ready(hp.node(new)) == "True" else None, 10, "the new Node Ready"
    )
    labels = node["metadata"]["labels"]
    assert labels["sagemaker.amazonaws.com/compute-type"] == "HyperPod"
    assert labels["sagemaker.amazonaws.com/instance-group-name"] == GROUP
    assert labels["node.kubernetes.io/instance-type"] == "ml.g5.8xlarge"
    assert labels[HEALTH_LABEL] == "Schedulable"
    assert node["status"]["allocatable"]["nvidia.com/gpu"] == "1"
    create_pod(hp.runtime, "default", on_node("on-the-new-node", new))
    wait_phase(hp.runtime, "default", "on-the-new-node", "Running")
    hp.ids[1] = new


def test_a_reboot_seen_only_after_it_finished_still_takes_the_node_down_and_up(hp: HyperPod) -> None:
    """Sandbox time jumps past the whole reboot before the mirror looks: the emulation's node
    listener queued both changes, so the pods die and the node comes back all the same."""
    target = hp.ids[2]
    create_pod(hp.runtime, "default", on_node("jump-victim", target))
    wait_phase(hp.runtime, "default", "jump-victim", "Running")
    hp.mirror.stop()  # the test drives a mirror of its own, one sync at a time
    mirror = NodeRepairMirror(hp.runtime, CLUSTER).start(background=False)
    try:
        hp.sm.batch_reboot_cluster_nodes(ClusterName=CLUSTER, NodeIds=[target])
        hp.clock.advance(120)
        assert hp.status(target) == "Running"
        assert hp.store.find(hp.store.rt("", "pods"), "default", "jump-victim") is not None

        mirror.sync()

        assert hp.store.find(hp.store.rt("", "pods"), "default", "jump-victim") is None
        node = hp.node(target)
        assert ready(node) == "True"
        assert node["metadata"]["labels"][HEALTH_LABEL] == "Schedulable"
        assert not hp.runtime.kubelet(f"hyperpod-{target}").failed
    finally:
        mirror.stop()
        hp.mirror.start()


def test_failure_with_automatic_reboot_marks_the_pending_repair(hp: HyperPod) -> None:
    """The emulation's fail_node: Failure, then HyperPod's automatic reboot."""
    target = hp.ids[3]
    create_pod(hp.runtime, "default", on_node("failure-victim", target))
    wait_phase(hp.runtime, "default", "failure-victim", "Running")

    sagemaker_hyperpod.fail_node(CLUSTER, target, repair="reboot")

    wait_gone(hp.runtime, "default", "failure-victim")
    eventually(
        lambda: hp.node(target)["metadata"]["labels"].get(HEALTH_LABEL) == "UnschedulablePendingReboot",
        10,
        "the node marked pending reboot",
    )
    node = hp.node(target)
    assert ready(node) == "Unknown"
    assert node["metadata"]["labels"][FAULT_TYPES_LABEL] == "NvidiaErrorTerminate"
    hp.clock.advance(120)
    assert hp.status(target) == "Running"
    eventually(lambda: ready(hp.node(target)) == "True", 10, "the node Ready again")
