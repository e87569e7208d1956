"""reconcile_jobs: every job of every active cluster gets what its cluster's mode says (one
supervise_job execution per generation in serverless mode, an observed JOB item in addon mode),
deleted jobs are cleaned up, and one broken cluster does not stop the others. Runs against
in-memory fakes of the store, Step Functions and Kubernetes; StepFunctionsAdapter itself against
moto."""

from __future__ import annotations

import json
from datetime import datetime
from types import SimpleNamespace
from typing import Any

import pytest

from hyperpod_control.adapters.agents import AgentClient
from hyperpod_control.adapters.stepfunctions import (
    StepFunctionsAdapter,
    execution_arn,
    execution_name,
)
from hyperpod_control.exceptions import (
    DependencyUnavailableError,
    ThrottledError,
    VersionConflictError,
)
from hyperpod_control.models.names import JOB_LABEL, UID_LABEL
from hyperpod_control.models.records import (
    JobPhase,
    JobRecord,
    OperatorMode,
    OperatorRecord,
    OperatorStatus,
)
from hyperpod_control.services.reconcile import (
    ClusterReport,
    _refuse_spec_change,
    addon_recovery,
    observed_record,
    reconcile,
    spec_change_conditions,
)
from hyperpod_control.services.supervisor import Supervisor
from tests.fakes import FakeSfn, FakeStore

pytestmark = pytest.mark.unit

REGION = "us-west-2"
ACCOUNT = "123456789012"
ARN_A = f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:cluster/aaaaaaaaaaaa"
ARN_B = f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:cluster/bbbbbbbbbbbb"
SM = f"arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:supervise-job"
UID = "5f1c0d2e-0000-4000-8000-000000000001"


# ============================================================== fakes


class FakeKube:
    def __init__(self, jobs: list[dict[str, Any]] | None = None, pods: list[dict[str, Any]] | None = None):
        self.jobs = list(jobs or [])
        self.pod_list = list(pods or [])
        self.calls: list[str] = []
        self.deleted: list[tuple[str, str]] = []
        self.closed = False

    def custom_objects(self, group: str, version: str, plural: str) -> list[dict[str, Any]]:
        self.calls.append("custom_objects")
        return list(self.jobs)

    def pods(self, namespace: str | None = None, *, label_selector: str = "", field_selector: str = ""):
        self.calls.append("pods")
        wanted = dict(part.split("=", 1) for part in label_selector.split(",") if part)
        return [
            p
            for p in self.pod_list
            if (namespace is None or p["metadata"]["namespace"] == namespace)
            and all(p["metadata"].get("labels", {}).get(k) == v for k, v in wanted.items())
        ]

    def delete_pod(self, namespace: str, name: str, grace_period_seconds: int | None = None) -> bool:
        self.calls.append("delete_pod")
        self.deleted.append((namespace, name))
        before = len(self.pod_list)
        self.pod_list = [p for p in self.pod_list if p["metadata"]["name"] != name]
        return len(self.pod_list) < before

    def create_pod(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        self.calls.append("create_pod")
        return body

    def pod_proxy(self, *args: Any, **kwargs: Any) -> Any:
        self.calls.append("pod_proxy")
        return {"status": "ready"}

    def close(self) -> None:
        self.closed = True


class BrokenKube(FakeKube):
    def custom_objects(self, group: str, version: str, plural: str) -> list[dict[str, Any]]:
        raise DependencyUnavailableError("the cluster's API server did not answer (timeout).")


def agent_transport(call: Any) -> dict[str, Any]:
    return {"status": "ready"}


def supervisors(store: FakeStore, kubes: dict[str, FakeKube]):
    asked: list[str] = []

    def supervisor_for(operator: OperatorRecord) -> Supervisor:
        asked.append(operator.cluster_arn)
        return Supervisor(store=store, kube=kubes[operator.cluster_arn], agents=AgentClient(agent_transport))

    supervisor_for.asked = asked  # type: ignore[attr-defined]
    return supervisor_for


def add_operator(
    store: FakeStore,
    cluster_arn: str = ARN_A,
    mode: OperatorMode = OperatorMode.SERVERLESS,
    status: OperatorStatus = OperatorStatus.ACTIVE,
) -> OperatorRecord:
    record = OperatorRecord(
        cluster_arn=cluster_arn, cluster_name=cluster_arn.rsplit("/", 1)[-1], mode=mode, status=status
    )
    return store.put(record, expected_version=None)


def job_obj(
    name: str = "llama",
    uid: str = UID,
    generation: int = 2,
    namespace: str = "team-a",
    status: dict[str, Any] | None = None,
) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": "sagemaker.amazonaws.com/v1",
        "kind": "HyperPodPyTorchJob",
        "metadata": {"name": name, "namespace": namespace, "uid": uid, "generation": generation},
        "spec": {
            "replicaSpecs": [
                {"name": "pod", "replicas": 2, "template": {"spec": {"containers": [{"name": "t"}]}}}
            ]
        },
    }
    if status is not None:
        obj["status"] = status
    return obj


