"""HyperPodPyTorchJobs on a serverless-mode cluster, end to end: submitted with the kubernetes
client, discovered by reconcile_jobs on its schedule, run by supervise_job with our agent and a
real gloo training script, finished as the job's cleanPodPolicy says."""

from __future__ import annotations

import json
import tempfile
import threading

import pytest
from job_support import (
    GROUP,
    PLURAL,
    VERSION,
    apis,
    conditions,
    execution_of,
    executions,
    get_job,
    history,
    job_item,
    named,
    pods_of,
    submit,
    wait_finished,
)

from sandbox.testing import eventually
from sandbox.workloads import tiny_job

pytestmark = pytest.mark.e2e


def _ckpt() -> str:
    return tempfile.mkdtemp(prefix="hp-ckpt-")


def test_two_by_two_with_a_spare_runs_to_completed(serverless, agent):
    """Under this project's agent and AWS's 1.1.3: AWS's process-restart agent ignores ``spare``,
    so its spare gets no /start and stands by READY (ours is /started as a spare and holds)."""
    sb = serverless
    name = named("pair", agent)
    job = submit(
        sb,
        tiny_job(
            name, replicas=2, spares=1, steps=200, ckpt_dir=_ckpt(), clean_pod_policy="None", agent=agent
        ),
    )
    uid = job["metadata"]["uid"]
    outcome = wait_finished(sb, uid)
    assert outcome.status == "SUCCEEDED", (outcome.error, outcome.cause, job_item(sb, uid).reason)
    assert outcome.states_entered()[-1] == "JobCompleted"

    status = get_job(sb, name)["status"]
    found = conditions(get_job(sb, name))
    assert found["Completed"]["status"] == "True" and found["Running"]["status"] == "False"
    assert {"Created", "PodsRunning"} <= set(found)
    assert status["startTime"] <= status["completionTime"]
    # AWS's CRD types: ObjectReferences and a string port
    assert [p["name"] for p in status["jobPods"]] == [f"{name}-0", f"{name}-1", f"{name}-2"]
    assert status["jobPods"][0] == {
        "apiVersion": "v1",
        "kind": "Pod",
        "name": f"{name}-0",
        "namespace": "default",
    }
    assert status["masterPort"].isdigit()

    item = job_item(sb, uid)
    assert item.phase == "Completed" and item.nnodes == 2 and item.spares == 1
    ranks = {slot.pod: slot.rank for slot in item.pods}
    assert ranks == {f"{name}-0": 0, f"{name}-1": 1, f"{name}-2": None}, "the spare must never hold a rank"
    assert status["masterAddr"] == next(s.ip for s in item.pods if s.rank == 0)

    pods = {p.metadata.name: p for p in pods_of(sb, name)}
    assert len({p.spec.node_name for p in pods.values()}) == 3, "one pod per node"
    # cleanPodPolicy None: every pod stays, and every one exited cleanly - the spare on /shutdown.
    eventually(
        lambda: {p.status.phase for p in pods_of(sb, name)} == {"Succeeded"}, 30, "every pod Succeeded"
    )
    spare_log = sb.pods.container_log("default", f"{name}-2", "trainer") or ""
    assert "starting at step" not in spare_log, "the spare ran no worker"
    # ours is /started as a spare and holds; AWS's process-restart agent would run workers: none
    assert ("POST /start" in spare_log) is (agent == "ours"), spare_log[-2000:]
    assert "SHUTDOWN" in spare_log
    for rank_pod in (f"{name}-0", f"{name}-1"):
        assert '"weight"' in (sb.pods.container_log("default", rank_pod, "trainer") or "")
    kinds = [e.kind for e in history(sb, uid)]
    assert kinds[0] == "Admitted" and kinds[-1] == "Completed" and "Started" in kinds
    # Who may reach the pods: each other on any port, the control plane (AgentAllowedCidrs) on the
    # agents' port, nobody else.
    policy = network_policy(sb, f"{name}-network-policy")
    selector = {"matchLabels": {"HPJob": name, "hyperpod.control-plane/job-uid": uid}}
    assert policy["metadata"]["ownerReferences"][0]["uid"] == uid
    assert policy["spec"]["podSelector"] == selector and policy["spec"]["policyTypes"] == ["Ingress"]
    assert policy["spec"]["ingress"] == [
        {"from": [{"podSelector": selector}]},
        {"from": [{"ipBlock": {"cidr": "127.0.0.0/8"}}], "ports": [{"protocol": "TCP", "port": 8080}]},
    ]
    assert all(selector["matchLabels"].items() <= (p.metadata.labels or {}).items() for p in pods.values())


