"""job_events end to end in the sandbox: events put on the control plane's bus, the rules of
template.yaml, the function in process, the table, the sandbox Kubernetes API server. (Confirming
an agent's pushed fault with its /status needs a live agent: tests/unit/test_job_events.py.)

A pod event is confirmed through the cluster's Kubernetes API before it changes anything; this
sandbox runs no kubelet, so a test writes a pod's status through the status subresource as the
kubelet would (Running, then its container OOM killed)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from install_support import install_sandbox, run_install

from hyperpod_control.adapters.store import Store
from hyperpod_control.models.records import JobPhase, JobRecord, OperatorMode, PodSlot
from sandbox import Sandbox
from sandbox.testing import client_as, eventually

pytestmark = pytest.mark.integration

UID = "9e8d7c6b-4444-4a5b-8c9d-000000000010"
UID_LABEL = "hyperpod.control-plane/job-uid"


@pytest.fixture(scope="module")
def sb() -> Iterator[Sandbox]:
    with install_sandbox() as sandbox:
        outcome = run_install(sandbox, operator="serverless")
        assert outcome.ok, (outcome.error, outcome.cause)
        # reconcile_jobs would remove the JOB item of a job that is not in the cluster: this test's
        # job exists only as its item, so the minute schedule is paused for the module.
        scheduler = sandbox.client("scheduler")
        schedule = scheduler.get_schedule(Name=f"{sandbox.config.stack_name}-reconcile-jobs")
        keys = ("Name", "GroupName", "ScheduleExpression", "FlexibleTimeWindow", "Target")
        scheduler.update_schedule(**{k: schedule[k] for k in keys}, State="DISABLED")
        sandbox.wait_idle()
        store(sandbox).put(
            JobRecord(
                cluster_arn=sandbox.world.hyperpod_cluster_arn,
                uid=UID,
                namespace="default",
                name="tiny",
                mode=OperatorMode.SERVERLESS,
                phase=JobPhase.RUNNING,
                nnodes=2,
                pods=[
                    PodSlot(pod="tiny-0", rank=0, node="hyperpod-i-0a", ip="10.1.0.10"),
                    PodSlot(pod="tiny-1", rank=1, node="hyperpod-i-0b", ip="10.1.0.11"),
                ],
            ),
            expected_version=None,
        )
        yield sandbox


def store(sb: Sandbox) -> Store:
    return Store(sb.output("TableName"), client=sb.client("dynamodb"))


def job(sb: Sandbox) -> JobRecord:
    record = store(sb).get_job(sb.world.hyperpod_cluster_arn, UID)
    assert record is not None
    return record


def put(sb: Sandbox, source: str, detail_type: str, detail: object) -> None:
    """Put an event as its sender does: the agent's with AgentPodRole's credentials (what its pod
    gets from EKS Pod Identity; the bus refuses that source from anyone else)."""
    entry = {
        "Source": source,
        "DetailType": detail_type,
        "Detail": json.dumps(detail),
        "EventBusName": sb.output("EventBusName"),
    }
    events = (
        client_as(sb, "events", sb.output("AgentPodRoleArn"), "eks-pod")
        if source == "hyperpod-control.agent"
        else sb.client("events")
    )
    result = events.put_events(Entries=[entry])
    assert result["FailedEntryCount"] == 0, result
    sb.wait_idle()


def dead_letters(sb: Sandbox) -> list[dict]:
    sqs = sb.client("sqs")
    return sqs.receive_message(
        QueueUrl=sb.output("EventsDeadLetterQueueUrl"), MaxNumberOfMessages=10, WaitTimeSeconds=0
    ).get("Messages", [])


def results(sb: Sandbox, since: int) -> list:
    calls = sb.runtime.calls("JobEventsFunction")[since:]
    assert all(c.error_type is None for c in calls), [c.error_type for c in calls]
    return [c.result for c in calls]


def agent_detail(**changes: object) -> dict:
    detail = {
        "jobName": "tiny",
        "namespace": "default",
        "jobUid": UID,
        "pod": "tiny-1",
        "rank": 1,
        "status": "faulted",
        "reason": "WorkerFault",
        "message": "worker exited with 1",
        "faultCount": 0,
        "time": "2025-03-04T10:20:29.512Z",
    }
    detail.update(changes)
    return {k: v for k, v in detail.items() if v is not None}


def pod_detail(pod: str, reason: str = "OOMKilled", *, uid: str | None = None, cluster: str = "") -> dict:
    """A core/v1 Event as kubernetes-event-exporter's EventBridge receiver sends it."""
    involved = {"kind": "Pod", "namespace": "default", "name": pod, "apiVersion": "v1"}
    if uid:
        involved["uid"] = uid
    return {
        "metadata": {"name": f"{pod}.17f9a0c2b3d4e5f6", "namespace": "default"},
        "involvedObject": involved,
        "reason": reason,
        "message": "Container pytorch was OOM killed",
        "type": "Warning",
        "lastTimestamp": "2025-03-04T10:20:28Z",
        "eventTime": None,
        "clusterName": cluster,
    }


