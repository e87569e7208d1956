"""State that fits at scale: a 4,096-rank job's JOB item and history under DynamoDB's
400 KB item limit, and every workflow state of a 4,096-rank job and of a 2,000-job cluster's
upgrade under Step Functions' 256 KiB, measured with the real serialisers (boto3's TypeSerializer
through ``Store``, moto's DynamoDB, ``json.dumps`` of what the Lambdas return) and the state
machines' own ResultSelectors and ResultPaths."""

from __future__ import annotations

import json
import random
import uuid
from pathlib import Path
from typing import Any

import pytest
from unit_support import CLUSTER_ARN, TABLE

from hyperpod_control.adapters.agents import AgentClient
from hyperpod_control.adapters.items import ITEM_LIMIT_BYTES, PACKED_PODS, item_size
from hyperpod_control.exceptions import InvalidInputError
from hyperpod_control.models.agent import AgentAnswer, AgentStatus
from hyperpod_control.models.install import ClusterRef, WorkflowLock
from hyperpod_control.models.records import JobPhase, JobRecord, PodSlot, cluster_pk, job_sk, utcnow
from hyperpod_control.models.supervisor import REASON_LIMIT, StepInput, StepResult, SupervisedJob
from hyperpod_control.models.upgrade import SHOWN_JOBS, JobsTaskInput, UpgradePlan
from hyperpod_control.services import supervisor, upgrade
from hyperpod_control.services.supervision import judge_round, pod_name
from hyperpod_control.services.supervisor import Supervisor

pytestmark = pytest.mark.unit

STATE_LIMIT_BYTES = 256 * 1024  # Step Functions: a state's input or output, a task's result
RANKS = 4096
SPARES = 64
JOBS = 2000
STATE_MACHINES = Path(__file__).resolve().parents[2] / "state_machines"
#: 53 characters, the longest name the CRD admits (its pods' names, "<job>-<index>", stay
#: within a label value's 63).
JOB_NAME = "llama-3-405b-pretrain-" + "x" * 31
NAMESPACE = "team-foundation-models"


def json_size(value: Any) -> int:
    return len(json.dumps(value, separators=(",", ":")).encode())


def raw_item(ddb: Any, pk: str, sk: str) -> dict[str, Any]:
    return ddb.get_item(TableName=TABLE, Key={"PK": {"S": pk}, "SK": {"S": sk}}, ConsistentRead=True)["Item"]


def test_item_size_counts_as_dynamodb_does():
    """DynamoDB's rules: names and strings by UTF-8 bytes, a number 1 byte per 2 significant
    digits plus 1, a list or map 3 bytes plus 1 per element (and a map's keys)."""
    assert item_size({"name": {"S": "abc"}}) == 4 + 3
    assert item_size({"n": {"N": "12345"}, "z": {"N": "0.00100"}}) == (1 + 4) + (1 + 2)
    assert item_size({"flag": {"BOOL": True}, "nil": {"NULL": True}}) == (4 + 1) + (3 + 1)
    assert item_size({"l": {"L": [{"S": "a"}, {"S": "bc"}]}}) == 1 + 3 + (1 + 1) + (2 + 1)
    assert item_size({"m": {"M": {"k": {"S": "v"}}}}) == 1 + 3 + (1 + 1 + 1)
    assert item_size({"b": {"B": b"12345"}, "é": {"S": "é"}}) == (1 + 5) + (2 + 2)


# ============================================================== a 4,096-rank job


def job_obj(uid: str, replicas: int) -> dict[str, Any]:
    container = {"name": "train", "image": "train:1", "command": ["hyperpodrun", "train.py"]}
    return {
        "apiVersion": "sagemaker.amazonaws.com/v1",
        "kind": "HyperPodPyTorchJob",
        "metadata": {"name": JOB_NAME, "namespace": NAMESPACE, "uid": uid, "generation": 1},
        "spec": {
            "nprocPerNode": "8",
            "replicaSpecs": [
                {
                    "name": "pod",
                    "replicas": replicas,
                    "spares": SPARES,
                    "template": {"spec": {"containers": [container]}},
                }
            ],
        },
    }


