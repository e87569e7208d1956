"""Fault remediation end to end, on the session's serverless cluster with real training: the
least disruptive fix first (spare swap, process restart), a full job restart when no spare is
left, failure when the budget is spent. Nodes fail dirty, as dead instances do on EKS (frozen,
connections hanging, NotReady only after the grace period, pods Terminating after their
tolerations), with HyperPod's health event first, after NotReady, or never. Nodes failed here are
healed before the test ends."""

from __future__ import annotations

import contextlib
import re
import tempfile
from datetime import UTC, datetime

import pytest
from job_support import apis, conditions, get_job, history, job_item, named, pods_of, submit, wait_finished

from sandbox.testing import eventually
from sandbox.workloads import tiny_job

pytestmark = pytest.mark.e2e

LONG = ["--step-time", "0.02"]


def _running_with_progress(sb, uid):
    def ready():
        item = job_item(sb, uid)
        return item if item and item.phase == "Running" and item.progress else None

    return eventually(ready, 120, "the job running with a checkpoint every rank finished")


@contextlib.contextmanager
def _failed(sb, *nodes, times=1, event="first"):
    sent = [sb.faults.fail_node(node, times=times, event=event) for node in nodes]
    try:
        yield sent
    finally:
        for node in nodes:
            sb.faults.heal_node(node)
        sb.wait_idle()


def _remediations(sb, uid):
    return [e for e in history(sb, uid) if e.kind == "Remediated"]


def _remediation_metrics(sb, cluster_arn: str, action: str) -> dict[str, list[tuple[str, str, float]]]:
    """What supervise_job's EMF put into moto's CloudWatch for this cluster and action: each
    metric's (fault kind, unit, value) data points."""
    from moto.cloudwatch.models import cloudwatch_backends

    found: dict[str, list[tuple[str, str, float]]] = {}
    for datum in list(cloudwatch_backends["123456789012"][sb.config.region].metric_data):
        dims = {d.name: d.value for d in datum.dimensions}
        if dims.get("ClusterArn") == cluster_arn and dims.get("Action") == action:
            assert datum.namespace == "HyperPodControlPlane" and "FaultKind" in dims
            found.setdefault(datum.name, []).append((dims["FaultKind"], datum.unit, datum.value))
    return found


def _start_step(log: str) -> int:
    found = re.findall(r"starting at step (\d+)", log)
    return int(found[-1]) if found else -1


