"""`hpctl jobs` and `hpctl jobs describe` as a user sees them, against the session's serverless
sandbox: a real job runs to Completed, then hpctl (in this process, configured by nothing but the
sandbox's environment) lists it and describes its ranks, spare, conditions, pods and history."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator

import pytest
from job_support import execution_of, job_item, store, submit

from hpctl.cli import main
from hyperpod_control.models.records import JobPhase, JobRecord, OperatorMode, OperatorRecord, PodSlot
from sandbox import Sandbox
from sandbox.workloads import tiny_job

pytestmark = pytest.mark.e2e

JOB = "hpctl-jobs-tiny"


@pytest.fixture
def hpctl(serverless: Sandbox, monkeypatch, capsys):
    """Run `hpctl ARGS...` in process with the sandbox's environment; (exit code, stdout, stderr)."""
    for key, value in serverless.env.items():
        monkeypatch.setenv(key, value)

    def run(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = main(list(args))
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


@pytest.fixture(scope="module")
def finished_job(serverless: Sandbox) -> str:
    """One rank and one spare, run to Completed; its pods stay (cleanPodPolicy None)."""
    sb = serverless
    manifest = tiny_job(
        JOB,
        replicas=1,
        spares=1,
        steps=30,
        ckpt_dir=tempfile.mkdtemp(prefix="hp-ckpt-"),
        clean_pod_policy="None",
    )
    uid = submit(sb, manifest)["metadata"]["uid"]
    outcome = sb.wait_execution(execution_of(sb, uid), timeout=180)
    assert outcome.status == "SUCCEEDED", (outcome.error, outcome.cause)
    return uid


@pytest.fixture
def other_cluster(serverless: Sandbox) -> Iterator[OperatorRecord]:
    """A second registered cluster (REGISTERED: reconcile_jobs leaves it alone) whose EKS cluster
    does not exist, with an addon-mode job of the same name as the real one."""
    sb = serverless
    table = store(sb)
    arn = sb.world.hyperpod_cluster_arn.rsplit("/", 1)[0] + "/otherclu5ter"
    operator = OperatorRecord(
        cluster_arn=arn, cluster_name="other-cluster", eks_cluster_name="no-such-eks", mode=OperatorMode.ADDON
    )
    job = JobRecord(
        cluster_arn=arn,
        uid="0000-other",
        namespace="default",
        name=JOB,
        mode=OperatorMode.ADDON,
        phase=JobPhase.OBSERVED,
        nnodes=2,
        reason="observed from AWS's training operator",
        pods=[PodSlot(pod=f"{JOB}-0", rank=0, node="hyperpod-i-0aaa", ip="10.1.0.5")],
        conditions=[{"type": "Running", "status": "True", "reason": "AllPodsRunning", "message": "running"}],
    )
    table.put(operator, expected_version=None)
    table.put(job, expected_version=None)
    try:
        yield operator
    finally:
        table.delete(job.pk, job.sk)
        table.delete(operator.pk, operator.sk)


def test_jobs_lists_the_finished_job(serverless, finished_job, hpctl):
    code, out, err = hpctl("jobs")
    assert code == 0, err
    header, *rows = out.splitlines()
    assert header.split()[:8] == [
        "CLUSTER",
        "NAMESPACE/NAME",
        "MODE",
        "PHASE",
        "RANKS",
        "SPARES",
        "RESTARTS",
        "AGE/DURATION",
    ]
    row = next(r for r in rows if f"default/{JOB} " in r)
    cells = row.split()
    assert cells[:7] == [
        serverless.world.hyperpod_cluster_name,
        f"default/{JOB}",
        "serverless",
        "Completed",
        "1",
        "1",
        "0",
    ]
    assert cells[7] == "took"

    code, out, _ = hpctl("jobs", "--cluster", serverless.world.hyperpod_cluster_name, "--json")
    assert code == 0
    listed = {(r["namespace"], r["name"]): r for r in json.loads(out)}
    entry = listed[("default", JOB)]
    assert entry["uid"] == finished_job and entry["phase"] == "Completed" and entry["nnodes"] == 1
    assert entry["spares"] == 1 and entry["executionArn"].startswith("arn:aws:states:")


def test_jobs_on_a_cluster_without_jobs_says_how_to_submit(serverless, other_cluster, hpctl):
    store(serverless).delete(other_cluster.pk, "JOB#0000-other")  # a registered cluster, no jobs
    code, out, err = hpctl("jobs", "--cluster", "other-cluster")
    assert code == 0, err
    assert out.startswith("No jobs on cluster other-cluster.") and "kubectl apply -f job.yaml" in out

    code, out, err = hpctl("jobs", "--cluster", "no-such-cluster")
    assert code == 1 and out == ""
    assert "no-such-cluster is not registered" in err and "other-cluster" in err


def test_describe_shows_ranks_spare_conditions_pods_and_history(serverless, finished_job, hpctl):
    code, out, err = hpctl("jobs", "describe", JOB)
    assert code == 0, err
    item = job_item(serverless, finished_job)
    assert f"Job default/{JOB} on cluster {serverless.world.hyperpod_cluster_name} (serverless mode)" in out
    assert "phase:      Completed" in out
    assert f"execution:  {item.execution_arn} (segment {item.segment})" in out
    rank0 = next(s for s in item.pods if s.rank == 0)
    spare = next(s for s in item.pods if s.rank is None)
    assert f"master:     {item.master_addr}" in out and item.master_addr == rank0.ip

    lines = out.splitlines()
    ranks = lines[lines.index("Ranks:") + 1 :]
    assert ranks[0].split() == ["RANK", "POD", "NODE", "IP"]
    assert ranks[1].split() == ["0", rank0.pod, rank0.node, rank0.ip]
    assert ranks[2].split() == ["spare", spare.pod, spare.node, spare.ip]

    conditions = lines[lines.index("Conditions:") + 2 : lines.index("Pods:")]
    by_type = {line.split()[0]: line.split()[1] for line in conditions}
    assert by_type["Completed"] == "True" and by_type["Running"] == "False" and "Created" in by_type

    pods = lines[lines.index("Pods:") + 2 : lines.index("History:") - 1]
    assert {p.split()[0] for p in pods} == {rank0.pod, spare.pod}
    assert all(p.split()[1] in ("Running", "Succeeded") for p in pods)

    history = lines[lines.index("History:") + 2 :]
    kinds = [h.split()[1] for h in history]
    assert kinds[0] == "Admitted" and kinds[-1] == "Completed"
    assert {"Admitted", "PodsCreated", "Started", "Completed"} <= set(kinds)

    code, out, _ = hpctl("jobs", "describe", JOB, "--json")
    doc = json.loads(out)
    assert code == 0 and doc["kubernetes"]["readable"] and doc["phase"] == "Completed"
    assert [p["rank"] for p in doc["pods"]] == [0, None] and doc["pods"][1]["spare"]
    assert {"Admitted", "PodsCreated", "Started", "Completed"} <= {e["kind"] for e in doc["history"]}


def test_logs_prints_a_ranks_output_through_the_kubernetes_api(serverless, finished_job, hpctl):
    _, described, _ = hpctl(
        "jobs", "describe", JOB, "--cluster", serverless.world.hyperpod_cluster_name, "--json"
    )
    (pod,) = [p["pod"] for p in json.loads(described)["pods"] if p["rank"] == 0]
    code, out, err = hpctl(
        "jobs", "--cluster", serverless.world.hyperpod_cluster_name, "logs", JOB, "--rank", "0"
    )
    assert code == 0, err
    assert any(line.startswith("step ") for line in out.splitlines()), out[-2000:]
    # The same text the cluster's API serves for the pod holding rank 0 (as `kubectl logs` reads it).
    from kubernetes import client, config

    core = client.CoreV1Api(config.new_client_from_config(config_file=str(serverless.kubeconfig)))
    assert out == core.read_namespaced_pod_log(pod, "default")

    code, out, err = hpctl(
        "jobs", "--cluster", serverless.world.hyperpod_cluster_name, "logs", JOB, "--rank", "1"
    )
    assert code == 1 and out == ""
    assert "has no rank 1" in err and f"0 ({pod})" in err


def test_the_supervisor_leaves_kubernetes_events_on_the_job(serverless, finished_job):
    """What `kubectl describe hyperpodpytorchjob` shows under Events: why the job is where it is."""
    from kubernetes import client, config

    from hyperpod_control.services.supervisor import EVENT_SOURCE_COMPONENT

    core = client.CoreV1Api(config.new_client_from_config(config_file=str(serverless.kubeconfig)))
    events = [e for e in core.list_namespaced_event("default").items if e.involved_object.uid == finished_job]
    by_reason = {e.reason: e for e in events}
    # A job without faults: its end (a remediation adds Running, a node fault NodeFault).
    assert "Completed" in by_reason, sorted(by_reason)
    completed = by_reason["Completed"]
    assert completed.type == "Normal" and completed.involved_object.name == JOB
    assert completed.involved_object.kind == "HyperPodPyTorchJob"
    assert completed.source.component == EVENT_SOURCE_COMPONENT and completed.message


def test_describe_an_unknown_job_exits_1_naming_it_and_the_known_ones(finished_job, hpctl):
    code, out, err = hpctl("jobs", "describe", "no-such-job")
    assert code == 1 and out == ""
    assert "no job default/no-such-job" in err and f"default/{JOB}" in err

    code, _, err = hpctl("jobs", "describe", JOB, "--namespace", "team-a")
    assert code == 1 and f"no job team-a/{JOB}" in err


def test_same_name_on_two_clusters_asks_for_cluster(serverless, finished_job, other_cluster, hpctl):
    code, out, err = hpctl("jobs", "describe", JOB)
    assert code == 2 and out == ""
    assert "several clusters" in err and "--cluster" in err
    assert serverless.world.hyperpod_cluster_name in err and "other-cluster" in err

    code, out, err = hpctl("jobs", "--cluster", serverless.world.hyperpod_cluster_name, "describe", JOB)
    assert code == 0, err
    assert "phase:      Completed" in out

    # The other cluster's Kubernetes API cannot be read: what DynamoDB knows is still shown.
    code, out, err = hpctl("jobs", "describe", JOB, "--cluster", "other-cluster")
    assert code == 0, err
    assert "(addon mode)" in out and "phase:      Observed" in out
    assert "Kubernetes: could not read cluster other-cluster: " in out and "no-such-eks" in out
    assert "Conditions (as last recorded):" in out and "AllPodsRunning" in out
    assert f"0     {JOB}-0" in out

    code, out, _ = hpctl("jobs")
    rows = [r.split() for r in out.splitlines()[1:]]
    assert ["other-cluster", f"default/{JOB}", "addon", "Observed", "2", "0", "0"] in [r[:7] for r in rows]