def pod(name: str, job: str = "llama", uid: str = UID, namespace: str = "team-a") -> dict[str, Any]:
    labels = {JOB_LABEL: job, UID_LABEL: uid}
    return {
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "status": {"phase": "Running"},
    }


def job_record(store: FakeStore, **update: Any) -> JobRecord:
    base = JobRecord(cluster_arn=ARN_A, uid=UID, namespace="team-a", name="llama", generation=2)
    return store.put(base.model_copy(update=update), expected_version=None)


def run(store: FakeStore, sfn: FakeSfn, kubes: dict[str, FakeKube]):
    return reconcile(store, sfn, SM, supervisors(store, kubes))


# ============================================================== serverless mode


def test_a_new_job_is_claimed_and_one_execution_started():
    store, sfn = FakeStore(), FakeSfn()
    add_operator(store)
    kube = FakeKube([job_obj()])
    report = run(store, sfn, {ARN_A: kube})

    [cluster] = report.clusters
    assert cluster.error is None
    assert cluster.jobs == 1
    assert cluster.started == ["llama"]
    record = store.get_job(ARN_A, UID)
    assert record is not None
    assert record.phase is JobPhase.PENDING
    assert record.version == 1
    assert (record.namespace, record.name, record.generation, record.segment) == ("team-a", "llama", 2, 0)
    [(machine, name, payload)] = sfn.starts
    assert machine == SM
    assert name == f"{UID}-g2-0"
    assert payload == {
        "job": {
            "clusterArn": ARN_A,
            "namespace": "team-a",
            "name": "llama",
            "uid": UID,
            "generation": 2,
            "segment": 0,
        }
    }
    assert kube.closed  # the cluster's connection is released after each run
    assert "create_pod" not in kube.calls  # pods are the execution's business


def test_reconciling_twice_starts_one_execution():
    store, sfn = FakeStore(), FakeSfn()
    add_operator(store)
    kubes = {ARN_A: FakeKube([job_obj()])}
    run(store, sfn, kubes)
    second = run(store, sfn, kubes)
    assert len(sfn.starts) == 1
    assert second.clusters[0].started == []
    assert second.clusters[0].resumed == []
    assert store.get_job(ARN_A, UID).version == 1


def test_a_claim_lost_to_another_reconciler_starts_nothing():
    store, sfn = FakeStore(), FakeSfn()
    add_operator(store)
    job_record(store)  # claimed by someone else after our list_jobs

    class LateStore(FakeStore):
        pass

    late = LateStore()
    late.items = store.items
    late.list_jobs = lambda cluster_arn: []  # type: ignore[method-assign]
    report = run(late, sfn, {ARN_A: FakeKube([job_obj()])})
    assert sfn.starts == []
    assert report.clusters[0].started == []
    assert report.clusters[0].error is None


