"""job_events (remediation issue, item 2): the agent's pushes and Kubernetes pod events wake their
job; a pushed fault is confirmed with the agent's /status first; malformed events are rejected
naming the field and change nothing; unknown jobs are recorded and dropped. Service logic on
in-memory fakes, the handler on moto."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import pytest
from unit_support import CLUSTER_ARN, TABLE

from hyperpod_control.models.agent import AgentAnswer, AgentStatus
from hyperpod_control.models.job_events import (
    AgentStateEvent,
    KubernetesEventDetail,
    ObservedPod,
    PodEvent,
)
from hyperpod_control.models.records import (
    JobPhase,
    JobRecord,
    OperatorMode,
    OperatorRecord,
    OperatorStatus,
    PodSlot,
)
from hyperpod_control.services.job_events import (
    JobEventAdapters,
    MalformedJobEvent,
    confirm_pod_fault,
    handle_job_event,
    parse_job_event,
)
from tests.fakes import FakeSfn, FakeStore

pytestmark = pytest.mark.unit

UID = "5d0c1f3e-1111-4a2b-9c3d-000000000001"
OTHER_CLUSTER = CLUSTER_ARN.replace("abcdef123456", "zzzzzz999999")
NOW = datetime(2025, 3, 4, 10, 20, 30, tzinfo=UTC)


# -- fakes ---------------------------------------------------------------------------------------


class FakeKube:
    def __init__(self, pods: dict[tuple[str, str], dict] | None = None) -> None:
        self.pods_by_name = pods or {}
        self.reads: list[tuple[str, str]] = []
        self.closed = 0

    def pods(self, namespace: str | None = None, *, label_selector: str = "", field_selector: str = ""):
        name = field_selector.removeprefix("metadata.name=")
        self.reads.append((namespace or "", name))
        found = self.pods_by_name.get((namespace or "", name))
        return [found] if found else []

    def close(self) -> None:
        self.closed += 1


class FakeAgents:
    def __init__(self, answers: dict[str, AgentAnswer]) -> None:
        self.answers = answers
        self.asked: list[tuple[str, list]] = []

    def statuses(self, namespace: str, pods: Any) -> dict[str, AgentAnswer]:
        pods = list(pods)
        self.asked.append((namespace, pods))
        return {pod: self.answers[pod] for pod, _ in pods if pod in self.answers}


class World:
    def __init__(
        self,
        agent_answers: dict[str, AgentAnswer] | None = None,
        kube: FakeKube | None = None,
        kubes: dict[str, FakeKube] | None = None,
    ):
        """``kube``: every cluster's Kubernetes API; ``kubes``: one per cluster ARN instead."""
        self.store = FakeStore()
        self.sfn = FakeSfn()
        self.kube = kube or FakeKube()
        self.kubes = kubes
        self.agents = FakeAgents(agent_answers or {})
        self.adapters = JobEventAdapters(
            store=self.store,
            sfn=self.sfn,
            kube_for=lambda operator: self.kubes[operator.cluster_arn] if self.kubes else self.kube,
            agents_for=lambda kube: self.agents,
            history_ttl_seconds=3600,
        )

    def operator(self, cluster_arn: str = CLUSTER_ARN, mode: OperatorMode = OperatorMode.SERVERLESS) -> None:
        self.store.put(
            OperatorRecord(
                cluster_arn=cluster_arn,
                cluster_name=cluster_arn.rsplit("/", 1)[-1],
                eks_cluster_name=f"eks-{cluster_arn.rsplit('/', 1)[-1]}",
                mode=mode,
                status=OperatorStatus.ACTIVE,
            ),
            expected_version=None,
        )

    def job(self, **changes: Any) -> JobRecord:
        fields: dict[str, Any] = {
            "cluster_arn": CLUSTER_ARN,
            "uid": UID,
            "namespace": "team-a",
            "name": "llama",
            "phase": JobPhase.RUNNING,
            "task_token": "token-1",
            "nnodes": 2,
            "spares": 1,
            "pods": [
                PodSlot(pod="llama-0", rank=0, node="hyperpod-i-0a", ip="10.0.0.10"),
                PodSlot(pod="llama-1", rank=1, node="hyperpod-i-0b", ip="10.0.0.11"),
                PodSlot(pod="llama-2", rank=None, node="hyperpod-i-0c", ip="10.0.0.12"),
            ],
        }
        record = JobRecord(**{**fields, **changes})
        return self.store.put(record, expected_version=None)

    def handle(self, event: dict):
        return handle_job_event(parse_job_event(copy.deepcopy(event)), self.adapters)