def test_node_failure_under_a_rank_swaps_in_the_spare_and_resumes(serverless, agent):
    """Under this project's agent and AWS's 1.1.3 (whose spare stands by READY, never /started,
    until the swap /starts it with the lost rank)."""
    sb = serverless
    name = named("swap", agent)
    job = submit(
        sb,
        tiny_job(
            name,
            replicas=2,
            spares=1,
            nproc_per_node=1,
            steps=300,
            ckpt_dir=tempfile.mkdtemp(),
            extra_args=LONG,
            agent=agent,
        ),
    )
    uid = job["metadata"]["uid"]
    item = _running_with_progress(sb, uid)
    rank0, rank1 = item.ranked()[0], item.ranked()[1]
    spare = item.spare_pods()[0]
    # A dirty failure; HyperPod sends the change three times before the node is even NotReady,
    # each copy with its own id: one remediation.
    with _failed(sb, rank1.node, times=3):
        outcome = wait_finished(sb, uid)
    assert outcome.status == "SUCCEEDED", job_item(sb, uid).reason
    (remediated,) = _remediations(sb, uid)
    assert remediated.details["action"] == "spare_swap"
    assert remediated.details["recovery_ms"] > 0 and "remediated in" in remediated.message
    final = job_item(sb, uid)
    assert final.ranked()[0].pod == rank0.pod == f"{name}-0", "rank 0 keeps its pod"
    assert final.ranked()[1].pod == spare.pod, "the spare took the lost rank"
    assert final.restart_count == 1 and final.fault_count == 1
    status = get_job(sb, name)["status"]
    assert status["restartCount"] == 1
    assert status["latestFaultyPodInstanceList"]["restartType"] == "PLR"
    assert status["latestFaultyPodInstanceList"]["faultyRankList"] == ["1"]  # strings in AWS's CRD
    assert conditions(get_job(sb, name))["Completed"]["status"] == "True"
    kinds = [e.kind for e in history(sb, uid)]
    assert kinds.count("Started") == 1, "a swap restarts no pod but the lost one"
    emitted = _remediation_metrics(sb, final.cluster_arn, "spare_swap")
    assert ("node", "Count", 1.0) in emitted["Remediations"]
    assert ("node", "Milliseconds", float(remediated.details["recovery_ms"])) in emitted["TimeToRecover"]
    from moto.cloudwatch.models import cloudwatch_backends

    running = [
        datum.value
        for datum in list(cloudwatch_backends["123456789012"][sb.config.region].metric_data)
        if datum.name == "Jobs"
        and {d.name: d.value for d in datum.dimensions}.get("ClusterArn") == final.cluster_arn
        and {d.name: d.value for d in datum.dimensions}.get("Phase") == "Running"
    ]
    assert running and max(running) >= 1, "ReconcileJobs counted the job running"
    rounds = [
        datum.unit
        for datum in list(cloudwatch_backends["123456789012"][sb.config.region].metric_data)
        if datum.name == "SupervisorStepDuration"
        and {d.name: d.value for d in datum.dimensions}.get("ClusterArn") == final.cluster_arn
        and {d.name: d.value for d in datum.dimensions}.get("Step") == "poll"
    ]
    assert rounds and set(rounds) == {"Milliseconds"}, "each supervisor round timed"
    # What `kubectl describe hyperpodpytorchjob swap` shows: the fault, then the recovery.
    _, core = apis(sb)
    described = {
        e.reason: e for e in core.list_namespaced_event("default").items if e.involved_object.uid == uid
    }
    assert described["NodeFault"].type == "Warning" and rank1.node in described["NodeFault"].message
    assert described["Running"].type == "Normal"
    assert described["Running"].message == remediated.message, "the history's words: remediated in N ms"
    progress = int(remediated.details["progress"]["tiny"]["progressCount"])
    assert progress >= 49, "training resumed from the checkpoint every rank finished"


def _sandbox_seconds(sb, since: datetime, until: datetime) -> float:
    return (until - since).total_seconds() / sb.config.time_scale


def test_a_dead_node_without_any_health_event_is_found_from_kubernetes_and_swapped(serverless):
    sb = serverless
    job = submit(
        sb,
        tiny_job(
            "silent",
            nproc_per_node=1,
            replicas=2,
            spares=1,
            steps=300,
            ckpt_dir=tempfile.mkdtemp(),
            extra_args=LONG,
        ),
    )
    uid = job["metadata"]["uid"]
    item = _running_with_progress(sb, uid)
    rank0, rank1, spare = item.ranked()[0], item.ranked()[1], item.spare_pods()[0]
    failed_at = datetime.now(UTC)
    with _failed(sb, rank1.node, event="never") as sent:
        assert sent == [[]], "no health event at all"
        outcome = wait_finished(sb, uid)
    assert outcome.status == "SUCCEEDED", job_item(sb, uid).reason
    (remediated,) = _remediations(sb, uid)
    assert remediated.details["action"] == "spare_swap"
    (fault,) = remediated.details["faults"]
    assert fault["pod"] == rank1.pod and fault["kind"] == "node" and "is unreachable" in fault["reason"]
    # Found from the node going NotReady (its grace period is 40 s), long before its pods' 300 s
    # tolerations would have evicted them.
    detected = _sandbox_seconds(sb, failed_at, datetime.fromisoformat(remediated.details["fault_at"]))
    print(f"no-event dirty node failure detected after {detected:.0f} sandbox seconds")
    assert 40 <= detected < 300
    final = job_item(sb, uid)
    assert final.ranked()[0].pod == rank0.pod and final.ranked()[1].pod == spare.pod
    progress = int(remediated.details["progress"]["tiny"]["progressCount"])
    assert progress >= 49, "training resumed from the checkpoint every rank finished"