def big_record(uid: str) -> JobRecord:
    """A 4,096-rank job with 64 spares as StartAgents finds it: random instance ids and IPs (no
    pattern a compressor could exploit beyond what real ones have), two silent agents, faults,
    restarts and repeat offenders recorded."""
    rng = random.Random(21)
    pods = [
        PodSlot(
            pod=pod_name(JOB_NAME, i),
            rank=i if i < RANKS else None,
            node=f"hyperpod-i-{rng.getrandbits(68):017x}",
            ip=f"10.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}",
            silent_rounds=2 if i in (7, 4000) else 0,
        )
        for i in range(RANKS + SPARES)
    ]
    faults = [
        {"pod": pod_name(JOB_NAME, i), "kind": "agent", "reason": f"rank {i} FAULTED: CUDA error" * 4}
        for i in range(20)
    ]
    return JobRecord(
        cluster_arn=CLUSTER_ARN,
        uid=uid,
        namespace=NAMESPACE,
        name=JOB_NAME,
        phase=JobPhase.CREATING,
        nnodes=RANKS,
        spares=SPARES,
        pods=pods,
        pending_faults=faults,
        restart_count=9,
        restart_times=[utcnow()] * 10,
        offenders={p.node: 2 for p in pods[:200]},
        progress={
            "checkpoints/step": {"progressData": "s3://bucket/ckpt/step-120000", "progressCount": 120000}
        },
        execution_arn="arn:aws:states:us-west-2:123456789012:execution:supervise-job:" + "e" * 80,
    )