def answer(
    pod: str, status: str | None = None, *, gone: bool = False, error: str | None = None
) -> AgentAnswer:
    if gone:
        return AgentAnswer(pod=pod, ok=False, pod_gone=True, error="404")
    if error:
        return AgentAnswer(pod=pod, ok=False, error=error)
    body = {"status": status, "reason": "WorkerFault" if status == "faulted" else None}
    if status == "faulted":
        body["transitions"] = {"FAULTED": "2025-03-04T10:20:29Z"}
    return AgentAnswer(pod=pod, ok=True, status=AgentStatus.model_validate(body))


POD_UID = "3c2b1a09-3333-4d4e-8f7a-000000000003"  # the pod_event's involvedObject.uid


def k8s_pod(
    name: str,
    *,
    uid: str = POD_UID,
    phase: str = "Running",
    terminated: dict | None = None,
    reason: str | None = None,
    deleting: bool = False,
    namespace: str = "team-a",
) -> dict:
    """A core/v1 Pod as the API serves it (restartPolicy Never: a terminated container stays so)."""
    state = {"terminated": terminated} if terminated else {"running": {"startedAt": "2025-03-04T10:00:00Z"}}
    pod = {
        "metadata": {"name": name, "namespace": namespace, "uid": uid},
        "status": {"phase": phase, "containerStatuses": [{"name": "pytorch", "state": state}]},
    }
    if reason:
        pod["status"]["reason"] = reason
    if deleting:
        pod["metadata"]["deletionTimestamp"] = "2025-03-04T10:20:29Z"
    return pod


OOM_KILLED = {"exitCode": 137, "reason": "OOMKilled", "finishedAt": "2025-03-04T10:20:28Z"}
EXITED_1 = {"exitCode": 1, "reason": "Error", "finishedAt": "2025-03-04T10:20:28Z"}


def kube_with(*pods: dict) -> FakeKube:
    return FakeKube({(p["metadata"]["namespace"], p["metadata"]["name"]): p for p in pods})


# -- events --------------------------------------------------------------------------------------


def agent_event(status: str = "faulted", **detail: Any) -> dict:
    body = {
        "jobName": "llama",
        "namespace": "team-a",
        "jobUid": UID,
        "pod": "llama-1",
        "rank": 1,
        "status": status,
        "reason": "WorkerFault" if status == "faulted" else None,
        "message": "worker 3 exited with 1" if status == "faulted" else None,
        "faultCount": 0,
        "time": "2025-03-04T10:20:29.512Z",
    }
    body.update(detail)
    return {
        "version": "0",
        "id": "7f1e2d3c-0000-4000-8000-00000000a001",
        "detail-type": "HyperPod Agent State Change",
        "source": "hyperpod-control.agent",
        "account": "123456789012",
        "time": "2025-03-04T10:20:30Z",
        "region": "us-west-2",
        "resources": [],
        "detail": {k: v for k, v in body.items() if v is not None or k in ("reason", "message")},
    }