def network_policy(sb, name: str, namespace: str = "default") -> dict | None:
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    api = client.ApiClient(sb.kube.client_configuration())
    try:
        found = client.NetworkingV1Api(api).read_namespaced_network_policy(name, namespace)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise
    return api.sanitize_for_serialization(found)


def test_a_job_shaped_by_the_hyp_cli_runs(serverless, agent):
    """The plain job (2 ranks, no spare), under this project's agent and AWS's 1.1.3."""
    sb = serverless
    name = named("hyp-shaped", agent)
    manifest = tiny_job(
        name, replicas=2, steps=60, ckpt_dir=_ckpt(), hyp_shaped=True, queue="team-a", agent=agent
    )
    job = submit(sb, manifest)
    outcome = wait_finished(sb, job["metadata"]["uid"])
    assert outcome.status == "SUCCEEDED", (outcome.error, outcome.cause)
    found = conditions(get_job(sb, name))
    assert found["Created"]["reason"] == "AdmittedWithoutKueue" and "team-a" in found["Created"]["message"]
    assert found["Completed"]["status"] == "True"
    pods = pods_of(sb, name)
    assert len(pods) == 2 and all(p.spec.containers[0].name == "pytorch-job-container" for p in pods)
    assert all(p.metadata.labels["kueue.x-k8s.io/queue-name"] == "team-a" for p in pods)


def test_a_job_the_crd_refuses_is_refused_at_admission_with_every_field(serverless):
    from kubernetes.client.exceptions import ApiException

    manifest = tiny_job("no-replicas", replicas=0)
    manifest["spec"]["nprocPerNode"] = "lots"
    with pytest.raises(ApiException) as refused:
        submit(serverless, manifest)
    assert refused.value.status == 422
    fields = {c["field"] for c in json.loads(refused.value.body)["details"]["causes"]}
    assert fields == {"spec.replicaSpecs[0].replicas", "spec.nprocPerNode"}


def test_an_invalid_spec_gets_its_failed_condition_and_nothing_else(serverless):
    sb = serverless
    # Valid for the CRD's schema, but against a rule between fields that only the operator checks.
    manifest = tiny_job("no-period")
    manifest["spec"]["runPolicy"]["restartPolicy"] = {"numRestartBeforeFullJobRestart": 3}
    job = submit(sb, manifest)
    outcome = sb.wait_execution(execution_of(sb, job["metadata"]["uid"]), timeout=60)
    assert outcome.status == "FAILED" and outcome.error == "JobSpecInvalid"
    failed = conditions(get_job(sb, "no-period"))["Failed"]
    assert failed["reason"] == "InvalidSpec"
    assert "spec.runPolicy.restartPolicy.evalPeriodSeconds" in failed["message"]
    assert pods_of(sb, "no-period") == []
    assert job_item(sb, job["metadata"]["uid"]).phase == "Failed"