def test_a_claimed_job_whose_start_was_lost_is_started():
    store, sfn = FakeStore(), FakeSfn()
    add_operator(store)
    job_record(store)
    report = run(store, sfn, {ARN_A: FakeKube([job_obj()])})
    assert [name for _, name, _ in sfn.starts] == [f"{UID}-g2-0"]
    assert report.clusters[0].started == ["llama"]


def test_a_dead_execution_of_a_running_job_is_followed_by_the_next_segment():
    store, sfn = FakeStore(), FakeSfn()
    add_operator(store)
    seg0 = execution_arn(SM, execution_name(UID, 2, 0))
    job_record(store, phase=JobPhase.RUNNING, execution_arn=seg0, task_token="stale-token")
    sfn.statuses[seg0] = "FAILED"

    report = run(store, sfn, {ARN_A: FakeKube([job_obj()])})

    assert report.clusters[0].resumed == ["llama"]
    [(_, name, payload)] = sfn.starts
    assert name == f"{UID}-g2-1"
    assert payload["job"]["segment"] == 1
    record = store.get_job(ARN_A, UID)
    assert record.segment == 1
    assert record.task_token is None  # the dead execution's token wakes nobody
    assert record.phase is JobPhase.RUNNING


def test_a_resumed_job_is_not_resumed_again_on_the_next_run():
    store, sfn = FakeStore(), FakeSfn()
    add_operator(store)
    seg0 = execution_arn(SM, execution_name(UID, 2, 0))
    job_record(store, phase=JobPhase.RUNNING, execution_arn=seg0)
    sfn.statuses[seg0] = "FAILED"
    kubes = {ARN_A: FakeKube([job_obj()])}

    run(store, sfn, kubes)  # starts segment 1, which is RUNNING but has not admitted yet
    second = run(store, sfn, kubes)

    assert [name for _, name, _ in sfn.starts] == [f"{UID}-g2-1"]
    assert second.clusters[0].resumed == []


def test_a_running_execution_is_left_alone_and_a_finished_job_is_not_restarted():
    store, sfn = FakeStore(), FakeSfn()
    add_operator(store)
    seg0 = execution_arn(SM, execution_name(UID, 2, 0))
    job_record(store, phase=JobPhase.RUNNING, execution_arn=seg0)
    sfn.statuses[seg0] = "RUNNING"
    done_uid = "5f1c0d2e-0000-4000-8000-000000000002"
    store.put(
        JobRecord(cluster_arn=ARN_A, uid=done_uid, namespace="team-a", name="done", phase=JobPhase.COMPLETED),
        expected_version=None,
    )
    report = run(store, sfn, {ARN_A: FakeKube([job_obj(), job_obj(name="done", uid=done_uid)])})
    assert sfn.starts == []
    assert report.clusters[0].started == report.clusters[0].resumed == []


def test_a_deleted_job_has_its_execution_stopped_pods_deleted_and_item_removed():
    store, sfn = FakeStore(), FakeSfn()
    add_operator(store)
    seg0 = execution_arn(SM, execution_name(UID, 2, 0))
    job_record(store, phase=JobPhase.RUNNING, execution_arn=seg0)
    sfn.statuses[seg0] = "RUNNING"
    other_uid = "5f1c0d2e-0000-4000-8000-00000000000f"
    kube = FakeKube(
        jobs=[job_obj(name="other", uid=other_uid)],
        pods=[pod("llama-0"), pod("llama-1"), pod("other-0", job="other", uid=other_uid)],
    )

    report = run(store, sfn, {ARN_A: kube})

    assert report.clusters[0].deleted == ["llama"]
    assert sfn.stops == [seg0]
    assert sfn.statuses[seg0] == "ABORTED"
    assert sorted(kube.deleted) == [("team-a", "llama-0"), ("team-a", "llama-1")]
    assert [p["metadata"]["name"] for p in kube.pod_list] == ["other-0"]  # another job's pods stay
    assert store.get_job(ARN_A, UID) is None
    [event] = [e for e in store.events if e.uid == UID]
    assert event.kind == "Deleted"
    assert event.details["pods"] == ["llama-0", "llama-1"]
    assert "2 pods deleted" in event.message
    # the other job is new: claimed and started
    assert report.clusters[0].started == ["other"]