def pod_event(pod: str = "llama-1", reason: str = "OOMKilling", type_: str = "Warning", **extra: Any) -> dict:
    """A core/v1 Event as kubernetes-event-exporter's EventBridge receiver puts it."""
    detail = {
        "metadata": {
            "name": f"{pod}.17f9a0c2b3d4e5f6",
            "namespace": "team-a",
            "uid": "0b9a8c7d-2222-4e5f-8a9b-000000000002",
            "resourceVersion": "48213",
            "creationTimestamp": "2025-03-04T10:20:28Z",
        },
        "reason": reason,
        "message": "Memory cgroup out of memory: Killed process 4242 (python)",
        "source": {"component": "kubelet", "host": "hyperpod-i-0b"},
        "firstTimestamp": "2025-03-04T10:20:28Z",
        "lastTimestamp": "2025-03-04T10:20:28Z",
        "count": 1,
        "type": type_,
        "eventTime": None,
        "reportingComponent": "kubelet",
        "reportingInstance": "hyperpod-i-0b",
        "clusterName": "",
        "involvedObject": {
            "kind": "Pod",
            "namespace": "team-a",
            "name": pod,
            "uid": "3c2b1a09-3333-4d4e-8f7a-000000000003",
            "apiVersion": "v1",
            "resourceVersion": "48100",
            "fieldPath": "spec.containers{pytorch}",
        },
    }
    detail.update(extra)
    return {
        "version": "0",
        "id": "7f1e2d3c-0000-4000-8000-00000000b001",
        "detail-type": "Kubernetes Event",
        "source": "kubernetes-event-exporter",
        "account": "123456789012",
        "time": "2025-03-04T10:20:30Z",
        "region": "us-west-2",
        "resources": [],
        "detail": detail,
    }


# -- parsing -------------------------------------------------------------------------------------


def test_both_kinds_parse_into_their_models():
    assert isinstance(parse_job_event(agent_event()), AgentStateEvent)
    parsed = parse_job_event(pod_event())
    assert isinstance(parsed, PodEvent)
    assert parsed.detail.namespace == "team-a" and parsed.detail.is_pod_fault


def _without(event: dict, key: str) -> dict:
    event = copy.deepcopy(event)
    del event["detail"][key]
    return event


@pytest.mark.parametrize(
    ("event", "field"),
    [
        (_without(agent_event(), "jobUid"), "detail.jobUid"),
        (agent_event(status="exploded"), "detail.status"),
        ({**agent_event(), "detail": "faulted"}, "detail"),
        ({**agent_event(), "detail-type": "Something Else"}, "detail-type"),
        ({**agent_event(), "detail": {**agent_event()["detail"], "pod": ""}}, "detail.pod"),
        (_without(pod_event(), "involvedObject"), "detail.involvedObject"),
        ({**pod_event(), "detail": ["not", "an", "object"]}, "detail"),
        ("not an event", "(event)"),
    ],
)
def test_malformed_events_are_rejected_naming_the_field_and_change_nothing(event, field):
    world = World()
    world.operator()
    world.job()
    before = world.store.snapshot()

    with pytest.raises(MalformedJobEvent) as caught:
        parse_job_event(event)

    assert caught.value.reason.startswith(field), caught.value.reason
    assert world.store.snapshot() == before and world.sfn.woken == []


def test_a_pod_event_without_any_namespace_is_malformed():
    event = pod_event()
    del event["detail"]["involvedObject"]["namespace"]
    del event["detail"]["metadata"]["namespace"]
    with pytest.raises(MalformedJobEvent, match=r"involvedObject\.namespace"):
        parse_job_event(event)
    # the event's own namespace stands in for involvedObject's (omitempty in the API's JSON)
    event = pod_event()
    del event["detail"]["involvedObject"]["namespace"]
    assert parse_job_event(event).detail.namespace == "team-a"


# -- agent events --------------------------------------------------------------------------------


def test_agent_fault_confirmed_by_status_is_recorded_and_wakes_the_job():
    world = World({"llama-1": answer("llama-1", "faulted")})
    world.operator(OTHER_CLUSTER)  # tried first, holds no such job
    world.operator()
    world.job()

    result = world.handle(agent_event())

    assert result.action == "fault" and result.recorded and result.woken
    assert result.confirmed_status == "faulted" and result.cluster_arn == CLUSTER_ARN
    assert world.agents.asked == [("team-a", [("llama-1", "10.0.0.11")])]
    assert world.kube.closed == 1
    job = world.store.get_job(CLUSTER_ARN, UID)
    [fault] = job.pending_faults
    assert fault["kind"] == "worker" and fault["pod"] == "llama-1" and fault["rank"] == 1
    assert fault["node"] == "hyperpod-i-0b" and fault["source"] == "job_events"
    assert fault["event_id"] == agent_event()["id"]
    assert fault["at"].startswith("2025-03-04T10:20:29")
    assert "WorkerFault" in fault["reason"]
    assert world.sfn.woken == [("token-1", {"wokenBy": "job_events", "reason": fault["reason"]})]


