"""node_health acts on the node, end to end in the sandbox: HyperPod's event on
EventBridge, the function in process, the sandbox Kubernetes API server, SageMaker's emulated
reboot. The cluster's operator is the AWS add-on (mode ``addon``) and its NodeRecovery is None,
so automatic repair is the control plane's job when it is turned on; the jobs tests switch the
OPERATOR item to ``serverless`` for their duration where they need that mode. A job's pod on a
failed node is never written by node_health, in either mode."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from hyperpod_control.adapters.store import Store
from hyperpod_control.models.install import JOB_GROUP, JOB_PLURAL, JOB_VERSION
from hyperpod_control.models.names import JOB_LABEL, UID_LABEL
from hyperpod_control.models.node_health import CORDONED_BY_ANNOTATION, HEALTH_LABEL
from hyperpod_control.models.records import (
    JobPhase,
    JobRecord,
    NodeRecord,
    OperatorMode,
    OperatorRecord,
    OperatorStatus,
    PodSlot,
)
from sandbox import Sandbox, SandboxConfig
from sandbox.aws_ext import api_faults as aws_faults
from sandbox.aws_ext import set_delays
from sandbox.cluster_faults import node_health_event
from sandbox.kube.cluster import ClusterSeed
from sandbox.testing import eventually
from sandbox.world import WorldOptions

pytestmark = pytest.mark.integration

FUNCTION = "NodeHealthFunction"


@pytest.fixture(scope="module")
def sb() -> Iterator[Sandbox]:
    config = SandboxConfig(
        world=WorldOptions(node_recovery="None", nodes=6),
        kube=True,
        kube_seed=ClusterSeed(hyperpod_job_crd=True),  # the add-on's CRD: addon jobs exist
    )
    with Sandbox(config) as sandbox:
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
        sandbox.grant_control_plane_access()  # as the install's EnsureAccess leaves it
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

    # No UnschedulablePending* label: that label would itself ask HyperPod to replace the node,
    # which this project's own repair decision refused.
    assert marks(sb, instance) == {"cordoned": True, "tainted": True, "label": "Unschedulable", "ours": True}
    assert item.kube_actions == ["cordon", "taint", "label=Unschedulable"]
    # a Replace wipes the node's volumes: not done without NODE_REPAIR_ALLOW_REPLACE, and said so
    assert not item.repair_requested and "NODE_REPAIR_ALLOW_REPLACE" in item.repair_skipped_reason
    assert "wiped" in item.repair_skipped_reason
    assert sagemaker_status(sb, instance) == "Running"

    put(sb, instance, healthy=True, when=t0 + timedelta(seconds=5))
    item = handled(sb, instance, "Healthy")
    assert marks(sb, instance) == {"cordoned": False, "tainted": False, "label": "Schedulable", "ours": False}
    assert item.kube_actions == ["uncordon", "untaint", "label=Schedulable"]
    assert item.failed_at is not None  # kept: the breaker counts it for its window
    from moto.cloudwatch.models import cloudwatch_backends

    counted = {
        (dims["Action"], datum.unit)
        for datum in list(cloudwatch_backends["123456789012"][sb.config.region].metric_data)
        if datum.name == "NodeActions"
        and (dims := {d.name: d.value for d in datum.dimensions}).get("ClusterArn") == item.cluster_arn
    }
    assert {(a, "Count") for a in ["cordon", "taint", "uncordon", "untaint", "label=Schedulable"]} <= counted


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
    # Its EMF metric reached moto's CloudWatch (through the function's log output) and pages.
    assert sb.alarm_breaching("NodeRepairBreakerOpenAlarm"), (
        "NodeRepairBreakerOpen stayed under its threshold"
    )


# -- the jobs on a failed node ----------------------------------------------------------------------


@contextlib.contextmanager
def operator_mode(sb: Sandbox, mode: OperatorMode) -> Iterator[None]:
    """The cluster's OPERATOR item in ``mode`` for the block, then as before."""
    st, arn = store(sb), sb.world.hyperpod_cluster_arn
    before = st.get_operator(arn)
    current = st.put(before.model_copy(update={"mode": mode}), expected_version=before.version)
    try:
        yield
    finally:
        st.put(current.model_copy(update={"mode": before.mode}), expected_version=current.version)


@contextlib.contextmanager
def reconcile_paused(sb: Sandbox) -> Iterator[None]:
    """reconcile_jobs' schedule disabled for the block: in serverless mode it would remove a JOB
    item that has no HyperPodPyTorchJob (and delete its pods), as for a deleted job."""
    scheduler = sb.client("scheduler")
    target = sb.runtime.lookup(sb.stack.resources["ReconcileJobsFunction"]).arn
    paused = []
    for summary in scheduler.list_schedules()["Schedules"]:
        found = scheduler.get_schedule(Name=summary["Name"], GroupName=summary["GroupName"])
        if found["Target"]["Arn"] != target or found["State"] != "ENABLED":
            continue
        keep = ("Name", "GroupName", "ScheduleExpression", "Target", "FlexibleTimeWindow")
        settings = {k: found[k] for k in keep if k in found}
        scheduler.update_schedule(**settings, State="DISABLED")
        paused.append(settings)
    assert paused, "no reconcile_jobs schedule found"
    sb.wait_idle()
    try:
        yield
    finally:
        for settings in paused:
            scheduler.update_schedule(**settings, State="ENABLED")