def test_a_job_being_deleted_counts_as_gone():
    store, sfn = FakeStore(), FakeSfn()
    add_operator(store)
    job_record(store, phase=JobPhase.RUNNING)
    terminating = job_obj()
    terminating["metadata"]["deletionTimestamp"] = "2026-03-04T10:00:00Z"
    kube = FakeKube([terminating], pods=[pod("llama-0")])
    report = run(store, sfn, {ARN_A: kube})
    assert report.clusters[0].deleted == ["llama"]
    assert sfn.starts == []
    assert store.get_job(ARN_A, UID) is None


# ============================================================== addon mode


def test_addon_cluster_jobs_are_observed_and_never_touched():
    store, sfn = FakeStore(), FakeSfn()
    add_operator(store, mode=OperatorMode.ADDON)
    running = job_obj(
        status={
            "conditions": [
                {"type": "Created", "status": "True"},
                {"type": "PodsRunning", "status": "False"},
                {"type": "Running", "status": "True"},
            ],
            "restartCount": 3,
        }
    )
    done_uid = "5f1c0d2e-0000-4000-8000-000000000002"
    done = job_obj(
        name="done",
        uid=done_uid,
        status={
            "conditions": [{"type": "Running", "status": "False"}, {"type": "Completed", "status": "True"}]
        },
    )
    kube = FakeKube([running, done], pods=[pod("llama-0")])

    report = run(store, sfn, {ARN_A: kube})

    [cluster] = report.clusters
    assert cluster.mode == "addon"
    assert sorted(cluster.observed) == ["done", "llama"]
    assert cluster.started == [] and sfn.starts == [] and sfn.stops == []
    assert kube.calls == ["custom_objects"]  # no pod listed, created, deleted or proxied
    record = store.get_job(ARN_A, UID)
    assert record.mode is OperatorMode.ADDON
    assert record.phase is JobPhase.OBSERVED
    assert record.restart_count == 3
    assert record.generation == 2
    assert [c["type"] for c in record.conditions] == ["Created", "PodsRunning", "Running"]
    assert store.get_job(ARN_A, done_uid).phase is JobPhase.COMPLETED

    # nothing changed: nothing rewritten
    again = run(store, sfn, {ARN_A: kube})
    assert again.clusters[0].observed == []
    assert store.get_job(ARN_A, UID).version == 1

    # a vanished addon job is not the control plane's to clean up
    kube.jobs = [done]
    third = run(store, sfn, {ARN_A: kube})
    assert third.clusters[0].deleted == []
    assert store.get_job(ARN_A, UID) is not None


def test_observed_record_reads_the_last_true_condition():
    def phase(*conditions: tuple[str, str]) -> JobPhase:
        obj = job_obj(status={"conditions": [{"type": t, "status": s} for t, s in conditions]})
        return observed_record(None, obj, ARN_A).phase

    assert phase() is JobPhase.OBSERVED
    assert phase(("Created", "True"), ("Running", "True")) is JobPhase.OBSERVED
    assert phase(("Running", "True"), ("Failed", "True")) is JobPhase.FAILED
    assert phase(("Running", "False"), ("Succeeded", "True")) is JobPhase.COMPLETED
    assert phase(("Failed", "False"), ("Running", "True")) is JobPhase.OBSERVED


def test_observed_record_keeps_the_existing_items_version_and_identity():
    existing = JobRecord(cluster_arn=ARN_A, uid=UID, namespace="team-a", name="llama", version=7)
    obj = job_obj(generation=5, status={"restartCount": "2"})
    updated = observed_record(existing, obj, ARN_A)
    assert updated.version == 7
    assert updated.mode is OperatorMode.ADDON
    assert (updated.generation, updated.restart_count) == (5, 2)


