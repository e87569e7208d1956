"""node_health and the jobs on a failed node: in serverless mode the fault goes on
each affected job's JOB item and its execution is woken; in addon mode the job's history gets a
NodeFault entry and the AWS operator is left to recover it (``addon_recovery_ms`` reads how long it
took). Never a pod written, in either mode. In-memory fakes of the adapters."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from hyperpod_control.exceptions import DependencyUnavailableError, NodeActionError, VersionConflictError
from hyperpod_control.models.names import JOB_LABEL, UID_LABEL
from hyperpod_control.models.node_health import NodeRepairConfig
from hyperpod_control.models.records import (
    JobEventRecord,
    JobPhase,
    JobRecord,
    NodeHealth,
    NodeRecord,
    OperatorMode,
    OperatorRecord,
    PodSlot,
)
from hyperpod_control.services import node_health as nh
from hyperpod_control.services import node_jobs
from tests import fakes
from tests.fakes import FakeSfn

pytestmark = pytest.mark.unit

ARN = "arn:aws:sagemaker:us-west-2:123456789012:cluster/abcdef123456"
EKS_ARN = "arn:aws:eks:us-west-2:123456789012:cluster/ml-eks"
T0 = datetime(2026, 3, 4, 10, 0, 0, tzinfo=UTC)
NODE = "hyperpod-i-0aaa"
OTHER = "hyperpod-i-0bbb"
REASON = "HMA has detected fault type NvidiaErrorTerminate on this node and is unhealthy."
OFF = NodeRepairConfig()


def node_record(event_id: str = "ev-1") -> NodeRecord:
    return NodeRecord(
        cluster_arn=ARN,
        instance_id="i-0aaa",
        health_status=NodeHealth.UNHEALTHY,
        health_reason=REASON,
        repair_action="None",
        last_event_time=T0,
        last_event_id=event_id,
        failed_at=T0,
    )


def job(uid: str, name: str, *, token: str | None = "tok-1", phase: JobPhase = JobPhase.RUNNING) -> JobRecord:
    return JobRecord(
        cluster_arn=ARN,
        uid=uid,
        namespace="team",
        name=name,
        phase=phase,
        task_token=token,
        nnodes=2,
        pods=[
            PodSlot(pod=f"{name}-0", rank=0, node=OTHER),
            PodSlot(pod=f"{name}-1", rank=1, node=NODE),
            PodSlot(pod=f"{name}-2", rank=None, node=NODE),  # a spare
        ],
        version=3,
    )


def pod(name: str, node: str, labels: dict[str, str], namespace: str = "team") -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": namespace, "labels": labels, "resourceVersion": "7"},
        "spec": {"nodeName": node},
    }


def job_pod(job_name: str, index: int, node: str, uid: str | None = None) -> dict[str, Any]:
    labels = {JOB_LABEL: job_name, **({UID_LABEL: uid} if uid else {})}
    return pod(f"{job_name}-{index}", node, labels)


class FakeStore(fakes.FakeStore):
    """The cluster's OPERATOR item in ``mode``, the NODE item and the JOB items. node_health writes
    JOB items and history entries only; ``conflict_once`` makes the next JOB write lose the race
    to a concurrent writer (who moved the item on by one version)."""

    def __init__(self, mode: OperatorMode, record: NodeRecord, jobs: list[JobRecord] = ()) -> None:
        super().__init__(OperatorRecord(cluster_arn=ARN, cluster_name="c", mode=mode), record, *jobs)
        self.conflict_once = False

    def put(self, record, *, expected_version):
        if not isinstance(record, JobRecord | JobEventRecord):
            raise AssertionError(f"unexpected put of {type(record).__name__}")
        if isinstance(record, JobRecord) and self.conflict_once:  # a concurrent writer got there first
            self.conflict_once = False
            current = self.jobs[record.uid]
            self.jobs[record.uid] = current.model_copy(update={"version": current.version + 1})
            raise VersionConflictError("changed")
        return super().put(record, expected_version=expected_version)


class FakeSageMaker(fakes.FakeSageMaker):
    """A cluster under automatic recovery; these tests turn repair off, so none may be asked."""

    def __init__(self) -> None:
        super().__init__(recovery="Automatic", eks_arn=EKS_ARN)

    def batch_repair_nodes(self, cluster, action, ids):  # pragma: no cover - repair is off
        raise AssertionError("no repair expected")


class FakeKube:
    """A node, pods answered for the field selector ``spec.nodeName`` (and the label selector's
    keys), HyperPodPyTorchJobs; records every write so a test can see no pod was touched."""

    def __init__(self, pods: list[dict[str, Any]], jobs: dict[tuple[str, str], dict] | None = None) -> None:
        self.node_obj = {"metadata": {"name": NODE, "resourceVersion": "1", "labels": {}}, "spec": {}}
        self.all_pods = pods
        self.jobs = jobs or {}
        self.queries: list[tuple[Any, str, str]] = []
        self.node_patches: list[dict] = []
        self.pod_writes: list[Any] = []

    def node(self, name):
        return self.node_obj

    def patch_node(self, name, patch):
        self.node_patches.append(patch)
        meta = patch.get("metadata", {})
        self.node_obj["metadata"]["labels"].update(meta.get("labels", {}))
        self.node_obj["spec"].update(patch.get("spec", {}))
        return self.node_obj

    def pods(self, namespace=None, *, label_selector="", field_selector=""):
        self.queries.append((namespace, label_selector, field_selector))
        assert namespace is None and field_selector.startswith("spec.nodeName=")
        node = field_selector.split("=", 1)[1]
        keys = [k for k in label_selector.split(",") if k]
        return [
            p
            for p in self.all_pods
            if p["spec"]["nodeName"] == node and all(k in p["metadata"]["labels"] for k in keys)
        ]

    def custom_object(self, group, version, plural, namespace, name):
        assert (group, version, plural) == ("sagemaker.amazonaws.com", "v1", "hyperpodpytorchjobs")
        return self.jobs.get((namespace, name))

    def delete_pod(self, *args, **kwargs):  # pragma: no cover - must never be called
        self.pod_writes.append(("delete", args))

    def create_pod(self, *args, **kwargs):  # pragma: no cover - must never be called
        self.pod_writes.append(("create", args))

    def close(self):
        pass


def adapters(store: FakeStore, kube: FakeKube, sfn: FakeSfn) -> nh.NodeHealthAdapters:
    return nh.NodeHealthAdapters(store=store, sagemaker=FakeSageMaker(), kube_factory=lambda _: kube, sfn=sfn)


def serverless_world(**sfn_kw: Any):
    jobs = [job("uid-a", "alpha"), job("uid-b", "beta", token="tok-b")]
    pods = [
        job_pod("alpha", 0, OTHER, "uid-a"),  # another node: ignored
        job_pod("alpha", 1, NODE, "uid-a"),
        job_pod("beta", 2, NODE, "uid-b"),
        pod("web-0", NODE, {"app": "web"}),  # not a job's
        job_pod("gamma", 0, NODE),  # HPJob without our uid label: not a serverless job's pod
    ]
    record = node_record()
    store = FakeStore(OperatorMode.SERVERLESS, record, jobs)
    kube, sfn = FakeKube(pods), FakeSfn(**sfn_kw)
    return record, store, kube, sfn


# -- serverless -----------------------------------------------------------------------------------


def test_serverless_each_affected_job_gets_one_pending_fault_and_is_woken():
    record, store, kube, sfn = serverless_world()

    result = nh.act_on_node_change(record, True, adapters(store, kube, sfn), OFF)

    assert result.jobs_woken == ["team/alpha", "team/beta"]
    alpha, beta = store.jobs["uid-a"], store.jobs["uid-b"]
    (fault,) = alpha.pending_faults
    assert fault["kind"] == "node" and fault["pod"] == "alpha-1" and fault["node"] == NODE
    assert fault["rank"] == 1 and fault["source"] == "node_health" and fault["event_id"] == "ev-1"
    assert fault["reason"] == f"NodeUnhealthy: {REASON}"
    assert datetime.fromisoformat(fault["at"]) == T0
    (spare,) = beta.pending_faults
    assert spare["pod"] == "beta-2" and spare["rank"] is None  # a spare has no rank
    assert sorted(t for t, _ in sfn.woken) == ["tok-1", "tok-b"]
    assert all(out["wokenBy"] == "node_health" for _, out in sfn.woken)
    assert [r.woken for r in result.job_faults] == [True, True]
    assert kube.queries == [(None, f"{JOB_LABEL},{UID_LABEL}", f"spec.nodeName={NODE}")]
    assert kube.pod_writes == []
    assert store.nodes["i-0aaa"].handled_event_id == "ev-1"


def test_the_same_event_twice_keeps_one_fault_and_does_not_wake_again():
    record, store, kube, sfn = serverless_world()
    nh.act_on_node_change(record, True, adapters(store, kube, sfn), OFF)
    wakes, puts = len(sfn.woken), store.puts

    # a retry of the event (the NODE item marked unhandled), e.g. after a later step failed
    store.nodes["i-0aaa"] = store.nodes["i-0aaa"].model_copy(update={"handled_event_id": None})
    again = nh.act_on_node_change(record, False, adapters(store, kube, sfn), OFF)

    assert again.resumed and again.jobs_woken == []
    assert len(store.jobs["uid-a"].pending_faults) == 1 and len(store.jobs["uid-b"].pending_faults) == 1
    assert len(sfn.woken) == wakes and store.puts == puts
    assert all(not r.recorded for r in again.job_faults)


def test_a_job_without_a_token_is_recorded_not_woken():
    record, store, kube, sfn = serverless_world()
    store.jobs["uid-a"] = job("uid-a", "alpha", token=None)

    result = nh.act_on_node_change(record, True, adapters(store, kube, sfn), OFF)

    assert "team/alpha" in result.jobs_woken  # recorded: the execution reads it on its next poll
    assert len(store.jobs["uid-a"].pending_faults) == 1
    assert [t for t, _ in sfn.woken] == ["tok-b"]
    alpha = next(r for r in result.job_faults if r.job == "team/alpha")
    assert alpha.recorded and not alpha.woken


def test_a_stale_token_is_recorded_and_no_error():
    record, store, kube, sfn = serverless_world(answer=False)

    result = nh.act_on_node_change(record, True, adapters(store, kube, sfn), OFF)

    assert result.jobs_woken == ["team/alpha", "team/beta"]
    assert all(r.recorded and not r.woken for r in result.job_faults)
    assert store.nodes["i-0aaa"].action_error is None


def test_a_concurrent_writer_of_the_job_item_is_not_lost():
    record, store, kube, sfn = serverless_world()
    store.conflict_once = True

    nh.act_on_node_change(record, True, adapters(store, kube, sfn), OFF)

    assert len(store.jobs["uid-a"].pending_faults) == 1


def test_missing_and_finished_jobs_are_skipped_with_a_note():
    record, store, kube, sfn = serverless_world()
    del store.jobs["uid-a"]
    store.jobs["uid-b"] = job("uid-b", "beta", phase=JobPhase.COMPLETED)

    result = nh.act_on_node_change(record, True, adapters(store, kube, sfn), OFF)

    assert result.jobs_woken == [] and sfn.woken == []
    notes = {r.job: r.note for r in result.job_faults}
    assert notes == {"team/alpha": "no JOB item", "team/beta": "job finished (Completed)"}
    assert store.jobs["uid-b"].pending_faults == []


def test_a_failing_wake_is_a_retryable_node_action_error_and_the_retry_resumes():
    record, store, kube, sfn = serverless_world(error=DependencyUnavailableError("states down"))

    with pytest.raises(NodeActionError, match="states down") as raised:
        nh.act_on_node_change(record, True, adapters(store, kube, sfn), OFF)

    assert raised.value.result.plan.wake_jobs  # type: ignore[attr-defined]
    assert store.nodes["i-0aaa"].handled_event_id is None  # unhandled: Lambda's retry resumes it
    assert len(store.jobs["uid-a"].pending_faults) == 1  # recorded before the wake failed

    sfn.error = None
    retried = nh.act_on_node_change(record, False, adapters(store, kube, sfn), OFF)
    assert retried.resumed and store.nodes["i-0aaa"].handled_event_id == "ev-1"
    assert len(store.jobs["uid-a"].pending_faults) == 1  # deduped on pod+node


def test_a_healthy_node_wakes_no_job():
    record, store, kube, sfn = serverless_world()
    healthy = record.model_copy(update={"health_status": NodeHealth.HEALTHY, "failed_at": None})
    store.nodes["i-0aaa"] = healthy

    result = nh.act_on_node_change(healthy, True, adapters(store, kube, sfn), OFF)

    assert result.jobs_woken == [] and kube.queries == [] and sfn.woken == []


def test_job_pods_on_node_keeps_only_the_nodes_job_pods():
    pods = [
        job_pod("a", 0, NODE, "u"),
        job_pod("a", 1, OTHER, "u"),
        job_pod("b", 0, NODE),
        pod("x", NODE, {}),
    ]
    found = node_jobs.job_pods_on_node(pods, NODE, need_uid=True)
    assert [(p.pod, p.uid) for p in found] == [("a-0", "u")]
    assert [p.pod for p in node_jobs.job_pods_on_node(pods, NODE, need_uid=False)] == ["a-0", "b-0"]


# -- addon ------------------------------------------------------------------------------------------


def addon_world(with_item: bool = True):
    record = node_record()
    jobs = [job("uid-a", "alpha", token=None).model_copy(update={"mode": OperatorMode.ADDON})]
    store = FakeStore(OperatorMode.ADDON, record, jobs if with_item else [])
    pods = [
        pod("alpha-worker-0", NODE, {JOB_LABEL: "alpha"}),
        pod("alpha-worker-1", OTHER, {JOB_LABEL: "alpha"}),
        pod("web-0", NODE, {"app": "web"}),
    ]
    kube = FakeKube(pods, jobs={("team", "alpha"): {"metadata": {"name": "alpha", "uid": "uid-a"}}})
    return record, store, kube, FakeSfn()


def test_addon_a_job_on_the_node_gets_a_history_entry_and_no_wake_and_no_pod_write():
    record, store, kube, sfn = addon_world()

    result = nh.act_on_node_change(record, True, adapters(store, kube, sfn), OFF)

    (entry,) = store.events
    assert entry.kind == "NodeFault" and entry.uid == "uid-a" and entry.name == "alpha"
    assert NODE in entry.message and REASON in entry.message
    assert entry.details == {"node": NODE, "pod": "alpha-worker-0", "eventId": "ev-1", "healthReason": REASON}
    (fault,) = store.jobs["uid-a"].pending_faults
    assert fault["pod"] == "alpha-worker-0" and fault["node"] == NODE
    assert sfn.woken == [] and result.jobs_woken == []
    assert kube.pod_writes == [] and kube.queries == [(None, JOB_LABEL, f"spec.nodeName={NODE}")]
    assert kube.node_obj["metadata"]["labels"] == {
        "sagemaker.amazonaws.com/node-health-status": "Unschedulable"
    }


def test_addon_a_retried_event_writes_the_history_entry_once():
    record, store, kube, sfn = addon_world()
    nh.act_on_node_change(record, True, adapters(store, kube, sfn), OFF)
    store.nodes["i-0aaa"] = store.nodes["i-0aaa"].model_copy(update={"handled_event_id": None})

    nh.act_on_node_change(record, False, adapters(store, kube, sfn), OFF)

    assert len(store.events) == 1 and len(store.jobs["uid-a"].pending_faults) == 1


def test_addon_a_job_not_recorded_yet_still_gets_its_history():
    record, store, kube, sfn = addon_world(with_item=False)

    result = nh.act_on_node_change(record, True, adapters(store, kube, sfn), OFF)

    assert len(store.events) == 1
    assert [(r.job, r.recorded) for r in result.job_faults] == [("team/alpha", False)]


def test_addon_a_pod_whose_job_is_gone_is_skipped():
    record, store, kube, sfn = addon_world()
    kube.jobs.clear()

    result = nh.act_on_node_change(record, True, adapters(store, kube, sfn), OFF)

    assert store.events == [] and store.jobs["uid-a"].pending_faults == []
    assert result.job_faults[0].note == "no HyperPodPyTorchJob of that name"


# -- addon_recovery_ms ------------------------------------------------------------------------------


def cond(kind: str, status: str, at: datetime, message: str = "") -> dict[str, Any]:
    return {
        "type": kind,
        "status": status,
        "lastTransitionTime": at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "message": message,
    }


def test_recovery_is_the_first_running_after_the_fault():
    conditions = [
        cond("Running", "True", T0 - timedelta(minutes=5)),  # before the fault: not the recovery
        cond("Running", "True", T0 + timedelta(seconds=150)),
        cond("Running", "True", T0 + timedelta(seconds=400)),
    ]
    assert node_jobs.addon_recovery_ms(T0, conditions) == 150_000


def test_the_operators_own_figure_is_preferred():
    conditions = [
        cond("Running", "True", T0 + timedelta(seconds=100)),
        cond(
            "Running",
            "True",
            T0 + timedelta(seconds=96),
            "The fault of reason NodeFault was remediated in 94283 milliseconds",
        ),
    ]
    assert node_jobs.addon_recovery_ms(T0, conditions) == 94283


def test_an_old_remediation_message_does_not_count():
    old = cond(
        "Running",
        "True",
        T0 - timedelta(seconds=10),
        "The fault of reason NodeFault was remediated in 5 milliseconds",
    )
    assert node_jobs.addon_recovery_ms(T0, [old]) is None


@pytest.mark.parametrize(
    "conditions",
    [
        [],
        [cond("Running", "False", T0 + timedelta(seconds=5))],
        [cond("Restarting", "True", T0 + timedelta(seconds=5))],
        [{"type": "Running", "status": "True"}],  # no time
        [{"type": "Running", "status": "True", "lastTransitionTime": "not a time"}],
    ],
)
def test_not_recovered_yet(conditions):
    assert node_jobs.addon_recovery_ms(T0, conditions) is None


def test_a_naive_fault_time_is_utc():
    naive = T0.replace(tzinfo=None)
    assert node_jobs.addon_recovery_ms(naive, [cond("Running", "True", T0 + timedelta(seconds=2))]) == 2000