def test_the_same_job_discovered_many_times_starts_one_execution(serverless):
    sb = serverless
    job = submit(sb, tiny_job("once", nproc_per_node=1, replicas=1, steps=30, ckpt_dir=_ckpt()))
    uid = job["metadata"]["uid"]
    function = sb.stack.resources["ReconcileJobsFunction"]
    threads = [threading.Thread(target=sb.invoke_lambda, args=(function, {})) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    outcome = wait_finished(sb, uid)
    assert outcome.status == "SUCCEEDED", (outcome.error, outcome.cause)
    sb.invoke_lambda(function, {})  # a finished job is not started again either
    names = sorted(e["name"] for e in executions(sb, uid))
    segments = job_item(sb, uid).segment + 1  # a slow machine may cross a segment boundary
    assert names == sorted(f"{uid}-g1-{n}" for n in range(segments)), names


def test_a_long_job_continues_in_new_segments_and_completes(serverless):
    sb = serverless
    job = submit(
        sb,
        tiny_job(
            "long",
            nproc_per_node=1,
            replicas=1,
            steps=200,
            ckpt_dir=_ckpt(),
            extra_args=["--step-time", "0.04"],
        ),
    )
    uid = job["metadata"]["uid"]
    execution_of(sb, uid)
    eventually(lambda: (job_item(sb, uid) or None) and job_item(sb, uid).phase.finished, 180, "the job done")
    item = job_item(sb, uid)
    assert item.phase == "Completed" and item.segment >= 1, "10-round segments: an 8 s job crosses one"
    sfn = sb.client("stepfunctions")
    by_name = {e["name"]: e for e in executions(sb, uid)}
    first = sb.wait_execution(by_name[f"{uid}-g1-0"]["executionArn"], timeout=30)
    assert first.states_entered()[-1] == "SegmentHandedOver"
    last = sb.wait_execution(by_name[f"{uid}-g1-{item.segment}"]["executionArn"], timeout=30)
    assert (
        last.states_entered()[:3] == ["Admit", "Admitted", "Monitor"]
        and last.states_entered()[-1] == "JobCompleted"
    )
    assert len(by_name) == item.segment + 1 and sfn is not None
    kinds = [e.kind for e in history(sb, uid)]
    assert kinds.count("Started") == 1, "a new segment resumes monitoring; it never restarts the agents"


def test_a_job_deleted_while_running_stops_its_execution_and_pods(serverless):
    sb = serverless
    job = submit(
        sb,
        tiny_job(
            "doomed",
            nproc_per_node=1,
            replicas=2,
            steps=100000,
            ckpt_dir=_ckpt(),
            extra_args=["--step-time", "0.05"],
        ),
    )
    uid = job["metadata"]["uid"]
    execution_of(sb, uid)
    eventually(
        lambda: (job_item(sb, uid) or None) and job_item(sb, uid).phase == "Running", 90, "the job running"
    )
    assert network_policy(sb, "doomed-network-policy") is not None
    custom, _ = apis(sb)
    custom.delete_namespaced_custom_object(
        "sagemaker.amazonaws.com", "v1", "default", "hyperpodpytorchjobs", "doomed"
    )

    def all_ended():
        found = executions(sb, uid)
        return found if found and all(e["status"] != "RUNNING" for e in found) else None

    ended = eventually(all_ended, 60, "every segment to end")
    last = max(ended, key=lambda e: int(e["name"].rsplit("-", 1)[1]))
    outcome = sb.wait_execution(last["executionArn"], timeout=10)
    assert outcome.status in ("ABORTED", "SUCCEEDED")
    assert outcome.status == "ABORTED" or outcome.states_entered()[-1] == "JobDeleted"
    eventually(lambda: pods_of(sb, "doomed") == [], 30, "the job's pods gone")
    eventually(lambda: network_policy(sb, "doomed-network-policy") is None, 30, "its NetworkPolicy gone")
    eventually(lambda: job_item(sb, uid) is None, 30, "the JOB item removed")
    assert history(sb, uid)[-1].kind == "Deleted", "the history stays"


def test_an_api_server_answering_500_and_429_for_a_while_is_retried(serverless):
    sb = serverless
    job = submit(
        sb,
        tiny_job(
            "bumpy",
            nproc_per_node=1,
            replicas=2,
            steps=150,
            ckpt_dir=_ckpt(),
            extra_args=["--step-time", "0.02"],
        ),
    )
    uid = job["metadata"]["uid"]
    execution_of(sb, uid)
    eventually(
        lambda: (job_item(sb, uid) or None) and job_item(sb, uid).phase == "Running", 90, "the job running"
    )
    # Every request fails for a while: status polls through the pod proxy, reads, patches.
    sb.kube.faults.inject("*", "*", count=8, status=500)
    sb.kube.faults.inject("*", "*", count=8, status=429, retry_after=1)
    outcome = wait_finished(sb, uid)
    assert outcome.status == "SUCCEEDED", job_item(sb, uid).reason
    assert conditions(get_job(sb, "bumpy"))["Completed"]["status"] == "True"
    # cleanPodPolicy All (the default): every pod deleted at the end.
    eventually(lambda: pods_of(sb, "bumpy") == [], 30, "pods deleted per cleanPodPolicy All")


def test_a_slow_api_server_times_steps_out_and_they_are_retried(serverless):
    sb = serverless
    job = submit(
        sb,
        tiny_job(
            "slowapi",
            nproc_per_node=1,
            replicas=2,
            steps=150,
            ckpt_dir=_ckpt(),
            extra_args=["--step-time", "0.02"],
        ),
    )
    uid = job["metadata"]["uid"]
    arn = execution_of(sb, uid)
    eventually(
        lambda: (job_item(sb, uid) or None) and job_item(sb, uid).phase == "Running", 90, "the job running"
    )
    # A 5 s Lambda Timeout stands for the template's 120 s; every request waits longer than that.
    with sb.runtime.timeout("SuperviseJobFunction", 5):
        # Only the supervisor's steps read the job by name (reconcile_jobs lists).
        sb.kube.faults.slow("get", "hyperpodpytorchjobs", count=4, seconds=6)
        eventually(lambda: _step_failures(sb, arn), 60, "a supervise_job step that ran out of time")
    outcome = wait_finished(sb, uid)
    assert outcome.status == "SUCCEEDED", job_item(sb, uid).reason
    errors = _step_failures(sb, arn)
    assert errors <= {"CallTimedOutError", "DeadlineExceededError", "Sandbox.Timedout"}, errors


def _step_failures(sb, arn: str) -> set[str]:
    """The errors of the supervise_job steps that failed and were retried in the execution."""
    events = sb.client("stepfunctions").get_execution_history(executionArn=arn, maxResults=1000)["events"]
    return {
        e["lambdaFunctionFailedEventDetails"].get("error", "")
        for e in events
        if e["type"] == "LambdaFunctionFailed"
    } | {e["taskFailedEventDetails"].get("error", "") for e in events if e["type"] == "TaskFailed"}


def _watched(sb, uid: str) -> set[str]:
    """The changes watch_jobs put on the bus for the job."""
    return {
        change["change"]
        for call in sb.runtime.calls("WatchJobsFunction")
        for cluster in (call.result or {}).get("clusters", [])
        for change in cluster.get("changes", [])
        if change.get("uid") == uid
    }


def test_a_job_is_admitted_from_the_watch_and_its_deletion_seen_the_same_way(serverless):
    sb = serverless
    job = submit(sb, tiny_job("watched", nproc_per_node=1, replicas=1, steps=100000, ckpt_dir=_ckpt()))
    uid = job["metadata"]["uid"]
    eventually(lambda: "added" in _watched(sb, uid), 30, "watch_jobs to see the job added")
    # ...and reconcile_jobs ran from its "HyperPodPyTorchJob Change" event, not only on the schedule
    eventually(
        lambda: any(
            (c.event or {}).get("detail-type") == "HyperPodPyTorchJob Change"
            and (c.event.get("detail") or {}).get("uid") == uid
            for c in sb.runtime.calls("ReconcileJobsFunction")
        ),
        30,
        "reconcile_jobs started by the job's change event",
    )
    execution_of(sb, uid)
    custom, _ = apis(sb)
    custom.delete_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, "watched")
    eventually(lambda: _watched(sb, uid) & {"deleting", "deleted"}, 30, "watch_jobs to see the deletion")
    eventually(lambda: job_item(sb, uid) is None, 60, "the deleted job's JOB item removed")


def test_a_spec_edit_of_a_running_job_is_refused_with_a_condition(serverless):
    sb = serverless
    job = submit(sb, tiny_job("edited", nproc_per_node=1, replicas=1, steps=100000, ckpt_dir=_ckpt()))
    uid = job["metadata"]["uid"]
    eventually(lambda: (job_item(sb, uid) or None) and job_item(sb, uid).phase == "Running", 90, "running")
    custom, _ = apis(sb)
    custom.patch_namespaced_custom_object(
        GROUP, VERSION, "default", PLURAL, "edited", {"spec": {"runPolicy": {"jobMaxRetryCount": 7}}}
    )
    refused = eventually(
        lambda: conditions(get_job(sb, "edited")).get("SpecChangeRejected"), 30, "the edit refused"
    )
    assert refused["status"] == "True" and "generation 2 while generation 1 runs" in refused["message"]
    assert job_item(sb, uid).phase == "Running" and job_item(sb, uid).generation == 1
    custom.delete_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, "edited")
    eventually(lambda: job_item(sb, uid) is None, 60, "the job's item removed")