def test_a_hung_agent_on_a_healthy_node_is_found_by_its_silence_and_its_rank_moved(serverless):
    sb = serverless
    job = submit(
        sb,
        tiny_job(
            "mute",
            nproc_per_node=1,
            replicas=2,
            spares=1,
            steps=600,
            ckpt_dir=tempfile.mkdtemp(),
            extra_args=LONG,
        ),
    )
    uid = job["metadata"]["uid"]
    item = _running_with_progress(sb, uid)
    rank1, spare = item.ranked()[1], item.spare_pods()[0]
    sb.faults.hang_agent("default", rank1.pod)  # its port accepts and never answers
    outcome = wait_finished(sb, uid, timeout=240)
    assert outcome.status == "SUCCEEDED", job_item(sb, uid).reason
    (remediated,) = _remediations(sb, uid)
    assert remediated.details["action"] == "spare_swap"
    (fault,) = remediated.details["faults"]
    silent = re.search(
        r"its agent has not answered (\d+) rounds in a row while its node looks healthy", fault["reason"]
    )
    assert fault["pod"] == rank1.pod and silent and int(silent.group(1)) >= 3, fault["reason"]
    assert job_item(sb, uid).ranked()[1].pod == spare.pod


def test_a_worker_crash_restarts_processes_in_place(serverless, agent):
    sb = serverless
    name = named("crash", agent)
    manifest = tiny_job(
        name,
        agent=agent,
        replicas=2,
        steps=200,
        ckpt_dir=tempfile.mkdtemp(),
        extra_args=[*LONG, "--fail-at-step", "80", "--fail-rank", "1"],
        clean_pod_policy="None",
    )
    job = submit(sb, manifest)
    uid = job["metadata"]["uid"]
    outcome = wait_finished(sb, uid)
    assert outcome.status == "SUCCEEDED", job_item(sb, uid).reason
    remediations = _remediations(sb, uid)
    # One crash, one restart: a report of the killed workers made before the restart (a push or
    # a /status from before the new ipVersion) is history, never a second fault.
    assert len(remediations) == 1, [r.message for r in remediations]
    assert remediations[0].details["action"] in ("process_restart", "in_process_restart")
    pods = pods_of(sb, name)
    assert sorted(p.metadata.name for p in pods) == [f"{name}-0", f"{name}-1"], "no pod recreated"
    log = sb.pods.container_log("default", f"{name}-0", "trainer") or ""
    assert _start_step(log) >= 50, "the restarted workers resumed from the last checkpoint"
    assert get_job(sb, name)["status"]["restartCount"] == len(remediations)


def test_no_spare_left_means_a_full_restart_avoiding_the_bad_node(serverless):
    sb = serverless
    job = submit(
        sb,
        tiny_job(
            "full", nproc_per_node=1, replicas=2, steps=300, ckpt_dir=tempfile.mkdtemp(), extra_args=LONG
        ),
    )
    uid = job["metadata"]["uid"]
    item = _running_with_progress(sb, uid)
    bad = item.ranked()[1].node
    with _failed(sb, bad):
        eventually(lambda: _remediations(sb, uid), 120, "the full restart")
        (remediated,) = _remediations(sb, uid)
        assert remediated.details["action"] == "full_job_restart"
        pods = pods_of(sb, "full")
        assert sorted(p.metadata.name for p in pods) == ["full-2", "full-3"], "every pod recreated"
        assert all(p.spec.node_name != bad for p in pods)
        affinity = pods[0].spec.affinity.node_affinity.required_during_scheduling_ignored_during_execution
        assert any(
            e.key == "kubernetes.io/hostname" and e.operator == "NotIn" and bad in e.values
            for t in affinity.node_selector_terms
            for e in t.match_expressions
        )
        outcome = wait_finished(sb, uid)
    assert outcome.status == "SUCCEEDED", job_item(sb, uid).reason
    final = job_item(sb, uid)
    assert final.full_restart_count == 1 and final.offenders.get(bad) == 1
    (only,) = _remediations(sb, uid)
    assert only.details["action"] == "full_job_restart"
    # decided at Remediate, timed at StartAgents once the new pods run
    emitted = _remediation_metrics(sb, final.cluster_arn, "full_job_restart")
    assert ("node", "Count", 1.0) in emitted["Remediations"]
    assert ("node", "Milliseconds", float(only.details["recovery_ms"])) in emitted["TimeToRecover"]