FAULT_AT = "2026-03-04T10:00:00Z"


def node_fault(at: str = FAULT_AT, node: str = "hyperpod-i-0abc", pod: str = "llama-0") -> dict[str, Any]:
    """A pending fault as node_health leaves it on an addon job's item (a JobFault's JSON dump)."""
    return {
        "kind": "node",
        "reason": "NodeFault: GPU unhealthy",
        "pod": pod,
        "node": node,
        "rank": None,
        "source": "node_health",
        "at": at,
        "event_id": "evt-1",
    }


def running_since(when: str) -> dict[str, Any]:
    return {
        "conditions": [
            {"type": "Created", "status": "True", "lastTransitionTime": "2026-03-04T09:00:00Z"},
            {"type": "Running", "status": "True", "lastTransitionTime": when},
        ],
        "restartCount": 1,
    }


def test_an_addon_jobs_pending_fault_is_settled_when_the_operator_recovers_it():
    store, sfn = FakeStore(), FakeSfn()
    add_operator(store, mode=OperatorMode.ADDON)
    job_record(store, mode=OperatorMode.ADDON, phase=JobPhase.OBSERVED, pending_faults=[node_fault()])
    kube = FakeKube([job_obj(status=running_since("2026-03-04T10:01:34.283Z"))])

    report = run(store, sfn, {ARN_A: kube})

    assert report.clusters[0].recovered == ["llama"]
    [event] = store.events
    assert event.kind == "Recovered"
    assert event.uid == UID and event.name == "llama" and event.namespace == "team-a"
    assert event.message == "AWS's operator recovered the job in 94283 ms"
    assert event.details["recovery_ms"] == 94283
    [fault] = event.details["faults"]
    assert (fault["node"], fault["pod"], fault["at"]) == ("hyperpod-i-0abc", "llama-0", FAULT_AT)
    assert "NodeFault" in fault["reason"]
    assert event.expiration is not None and event.expiration > event.at.timestamp() + 89 * 86400
    record = store.get_job(ARN_A, UID)
    assert record.pending_faults == []
    assert record.version == 2  # one conditional put: the conditions and the cleared fault
    assert record.restart_count == 1
    assert kube.calls == ["custom_objects"]  # still nothing touched

    # settled once: the next run finds nothing pending and writes nothing
    again = run(store, sfn, {ARN_A: kube})
    assert again.clusters[0].recovered == []
    assert len(store.events) == 1
    assert store.get_job(ARN_A, UID).version == 2


def test_an_addon_jobs_pending_fault_stays_until_running_again():
    store, sfn = FakeStore(), FakeSfn()
    add_operator(store, mode=OperatorMode.ADDON)
    job_record(store, mode=OperatorMode.ADDON, phase=JobPhase.OBSERVED, pending_faults=[node_fault()])
    # Running=True since before the fault, and restarting now: not recovered yet
    status = running_since("2026-03-04T09:30:00Z")
    status["conditions"].append(
        {"type": "Restarting", "status": "True", "lastTransitionTime": "2026-03-04T10:00:05Z"}
    )
    kube = FakeKube([job_obj(status=status)])

    report = run(store, sfn, {ARN_A: kube})

    assert report.clusters[0].recovered == []
    assert store.events == []
    assert store.get_job(ARN_A, UID).pending_faults == [node_fault()]


def test_a_recovery_settles_the_faults_before_it_and_keeps_a_later_one():
    later = node_fault(at="2026-03-04T10:05:00Z", node="hyperpod-i-0def", pod="llama-1")
    conditions = running_since("2026-03-04T10:01:00Z")["conditions"]
    recovery = addon_recovery([later, node_fault()], conditions)
    assert recovery is not None
    assert recovery.recovery_ms == 60_000
    assert recovery.recovered == [node_fault()]
    assert recovery.remaining == [later]
    assert addon_recovery([], conditions) is None
    assert addon_recovery([node_fault()], []) is None


