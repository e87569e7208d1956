"""Elastic training end to end, on the session's serverless cluster with real training: a job with
an ``elasticPolicy`` and no spare loses a node and goes on at fewer ranks from its checkpoint
instead of waiting for a replacement, then grows back when the node heals. One job covers both
resizes (each e2e job costs the suite seconds)."""

from __future__ import annotations

import tempfile

import pytest
from job_support import apis, conditions, get_job, history, job_item, submit, wait_finished

from sandbox.testing import eventually
from sandbox.workloads import tiny_job

pytestmark = pytest.mark.e2e


def _resizes(sb, uid):
    return [e for e in history(sb, uid) if e.kind == "Resized"]


def test_an_elastic_job_shrinks_on_a_lost_node_and_grows_back_when_it_heals(serverless):
    sb = serverless
    manifest = tiny_job(
        "elastic",
        replicas=3,
        steps=1500,
        ckpt_dir=tempfile.mkdtemp(),
        # 48 samples an optimizer step at 6 workers (2 micro-batches of 4 each) and at 4 (3 each)
        extra_args=["--step-time", "0.02", "--global-batch-size", "48", "--micro-batch-size", "4"],
        elastic_policy={"minReplicas": 2, "maxReplicas": 3, "scalingTimeoutInSeconds": 900},
        clean_pod_policy="None",
    )
    manifest["spec"]["runPolicy"]["restartPolicy"] = {
        "evalPeriodSeconds": 3600,
        "scaleUpSnoozeTimeInSeconds": 0,
    }
    uid = submit(sb, manifest)["metadata"]["uid"]

    def running():
        item = job_item(sb, uid)
        return item if item and item.phase == "Running" and item.progress else None

    try:
        item = eventually(running, 180, "the job running with a checkpoint every rank finished")
    except AssertionError:
        found = job_item(sb, uid)
        raise AssertionError(
            (
                found and (found.phase, found.reason, found.progress),
                [(e.kind, e.message) for e in history(sb, uid)],
            )
        ) from None
    _, core = apis(sb)
    nodes = sorted(n.metadata.name for n in core.list_node().items)
    used = {s.node for s in item.pods}
    spare_capacity = [n for n in nodes if n not in used]
    lost = item.ranked()[2]
    # No room for a replacement: the cluster's free node fails first (no pod of the job on it),
    # then the node under rank 2, dirty.
    for node in spare_capacity:
        sb.faults.fail_node(node)
    sb.faults.fail_node(lost.node)
    try:
        (shrunk,) = eventually(lambda: _resizes(sb, uid), 120, "the scale-down")
        assert shrunk.details["from"] == 3 and shrunk.details["to"] == 2, shrunk.message
        assert shrunk.details["direction"] == "ScaledDown"
        small = job_item(sb, uid)
        assert small.nnodes == 2 and [s.rank for s in small.ranked()] == [0, 1]
        assert lost.pod not in {s.pod for s in small.pods}, "the lost rank's pod was deleted"
        assert small.ranked()[0].pod == item.ranked()[0].pod, "rank 0 kept its pod"
        assert int(shrunk.details["progress"]["tiny"]["progressCount"]) >= 49, "resumed from the checkpoint"
        (remediated,) = [e for e in history(sb, uid) if e.kind == "Remediated"]
        assert remediated.details["action"] == "scale_down"
        status = get_job(sb, "elastic")["status"]["elasticScalingStatus"]
        assert status["targetReplicas"] == {"workers": 2} and status["isFaultyPodScaleDown"] is True
        sb.faults.heal_node(lost.node)  # capacity is back
        grown = eventually(lambda: _resizes(sb, uid)[1:], 180, "the scale-up")[0]
        assert grown.details["from"] == 2 and grown.details["to"] == 3, [
            (e.kind, e.message) for e in history(sb, uid)
        ]
        assert grown.details["direction"] == "ScaledUp"
        assert job_item(sb, uid).nnodes == 3
        outcome = wait_finished(sb, uid, timeout=240)
    finally:
        for node in [*spare_capacity, lost.node]:
            sb.faults.heal_node(node)
        sb.wait_idle()
    assert outcome.status == "SUCCEEDED", job_item(sb, uid).reason
    assert conditions(get_job(sb, "elastic"))["Completed"]["status"] == "True"
    assert [(e.details["from"], e.details["to"]) for e in _resizes(sb, uid)] == [(3, 2), (2, 3)]
    status = get_job(sb, "elastic")["status"]["elasticScalingStatus"]
    assert status["targetReplicas"] == {"workers": 3} and status["isFaultyPodScaleDown"] is False
    log = sb.pods.container_log("default", item.ranked()[0].pod, "trainer") or ""
    assert "world 4: 3 micro-batch(es)" in log and "world 6: 2 micro-batch(es)" in log, "48 samples a step"
    assert "stopping gracefully" in log, "the scale-up stopped the workers with the elastic-event signal"
    described = {
        e.reason for e in core.list_namespaced_event("default").items if e.involved_object.uid == uid
    }
    assert {"ScaledDown", "ScaledUp"} <= described
