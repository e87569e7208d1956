"""The supervisor drives AWS's ``hyperpod-elastic-agent`` as well as this project's agent: it reads
their ``/status`` as each writes it (strings for ranks and flags), starts a spare only where the
agent holds a spare's workers, and turns a job that stopped making sense (a spare running
workers, a rank run twice, a rank straggling behind completed peers) into a fault naming which.
The agents here are fakes answering as AWS's agent 1.1.3 and ours do (README, "The agent")."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from test_supervisor import UID, job, job_obj, running_record

from hyperpod_control.adapters.agents import AgentCall, AgentClient
from hyperpod_control.models.agent import AgentAnswer, AgentStatus
from hyperpod_control.models.node_health import HEALTH_LABEL
from hyperpod_control.models.records import JobPhase, JobRecord, PodSlot
from hyperpod_control.services.supervision import judge_round, misbehaviour, spares_held, start_calls
from tests.fakes import FakeStore

pytestmark = pytest.mark.unit

NOW = datetime(2026, 3, 4, 10, 0, tzinfo=UTC)
V1 = "2026-03-04T09:59:00.000000Z"


def stamp(seconds_before_now: float) -> str:
    """An agent's transition time: AWS's agent writes isoformat with +00:00, ours with Z."""
    return (NOW - timedelta(seconds=seconds_before_now)).isoformat()


def aws(status: str, mode: str = "process_level_restart", **extra: Any) -> dict[str, Any]:
    """``/status`` as AWS's agent 1.1.3 answers it: ``spare`` is the string "True" in its
    process-restart agent whatever /start said (it never changes it), ranks are strings."""
    return {
        "status": status,
        "transitions": {"READY": stamp(600), **extra.pop("transitions", {})},
        "agent_version": "1.1.3",
        "restartMode": mode,
        "spare": "True",
        **extra,
    }


def ours(status: str, **extra: Any) -> dict[str, Any]:
    return {
        "status": status,
        "transitions": {"READY": stamp(600), **extra.pop("transitions", {})},
        "agent_version": "0.1.0",
        "restartMode": "process_level_restart",
        "spare": "False",
        "holds_spares": "True",
        **extra,
    }


def parsed(body: dict[str, Any]) -> AgentStatus:
    return AgentStatus.model_validate(body)


def answers_of(bodies: dict[str, dict[str, Any]]) -> dict[str, AgentAnswer]:
    return {pod: AgentAnswer(pod=pod, ok=True, status=parsed(body)) for pod, body in bodies.items()}


# ============================================================== reading /status


@pytest.mark.parametrize(
    ("rank", "spare", "want"),
    [("0", "True", (0, True)), (0, True, (0, True)), ("3", "False", (3, False)), (None, None, (None, None))],
)
def test_ranks_and_flags_read_as_strings_or_json_values(rank, spare, want):
    body: dict[str, Any] = {"status": "running"}
    if rank is not None:
        body.update(assigned_rank=rank, spare=spare)
    status = parsed(body)
    assert (status.assigned_rank, status.spare) == want


@pytest.mark.parametrize(
    ("body", "holds"),
    [
        (aws("ready"), False),  # process restart: ignores spare
        (aws("ready", mode="in_process_restart"), True),  # holds spares at its barrier
        (ours("ready"), True),
        (ours("ready", restartMode="in_process_restart"), True),
        ({"status": "ready"}, False),  # an agent that says nothing is not trusted with a spare
    ],
    ids=["aws-plr", "aws-ipr", "ours-plr", "ours-ipr", "unknown"],
)
def test_which_agents_hold_a_spares_workers(body, holds):
    assert parsed(body).holds_spares() is holds


# ============================================================== starting spares


def test_a_spare_whose_agent_ignores_spare_gets_no_start():
    record = running_record(nnodes=2, spares=2)
    answers = answers_of({"llama-2": aws("ready"), "llama-3": aws("ready", mode="in_process_restart")})
    calls = {c.pod: c.body for c in start_calls(record, job(replicas=2, spares=2), V1, spares_held(answers))}
    assert set(calls) == {"llama-0", "llama-1", "llama-3"}, "the process-restart spare stays READY"
    assert calls["llama-3"]["spare"] is True and 0 <= calls["llama-3"]["rank"] < 2
    assert [calls[p]["spare"] for p in ("llama-0", "llama-1")] == [False, False]


# ============================================================== a job that stopped making sense


def running(rank: int | None, body=aws, **extra: Any) -> dict[str, Any]:
    fields = {"ipversion": V1, "transitions": {"RUNNING": stamp(60)}, **extra}
    if rank is not None:
        fields["assigned_rank"] = str(rank)
    return body("running", **fields)


def judge(bodies: dict[str, dict[str, Any]], record: JobRecord | None = None, straggler_s=None):
    record = record or running_record(ip_version=V1)
    pods = {s.pod: {"metadata": {"name": s.pod}, "status": {"phase": "Running"}} for s in record.pods}
    return judge_round(record, pods, answers_of(bodies), NOW, straggler_s=straggler_s)


def test_a_spare_standing_by_is_no_fault_in_either_agent():
    assert judge({"llama-0": running(0), "llama-1": running(1), "llama-2": aws("ready")}).next == "running"
    ours_spare = running(0, ours, spare="True")  # /started as a spare: running, holding its workers
    assert judge({"llama-0": running(0), "llama-1": running(1), "llama-2": ours_spare}).next == "running"


@pytest.mark.parametrize(
    "spare",
    [running(0), running(0, ours, spare="False")],
    ids=["aws-plr-started-as-spare", "ours-told-it-is-no-spare"],
)
def test_a_spare_running_workers_is_a_fault_saying_so(spare):
    verdict = judge({"llama-0": running(0, ours), "llama-1": running(1, ours), "llama-2": spare})
    assert verdict.next == "fault"
    (fault,) = verdict.faults
    assert (fault.pod, fault.rank, fault.kind) == ("llama-2", None, "agent")
    assert fault.reason.startswith("spare (llama-2): SpareRunsWorkers: its agent runs workers as rank 0")


def test_two_agents_running_one_rank_is_a_fault_of_the_one_whose_slot_holds_another():
    verdict = judge({"llama-0": running(0, ours), "llama-1": running(0, ours), "llama-2": aws("ready")})
    assert verdict.next == "fault"
    (fault,) = verdict.faults
    assert fault.pod == "llama-1" and fault.rank == 1
    assert "DuplicateRank: rank 0 is run by llama-0, llama-1 at once" in fault.reason


def test_a_rank_left_running_far_longer_than_its_completed_peers_is_a_straggler():
    done = aws("completed", ipversion=V1, transitions={"RUNNING": stamp(425), "COMPLETED": stamp(400)})
    still = running(0, transitions={"RUNNING": stamp(425)})
    bodies = {"llama-0": still, "llama-1": done, "llama-2": aws("ready")}
    assert judge(bodies).next == "running", "no bound given: no straggler rule"
    assert judge(bodies, straggler_s=500).next == "running", "within the bound"
    verdict = judge(bodies, straggler_s=300)
    (fault,) = verdict.faults
    assert (fault.pod, fault.kind) == ("llama-0", "hang")
    assert "RankStraggling: still running after 425 s while 1 rank(s) completed within 25 s" in fault.reason


def test_misbehaviour_reads_only_agents_that_run_workers():
    record = running_record(nnodes=2, spares=1, ip_version=V1)
    # our spare /started as a spare reports the placeholder rank 0 beside rank 0: no duplicate
    statuses = {"llama-0": parsed(running(0, ours)), "llama-2": parsed(running(0, ours, spare="True"))}
    assert misbehaviour(record, statuses, NOW) == {}


# ============================================================== the steps, with fake agents


class Kube:
    """The job, its pods Running on healthy nodes, and nothing else."""

    def __init__(self, record: JobRecord) -> None:
        self.job = job_obj(replicas=record.nnodes, spares=record.spares)
        self.record = record
        self.patched: list[dict[str, Any]] = []

    def custom_object(self, *args: Any) -> dict[str, Any]:
        assert self.job["metadata"]["uid"] == UID
        return self.job

    def pods(self, namespace: str, label_selector: str) -> list[dict[str, Any]]:
        return [
            {
                "metadata": {"name": s.pod},
                "spec": {"nodeName": s.node},
                "status": {"phase": "Running", "podIP": s.ip},
            }
            for s in self.record.pods
        ]

    def nodes(self) -> list[dict[str, Any]]:
        return [
            {
                "metadata": {"name": s.node, "labels": {HEALTH_LABEL: "Schedulable"}},
                "status": {"conditions": [{"type": "Ready", "status": "True"}]},
            }
            for s in self.record.pods
        ]

    def patch_custom_object_status(self, *args: Any) -> None:
        self.patched.append(args[-1])

    def create_event(self, namespace: str, body: dict[str, Any]) -> None:
        pass


class Agents:
    """Fake agents behind the real AgentClient: each pod answers ``/status`` from its current body
    (a test changes it between rounds) and records every call."""

    def __init__(self, bodies: dict[str, dict[str, Any]]) -> None:
        self.bodies = bodies
        self.calls: list[AgentCall] = []
        self._lock = threading.Lock()

    def __call__(self, call: AgentCall) -> Any:
        with self._lock:
            self.calls.append(call)
        return self.bodies[call.pod] if call.path == "/status" else None


def supervisor(record: JobRecord, bodies: dict[str, dict[str, Any]]):
    from hyperpod_control.models.supervisor import StepInput, SupervisedJob
    from hyperpod_control.services.supervisor import Supervisor, SupervisorConfig

    agents = Agents(bodies)
    sup = Supervisor(
        store=FakeStore(record),
        kube=Kube(record),
        agents=AgentClient(agents, sleep=lambda _: None),
        config=SupervisorConfig(),
        now=lambda: NOW,
    )
    ref = SupervisedJob(
        cluster_arn=record.cluster_arn, namespace=record.namespace, name=record.name, uid=record.uid
    )
    return sup, agents, StepInput(job=ref)


@pytest.mark.parametrize(("spare_body", "started"), [(aws("ready"), False), (ours("ready"), True)])
def test_start_agents_starts_a_spare_only_where_its_agent_holds_it(spare_body, started):
    from hyperpod_control.services.supervisor import start_agents

    record = running_record(phase=JobPhase.CREATING)
    record = record.model_copy(update={"pods": [p.model_copy(update={"rank": None}) for p in record.pods]})
    sup, agents, request = supervisor(
        record, {"llama-0": aws("ready"), "llama-1": aws("ready"), "llama-2": spare_body}
    )
    assert start_agents(request, sup).next == "monitor"
    starts = {c.pod: c.body for c in agents.calls if c.path == "/start"}
    assert ("llama-2" in starts) is started
    assert [c.pod for c in agents.calls if c.path == "/status"] == ["llama-2"], "the spare read first"
    if started:
        assert starts["llama-2"]["spare"] is True
    assert {p: starts[p]["rank"] for p in ("llama-0", "llama-1")} == {"llama-0": 0, "llama-1": 1}
    assert [s.rank for s in sup.store.jobs[UID].pods] == [0, 1, None]
    (started_event,) = [e for e in sup.store.events if e.kind == "Started"]
    how = "started as a spare" if started else "READY, no /start until promoted"
    assert started_event.details["standby"]["llama-2"].startswith(how), started_event.details


@pytest.mark.parametrize(
    ("round_two", "says"),
    [
        ({"llama-2": running(0)}, "SpareRunsWorkers"),
        ({"llama-1": running(0, ours)}, "DuplicateRank: rank 0"),
    ],
    ids=["spare-runs-workers", "duplicate-rank"],
)
def test_a_misbehaving_agent_is_a_fault_by_the_next_poll_round(round_two, says):
    from hyperpod_control.services.supervisor import poll

    record = running_record(ip_version=V1, phase=JobPhase.RUNNING)
    bodies = {"llama-0": running(0, ours), "llama-1": running(1, ours), "llama-2": aws("ready")}
    sup, agents, request = supervisor(record, bodies)
    first = poll(request, sup)
    assert first.next == "running", first.reason
    assert not [c for c in agents.calls if c.path == "/start"], "a standing-by AWS spare is not started"
    bodies.update(round_two)
    second = poll(request, sup)
    assert second.next == "fault" and says in (second.reason or ""), second.reason


def test_a_replacement_spare_whose_agent_ignores_spare_joins_without_a_start():
    from hyperpod_control.services.supervisor import poll

    record = running_record(ip_version=V1, phase=JobPhase.RUNNING)
    pods = [*record.pods[:2], PodSlot(pod="llama-3")]
    record = record.model_copy(update={"pods": pods})
    sup, agents, request = supervisor(record, {})
    sup.kube.record = record.model_copy(
        update={"pods": [*pods[:2], PodSlot(pod="llama-3", node="node-3", ip="10.0.0.13")]}
    )
    agents.bodies.update({"llama-0": running(0, ours), "llama-1": running(1, ours), "llama-3": aws("ready")})
    for _ in range(2):
        assert poll(request, sup).next == "running"
    assert not [c for c in agents.calls if c.path == "/start"]
    joined = [e for e in sup.store.events if e.kind == "SpareJoined"]
    assert len(joined) == 1, "it joins once, not every round it stands by"
    assert sup.store.jobs[UID].pods[-1].ip == "10.0.0.13"


def test_remediating_a_spare_that_runs_workers_stops_it_with_the_ranks_and_starts_only_the_ranks():
    from hyperpod_control.services.supervisor import remediate

    record = running_record(ip_version=V1, phase=JobPhase.RUNNING)
    bodies = {"llama-0": running(0), "llama-1": running(1), "llama-2": running(0)}
    sup, agents, request = supervisor(record, bodies)
    recorded = agents.__call__

    def answer(call: AgentCall) -> Any:  # a /stop takes an agent back to READY, as both agents do
        if call.path == "/stop":
            bodies[call.pod] = aws("ready", ipversion=V1)
        return recorded(call)

    sup.agents.transport = answer
    result = remediate(request, sup)
    assert result.next == "monitor", result.reason
    assert "SpareRunsWorkers" in (result.reason or "")
    assert sorted(c.pod for c in agents.calls if c.path == "/stop") == ["llama-0", "llama-1", "llama-2"]
    assert sorted(c.pod for c in agents.calls if c.path == "/start") == ["llama-0", "llama-1"]
    assert [s.rank for s in sup.store.jobs[UID].pods] == [0, 1, None], "the spare stands by again"
    assert sup.store.jobs[UID].restart_count == 1


def test_a_retried_start_that_our_agent_refuses_with_409_stops_it_and_starts_it_again():
    """A StartAgents retried after its first /start reached an agent: AWS's agent takes a second
    /start, ours answers 409 while it runs; the step stops it and starts it under its own table."""
    from hyperpod_control.exceptions import InvalidInputError
    from hyperpod_control.services.supervisor import start_agents

    record = running_record(phase=JobPhase.CREATING, spares=0)
    record = record.model_copy(update={"pods": [p.model_copy(update={"rank": None}) for p in record.pods]})
    bodies = {"llama-0": ours("ready"), "llama-1": running(1, ours)}
    sup, agents, request = supervisor(record, bodies)
    recorded = agents.__call__

    def answer(call: AgentCall) -> Any:
        recorded(call)
        if call.path == "/stop":
            bodies[call.pod] = ours("ready")
        if call.path == "/start":
            if bodies[call.pod]["status"] != "ready":
                raise InvalidInputError(f"agent {call.pod} refused POST /start (409): state is RUNNING")
            bodies[call.pod] = running(call.body["rank"], ours)
        return bodies[call.pod] if call.path == "/status" else None

    sup.agents.transport = answer
    result = start_agents(request, sup)
    assert result.next == "monitor", result.reason
    assert [(c.pod, c.path) for c in agents.calls if c.pod == "llama-1" and c.path != "/status"] == [
        ("llama-1", "/start"),
        ("llama-1", "/stop"),
        ("llama-1", "/start"),
    ]
    assert [c.pod for c in agents.calls if c.path == "/start"].count("llama-0") == 1
