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

from hyperpod_control.exceptions import VersionConflictError
from hyperpod_control.models.agent import AgentAnswer, AgentStatus
from hyperpod_control.models.job_events import AgentStateEvent, PodEvent
from hyperpod_control.models.records import (
    JobEventRecord,
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
    handle_job_event,
    parse_job_event,
)

pytestmark = pytest.mark.unit

UID = "5d0c1f3e-1111-4a2b-9c3d-000000000001"
OTHER_CLUSTER = CLUSTER_ARN.replace("abcdef123456", "zzzzzz999999")
NOW = datetime(2025, 3, 4, 10, 20, 30, tzinfo=UTC)


# -- fakes ---------------------------------------------------------------------------------------


class FakeStore:
    """Store's interface over a dict, with its conditional-write semantics."""

    def __init__(self) -> None:
        self.items: dict[tuple[str, str], Any] = {}
        self.writes = 0

    def put(self, record: Any, *, expected_version: int | None) -> Any:
        current = self.items.get((record.pk, record.sk))
        if (expected_version is None and current is not None) or (
            expected_version is not None and (current is None or current.version != expected_version)
        ):
            raise VersionConflictError(f"{record.pk}/{record.sk}")
        new = record.model_copy(update={"version": (expected_version or 0) + 1})
        self.items[(new.pk, new.sk)] = new
        self.writes += 1
        return new

    def list_operators(self) -> list[OperatorRecord]:
        return [r for r in self.items.values() if isinstance(r, OperatorRecord)]

    def get_job(self, cluster_arn: str, uid: str) -> JobRecord | None:
        return self.items.get((f"CLUSTER#{cluster_arn}", f"JOB#{uid}"))

    def list_jobs(self, cluster_arn: str) -> list[JobRecord]:
        return [r for r in self.items.values() if isinstance(r, JobRecord) and r.cluster_arn == cluster_arn]

    def add_job_event(self, event: JobEventRecord) -> JobEventRecord:
        return self.put(event, expected_version=None)

    def job_history(self, uid: str) -> list[JobEventRecord]:
        return [r for r in self.items.values() if isinstance(r, JobEventRecord) and r.uid == uid]

    def snapshot(self) -> dict:
        return {k: v.model_dump(mode="json") for k, v in self.items.items()}


class FakeSfn:
    def __init__(self) -> None:
        self.woken: list[tuple[str, dict]] = []

    def wake(self, token: str, output: dict) -> bool:
        self.woken.append((token, output))
        return True


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
    def __init__(self, agent_answers: dict[str, AgentAnswer] | None = None, kube: FakeKube | None = None):
        self.store = FakeStore()
        self.sfn = FakeSfn()
        self.kube = kube or FakeKube()
        self.agents = FakeAgents(agent_answers or {})
        self.adapters = JobEventAdapters(
            store=self.store,
            sfn=self.sfn,
            kube_for=lambda operator: self.kube,
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
    world = World()
    world.operator()
    world.job()

    result = world.handle(pod_event())

    assert result.action == "fault" and result.recorded and result.woken
    assert world.kube.reads == []  # found through the JOB item's pod slots
    [fault] = world.store.get_job(CLUSTER_ARN, UID).pending_faults
    assert fault["kind"] == "pod" and fault["pod"] == "llama-1" and fault["rank"] == 1
    assert fault["node"] == "hyperpod-i-0b" and fault["source"] == "job_events"
    assert "OOMKilling" in fault["reason"] and fault["at"].startswith("2025-03-04T10:20:28")
    assert len(world.sfn.woken) == 1


@pytest.mark.parametrize("reason", ["OOMKilled", "Evicted", "Error"])
def test_each_fault_reason_counts(reason):
    world = World()
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


def test_handler_records_a_pod_fault_once_per_event_id(moto_aws, app_loader, context, store, ddb):
    app = app_loader("job_events")
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
