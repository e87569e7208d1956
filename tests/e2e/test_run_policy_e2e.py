"""The run policy honoured end to end, on the session's serverless cluster: ``suspend`` removes a
running job's pods and brings them back (training resumes from the checkpoint), the deadlines fail
a job that overruns them naming the field, and ``ttlSecondsAfterFinished`` deletes the finished
job's object. Small, fast jobs."""

from __future__ import annotations

import re
import tempfile

import pytest
from job_support import apis, conditions, get_job, history, job_item, pods_of, submit, wait_finished

from sandbox.testing import eventually
from sandbox.workloads import tiny_job

pytestmark = pytest.mark.e2e

GROUP, VERSION, PLURAL = "sagemaker.amazonaws.com", "v1", "hyperpodpytorchjobs"


def _set_suspend(sb, name: str, value: bool) -> None:
    custom, _ = apis(sb)
    custom.patch_namespaced_custom_object(
        GROUP, VERSION, "default", PLURAL, name, {"spec": {"runPolicy": {"suspend": value}}}
    )


def test_suspend_removes_the_pods_and_resume_continues_from_the_checkpoint(serverless):
    sb = serverless
    manifest = tiny_job(
        "pause",
        replicas=2,
        nproc_per_node=1,
        steps=600,
        ckpt_dir=tempfile.mkdtemp(),
        extra_args=["--step-time", "0.02"],
    )
    uid = submit(sb, manifest)["metadata"]["uid"]

    def running():
        item = job_item(sb, uid)
        return item if item and item.phase == "Running" and item.progress else None

    before = eventually(running, 120, "the job running with a checkpoint")
    _set_suspend(sb, "pause", True)
    eventually(lambda: job_item(sb, uid).phase == "Suspended", 60, "the job suspended")
    eventually(lambda: not pods_of(sb, "pause"), 60, "its pods gone")
    assert conditions(get_job(sb, "pause"))["Suspended"]["status"] == "True"
    _set_suspend(sb, "pause", False)
    outcome = wait_finished(sb, uid, timeout=240)
    assert outcome.status == "SUCCEEDED", job_item(sb, uid).reason
    kinds = [e.kind for e in history(sb, uid)]
    assert "Suspended" in kinds and "Resumed" in kinds
    (resumed,) = [e for e in history(sb, uid) if e.kind == "Resumed"]
    step = int(resumed.details["progress"]["tiny"]["progressCount"])
    assert step >= int(before.progress["tiny"]["progressCount"]), "resumed from the checkpoint it had"
    assert not {p.pod for p in before.pods} & set(resumed.details["pods"]), "new pods"
    job = get_job(sb, "pause")
    assert conditions(job)["Suspended"]["status"] == "False"
    assert conditions(job)["Completed"]["status"] == "True"


def test_the_active_deadline_fails_a_job_that_overruns_it_naming_the_field(serverless):
    sb = serverless
    manifest = tiny_job(
        "overrun", nproc_per_node=1, replicas=1, steps=100000, extra_args=["--step-time", "0.02"]
    )
    # Deadlines are measured on the functions' clock, real time (the sandbox scales only waits).
    manifest["spec"]["runPolicy"]["activeDeadlineSeconds"] = 15
    uid = submit(sb, manifest)["metadata"]["uid"]
    outcome = wait_finished(sb, uid)
    assert outcome.status == "FAILED"
    failed = conditions(get_job(sb, "overrun"))["Failed"]
    assert "runPolicy.activeDeadlineSeconds 15" in failed["message"], failed


def test_the_startup_deadline_fails_a_job_whose_pods_cannot_start_naming_the_field(serverless):
    sb = serverless
    manifest = tiny_job("nowhere", nproc_per_node=1, replicas=1, steps=10)
    spec = manifest["spec"]["replicaSpecs"][0]["template"]["spec"]
    spec["nodeSelector"] = {"no-such-label": "anywhere"}  # never scheduled
    manifest["spec"]["runPolicy"]["startupDeadlineSeconds"] = 10
    uid = submit(sb, manifest)["metadata"]["uid"]
    outcome = wait_finished(sb, uid)
    assert outcome.status == "FAILED"
    failed = conditions(get_job(sb, "nowhere"))["Failed"]
    assert re.search(r"runPolicy\.startupDeadlineSeconds 10\b", failed["message"]), failed


def _cordon(core, node: str, value: bool) -> None:
    core.patch_node(node, {"spec": {"unschedulable": True if value else None}})


def test_the_fault_deadline_fails_a_job_whose_full_restart_finds_no_node_naming_the_field(serverless):
    sb = serverless
    manifest = tiny_job(
        "stranded", nproc_per_node=1, replicas=1, steps=100000, extra_args=["--step-time", "0.02"]
    )
    manifest["spec"]["runPolicy"]["faultDeadlineSeconds"] = 5  # the functions' real seconds
    uid = submit(sb, manifest)["metadata"]["uid"]

    def running():
        item = job_item(sb, uid)
        return item if item and item.phase == "Running" else None

    item = eventually(running, 120, "the job running")
    bad = item.ranked()[0].node
    _, core = apis(sb)
    others = sorted(n.metadata.name for n in core.list_node().items if n.metadata.name != bad)
    # No spare and no room elsewhere: the full restart's new pod (kept off the bad node) stays
    # Pending, the way a fault waits for capacity that never comes.
    try:
        for node in others:
            _cordon(core, node, True)
        sb.faults.fail_node(bad)
        outcome = wait_finished(sb, uid, timeout=120)
        eventually(lambda: not pods_of(sb, "stranded"), 30, "the Pending pod deleted with the job")
    finally:
        for node in others:
            _cordon(core, node, False)
        sb.faults.heal_node(bad)
        sb.wait_idle()
    assert outcome.status == "FAILED"
    failed = conditions(get_job(sb, "stranded"))["Failed"]
    found = re.search(
        r"FaultDeadlineExceeded: the job has been in a fault (\d+) s, "
        r"beyond runPolicy\.faultDeadlineSeconds 5\b",
        failed["message"],
    )
    assert found and int(found.group(1)) >= 5, failed
    assert "Pending" in failed["message"], "the new pod never scheduled"
    final = job_item(sb, uid)
    assert final.phase == "Failed" and final.full_restart_count == 1, (final.phase, final.reason)


def test_a_finished_job_is_deleted_after_its_ttl(serverless):
    sb = serverless
    manifest = tiny_job("shortlived", nproc_per_node=1, replicas=1, steps=20)
    manifest["spec"]["runPolicy"]["ttlSecondsAfterFinished"] = 5
    uid = submit(sb, manifest)["metadata"]["uid"]
    outcome = wait_finished(sb, uid)
    assert outcome.status == "SUCCEEDED", job_item(sb, uid).reason
    custom, _ = apis(sb)

    def deleted():
        names = [
            j["metadata"]["name"]
            for j in custom.list_namespaced_custom_object(GROUP, VERSION, "default", PLURAL)["items"]
        ]
        return "shortlived" not in names

    eventually(deleted, 60, "the finished job deleted after ttlSecondsAfterFinished")
    assert any(e.kind == "Expired" for e in history(sb, uid))