def test_a_retried_agent_fault_is_not_added_twice():
    world = World({"llama-1": answer("llama-1", "faulted")})
    world.operator()
    world.job()
    world.handle(agent_event())

    again = world.handle(agent_event())

    assert not again.recorded and not again.woken
    assert len(world.store.get_job(CLUSTER_ARN, UID).pending_faults) == 1
    assert len(world.sfn.woken) == 1


def test_a_log_rule_fault_is_a_hang():
    world = World({"llama-1": answer("llama-1", "faulted")})
    world.agents.answers["llama-1"].status.reason = "LogHang_loss"
    world.operator()
    world.job()

    world.handle(agent_event(reason="LogHang_loss"))

    assert world.store.get_job(CLUSTER_ARN, UID).pending_faults[0]["kind"] == "hang"


@pytest.mark.parametrize(
    ("agent", "said"),
    [
        (answer("llama-1", "running"), "running"),
        (answer("llama-1", "ready"), "ready"),
        (answer("llama-1", error="HTTP 503"), "unreachable (HTTP 503)"),
    ],
)
def test_an_agent_fault_the_status_does_not_confirm_changes_nothing(agent, said):
    world = World({"llama-1": agent})
    world.operator()
    world.job()
    before = world.store.snapshot()

    result = world.handle(agent_event())

    assert result.accepted and result.action == "ignored" and not result.recorded
    assert result.confirmed_status == said and "not confirmed" in result.reason
    assert world.store.snapshot() == before and world.sfn.woken == []


def test_an_agent_fault_whose_pod_is_gone_is_a_pod_fault():
    world = World({"llama-1": answer("llama-1", gone=True)})
    world.operator()
    world.job()

    result = world.handle(agent_event())

    assert result.recorded and result.confirmed_status == "pod gone"
    fault = world.store.get_job(CLUSTER_ARN, UID).pending_faults[0]
    assert fault["kind"] == "pod" and fault["rank"] == 1


def test_a_completed_push_wakes_the_job_without_a_fault_or_asking_the_agent():
    world = World()
    world.operator()
    world.job()

    result = world.handle(agent_event(status="completed"))

    assert result.action == "woken" and result.woken and not result.recorded
    assert world.store.get_job(CLUSTER_ARN, UID).pending_faults == []
    assert world.agents.asked == []
    assert world.sfn.woken == [("token-1", {"wokenBy": "job_events", "reason": "agent of rank 1 completed"})]


def test_an_agent_event_for_an_unknown_uid_writes_history_and_is_dropped():
    world = World({"llama-1": answer("llama-1", "faulted")})
    world.operator()

    result = world.handle(agent_event())

    assert result.accepted and result.action == "dropped" and result.dropped == "unknown job"
    [entry] = world.store.job_history(UID)
    assert entry.kind == "UnknownJobEvent" and entry.details["eventId"] == agent_event()["id"]
    assert entry.expiration is not None
    assert world.sfn.woken == [] and world.agents.asked == []
    # a retried delivery writes the same entry, once
    world.handle(agent_event())
    assert len(world.store.job_history(UID)) == 1


def test_an_addon_job_gets_a_history_entry_only():
    world = World({"llama-1": answer("llama-1", "faulted")})
    world.operator(mode=OperatorMode.ADDON)
    world.job(mode=OperatorMode.ADDON, phase=JobPhase.OBSERVED)

    result = world.handle(agent_event())

    assert result.action == "history" and not result.recorded and not result.woken
    assert world.store.get_job(CLUSTER_ARN, UID).pending_faults == []
    [entry] = world.store.job_history(UID)
    assert entry.kind == "AgentEvent" and "faulted" in entry.message
    assert world.sfn.woken == [] and world.agents.asked == []


