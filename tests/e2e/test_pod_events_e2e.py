"""Kubernetes pod events (kubernetes-event-exporter's, put on the control plane's bus) against real
training on the session's serverless cluster: an OOMKilled event about a pod that is training
happily, or one naming another cluster, changes nothing (job_events confirms a pod fault through
the Kubernetes API first); a pod that really failed is remediated as before."""

from __future__ import annotations

import json
import tempfile

import pytest
from job_support import apis, history, job_item, pods_of, submit, wait_finished

from sandbox import Sandbox
from sandbox.testing import eventually
from sandbox.workloads import tiny_job

pytestmark = pytest.mark.e2e

LONG = ["--step-time", "0.02"]


def put_pod_event(sb: Sandbox, pod, reason: str, cluster: str) -> dict:
    """The exporter's event about ``pod`` (a V1Pod); job_events' answer."""
    detail = {
        "metadata": {"name": f"{pod.metadata.name}.1800000000000000", "namespace": "default"},
        "involvedObject": {
            "kind": "Pod",
            "namespace": "default",
            "name": pod.metadata.name,
            "uid": pod.metadata.uid,
            "apiVersion": "v1",
        },
        "reason": reason,
        "message": "Memory cgroup out of memory: Killed process 4242 (python)",
        "type": "Warning",
        "lastTimestamp": "2026-01-01T00:00:00Z",
        "clusterName": cluster,
    }
    since = len(sb.runtime.calls("JobEventsFunction"))
    entry = {
        "Source": "kubernetes-event-exporter",
        "DetailType": "Kubernetes Event",
        "Detail": json.dumps(detail),
        "EventBusName": sb.output("EventBusName"),
    }
    assert sb.client("events").put_events(Entries=[entry])["FailedEntryCount"] == 0
    [call] = eventually(lambda: sb.runtime.calls("JobEventsFunction")[since:], 30, "job_events' answer")
    assert call.error_type is None, call.error_type
    return call.result


def _running(sb: Sandbox, uid: str):
    def ready():
        item = job_item(sb, uid)
        return item if item and item.phase == "Running" and item.progress else None

    try:
        return eventually(ready, 120, "the job running with a checkpoint every rank finished")
    except AssertionError as exc:
        item = job_item(sb, uid)
        notes = [h.message for h in history(sb, uid)]
        seen = (item.phase, item.progress, item.reason, notes) if item else None
        raise AssertionError(f"{exc}; the JOB item: {seen}") from None


def _remediations(sb: Sandbox, uid: str) -> list:
    return [e for e in history(sb, uid) if e.kind == "Remediated"]


def test_forged_and_foreign_pod_events_change_nothing_while_a_job_trains(serverless):
    sb = serverless
    job = submit(
        sb,
        tiny_job(
            "forged", nproc_per_node=1, replicas=2, steps=300, ckpt_dir=tempfile.mkdtemp(), extra_args=LONG
        ),
    )
    uid = job["metadata"]["uid"]
    item = _running(sb, uid)
    rank1 = next(p for p in pods_of(sb, "forged") if p.metadata.name == item.ranked()[1].pod)
    assert rank1.status.phase == "Running"

    forged = put_pod_event(sb, rank1, "OOMKilled", sb.world.hyperpod_cluster_name)
    foreign = put_pod_event(sb, rank1, "OOMKilled", "another-hyperpod-cluster")
    anonymous = put_pod_event(sb, rank1, "Error", "")

    assert (forged["action"], forged["confirmed"]) == ("ignored", False), forged
    assert forged["confirmedStatus"] == "pod Running, no container terminated OOMKilled"
    assert (anonymous["action"], anonymous["confirmed"]) == ("ignored", False), anonymous
    assert (foreign["action"], foreign["dropped"]) == ("dropped", "unknown cluster"), foreign
    record = job_item(sb, uid)
    assert record.pending_faults == [] and record.fault_count == 0
    outcome = wait_finished(sb, uid)
    assert outcome.status == "SUCCEEDED", job_item(sb, uid).reason
    assert _remediations(sb, uid) == [], "no restart for a fault Kubernetes never showed"
    assert job_item(sb, uid).restart_count == 0


def test_a_pod_that_really_failed_is_remediated_and_its_event_confirmed(serverless):
    sb = serverless
    job = submit(
        sb,
        tiny_job(
            "killed",
            nproc_per_node=1,
            replicas=2,
            spares=1,
            steps=300,
            ckpt_dir=tempfile.mkdtemp(),
            extra_args=LONG,
        ),
    )
    uid = job["metadata"]["uid"]
    item = _running(sb, uid)
    rank1 = item.ranked()[1].pod
    spare = item.spare_pods()[0].pod
    _, core = apis(sb)
    before = core.read_namespaced_pod(rank1, "default")

    sb.faults.crash_pod("default", rank1)  # its container's main process (the agent) is killed

    def failed():
        pod = core.read_namespaced_pod(rank1, "default")
        return pod if pod.status.phase == "Failed" else None

    dead = eventually(failed, 30, f"{rank1} Failed (restartPolicy Never)")
    assert dead.metadata.uid == before.metadata.uid
    answer = put_pod_event(sb, dead, "Error", sb.world.hyperpod_cluster_name)
    # The supervisor's own poll may have found it first (then the pod is no longer one of the
    # job's); never is a real failure left unconfirmed.
    assert answer.get("confirmed") is not False, answer
    if answer["action"] == "fault":
        assert answer["confirmedStatus"].endswith("terminated Error (exit code 137)")

    outcome = wait_finished(sb, uid)
    assert outcome.status == "SUCCEEDED", job_item(sb, uid).reason
    (remediated,) = _remediations(sb, uid)
    assert remediated.details["action"] == "spare_swap"
    assert job_item(sb, uid).ranked()[1].pod == spare