class JobKube:
    """What StartAgents reads and writes of Kubernetes: the job object and its status."""

    def __init__(self, obj: dict[str, Any]) -> None:
        self.obj = obj
        self.statuses: list[dict[str, Any]] = []

    def custom_object(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        return self.obj

    def patch_custom_object_status(self, *args: Any) -> dict[str, Any]:
        self.statuses.append(args[-1])
        return self.obj


def started_job(store: Any, agents_answer: Any) -> tuple[StepResult, SupervisedJob, JobKube]:
    uid = str(uuid.uuid4())
    store.put(big_record(uid), expected_version=None)
    ref = SupervisedJob(cluster_arn=CLUSTER_ARN, namespace=NAMESPACE, name=JOB_NAME, uid=uid)
    kube = JobKube(job_obj(uid, RANKS))
    sup = Supervisor(store=store, kube=kube, agents=AgentClient(agents_answer, sleep=lambda _s: None))
    return supervisor.start_agents(StepInput(job=ref), sup), ref, kube


def test_a_4096_rank_jobs_item_and_history_fit_dynamodb(store, ddb):
    """StartAgents of a 4,096-rank job, for real on moto's DynamoDB (which refuses an item over
    about 405 KB): the JOB item and the Started entry of the history, sized as DynamoDB counts."""
    result, ref, kube = started_job(store, lambda call: None)
    assert result.next == "monitor", result.reason
    item = raw_item(ddb, cluster_pk(CLUSTER_ARN), job_sk(ref.uid))
    size = item_size(item)
    assert size < ITEM_LIMIT_BYTES / 2, size
    assert PACKED_PODS in item and "pods" not in item
    # what the pod table would take as a plain list of maps: over the limit on its own
    plain = store._ser.serialize([s.model_dump(mode="json", exclude_none=True) for s in big_record("u").pods])
    assert item_size({"pods": plain}) > ITEM_LIMIT_BYTES
    read = store.get_job(CLUSTER_ARN, ref.uid)
    assert read.phase is JobPhase.RUNNING and len(read.pods) == RANKS + SPARES
    assert {s.rank for s in read.ranked()} == set(range(RANKS))
    assert read.pods[7].silent_rounds == 2 and read.pods[-1].rank is None
    [started] = [e for e in store.job_history(ref.uid) if e.kind == "Started"]
    assert len(started.details["ranks"]) == RANKS
    history = ddb.query(
        TableName=TABLE,
        KeyConditionExpression="PK = :pk",
        ExpressionAttributeValues={":pk": {"S": f"JOB#{ref.uid}"}},
    )["Items"]
    assert max(item_size(i) for i in history) < ITEM_LIMIT_BYTES
    # the job's status names every pod (jobPods): a Kubernetes object, limited by etcd's 1.5 MiB
    assert json_size(kube.statuses[-1]) < 1024 * 1024


def test_a_small_jobs_pod_table_stays_a_readable_list(store, ddb):
    record = big_record(str(uuid.uuid4())).model_copy(update={"pods": big_record("u").pods[:8]})
    store.put(record, expected_version=None)
    item = raw_item(ddb, cluster_pk(CLUSTER_ARN), job_sk(record.uid))
    assert "pods" in item and PACKED_PODS not in item
    assert store.get_job(CLUSTER_ARN, record.uid).pods == record.pods


# ============================================================== supervise_job's states at 4,096 ranks


def _path_get(document: Any, path: str) -> Any:
    value = document
    for part in path.removeprefix("$").strip(".").split("."):
        if part:
            value = value.get(part) if isinstance(value, dict) else None
    return value


def _select(selector: dict[str, str], result: Any) -> dict[str, Any]:
    """A ResultSelector (paths only, as ours are) applied to a task's result."""
    return {k.removesuffix(".$"): _path_get(result, v) for k, v in selector.items()}


def _put(state: dict[str, Any], result_path: str, value: Any) -> None:
    parts = result_path.removeprefix("$.").split(".")
    target = state
    for part in parts[:-1]:
        target = target.setdefault(part, {})
    target[parts[-1]] = value


def task_states(machine: str) -> dict[str, dict[str, Any]]:
    definition = json.loads((STATE_MACHINES / f"{machine}.asl.json").read_text())
    return {n: s for n, s in definition["States"].items() if s["Type"] == "Task" and s.get("ResultSelector")}


def largest_state(machine: str, initial: dict[str, Any], payloads: dict[str, Any]) -> dict[str, Any]:
    """The state with every Task's selected result at its ResultPath at once (larger than any
    the execution holds): ``payloads`` maps a Task to what its Lambda returned (a child
    workflow's task: what StartExecution.sync:2 answered); the others answer what a step's
    payload of that Task's fields holds at most (a short string each)."""
    state = dict(initial)
    for name, task in task_states(machine).items():
        payload = payloads.get(name)
        if payload is None:
            payload = {path.rsplit(".", 1)[-1]: "x" * 200 for path in task["ResultSelector"].values()}
        result = {"Payload": payload} if ":::lambda:" in task["Resource"] else payload
        assert json_size(result) < STATE_LIMIT_BYTES, name
        _put(state, task["ResultPath"], _select(task["ResultSelector"], result))
    return state


def refusing(call: Any) -> Any:
    if call.path == "/status":  # the spares are read first: agents that hold a spare's workers
        return {"status": "ready", "restartMode": "process_level_restart", "holds_spares": "True"}
    raise InvalidInputError(f"agent {call.pod} refused POST /start (422): " + "x" * 300)


def test_every_supervise_job_state_of_a_4096_rank_job_fits_step_functions(store):
    refused, ref, _ = started_job(store, refusing)
    assert refused.next == "fail" and "and 4150 more" in refused.reason
    # a poll round where every rank faulted
    record = big_record(ref.uid).model_copy(update={"pending_faults": [], "phase": JobPhase.RUNNING})
    pods = {
        s.pod: {"status": {"phase": "Running", "podIP": s.ip}, "spec": {"nodeName": s.node}}
        for s in record.pods
    }
    faulted = AgentStatus.model_validate({"status": "faulted", "reason": "NCCL timeout " + "y" * 300})
    answers = {s.pod: AgentAnswer(pod=s.pod, ok=True, status=faulted) for s in record.pods}
    verdict = judge_round(record, pods, answers, utcnow())
    assert verdict.next == "fault" and len(verdict.faults) == RANKS
    polled = StepResult(next=verdict.next, reason=verdict.reason, poll_seconds=30)
    # the longest reason any step may answer
    longest = StepResult(next="fail", reason="z" * 300_000)
    assert len(longest.reason) <= REASON_LIMIT
    payloads = [p.dump() for p in (refused, polled, longest)]
    initial = {"job": ref.model_dump(mode="json", by_alias=True)}
    for payload in payloads:
        state = largest_state("supervise_job", initial, dict.fromkeys(task_states("supervise_job"), payload))
        assert json_size(state) < STATE_LIMIT_BYTES / 16, json_size(state)


# ============================================================== upgrade_operator's states, 2,000 jobs


def cluster_jobs(count: int) -> list[dict[str, Any]]:
    """``count`` HyperPodPyTorchJobs with names as long as Kubernetes allows, half elastic."""
    jobs = []
    for i in range(count):
        spec: dict[str, Any] = {
            "replicaSpecs": [
                {
                    "name": "pod",
                    "replicas": 4,
                    "template": {
                        "spec": {
                            "containers": [
                                {"name": "c", "image": "i", "command": ["hyperpodrun", "--inprocess-restart"]}
                            ]
                        }
                    },
                }
            ]
        }
        if i % 2:
            spec["elasticPolicy"] = {"minReplicas": 1, "maxReplicas": 4}
        jobs.append(
            {
                "apiVersion": "sagemaker.amazonaws.com/v1",
                "kind": "HyperPodPyTorchJob",
                "metadata": {
                    "name": f"job-{i:04d}-" + "n" * 54,
                    "namespace": f"team-{i % 40:02d}-" + "s" * 50,
                    "uid": str(uuid.UUID(int=i)),
                },
                "spec": spec,
            }
        )
    return jobs


class UpgradeKube:
    def __init__(self, jobs: list[dict[str, Any]]) -> None:
        self.jobs = {(j["metadata"]["namespace"], j["metadata"]["name"]): j for j in jobs}

    def custom_objects(self, *args: Any) -> list[dict[str, Any]]:
        return list(self.jobs.values())

    def custom_object(self, group: str, version: str, plural: str, ns: str, name: str) -> Any:
        return self.jobs.get((ns, name))

    def delete_custom_object(self, group: str, version: str, plural: str, ns: str, name: str) -> bool:
        return self.jobs.pop((ns, name), None) is not None

    def create_custom_object(self, group: str, version: str, plural: str, ns: str, body: dict) -> dict:
        body = {**body, "metadata": {**body["metadata"], "uid": str(uuid.uuid4())}}
        self.jobs[(ns, body["metadata"]["name"])] = body
        return body


class Bucket:
    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}

    def put_json(self, key: str, value: Any) -> int:
        self.objects[key] = json.dumps(value).encode()
        return len(self.objects[key])

    def get_json(self, key: str) -> Any:
        return json.loads(self.objects[key]) if key in self.objects else None

    def delete(self, key: str) -> None:
        self.objects.pop(key, None)