def test_events_of_a_finished_job_or_a_pod_not_in_it_change_nothing():
    world = World({"llama-1": answer("llama-1", "faulted")})
    world.operator()
    world.job(phase=JobPhase.COMPLETED)
    before = world.store.snapshot()
    assert world.handle(agent_event()).reason == "job finished (Completed)"
    assert world.handle(pod_event()).reason == "job finished (Completed)"
    assert world.handle(agent_event(pod="llama-9")).action == "ignored"
    assert world.store.snapshot() == before and world.sfn.woken == []


# -- pod events ----------------------------------------------------------------------------------


def test_a_pod_oom_event_records_a_pod_fault_with_the_slots_rank_and_wakes_the_job():
    world = World(kube=kube_with(k8s_pod("llama-1", phase="Failed", terminated=OOM_KILLED)))
    world.operator()
    world.job()

    result = world.handle(pod_event())

    assert result.action == "fault" and result.recorded and result.woken
    assert result.confirmed is True
    assert result.confirmed_status == "container pytorch terminated OOMKilled (exit code 137)"
    # found through the JOB item's pod slots; the one read is the confirmation
    assert world.kube.reads == [("team-a", "llama-1")] and world.kube.closed == 1
    [fault] = world.store.get_job(CLUSTER_ARN, UID).pending_faults
    assert fault["kind"] == "pod" and fault["pod"] == "llama-1" and fault["rank"] == 1
    assert fault["node"] == "hyperpod-i-0b" and fault["source"] == "job_events"
    assert "OOMKilling" in fault["reason"] and fault["at"].startswith("2025-03-04T10:20:28")
    assert len(world.sfn.woken) == 1


@pytest.mark.parametrize(
    ("reason", "pod"),
    [
        ("OOMKilled", k8s_pod("llama-2", phase="Failed", terminated=OOM_KILLED)),
        ("Evicted", k8s_pod("llama-2", phase="Failed", reason="Evicted")),
        ("Error", k8s_pod("llama-2", phase="Failed", terminated=EXITED_1)),
        ("Error", None),  # the pod is gone
    ],
)
def test_each_fault_reason_counts(reason, pod):
    world = World(kube=kube_with(pod) if pod else FakeKube())
    world.operator()
    world.job()
    assert world.handle(pod_event(pod="llama-2", reason=reason)).recorded
    assert world.store.get_job(CLUSTER_ARN, UID).pending_faults[0]["rank"] is None  # the spare


@pytest.mark.parametrize(
    ("reason", "type_", "kind"),
    [("Pulled", "Normal", "Pod"), ("Error", "Normal", "Pod"), ("OOMKilling", "Warning", "Node")],
)
def test_other_events_change_nothing(reason, type_, kind):
    world = World()
    world.operator()
    world.job()
    event = pod_event(reason=reason, type_=type_)
    event["detail"]["involvedObject"]["kind"] = kind
    before = world.store.snapshot()

    result = world.handle(event)

    assert result.accepted and result.action == "ignored" and "not a pod fault" in result.reason
    assert world.store.snapshot() == before


def test_a_pod_not_in_any_slot_is_looked_up_in_kubernetes_by_its_labels():
    kube = FakeKube(
        {
            ("team-a", "llama-7"): {
                "metadata": {
                    "name": "llama-7",
                    "labels": {"HPJob": "llama", "hyperpod.control-plane/job-uid": "gone-uid"},
                }
            }
        }
    )
    world = World(kube=kube)
    world.operator()
    world.job()

    result = world.handle(pod_event(pod="llama-7"))

    # its job's uid is known, but no JOB item: recorded in that uid's history, then dropped
    assert result.action == "dropped" and result.uid == "gone-uid"
    assert kube.reads == [("team-a", "llama-7")]
    [entry] = world.store.job_history("gone-uid")
    assert entry.kind == "UnknownJobEvent" and entry.cluster_arn == CLUSTER_ARN
    assert world.store.get_job(CLUSTER_ARN, UID).pending_faults == []