def put_pod(sb: Sandbox, detail: dict) -> None:
    put(sb, "kubernetes-event-exporter", "Kubernetes Event", detail)


def core_api(sb: Sandbox):
    from kubernetes import client

    return client.CoreV1Api(client.ApiClient(sb.kube.client_configuration()))


def kubelet_status(sb: Sandbox, name: str, *, phase: str, container_state: dict) -> dict:
    """Write a pod's status as its kubelet would (this sandbox runs none); the pod as it is now."""
    core = core_api(sb)
    status = {
        "phase": phase,
        "hostIP": "10.1.0.2",
        "podIP": "10.1.0.11",
        "startTime": "2025-03-04T10:00:00Z",
        "containerStatuses": [
            {
                "name": "pytorch",
                "image": "pytorch:latest",
                "imageID": "",
                "ready": phase == "Running",
                "restartCount": 0,
                "state": container_state,
            }
        ],
    }
    core.patch_namespaced_pod_status(name, "default", {"status": status})
    return core.read_namespaced_pod(name, "default").to_dict()


def test_a_malformed_event_changes_nothing_and_is_not_dead_lettered(sb):
    before = job(sb)
    items_before = sb.client("dynamodb").scan(TableName=sb.output("TableName"))["Count"]
    since = len(sb.runtime.calls("JobEventsFunction"))

    put(sb, "hyperpod-control.agent", "HyperPod Agent State Change", agent_detail(jobUid=None))
    put(sb, "hyperpod-control.agent", "HyperPod Agent State Change", agent_detail(status="exploded"))

    answers = results(sb, since)
    assert [(a["accepted"], a["reason"].split(":")[0]) for a in answers] == [
        (False, "detail.jobUid"),
        (False, "detail.status"),
    ]
    assert job(sb) == before
    # not even an idempotency record: a malformed event is refused before anything is written
    assert sb.client("dynamodb").scan(TableName=sb.output("TableName"))["Count"] == items_before
    assert dead_letters(sb) == []


def test_events_of_unknown_jobs_are_dropped(sb):
    before = job(sb)
    since = len(sb.runtime.calls("JobEventsFunction"))

    # a pod no JOB item names and the cluster does not have (read through the Kubernetes API)
    put(sb, "kubernetes-event-exporter", "Kubernetes Event", pod_detail("stranger-0"))
    # an agent of a job uid with no JOB item: recorded in that uid's history
    put(sb, "hyperpod-control.agent", "HyperPod Agent State Change", agent_detail(jobUid="no-such-uid"))

    # a pod the cluster has, labelled with a job uid that has no JOB item (a job deleted a moment
    # ago): its labels are read from the Kubernetes API and the uid's history records the event
    from kubernetes import client

    core = client.CoreV1Api(client.ApiClient(sb.kube.client_configuration()))
    labels = {"HPJob": "orphan", "hyperpod.control-plane/job-uid": "orphan-uid"}
    core.create_namespaced_pod(
        "default",
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "orphan-0", "labels": labels},
            "spec": {"containers": [{"name": "pytorch", "image": "pytorch:latest"}]},
        },
    )
    put(sb, "kubernetes-event-exporter", "Kubernetes Event", pod_detail("orphan-0", reason="Evicted"))

    entries = eventually(lambda: store(sb).job_history("no-such-uid"), what="the unknown job's history entry")
    assert [e.kind for e in entries] == ["UnknownJobEvent"]
    [orphan] = store(sb).job_history("orphan-uid")
    assert orphan.kind == "UnknownJobEvent" and orphan.cluster_arn == sb.world.hyperpod_cluster_arn
    answers = results(sb, since)
    assert [(a["action"], a.get("dropped"), a.get("uid")) for a in answers] == [
        ("dropped", "unknown job", None),
        ("dropped", "unknown job", "no-such-uid"),
        ("dropped", "unknown job", "orphan-uid"),
    ]
    assert job(sb) == before
    assert dead_letters(sb) == []


