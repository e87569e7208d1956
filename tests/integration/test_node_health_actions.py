"""node_health acts on the node (issue 10, item 1), end to end in the sandbox: HyperPod's event on
EventBridge, the function in process, the sandbox Kubernetes API server, SageMaker's emulated
reboot. The cluster's operator is the AWS add-on (mode ``addon``) and its NodeRecovery is None,
so automatic repair is the control plane's job when it is turned on."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from hyperpod_control.adapters.store import Store
from hyperpod_control.models.node_health import CORDONED_BY_ANNOTATION, HEALTH_LABEL
from hyperpod_control.models.records import NodeRecord, OperatorMode, OperatorRecord, OperatorStatus
from sandbox import Sandbox, SandboxConfig
from sandbox.aws_ext import faults as aws_faults
from sandbox.aws_ext import set_delays
from sandbox.faults import node_health_event
from sandbox.testing import eventually
from sandbox.world import WorldOptions

pytestmark = pytest.mark.integration

FUNCTION = "NodeHealthFunction"


@pytest.fixture(scope="module")
def sb() -> Iterator[Sandbox]:
    with Sandbox(SandboxConfig(world=WorldOptions(node_recovery="None", nodes=6), kube=True)) as sandbox:
        world = sandbox.world
        store(sandbox).put(
            OperatorRecord(
                cluster_arn=world.hyperpod_cluster_arn,
                cluster_name=world.hyperpod_cluster_name,
                mode=OperatorMode.ADDON,
                status=OperatorStatus.ACTIVE,
            ),
            expected_version=None,
        )
        # a reboot stays in progress for the test's duration: its status can be read
        set_delays(node_reboot=10_000_000)
        yield sandbox


def store(sb: Sandbox) -> Store:
    return Store(sb.output("TableName"), client=sb.client("dynamodb"))


def core(sb: Sandbox) -> Any:
    from kubernetes import client, config

    return client.CoreV1Api(config.new_client_from_config(config_file=str(sb.kubeconfig)))


@contextlib.contextmanager
def repair_settings(sb: Sandbox, **values: str) -> Iterator[None]:
    """The function's environment for the block (as template.yaml would set it), then as before."""
    spec = next(s for s in sb.runtime.functions.values() if s.logical_id == FUNCTION)
    saved = {k: (spec.environment.get(k), os.environ.get(k)) for k in values}
    spec.environment.update(values)
    os.environ.update(values)
    try:
        yield
    finally:
        for key, (in_spec, in_env) in saved.items():
            for where, old in ((spec.environment, in_spec), (os.environ, in_env)):
                if old is None:
                    where.pop(key, None)
                else:
                    where[key] = old


def instances(sb: Sandbox) -> list[str]:
    nodes = sb.client("sagemaker").list_cluster_nodes(ClusterName=sb.world.hyperpod_cluster_name)
    return sorted(n["InstanceId"] for n in nodes["ClusterNodeSummaries"])


def sagemaker_status(sb: Sandbox, instance_id: str) -> str | None:
    nodes = sb.client("sagemaker").list_cluster_nodes(ClusterName=sb.world.hyperpod_cluster_name)
    return next(
        (
            n["InstanceStatus"]["Status"]
            for n in nodes["ClusterNodeSummaries"]
            if n["InstanceId"] == instance_id
        ),
        None,
    )


def node_item(sb: Sandbox, instance_id: str) -> NodeRecord | None:
    return store(sb).get_node(sb.world.hyperpod_cluster_arn, instance_id)


def handled(sb: Sandbox, instance_id: str, status: str) -> NodeRecord:
    def done() -> NodeRecord | None:
        item = node_item(sb, instance_id)
        ok = item and item.health_status.value == status and item.handled_event_id == item.last_event_id
        return item if ok else None

    return eventually(done, timeout=30, what=f"node_health to handle {instance_id} {status}")


def marks(sb: Sandbox, instance_id: str) -> dict[str, Any]:
    k8s = core(sb).read_node(f"hyperpod-{instance_id}")
    return {
        "cordoned": bool(k8s.spec.unschedulable),
        "tainted": any(t.key == HEALTH_LABEL and t.effect == "NoSchedule" for t in k8s.spec.taints or []),
        "label": (k8s.metadata.labels or {}).get(HEALTH_LABEL),
        "ours": CORDONED_BY_ANNOTATION in (k8s.metadata.annotations or {}),
    }


def put(sb: Sandbox, instance_id: str, healthy: bool, when: datetime, repair_action: str = "Reboot") -> None:
    cluster = sb.client("sagemaker").describe_cluster(ClusterName=sb.world.hyperpod_cluster_name)
    entry = node_health_event(cluster, instance_id, healthy, when, repair_action=repair_action)
    result = sb.client("events").put_events(Entries=[entry])
    assert result["FailedEntryCount"] == 0
    sb.wait_idle()