# ============================================================== many clusters


def test_one_unreachable_cluster_does_not_stop_the_others():
    store, sfn = FakeStore(), FakeSfn()
    add_operator(store, ARN_B)  # listed first
    add_operator(store, ARN_A)
    report = run(store, sfn, {ARN_B: BrokenKube(), ARN_A: FakeKube([job_obj()])})
    by_arn = {c.cluster_arn: c for c in report.clusters}
    assert "did not answer" in by_arn[ARN_B].error
    assert by_arn[ARN_A].error is None
    assert by_arn[ARN_A].started == ["llama"]
    assert len(sfn.starts) == 1


def test_inactive_operators_are_skipped():
    store, sfn = FakeStore(), FakeSfn()
    for arn, status in ((ARN_A, OperatorStatus.INSTALLING), (ARN_B, OperatorStatus.FAILED)):
        add_operator(store, arn, status=status)
    kubes = {ARN_A: FakeKube([job_obj()]), ARN_B: FakeKube([job_obj()])}
    supervisor_for = supervisors(store, kubes)
    report = reconcile(store, sfn, SM, supervisor_for)
    assert report.clusters == []
    assert supervisor_for.asked == []  # no cluster connection opened
    assert sfn.starts == []


# ============================================================== StepFunctionsAdapter on moto


@pytest.fixture(scope="module")
def sfn_machine():
    """One mocked account and state machine for the module's Step Functions tests (moto's start is
    the slow part); each test uses its own execution names."""
    import boto3
    from moto import mock_aws

    with pytest.MonkeyPatch.context() as mp:
        for key in ("AWS_ENDPOINT_URL", "AWS_PROFILE", "AWS_ENDPOINT_URL_STEPFUNCTIONS"):
            mp.delenv(key, raising=False)
        for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
            mp.setenv(key, "testing")
        with mock_aws():
            client = boto3.client("stepfunctions", region_name=REGION)
            machine = client.create_state_machine(
                name="supervise-job",
                definition=json.dumps({"StartAt": "Go", "States": {"Go": {"Type": "Pass", "End": True}}}),
                roleArn=f"arn:aws:iam::{ACCOUNT}:role/supervise-job",
            )["stateMachineArn"]
            yield client, machine


@pytest.fixture
def sfn_adapter(sfn_machine):
    client, machine = sfn_machine
    return StepFunctionsAdapter(client=client), machine


def test_starting_the_same_execution_twice_gives_the_same_arn(sfn_adapter):
    adapter, machine = sfn_adapter
    name = execution_name(UID, 2, 0)
    before = len(adapter.client.list_executions(stateMachineArn=machine)["executions"])
    first = adapter.start_execution(machine, name, {"job": {"uid": UID}})
    again = adapter.start_execution(machine, name, {"job": {"uid": UID}})
    # a different input makes AWS (and moto) answer ExecutionAlreadyExists: still the same ARN
    other = adapter.start_execution(machine, name, {"job": {"uid": UID, "segment": 0}})
    assert first == again == other == execution_arn(machine, name)
    assert adapter.status(first) == "RUNNING"
    listed = adapter.client.list_executions(stateMachineArn=machine)["executions"]
    assert len(listed) == before + 1


def test_status_of_an_unknown_execution_is_none(sfn_adapter):
    adapter, machine = sfn_adapter
    assert adapter.status(execution_arn(machine, "no-such-execution")) is None


def test_stop_aborts_a_running_execution(sfn_adapter):
    adapter, machine = sfn_adapter
    arn = adapter.start_execution(machine, execution_name(UID, 2, 7), {})
    assert adapter.stop(arn, "job team-a/llama was deleted") is True
    assert adapter.status(arn) == "ABORTED"
    assert adapter.stop(execution_arn(machine, "no-such-execution"), "gone") is False