def test_two_nodes_failing_together_move_both_ranks_in_one_remediation(serverless):
    sb = serverless
    job = submit(
        sb,
        tiny_job(
            "pairfail",
            nproc_per_node=1,
            replicas=2,
            spares=2,
            steps=300,
            ckpt_dir=tempfile.mkdtemp(),
            extra_args=LONG,
        ),
    )
    uid = job["metadata"]["uid"]
    item = _running_with_progress(sb, uid)
    spares = {s.pod for s in item.spare_pods()}
    with _failed(sb, item.ranked()[0].node, item.ranked()[1].node):
        outcome = wait_finished(sb, uid)
    assert outcome.status == "SUCCEEDED", job_item(sb, uid).reason
    remediations = _remediations(sb, uid)
    assert len(remediations) == 1, [r.message for r in remediations]
    assert remediations[0].details["action"] == "spare_swap"
    assert {s.pod for s in job_item(sb, uid).ranked()} == spares


def test_a_spent_restart_budget_fails_the_job_with_the_reason(serverless):
    sb = serverless
    manifest = tiny_job(
        "budget",
        replicas=2,
        nproc_per_node=1,
        steps=300,
        ckpt_dir=tempfile.mkdtemp(),
        extra_args=[*LONG, "--fail-at-step", "30", "--fail-rank", "0"],
    )
    manifest["spec"]["runPolicy"]["jobMaxRetryCount"] = 0
    uid = submit(sb, manifest)["metadata"]["uid"]
    outcome = wait_finished(sb, uid)
    assert outcome.status == "FAILED" and outcome.error == "JobFailed"
    failed = conditions(get_job(sb, "budget"))["Failed"]
    assert "restart budget exhausted" in failed["message"] and "jobMaxRetryCount 0" in failed["message"]
    assert job_item(sb, uid).phase == "Failed"


@pytest.mark.parametrize("agent", ["aws"])  # this project's agent: the test below
def test_a_hang_found_by_a_log_rule_is_remediated_under_aws_agent(serverless, agent):
    sb = serverless
    rules = [{"name": "StepProgress", "logPattern": ".*loss.*", "expectedRecurringFrequencyInSeconds": 4}]
    manifest = tiny_job(
        named("hang", agent),
        agent=agent,
        replicas=2,
        steps=200,
        ckpt_dir=tempfile.mkdtemp(),
        log_rules=rules,
        extra_args=[*LONG, "--hang-at-step", "80", "--fail-rank", "0"],
    )
    uid = submit(sb, manifest)["metadata"]["uid"]
    outcome = wait_finished(sb, uid, timeout=240)
    assert outcome.status == "SUCCEEDED", job_item(sb, uid).reason
    (remediated,) = _remediations(sb, uid)
    assert "LogHang_StepProgress" in remediated.details["decision"]
    assert remediated.details["action"] in ("process_restart", "in_process_restart")


def test_a_hang_on_local_rank_1_found_by_a_log_rule_is_remediated_and_every_rank_is_logged(serverless):
    sb = serverless
    rules = [{"name": "StepProgress", "logPattern": ".*loss.*", "expectedRecurringFrequencyInSeconds": 4}]
    manifest = tiny_job(
        "hang",
        replicas=2,
        steps=200,
        ckpt_dir=tempfile.mkdtemp(),
        log_rules=rules,
        extra_args=[*LONG, "--hang-at-step", "80", "--fail-rank", "1"],  # pod hang-0, local rank 1
        clean_pod_policy="None",  # the pods stay, so their logs can be read after the job
    )
    command = manifest["spec"]["replicaSpecs"][0]["template"]["spec"]["containers"][0]["command"]
    assert not [a for a in command if a.startswith("--tee")], "the rules must work without --tee"
    uid = submit(sb, manifest)["metadata"]["uid"]
    outcome = wait_finished(sb, uid, timeout=240)
    assert outcome.status == "SUCCEEDED", (job_item(sb, uid).reason, [e.message for e in history(sb, uid)])
    (remediated,) = _remediations(sb, uid)
    assert "LogHang_StepProgress" in remediated.details["decision"]
    assert remediated.details["action"] in ("process_restart", "in_process_restart")
    # kubectl logs shows what every local rank printed, unprefixed, the hung rank's last words too.
    lines = (sb.pods.container_log("default", "hang-0", "trainer") or "").splitlines()
    for rank in (0, 1):
        assert any(line.startswith(f"rank {rank}/4 starting at step") for line in lines), lines[-20:]
    assert "rank 1 hangs at step 80" in lines