def test_the_exporters_labels_name_the_job_without_a_kubernetes_read():
    world = World()
    world.operator()
    job = world.job()
    world.store.put(job.model_copy(update={"pods": []}), expected_version=job.version)  # slots not known
    event = pod_event()
    event["detail"]["involvedObject"]["labels"] = {"hyperpod.control-plane/job-uid": UID}

    result = world.handle(event)

    assert result.action == "ignored" and result.reason == "the pod is not one of the job's pods now"
    assert world.kube.reads == []


def test_a_pod_event_for_an_unknown_pod_is_dropped_without_history():
    world = World()
    world.operator()

    result = world.handle(pod_event(pod="somebody-else"))

    assert result.accepted and result.dropped == "unknown job" and result.uid is None
    assert [k for k in world.store.items if not k[0].startswith("CLUSTER#")] == []


def test_a_pod_event_of_an_addon_job_gets_history_only():
    world = World()
    world.operator(mode=OperatorMode.ADDON)
    world.job(mode=OperatorMode.ADDON, phase=JobPhase.OBSERVED)

    result = world.handle(pod_event())

    assert result.action == "history"
    assert world.store.get_job(CLUSTER_ARN, UID).pending_faults == []
    assert [e.kind for e in world.store.job_history(UID)] == ["PodEvent"]
    assert world.sfn.woken == []


# -- pod faults are confirmed through the Kubernetes API ------------------------------------------


def _detail(reason: str = "OOMKilled", uid: str | None = POD_UID) -> KubernetesEventDetail:
    event = pod_event(reason=reason)
    if uid is None:
        del event["detail"]["involvedObject"]["uid"]
    return KubernetesEventDetail.model_validate(event["detail"])


@pytest.mark.parametrize(
    ("reason", "pod", "confirmed", "said"),
    [
        ("OOMKilled", None, True, "pod gone"),
        ("OOMKilling", k8s_pod("llama-1", phase="Failed", terminated=OOM_KILLED), True, "OOMKilled (exit"),
        ("OOMKilled", k8s_pod("llama-1", terminated=OOM_KILLED), True, "terminated OOMKilled"),
        ("Error", k8s_pod("llama-1", terminated=EXITED_1), True, "terminated Error (exit code 1)"),
        ("Evicted", k8s_pod("llama-1", phase="Failed", reason="Evicted"), True, "pod evicted"),
        ("Evicted", k8s_pod("llama-1", deleting=True), True, "pod terminating"),
        ("OOMKilled", k8s_pod("llama-1", phase="Failed", terminated=EXITED_1), True, "pod Failed"),
        # forged or stale: Kubernetes shows no such fault
        ("OOMKilled", k8s_pod("llama-1"), False, "pod Running, no container terminated OOMKilled"),
        ("OOMKilled", k8s_pod("llama-1", terminated=EXITED_1), False, "no container terminated OOMKilled"),
        ("Error", k8s_pod("llama-1", phase="Pending"), False, "pod Pending, no container terminated with"),
        ("Evicted", k8s_pod("llama-1"), False, "pod Running"),
        (
            "OOMKilled",
            k8s_pod("llama-1", uid="new-pod-uid", phase="Failed", terminated=OOM_KILLED),
            False,
            f"stale: pod llama-1 is uid new-pod-uid now, the event is about uid {POD_UID}",
        ),
    ],
)
def test_confirm_pod_fault_reads_what_the_api_shows(reason, pod, confirmed, said):
    observed = ObservedPod.from_api(pod) if pod else None
    got, text = confirm_pod_fault(_detail(reason), observed)
    assert (got, said in text) == (confirmed, True), text


def test_an_event_without_a_pod_uid_is_confirmed_by_the_fault_alone():
    observed = ObservedPod.from_api(k8s_pod("llama-1", uid="any", phase="Failed", terminated=OOM_KILLED))
    assert confirm_pod_fault(_detail(uid=None), observed)[0] is True