def test_a_node_hyperpod_has_not_marked_is_cordoned_tainted_labelled_and_healthy_undoes_it(sb):
    instance = instances(sb)[0]
    assert marks(sb, instance) == {"cordoned": False, "tainted": False, "label": "Schedulable", "ours": False}
    t0 = datetime.now(UTC)
    with repair_settings(sb, NODE_REPAIR_ENABLED="true"):  # on, but a Replace is not allowed
        put(sb, instance, healthy=False, when=t0, repair_action="Replace")
        item = handled(sb, instance, "Unhealthy")

    assert marks(sb, instance) == {
        "cordoned": True,
        "tainted": True,
        "label": "UnschedulablePendingReplacement",
        "ours": True,
    }
    assert item.kube_actions == ["cordon", "taint", "label=UnschedulablePendingReplacement"]
    # a Replace wipes the node's volumes: not done without NODE_REPAIR_ALLOW_REPLACE, and said so
    assert not item.repair_requested and "NODE_REPAIR_ALLOW_REPLACE" in item.repair_skipped_reason
    assert "wiped" in item.repair_skipped_reason
    assert sagemaker_status(sb, instance) == "Running"

    put(sb, instance, healthy=True, when=t0 + timedelta(seconds=5))
    item = handled(sb, instance, "Healthy")
    assert marks(sb, instance) == {"cordoned": False, "tainted": False, "label": "Schedulable", "ours": False}
    assert item.kube_actions == ["uncordon", "untaint", "label=Schedulable"]
    assert item.failed_at is not None  # kept: the breaker counts it for its window


def test_with_repair_on_a_failed_node_is_rebooted_even_when_sagemaker_fails_at_first(sb):
    instance = instances(sb)[1]
    # every SDK attempt of the function's first try fails (botocore tries 6 times); Lambda's
    # asynchronous retry then runs the event again, which resumes it
    aws_faults.inject("BatchRebootClusterNodes", times=6, error="internal", service="sagemaker")
    with repair_settings(sb, NODE_REPAIR_ENABLED="true"):
        sb.faults.fail_node(f"hyperpod-{instance}", repair_action="Reboot")  # HyperPod marks it too
        sb.wait_idle()
        item = handled(sb, instance, "Unhealthy")

    assert eventually(lambda: sagemaker_status(sb, instance) == "Pending", timeout=10, what="reboot")
    assert item.repair_requested and item.repair_requested_action == "Reboot"
    assert item.repair_warning is None and not item.breaker_open
    calls = sb.runtime.calls(FUNCTION)
    assert [c.error_type for c in calls[-2:]] == ["NodeActionError", None]
    # HyperPod had tainted and labelled it: only the cordon was ours
    assert item.kube_actions == ["cordon"]
    assert marks(sb, instance)["cordoned"] and marks(sb, instance)["tainted"]

    sb.faults.heal_node(f"hyperpod-{instance}")
    sb.wait_idle()
    handled(sb, instance, "Healthy")
    assert marks(sb, instance) == {"cordoned": False, "tainted": False, "label": "Schedulable", "ours": False}


def test_the_circuit_breaker_stops_automatic_repair_when_too_many_nodes_fail(sb):
    arn = sb.world.hyperpod_cluster_arn
    since = datetime.now(UTC) - timedelta(hours=1)
    already = sum(1 for n in store(sb).list_nodes(arn) if n.failed_at and n.failed_at >= since)
    first, second = instances(sb)[2:4]
    settings = {
        "NODE_REPAIR_ENABLED": "true",
        "NODE_REPAIR_BREAKER_MAX_NODES": str(already + 1),
        "NODE_REPAIR_BREAKER_WINDOW_SECONDS": "3600",
    }
    with repair_settings(sb, **settings):
        sb.faults.fail_node(f"hyperpod-{first}", repair_action="Reboot")
        sb.wait_idle()
        repaired = handled(sb, first, "Unhealthy")
        sb.faults.fail_node(f"hyperpod-{second}", repair_action="Reboot")
        sb.wait_idle()
        stopped = handled(sb, second, "Unhealthy")

    assert repaired.repair_requested and not repaired.breaker_open
    assert not stopped.repair_requested and stopped.breaker_open
    assert f"circuit breaker open: {already + 2} nodes" in stopped.repair_skipped_reason
    assert eventually(lambda: sagemaker_status(sb, first) == "Pending", timeout=10, what="first reboot")
    assert sagemaker_status(sb, second) != "Pending"  # no reboot asked
    assert marks(sb, second)["cordoned"]  # the breaker stops repair, not the marks