def reconcile_now(sb: Sandbox) -> None:
    _, error = sb.invoke_lambda(sb.stack.resources["ReconcileJobsFunction"], {})
    assert error is None


def job_pod(sb: Sandbox, name: str, node: str, labels: dict[str, str]) -> Any:
    """A pod bound to ``node`` as a job's would be (a kubelet runs it: a long sleep)."""
    body = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "nodeName": node,
            "restartPolicy": "Never",
            "containers": [{"name": "trainer", "image": "sandbox/pytorch:2.13", "command": ["sleep", "600"]}],
        },
    }
    return core(sb).create_namespaced_pod("default", body)


def untouched(sb: Sandbox, created: Any) -> bool:
    """The pod is still there as it was made: not deleted, relabelled or moved (its status may
    change: the kubelet runs it)."""
    now = core(sb).read_namespaced_pod(created.metadata.name, "default")
    return (
        now.metadata.uid == created.metadata.uid
        and now.metadata.deletion_timestamp is None
        and now.metadata.labels == created.metadata.labels
        and now.spec.node_name == created.spec.node_name
    )


def remove_pod(sb: Sandbox, name: str) -> None:
    with contextlib.suppress(Exception):
        core(sb).delete_namespaced_pod(name, "default", grace_period_seconds=0)


def test_serverless_a_job_with_a_pod_on_the_failed_node_gets_the_fault_and_is_woken(sb):
    instance = instances(sb)[4]
    node = f"hyperpod-{instance}"
    arn = sb.world.hyperpod_cluster_arn
    uid = "0b7d6c1e-1111-4a2b-9c3d-000000000001"
    with reconcile_paused(sb), operator_mode(sb, OperatorMode.SERVERLESS):
        item = store(sb).put(
            JobRecord(
                cluster_arn=arn,
                uid=uid,
                namespace="default",
                name="sjob",
                phase=JobPhase.RUNNING,
                task_token="tok",  # no execution issued it: the sandbox answers InvalidToken (stale)
                nnodes=1,
                pods=[PodSlot(pod="sjob-0", rank=0, node=node)],
            ),
            expected_version=None,
        )
        pod = job_pod(sb, "sjob-0", node, {JOB_LABEL: "sjob", UID_LABEL: uid})
        bystander = job_pod(sb, "web-0", node, {"app": "web"})
        try:
            calls_before = len(sb.runtime.calls(FUNCTION))
            put(sb, instance, healthy=False, when=datetime.now(UTC), repair_action="None")
            node_item_ = handled(sb, instance, "Unhealthy")

            assert node_item_.action_error is None and node_item_.kube_actions == ["cordon", "taint"]
            calls = sb.runtime.calls(FUNCTION)[calls_before:]
            assert calls and all(c.error_type is None for c in calls)  # a stale token is no failure
            job = store(sb).get_job(arn, uid)
            (fault,) = job.pending_faults
            assert (fault["kind"], fault["pod"], fault["node"], fault["rank"]) == ("node", "sjob-0", node, 0)
            assert fault["source"] == "node_health" and fault["event_id"] == node_item_.last_event_id
            assert fault["reason"].startswith("NodeUnhealthy: HyperPod Health Monitoring Agent")
            assert untouched(sb, pod) and untouched(sb, bystander)
        finally:
            remove_pod(sb, "sjob-0")
            remove_pod(sb, "web-0")
            store(sb).delete(item.pk, item.sk)


def test_addon_a_job_with_a_pod_on_the_failed_node_gets_a_node_fault_history_entry(sb):
    from kubernetes import client, config

    instance = instances(sb)[5]
    node = f"hyperpod-{instance}"
    custom = client.CustomObjectsApi(config.new_client_from_config(config_file=str(sb.kubeconfig)))
    job = custom.create_namespaced_custom_object(
        JOB_GROUP,
        JOB_VERSION,
        "default",
        JOB_PLURAL,
        {
            "apiVersion": f"{JOB_GROUP}/{JOB_VERSION}",
            "kind": "HyperPodPyTorchJob",
            "metadata": {"name": "ajob"},
            "spec": {"nprocPerNode": "1", "replicaSpecs": []},
        },
    )
    uid = job["metadata"]["uid"]
    pod = job_pod(sb, "ajob-worker-0", node, {JOB_LABEL: "ajob"})
    reconcile_now(sb)  # reconcile_jobs records the add-on's job (JOB item, mode addon)
    try:
        put(sb, instance, healthy=False, when=datetime.now(UTC), repair_action="Reboot")
        item = handled(sb, instance, "Unhealthy")

        # HyperPod repairs on its own here (NodeRecovery Automatic): the label asks it for nothing
        assert marks(sb, instance)["label"] == "Unschedulable"
        (entry,) = [e for e in store(sb).job_history(uid) if e.kind == "NodeFault"]
        assert entry.name == "ajob" and node in entry.message
        assert entry.details == {
            "node": node,
            "pod": "ajob-worker-0",
            "eventId": item.last_event_id,
            "healthReason": item.health_reason,
        }
        recorded = store(sb).get_job(sb.world.hyperpod_cluster_arn, uid)
        assert recorded.mode is OperatorMode.ADDON and recorded.task_token is None  # nothing to wake
        (fault,) = recorded.pending_faults
        assert (fault["kind"], fault["pod"], fault["node"]) == ("node", "ajob-worker-0", node)
        assert untouched(sb, pod)
    finally:
        remove_pod(sb, "ajob-worker-0")