@pytest.mark.parametrize(
    "pod",
    [
        k8s_pod("llama-1"),  # forged: the pod runs, nothing terminated
        k8s_pod("llama-1", uid="recreated", phase="Failed", terminated=OOM_KILLED),  # stale: an older pod's
    ],
    ids=["forged", "stale"],
)
def test_an_unconfirmed_pod_fault_changes_nothing_and_says_why(pod):
    world = World(kube=kube_with(pod))
    world.operator()
    world.job()
    before = world.store.snapshot()

    result = world.handle(pod_event())

    assert result.accepted and result.action == "ignored" and not result.recorded and not result.woken
    assert result.confirmed is False and result.reason.startswith("pod fault not confirmed: ")
    assert result.confirmed_status in result.reason and result.cluster_arn == CLUSTER_ARN
    assert world.store.snapshot() == before and world.sfn.woken == []


# -- pod events are matched on their cluster ------------------------------------------------------


def _two_clusters(*, a: FakeKube | None = None, b: FakeKube | None = None) -> World:
    """Two supervised clusters, each with a running job 'llama' in team-a whose rank 1 is llama-1."""
    world = World(kubes={CLUSTER_ARN: a or FakeKube(), OTHER_CLUSTER: b or FakeKube()})
    world.operator()
    world.operator(OTHER_CLUSTER)
    world.job()
    world.job(cluster_arn=OTHER_CLUSTER, uid=OTHER_UID, task_token="token-b")
    return world


OTHER_UID = "5d0c1f3e-2222-4a2b-9c3d-000000000002"


def test_a_pod_event_naming_its_cluster_faults_only_that_clusters_job():
    failed = k8s_pod("llama-1", phase="Failed", terminated=OOM_KILLED)
    world = _two_clusters(a=kube_with(k8s_pod("llama-1", uid="a-pod")), b=kube_with(failed))

    result = world.handle(pod_event(clusterName="zzzzzz999999"))  # cluster B's HyperPod name

    assert result.action == "fault" and result.cluster_arn == OTHER_CLUSTER and result.uid == OTHER_UID
    assert len(world.store.get_job(OTHER_CLUSTER, OTHER_UID).pending_faults) == 1
    assert world.store.get_job(CLUSTER_ARN, UID).pending_faults == []
    assert world.sfn.woken == [("token-b", {"wokenBy": "job_events", "reason": result.reason})]
    assert world.kubes[CLUSTER_ARN].reads == []  # cluster A is not even asked


@pytest.mark.parametrize("name", [OTHER_CLUSTER, "eks-zzzzzz999999"])
def test_the_cluster_may_be_named_by_its_arn_or_its_eks_clusters_name(name):
    world = _two_clusters(b=kube_with(k8s_pod("llama-1", phase="Failed", terminated=OOM_KILLED)))
    assert world.handle(pod_event(clusterName=name)).cluster_arn == OTHER_CLUSTER


def test_a_pod_event_naming_another_cluster_changes_nothing():
    world = _two_clusters(a=kube_with(k8s_pod("llama-1", phase="Failed", terminated=OOM_KILLED)))
    before = world.store.snapshot()

    result = world.handle(pod_event(clusterName="somebody-elses-cluster"))

    assert result.accepted and result.action == "dropped" and result.dropped == "unknown cluster"
    assert "'somebody-elses-cluster' names no supervised cluster" in result.reason
    assert world.store.snapshot() == before and world.sfn.woken == []
    assert world.kubes[CLUSTER_ARN].reads == [] and world.kubes[OTHER_CLUSTER].reads == []


def test_a_pod_event_without_a_cluster_that_two_clusters_could_own_is_dropped_naming_them():
    world = _two_clusters()  # neither cluster's API tells them apart: neither has the pod now
    before = world.store.snapshot()

    result = world.handle(pod_event())

    assert result.action == "dropped" and result.dropped == "ambiguous cluster"
    assert "in 2 supervised clusters (abcdef123456, zzzzzz999999" in result.reason
    assert "set the exporter's clusterName" in result.reason
    assert world.store.snapshot() == before and world.sfn.woken == []