def test_wake_with_a_bogus_token(sfn_adapter):
    adapter, _ = sfn_adapter
    woken = adapter.wake("AAAAKgAAAAIAAAAAAAAAAbogus", {"woken": "fault"})
    if woken:
        pytest.skip(
            "moto 5.2 answers SendTaskSuccess with 200 for any token (it keeps no task tokens), so a "
            "stale token cannot be exercised on moto; the error-code mapping is tested with a stub client"
        )
    assert woken is False


class _RaisingClient:
    def __init__(self, code: str) -> None:
        self.code = code

    def send_task_success(self, **kwargs: Any) -> None:
        from botocore.exceptions import ClientError

        raise ClientError({"Error": {"Code": self.code, "Message": "no"}}, "SendTaskSuccess")


@pytest.mark.parametrize("code", ["InvalidToken", "TaskTimedOut", "TaskDoesNotExist"])
def test_wake_with_a_stale_token_is_false(code):
    assert StepFunctionsAdapter(client=_RaisingClient(code)).wake("token", {"woken": "fault"}) is False


def test_wake_raises_what_is_not_a_stale_token():
    with pytest.raises(ThrottledError):
        StepFunctionsAdapter(client=_RaisingClient("ThrottlingException")).wake("token", {})


# ============================================================== spec edits of a running job


def test_a_spec_edit_of_a_running_job_is_refused_with_a_condition_saying_why_once():
    record = JobRecord(
        cluster_arn=ARN_A, uid=UID, namespace="team-a", name="llama", generation=2, phase=JobPhase.RUNNING
    )
    assert spec_change_conditions(job_obj(generation=2), record, "2026-12-07T12:00:00Z") is None
    conditions = spec_change_conditions(job_obj(generation=3), record, "2026-12-07T12:00:00Z")
    (said,) = [c for c in conditions if c["type"] == "SpecChangeRejected"]
    assert said["status"] == "True" and said["reason"] == "SpecChangeNotSupported"
    assert "generation 3 while generation 2 runs" in said["message"] and "create it again" in said["message"]
    again = job_obj(generation=3, status={"conditions": conditions})
    assert spec_change_conditions(again, record, "2026-12-07T12:01:00Z") is None, "said once"
    finished = record.model_copy(update={"phase": JobPhase.COMPLETED})
    assert spec_change_conditions(job_obj(generation=3), finished, "2026-12-07T12:00:00Z") is None


class _StatusKube:
    """Answers a status patch as the API server does for a merge patch that carries
    ``metadata.resourceVersion``: 409 when the object has moved on since that version."""

    def __init__(self, current_version: str) -> None:
        self.current_version = current_version
        self.written: list[dict[str, Any]] = []

    def patch_custom_object_status(self, *args: Any, resource_version: str | None = None) -> dict:
        if resource_version is not None and resource_version != self.current_version:
            raise VersionConflictError("a concurrent writer changed the object (409 Conflict).")
        self.written.append(args[-1])
        return {}


def test_a_spec_edit_condition_is_written_only_on_the_object_as_listed():
    """The supervisor may set conditions between reconcile's list and its write (a resume sets
    Suspended False); the whole-list write of the stale conditions must not put the old ones back."""
    record = JobRecord(
        cluster_arn=ARN_A, uid=UID, namespace="team-a", name="llama", generation=2, phase=JobPhase.RUNNING
    )
    listed = job_obj(generation=3, status={"conditions": []})
    listed["metadata"]["resourceVersion"] = "41"
    sup = SimpleNamespace(kube=_StatusKube(current_version="42"), now=lambda: datetime(2026, 12, 7, 12))
    report = ClusterReport(cluster_arn=ARN_A, mode="serverless")
    _refuse_spec_change(sup, listed, record, report)
    assert sup.kube.written == [] and report.refused == []  # left to the next run, on fresh state
    sup.kube.current_version = "41"
    _refuse_spec_change(sup, listed, record, report)
    (written,) = sup.kube.written
    assert [c["type"] for c in written["conditions"]] == ["SpecChangeRejected"]
    assert report.refused == ["llama"]