def test_forged_pod_events_and_events_of_another_cluster_change_nothing_a_real_one_is_acted_on(sb):
    """tiny-0 runs (as its kubelet reports it): an OOMKilled event about it is forged; an event
    naming another cluster is not this cluster's, whatever Kubernetes shows; once the container
    really is OOM killed, the same event is confirmed and recorded."""
    core = core_api(sb)
    core.create_namespaced_pod(
        "default",
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": "tiny-0",
                "labels": {"HPJob": "tiny", UID_LABEL: UID},
            },
            "spec": {
                "nodeName": "hyperpod-i-0a",
                "containers": [{"name": "pytorch", "image": "pytorch:latest"}],
            },
        },
    )
    running = kubelet_status(
        sb, "tiny-0", phase="Running", container_state={"running": {"startedAt": "2025-03-04T10:00:01Z"}}
    )
    pod_uid = running["metadata"]["uid"]
    before = job(sb)
    history_before = store(sb).job_history(UID)
    since = len(sb.runtime.calls("JobEventsFunction"))
    cluster = sb.world.hyperpod_cluster_name

    # forged: the pod runs, nothing was killed (with and without its uid and cluster name)
    put_pod(sb, pod_detail("tiny-0"))
    put_pod(sb, pod_detail("tiny-0", uid=pod_uid, cluster=cluster))
    # another cluster's pod of the same namespace and name (tiny-1 is gone here: it would confirm)
    put_pod(sb, pod_detail("tiny-1", cluster="other-hyperpod"))
    # a stale event: about an earlier pod of that name
    put_pod(sb, pod_detail("tiny-0", uid="0ld-p0d-uid"))

    answers = results(sb, since)
    assert [(a["action"], a.get("confirmed"), a.get("dropped")) for a in answers] == [
        ("ignored", False, None),
        ("ignored", False, None),
        ("dropped", None, "unknown cluster"),
        ("ignored", False, None),
    ], answers
    for forged in (answers[0], answers[1]):
        assert forged["confirmedStatus"] == "pod Running, no container terminated OOMKilled"
        assert forged["reason"].startswith("pod fault not confirmed: the Kubernetes API says pod Running")
    assert "'other-hyperpod' names no supervised cluster" in answers[2]["reason"]
    assert answers[3]["confirmedStatus"].startswith(f"stale: pod tiny-0 is uid {pod_uid} now")
    assert job(sb) == before, "no fault recorded, nothing woken"
    assert store(sb).job_history(UID) == history_before
    assert dead_letters(sb) == []

    # the real thing: the kubelet reports the container OOM killed, the pod Failed
    terminated = {
        "exitCode": 137,
        "reason": "OOMKilled",
        "startedAt": "2025-03-04T10:00:01Z",
        "finishedAt": "2025-03-04T10:20:28Z",
    }
    kubelet_status(sb, "tiny-0", phase="Failed", container_state={"terminated": terminated})
    since = len(sb.runtime.calls("JobEventsFunction"))
    put_pod(sb, pod_detail("tiny-0", uid=pod_uid, cluster=cluster))

    [real] = results(sb, since)
    assert (real["action"], real["confirmed"], real["recorded"]) == ("fault", True, True), real
    assert real["confirmedStatus"] == "container pytorch terminated OOMKilled (exit code 137)"
    [fault] = job(sb).pending_faults
    assert fault["pod"] == "tiny-0" and fault["rank"] == 0 and "OOMKilled" in fault["reason"]
    # leave the job as the next test expects it: no pending fault, no tiny-0 pod
    record = job(sb)
    store(sb).put(record.model_copy(update={"pending_faults": []}), expected_version=record.version)
    core.delete_namespaced_pod("tiny-0", "default", grace_period_seconds=0)


def test_a_pod_oom_event_for_a_known_pod_records_the_fault(sb):
    put(sb, "kubernetes-event-exporter", "Kubernetes Event", pod_detail("tiny-1"))

    record = eventually(lambda: job(sb) if job(sb).pending_faults else None, what="the pod's fault")
    [fault] = record.pending_faults
    assert fault["kind"] == "pod" and fault["pod"] == "tiny-1" and fault["rank"] == 1
    assert fault["node"] == "hyperpod-i-0b" and fault["source"] == "job_events"
    assert "OOMKilled" in fault["reason"]
    assert dead_letters(sb) == []

    # a Normal event, or a reason the rule does not route, never reaches the function
    since = len(sb.runtime.calls("JobEventsFunction"))
    put(sb, "kubernetes-event-exporter", "Kubernetes Event", pod_detail("tiny-0", reason="Pulled"))
    assert job(sb).pending_faults == record.pending_faults
    assert sb.runtime.calls("JobEventsFunction")[since:] == []