class Index:
    """The snapshot index items (Store's query/put/delete), in memory."""

    def __init__(self) -> None:
        self.items: dict[tuple[str, str], Any] = {}

    def query(self, model: Any, pk: str, prefix: str) -> list[Any]:
        return [r for (p, s), r in sorted(self.items.items()) if p == pk and s.startswith(prefix)]

    def put(self, record: Any, *, expected_version: int | None) -> Any:
        record = record.model_copy(update={"version": (expected_version or 0) + 1})
        self.items[(record.pk, record.sk)] = record
        return record

    def delete(self, pk: str, sk: str) -> None:
        self.items.pop((pk, sk), None)


def test_every_upgrade_state_of_a_2000_job_cluster_fits_step_functions():
    jobs = cluster_jobs(JOBS)
    # the references of every job, as the plan carried them before: more than a state holds
    assert json_size([upgrade.job_ref(j).dump() for j in jobs]) > STATE_LIMIT_BYTES
    versions = ["v1.1.2", "v1.2.0-eksbuild.1"]
    decision = upgrade.decide_plan(
        "v1.2.0-eksbuild.1", "v1.1.2", versions, versions, "1.31", jobs, force=True
    )
    assert decision.action == "draining_downgrade" and decision.job_count == JOBS
    assert len(decision.jobs) == SHOWN_JOBS and all(r.features for r in decision.jobs)
    cluster = ClusterRef(
        cluster_name="c" * 63,
        cluster_arn=CLUSTER_ARN,
        eks_cluster_name="e" * 100,
        kubernetes_version="1.31",
    )
    plan = UpgradePlan(
        **decision.model_dump(),
        cluster=cluster,
        upgrade_id="u" * 80,
        role_arn="arn:aws:iam::123456789012:role/" + "r" * 64,
        configuration_values={"podIdentity": {"enabled": True}, "resources": {"limits": {"cpu": "2"}}},
    )
    lock = WorkflowLock(
        owner="arn:aws:states:us-west-2:123456789012:execution:up:" + "o" * 80, cluster_arn=CLUSTER_ARN
    )
    request = JobsTaskInput(cluster=cluster, lock=lock, upgrade_id=plan.upgrade_id)
    kube, bucket, index = UpgradeKube(jobs), Bucket(), Index()
    snapshot = upgrade.snapshot_jobs(request, kube, bucket, index)
    drained = upgrade.delete_jobs(request, kube, bucket, index)
    gone = upgrade.jobs_gone(request, kube, index)
    resubmitted = upgrade.resubmit_jobs(request, kube, bucket, index)
    assert (snapshot.snapshotted, drained.deleted, gone.done, resubmitted.resubmitted) == (
        JOBS,
        JOBS,
        True,
        JOBS,
    )
    assert len(resubmitted.jobs) == SHOWN_JOBS and len(kube.jobs) == JOBS
    payloads = {
        "ResolveCluster": plan.dump(),
        "PlanUpgrade": plan.dump(),
        "RestoreJobs": resubmitted.dump(),
    }
    assert set(payloads) <= set(task_states("upgrade_operator"))
    # The steps both directions run, in the child workflow, with its input as the parent sends it.
    child_payloads = {
        "SnapshotJobs": snapshot.dump(),
        "DeleteJobs": drained.dump(),
        "WaitJobsGone": gone.dump(),
        "ResubmitJobs": resubmitted.dump(),
    }
    assert set(child_payloads) <= set(task_states("apply_addon_version"))
    plan_fields = plan.dump()
    child_input = {
        "cluster": cluster.dump(),
        "lock": lock.dump(),
        "upgradeId": plan.upgrade_id,
        "phase": "rollback",
        "addonVersion": plan_fields["currentVersion"],
        "configurationValues": plan_fields["configurationValues"],
        "roleArn": plan_fields["roleArn"],
        "steps": {"snapshot": True, "drain": True, "resubmit": True},
        "AWS_STEP_FUNCTIONS_STARTED_BY_EXECUTION_ID": lock.owner,
    }
    child = largest_state("apply_addon_version", child_input, child_payloads)
    assert json_size(child) < STATE_LIMIT_BYTES / 2, json_size(child)
    initial = {
        "request": {"clusterName": cluster.cluster_name, "force": True, "addonVersion": "v1.1.2"},
        "owner": lock.owner,
        "cluster": cluster.dump(),
        "lock": lock.dump(),
    }
    state = largest_state("upgrade_operator", initial, payloads)
    assert json_size(state) < STATE_LIMIT_BYTES / 2, json_size(state)
    assert state["plan"]["jobCount"] == JOBS


def test_every_uninstall_state_of_a_2000_job_cluster_fits_step_functions():
    """A forced uninstall of a 2,000-job cluster: CheckJobs counts them all and names 100."""
    from hyperpod_control.services.install import judge_jobs

    jobs = cluster_jobs(JOBS)
    checked = judge_jobs(jobs, force=True)
    assert checked.count == JOBS and len(checked.jobs) == SHOWN_JOBS
    initial = {
        "request": {"clusterName": "c" * 63, "force": True},
        "cluster": {"clusterArn": CLUSTER_ARN, "eksClusterName": "e" * 100},
        "lock": {"owner": "o" * 200},
    }
    state = largest_state("uninstall_operator", initial, {"CheckJobs": checked.dump()})
    assert json_size(state) < STATE_LIMIT_BYTES / 16, json_size(state)
    assert state["jobs"]["count"] == JOBS