def test_a_pod_event_without_a_cluster_is_matched_by_the_pods_uid_when_one_cluster_has_it():
    failed = k8s_pod("llama-1", phase="Failed", terminated=OOM_KILLED)  # uid POD_UID, the event's
    world = _two_clusters(a=kube_with(k8s_pod("llama-1", uid="a-pod")), b=kube_with(failed))

    result = world.handle(pod_event())

    assert result.action == "fault" and result.cluster_arn == OTHER_CLUSTER
    assert world.store.get_job(CLUSTER_ARN, UID).pending_faults == []


def test_a_pod_event_without_a_cluster_found_through_the_api_of_two_clusters_is_dropped():
    labels = {"HPJob": "other", "hyperpod.control-plane/job-uid": "uid-x"}
    pod = k8s_pod("other-0")
    pod["metadata"]["labels"] = labels
    world = World(kubes={CLUSTER_ARN: kube_with(pod), OTHER_CLUSTER: kube_with(copy.deepcopy(pod))})
    world.operator()
    world.operator(OTHER_CLUSTER)

    result = world.handle(pod_event(pod="other-0"))

    assert result.dropped == "ambiguous cluster" and "their Kubernetes APIs" in result.reason
    assert world.store.job_history("uid-x") == []


def test_an_agent_event_whose_namespace_is_not_the_jobs_changes_nothing():
    world = World({"llama-1": answer("llama-1", "faulted")})
    world.operator()
    world.job()
    before = world.store.snapshot()

    result = world.handle(agent_event(namespace="team-b"))

    assert result.action == "ignored" and "namespace team-b is not the job's (team-a)" in result.reason
    assert world.store.snapshot() == before and world.agents.asked == []


# -- the handler (moto) --------------------------------------------------------------------------


def _items(ddb) -> list[dict]:
    return ddb.scan(TableName=TABLE)["Items"]


def test_handler_rejects_a_malformed_event_without_writing_anything(moto_aws, app_loader, context, ddb):
    app = app_loader("job_events")
    event = _without(agent_event(), "jobUid")

    result = app.lambda_handler(event, context)

    assert result == {
        "accepted": False,
        "eventId": event["id"],
        "action": "rejected",
        "reason": "detail.jobUid: Field required",
        "recorded": False,
        "woken": False,
    }
    assert _items(ddb) == []  # not even an idempotency record


def test_handler_records_a_pod_fault_once_per_event_id(
    moto_aws, app_loader, context, store, ddb, monkeypatch
):
    app = app_loader("job_events")
    # the cluster's Kubernetes API (confirming the fault): the pod really was OOM killed
    kube = kube_with(k8s_pod("llama-1", phase="Failed", terminated=OOM_KILLED))
    monkeypatch.setattr("hyperpod_control.adapters.kube.KubeAdapter", lambda *a, **k: kube)
    store.put(
        OperatorRecord(
            cluster_arn=CLUSTER_ARN,
            cluster_name="c",
            eks_cluster_name="e",
            mode=OperatorMode.SERVERLESS,
            status=OperatorStatus.ACTIVE,
        ),
        expected_version=None,
    )
    store.put(
        JobRecord(
            cluster_arn=CLUSTER_ARN,
            uid=UID,
            namespace="team-a",
            name="llama",
            phase=JobPhase.RUNNING,
            pods=[PodSlot(pod="llama-1", rank=1, node="hyperpod-i-0b")],
        ),
        expected_version=None,
    )

    first = app.lambda_handler(pod_event(), context)
    second = app.lambda_handler(pod_event(), type(context)())

    assert first["action"] == "fault" and first["recorded"] is True and first["woken"] is False  # no token
    assert second == first
    job = store.get_job(CLUSTER_ARN, UID)
    assert job.version == 2 and len(job.pending_faults) == 1
    assert [i["PK"]["S"] for i in _items(ddb) if i["PK"]["S"].startswith("IDEMPOTENCY#")] == [
        "IDEMPOTENCY#job_events"
    ]


def test_handler_drops_an_event_of_an_unknown_job(moto_aws, app_loader, context):
    app = app_loader("job_events")
    result = app.lambda_handler(pod_event(pod="nobody"), context)
    assert result["accepted"] is True and result["dropped"] == "unknown job"
