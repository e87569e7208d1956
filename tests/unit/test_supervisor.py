"""The supervisor's pure decisions: the pods it builds from a job, which pod takes which rank, the
/start bodies it sends, and what a poll round, a readiness check and the end of a job decide."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from hyperpod_control.models.agent import AgentAnswer, AgentState, AgentStatus
from hyperpod_control.models.job import CleanPodPolicy, HyperPodPytorchJob, parse_job
from hyperpod_control.models.names import JOB_LABEL, UID_LABEL
from hyperpod_control.models.node_health import HEALTH_LABEL
from hyperpod_control.models.records import JobRecord, PodSlot
from hyperpod_control.services.supervision import (
    MASTER_PORT,
    agents_ready,
    assign_ranks,
    build_pod,
    clean_targets,
    conditions_after,
    judge_round,
    node_trouble,
    node_troubles,
    pod_failure,
    silence,
    stale_status,
    start_calls,
    unreachable,
)
from tests.fakes import FakeStore

pytestmark = pytest.mark.unit

ARN = "arn:aws:sagemaker:us-west-2:123456789012:cluster/abcdef123456"
UID = "5f1c0d2e-0000-4000-8000-000000000001"
HEALTH = {"key": HEALTH_LABEL, "operator": "In", "values": ["Schedulable"]}


def job_obj(replicas: int = 2, spares: int = 1, **spec_extra: Any) -> dict[str, Any]:
    return {
        "apiVersion": "sagemaker.amazonaws.com/v1",
        "kind": "HyperPodPyTorchJob",
        "metadata": {"name": "llama", "namespace": "team-a", "uid": UID, "generation": 2},
        "spec": {
            "nprocPerNode": "8",
            "replicaSpecs": [
                {
                    "name": "pod",
                    "replicas": replicas,
                    "spares": spares,
                    "template": {
                        "metadata": {
                            "labels": {"team": "ml", JOB_LABEL: "someone-elses"},
                            "annotations": {"note": "keep me"},
                        },
                        "spec": {
                            "serviceAccountName": "trainer",
                            "containers": [
                                {
                                    "name": "train",
                                    "image": "train:latest",
                                    "env": [
                                        {"name": "USER_VAR", "value": "1"},
                                        {"name": "NNODES", "value": "999"},
                                    ],
                                    "ports": [{"containerPort": 29500}],
                                },
                                {"name": "sidecar", "image": "side:latest"},
                            ],
                        },
                    },
                }
            ],
            **spec_extra,
        },
    }


def job(replicas: int = 2, spares: int = 1, **spec_extra: Any) -> HyperPodPytorchJob:
    return parse_job(job_obj(replicas, spares, **spec_extra))


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container["env"]}


# ============================================================== build_pod


def test_pod_is_labelled_owned_and_named_for_the_job():
    pod = build_pod(job(), 2)
    meta = pod["metadata"]
    assert meta["name"] == "llama-2"
    assert meta["namespace"] == "team-a"
    assert meta["labels"][JOB_LABEL] == "llama"  # ours win over the template's
    assert meta["labels"][UID_LABEL] == UID
    assert meta["labels"]["team"] == "ml"
    assert meta["annotations"]["note"] == "keep me"
    [owner] = meta["ownerReferences"]
    assert owner["uid"] == UID
    assert owner["name"] == "llama"
    assert owner["kind"] == "HyperPodPyTorchJob"
    assert owner["apiVersion"] == "sagemaker.amazonaws.com/v1"
    assert owner["controller"] is True
    assert owner["blockOwnerDeletion"] is True
    assert pod["spec"]["restartPolicy"] == "Never"
    assert pod["spec"]["serviceAccountName"] == "trainer"


def test_pod_environment_is_ours_on_every_container_and_wins_name_clashes():
    pod = build_pod(job(replicas=3), 0)
    for container in pod["spec"]["containers"]:
        env = env_of(container)
        assert env["NNODES"] == {"name": "NNODES", "value": "3"}
        assert env["HYPERPOD_JOB_NAME"]["value"] == "llama"
        assert env["HYPERPOD_JOB_NAMESPACE"]["value"] == "team-a"
        assert env["HYPERPOD_JOB_UID"]["value"] == UID
        assert env["POD_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
        assert env["POD_IP"]["valueFrom"] == {"fieldRef": {"fieldPath": "status.podIP"}}
        assert "HYPERPOD_EVENT_BUS" not in env
        # a name appears once: the user's NNODES is replaced, not duplicated
        assert [e["name"] for e in container["env"]].count("NNODES") == 1
    assert env_of(pod["spec"]["containers"][0])["USER_VAR"]["value"] == "1"


def test_event_bus_reaches_the_agent_only_when_configured():
    pod = build_pod(job(), 0, event_bus="arn:aws:events:us-west-2:123456789012:event-bus/agents")
    env = env_of(pod["spec"]["containers"][0])
    assert env["HYPERPOD_EVENT_BUS"]["value"].endswith("event-bus/agents")
    assert "HYPERPOD_EVENT_BUS" not in env_of(build_pod(job(), 0, event_bus="")["spec"]["containers"][0])


def test_agent_port_is_added_to_the_first_container_once():
    pod = build_pod(job(), 0)
    first, sidecar = pod["spec"]["containers"]
    ports = [p["containerPort"] for p in first["ports"]]
    assert ports == [29500, 8080]
    assert "ports" not in sidecar

    obj = job_obj()
    obj["spec"]["replicaSpecs"][0]["template"]["spec"]["containers"][0]["ports"] = [
        {"containerPort": 8080, "name": "http"}
    ]
    again = build_pod(parse_job(obj), 0)
    assert again["spec"]["containers"][0]["ports"] == [{"containerPort": 8080, "name": "http"}]


def test_node_health_requirement_is_anded_into_every_user_term():
    obj = job_obj()
    user_terms = [
        {
            "matchExpressions": [
                {"key": "node.kubernetes.io/instance-type", "operator": "In", "values": ["p5"]}
            ]
        },
        {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1"]}]},
    ]
    obj["spec"]["replicaSpecs"][0]["template"]["spec"]["affinity"] = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": copy.deepcopy(user_terms)
            },
            "preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 1, "preference": {}}],
        },
        "podAntiAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": [
                {"labelSelector": {"matchLabels": {"app": "x"}}, "topologyKey": "zone"}
            ]
        },
    }
    affinity = build_pod(parse_job(obj), 0)["spec"]["affinity"]
    terms = affinity["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert len(terms) == 2  # still ORed: one term each, none dropped, none added
    assert terms[0]["matchExpressions"] == [*user_terms[0]["matchExpressions"], HEALTH]
    assert terms[1]["matchFields"] == user_terms[1]["matchFields"]
    assert terms[1]["matchExpressions"] == [HEALTH]
    assert affinity["nodeAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"] == [
        {"weight": 1, "preference": {}}
    ]
    anti = affinity["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert anti[0] == {"labelSelector": {"matchLabels": {"app": "x"}}, "topologyKey": "zone"}
    assert anti[1] == {
        "labelSelector": {"matchLabels": {JOB_LABEL: "llama"}},
        "topologyKey": "kubernetes.io/hostname",
    }


def test_pod_without_user_affinity_gets_health_term_and_one_pod_per_node():
    affinity = build_pod(job(), 1)["spec"]["affinity"]
    terms = affinity["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert terms == [{"matchExpressions": [HEALTH]}]
    assert affinity["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"] == [
        {"labelSelector": {"matchLabels": {JOB_LABEL: "llama"}}, "topologyKey": "kubernetes.io/hostname"}
    ]


def test_building_pods_leaves_the_users_template_untouched():
    obj = job_obj()
    obj["spec"]["replicaSpecs"][0]["template"]["spec"]["affinity"] = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": [{"key": "a", "operator": "Exists"}]}]
            }
        }
    }
    parsed = parse_job(obj)
    before = copy.deepcopy(parsed.replica_spec.template)
    pods = [build_pod(parsed, i, event_bus="bus") for i in range(3)]
    assert parsed.replica_spec.template == before
    # and the pods are independent of each other: each carries exactly one health term
    for pod in pods:
        [term] = pod["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
            "nodeSelectorTerms"
        ]
        assert term["matchExpressions"].count(HEALTH) == 1


# ============================================================== assign_ranks


def test_ranks_go_to_the_lowest_numeric_indexes_and_the_rest_are_spares():
    slots = [PodSlot(pod=f"llama-{i}") for i in (10, 2, 0, 1, 3)]
    ranked = assign_ranks(slots, 3)
    by_pod = {s.pod: s.rank for s in ranked}
    assert by_pod == {"llama-0": 0, "llama-1": 1, "llama-2": 2, "llama-3": None, "llama-10": None}


def test_pod_10_sorts_after_pod_2():
    ranked = assign_ranks([PodSlot(pod="job-10"), PodSlot(pod="job-2")], 2)
    assert {s.pod: s.rank for s in ranked} == {"job-2": 0, "job-10": 1}


def test_assigned_ranks_are_never_reshuffled():
    first = assign_ranks([PodSlot(pod=f"j-{i}") for i in range(4)], 2)
    shuffled = list(reversed(first))
    assert assign_ranks(shuffled, 2) == shuffled
    assert assign_ranks(first, 3) == first  # even when asked for another size


# ============================================================== start_calls


def running_record(nnodes: int = 2, spares: int = 1, **extra: Any) -> JobRecord:
    pods = [
        PodSlot(pod=f"llama-{i}", rank=i if i < nnodes else None, node=f"node-{i}", ip=f"10.0.0.{i + 10}")
        for i in range(nnodes + spares)
    ]
    return JobRecord(
        cluster_arn=ARN,
        uid=UID,
        namespace="team-a",
        name="llama",
        nnodes=nnodes,
        spares=spares,
        pods=pods,
        master_addr="10.0.0.10",
        **extra,
    )


RULES = [
    {
        "name": "JobStart",
        "logPattern": ".*Experiment configuration.*",
        "expectedStartCutOffInSeconds": 120,
    },
    {
        "name": "Loss",
        "logPattern": ".*loss: (\\d+)",
        "metricThreshold": 5,
        "operator": "gt",
        "metricEvaluationDataPoints": 3,
        "faultOnMatch": True,
    },
]


def test_start_bodies_for_ranks_and_spares():
    spec_job = job(replicas=2, spares=2, runPolicy={"logMonitoringConfiguration": RULES})
    record = running_record(nnodes=2, spares=2, fault_count=3)
    # both spares' agents hold a spare's workers (test_agent_kinds.py: those that do not get none)
    calls = start_calls(record, spec_job, "2026-03-04T10:00:00.000000Z", {"llama-2", "llama-3"})
    by_pod = {c.pod: c for c in calls}
    assert set(by_pod) == {"llama-0", "llama-1", "llama-2", "llama-3"}
    table = [{"rank": 0, "ip": "10.0.0.10"}, {"rank": 1, "ip": "10.0.0.11"}]
    for call in calls:
        body = call.body
        assert call.method == "POST" and call.path == "/start"
        assert call.namespace == "team-a"
        assert body["nnodes"] == 2
        assert body["faultCount"] == 3
        assert body["master_addr"] == "10.0.0.10"
        assert body["master_port"] == MASTER_PORT + record.fault_count
        assert body["ipVersion"] == "2026-03-04T10:00:00.000000Z"
        assert body["rankIps"] == table
        assert body["log_monitoring_configuration"] == RULES  # the agent's names, as the user wrote them
        assert 0 <= body["rank"] < 2
    assert by_pod["llama-0"].body["rank"] == 0 and by_pod["llama-0"].body["spare"] is False
    assert by_pod["llama-1"].body["rank"] == 1 and by_pod["llama-1"].body["spare"] is False
    assert by_pod["llama-2"].body["spare"] is True
    assert by_pod["llama-3"].body["spare"] is True
    assert by_pod["llama-1"].ip == "10.0.0.11"


def test_start_bodies_are_accepted_by_the_agent():
    """The agent validates /start strictly (a spare's rank must be below nnodes too)."""
    from hyperpod_agent.models import parse_start

    spec_job = job(replicas=2, spares=3, runPolicy={"logMonitoringConfiguration": RULES})
    record = running_record(nnodes=2, spares=3)
    calls = start_calls(record, spec_job, "v1", {s.pod for s in record.spare_pods()})
    assert len(calls) == 5
    for call in calls:
        parsed = parse_start(call.body)
        # what goes on the wire (the shared part serialised once) is the same body
        assert parse_start(json.loads(call.payload())) == parsed
        assert parsed.nnodes == 2
        assert [r.name for r in parsed.log_rules or []] == ["JobStart", "Loss"]
        assert parsed.spare is (call.pod not in ("llama-0", "llama-1"))


def test_start_bodies_share_one_table_and_serialise_it_once(monkeypatch):
    """A 4,096-rank job: the rank table is built and serialised once per round, not per agent."""
    from hyperpod_control.adapters import agents as agents_module

    record = running_record(nnodes=4096, spares=0)
    encoded: list[int] = []
    compact = agents_module._compact
    monkeypatch.setattr(agents_module, "_compact", lambda v: encoded.append(len(v)) or compact(v))
    calls = start_calls(record, job(replicas=4096, spares=0), "v")
    assert len(calls) == 4096
    assert len({id(c.body["rankIps"]) for c in calls}) == 1
    assert len({id(c.shared) for c in calls}) == 1
    assert encoded == [len(calls[0].body) - 2]  # the shared keys, once
    first, last = json.loads(calls[0].payload()), json.loads(calls[-1].payload())
    assert (first["rank"], last["rank"]) == (0, 4095)
    assert first["rankIps"] == last["rankIps"] and len(first["rankIps"]) == 4096
    # every per-agent encoding is of the agent's own two fields only
    assert encoded[1:] == [2, 2]


def test_start_without_rules_sends_an_empty_rule_list():
    [call] = start_calls(running_record(nnodes=1, spares=0), job(replicas=1, spares=0), "v")
    assert call.body["log_monitoring_configuration"] == []
    assert call.body["rankIps"] == [{"rank": 0, "ip": "10.0.0.10"}]


def test_a_restart_sends_agents_holding_the_last_table_only_the_changed_ranks():
    """A spare swap: rank 1 moves to the spare's IP. The agents that report the previous table's
    version get that one rank (or none changed: an empty rankIps, which keeps the table and takes
    the new version); an agent without it (a restarted container) gets the whole table."""
    from hyperpod_control.services.supervision import held_table

    before = running_record(nnodes=3, spares=1, ip_version="v1")
    answers = {
        "llama-0": answer("llama-0", AgentState.READY, ipversion="v1"),
        "llama-1": answer("llama-1", AgentState.READY, ipversion="v1"),
        "llama-2": answer("llama-2", AgentState.READY),  # lost its table
        "llama-3": answer("llama-3", AgentState.READY, ipversion="v1"),
    }
    held = held_table(before, answers)
    assert held is not None and held.pods == {"llama-0", "llama-1", "llama-3"}
    swapped = [
        s.model_copy(update={"rank": {1: None, 3: 1}.get(i, s.rank)}) for i, s in enumerate(before.pods)
    ]
    after = before.model_copy(update={"pods": swapped, "ip_version": "v2"})
    # this project's agents: a spare's agent holds a spare's workers, so it gets its /start too
    ours = {s.pod for s in after.spare_pods()}
    by_pod = {c.pod: c for c in start_calls(after, job(replicas=3, spares=1), "v2", ours, held=held)}
    full = [{"rank": 0, "ip": "10.0.0.10"}, {"rank": 1, "ip": "10.0.0.13"}, {"rank": 2, "ip": "10.0.0.12"}]
    assert by_pod["llama-0"].body["rankIps"] == [{"rank": 1, "ip": "10.0.0.13"}]
    assert by_pod["llama-3"].body["rankIps"] == [{"rank": 1, "ip": "10.0.0.13"}]
    assert by_pod["llama-2"].body["rankIps"] == full
    for call in by_pod.values():
        wire = json.loads(call.payload())
        assert wire["rankIps"] == call.body["rankIps"] and wire["ipVersion"] == "v2"
    # a restart that moves no rank: an empty table to those holding it, the whole to the others
    unmoved = before.model_copy(update={"ip_version": "v2"})
    same = start_calls(
        unmoved, job(replicas=3, spares=1), "v2", {s.pod for s in unmoved.spare_pods()}, held=held
    )
    assert {c.pod: len(c.body["rankIps"]) for c in same} == {
        "llama-0": 0,
        "llama-1": 0,
        "llama-2": 3,
        "llama-3": 0,
    }
    assert held_table(before.model_copy(update={"ip_version": None}), answers) is None


def test_a_restart_of_4096_ranks_sends_bytes_linear_in_the_agents():
    """Every agent holds the last table and one rank moved: each /start is a few hundred bytes,
    not the 140 KB table, and the round's bytes grow with the agents, not with their square."""
    from hyperpod_control.services.supervision import held_table

    sizes = {}
    for n in (1024, 4096):
        record = running_record(nnodes=n, spares=0, ip_version="v1")
        answers = {s.pod: answer(s.pod, AgentState.READY, ipversion="v1") for s in record.pods}
        held = held_table(record, answers)
        pods = [s.model_copy(update={"ip": "10.9.9.9"}) if s.rank == 7 else s for s in record.pods]
        calls = start_calls(
            record.model_copy(update={"pods": pods}), job(replicas=n, spares=0), "v2", held=held
        )
        sizes[n] = sum(len(c.payload()) for c in calls)
        assert max(len(c.payload()) for c in calls) < 300
    assert sizes[4096] < 4.2 * sizes[1024]


def test_rank_ips_mode_and_direct_size_from_the_environment():
    from hyperpod_control.exceptions import InvalidInputError
    from hyperpod_control.services.supervisor import SupervisorConfig

    assert SupervisorConfig.from_env({}).rank_ips == "changed"
    assert SupervisorConfig.from_env({}).direct_min_ranks == 0
    config = SupervisorConfig.from_env({"AGENT_RANK_IPS": "Full", "AGENT_DIRECT_MIN_RANKS": "1024"})
    assert (config.rank_ips, config.direct_min_ranks) == ("full", 1024)
    with pytest.raises(InvalidInputError, match="AGENT_RANK_IPS: 'some'"):
        SupervisorConfig.from_env({"AGENT_RANK_IPS": "some"})


def test_a_job_at_or_above_the_direct_size_calls_its_agents_at_their_pod_ips():
    from hyperpod_control.adapters.agents import AgentClient
    from hyperpod_control.services.supervisor import Supervisor, SupervisorConfig

    proxy, direct = AgentClient(lambda call: None), AgentClient(lambda call: None)
    sup = Supervisor(
        store=None,
        kube=None,
        agents=proxy,
        config=SupervisorConfig(direct_min_ranks=1024),
        direct_agents=direct,
    )
    sup.fit_transport(running_record(nnodes=1024, spares=0))
    assert sup.agents is direct
    sup.fit_transport(running_record(nnodes=1023, spares=0))
    assert sup.agents is proxy
    # 0: the transport AGENT_TRANSPORT names, whatever the size
    sup.config = SupervisorConfig(direct_min_ranks=0)
    sup.fit_transport(running_record(nnodes=4096, spares=0))
    assert sup.agents is proxy


# ============================================================== judge_round


def running_pod(name: str, phase: str = "Running", **status: Any) -> dict[str, Any]:
    return {"metadata": {"name": name}, "status": {"phase": phase, **status}}


def answer(pod: str, state: AgentState | None, **status: Any) -> AgentAnswer:
    if state is None:
        return AgentAnswer(pod=pod, ok=False, error="timed out")
    return AgentAnswer(pod=pod, ok=True, status=AgentStatus(status=state, **status))


def all_pods(record: JobRecord) -> dict[str, dict[str, Any]]:
    return {s.pod: running_pod(s.pod) for s in record.pods}


def test_all_ranks_completed_is_completion_even_while_the_spare_runs():
    record = running_record()
    answers = {
        "llama-0": answer("llama-0", AgentState.COMPLETED),
        "llama-1": answer("llama-1", AgentState.COMPLETED),
        "llama-2": answer("llama-2", AgentState.READY),
    }
    verdict = judge_round(record, all_pods(record), answers)
    assert verdict.next == "completed"
    assert verdict.completed == 2


def test_completed_rank_whose_container_exited_is_still_completed():
    record = running_record()
    pods = all_pods(record)
    pods["llama-0"] = running_pod("llama-0", "Succeeded")
    answers = {p: answer(p, AgentState.COMPLETED) for p in ("llama-0", "llama-1")}
    assert judge_round(record, pods, answers).next == "completed"


def test_faulted_agent_is_a_fault_with_its_reason_and_message():
    record = running_record()
    answers = {
        "llama-0": answer("llama-0", AgentState.RUNNING),
        "llama-1": answer(
            "llama-1", AgentState.FAULTED, reason="LogHang_Loss", message="no progress in 300 s"
        ),
    }
    verdict = judge_round(record, all_pods(record), answers)
    assert verdict.next == "fault"
    assert verdict.faulty_pods == ["llama-1"]
    assert "rank 1" in verdict.reason
    assert "LogHang_Loss: no progress in 300 s" in verdict.reason


def test_a_ranks_pod_deleted_is_a_fault():
    record = running_record()
    pods = all_pods(record)
    del pods["llama-0"]
    answers = {"llama-1": answer("llama-1", AgentState.RUNNING)}
    verdict = judge_round(record, pods, answers)
    assert verdict.next == "fault"
    assert verdict.faulty_pods == ["llama-0"]
    assert "PodDeleted" in verdict.reason
    assert "node-0" in verdict.reason


def test_a_ranks_pod_oom_killed_is_a_fault_naming_the_reason():
    record = running_record()
    pods = all_pods(record)
    pods["llama-1"] = running_pod(
        "llama-1",
        "Failed",
        containerStatuses=[{"name": "train", "state": {"terminated": {"reason": "OOMKilled"}}}],
    )
    answers = {"llama-0": answer("llama-0", AgentState.RUNNING), "llama-1": answer("llama-1", None)}
    verdict = judge_round(record, pods, answers)
    assert verdict.next == "fault"
    assert verdict.faulty_pods == ["llama-1"]
    assert "PodOOMKilled" in verdict.reason


def test_a_ranks_container_exiting_before_completion_is_a_fault():
    record = running_record()
    pods = all_pods(record)
    pods["llama-0"] = running_pod("llama-0", "Succeeded")
    answers = {"llama-0": answer("llama-0", None), "llama-1": answer("llama-1", AgentState.RUNNING)}
    verdict = judge_round(record, pods, answers)
    assert verdict.next == "fault"
    assert "exited before the job completed" in verdict.reason


def test_an_agent_not_answering_while_its_pod_runs_is_a_blip():
    record = running_record()
    answers = {"llama-0": answer("llama-0", None), "llama-1": answer("llama-1", AgentState.RUNNING)}
    verdict = judge_round(record, all_pods(record), answers)
    assert verdict.next == "running"
    assert verdict.faulty_pods == []


def test_losing_a_spare_is_a_fault_of_no_rank_so_that_it_is_replaced():
    record = running_record()
    pods = all_pods(record)
    del pods["llama-2"]
    answers = {p: answer(p, AgentState.RUNNING) for p in ("llama-0", "llama-1")}
    verdict = judge_round(record, pods, answers)
    assert verdict.next == "fault"
    (fault,) = verdict.faults
    assert (fault.pod, fault.rank, fault.kind) == ("llama-2", None, "pod")


def test_a_pending_fault_on_the_record_is_a_fault():
    record = running_record(
        pending_faults=[{"kind": "node", "pod": "llama-1", "reason": "NodeUnhealthy: NvidiaErrorTerminate"}]
    )
    answers = {p: answer(p, AgentState.RUNNING) for p in ("llama-0", "llama-1")}
    verdict = judge_round(record, all_pods(record), answers)
    assert verdict.next == "fault"
    assert verdict.faulty_pods == ["llama-1"]
    assert "NodeUnhealthy: NvidiaErrorTerminate" in verdict.reason


# -- dirty faults: nodes, silence, fencing -------------------------------------------------------


def a_node(name: str, ready: str = "True", health: str | None = "Schedulable", taints=()) -> dict:
    labels = {"sagemaker.amazonaws.com/node-health-status": health} if health else {}
    return {
        "metadata": {"name": name, "labels": labels},
        "spec": {"taints": list(taints)},
        "status": {"conditions": [{"type": "Ready", "status": ready, "reason": "NodeStatusUnknown"}]},
    }


UNREACHABLE_NOEXECUTE = {"key": "node.kubernetes.io/unreachable", "effect": "NoExecute", "timeAdded": "t"}


@pytest.mark.parametrize(
    ("node", "says"),
    [
        (a_node("n"), None),
        (None, "node n is gone"),
        (a_node("n", ready="Unknown"), "node n is NotReady (NodeStatusUnknown)"),
        (a_node("n", taints=[UNREACHABLE_NOEXECUTE]), "node n is unreachable (taint since t)"),
        (
            a_node("n", health="UnschedulablePendingReplacement"),
            "node n is UnschedulablePendingReplacement (HyperPod health monitoring)",
        ),
        # a NoSchedule unreachable taint alone (the grace period is not over) is no fault
        (a_node("n", taints=[{**UNREACHABLE_NOEXECUTE, "effect": "NoSchedule"}]), None),
        # a node no health agent labelled yet is judged by its readiness alone
        (a_node("n", health=None), None),
    ],
)
def test_node_trouble_reads_readiness_taints_and_hyperpods_label(node, says):
    assert node_trouble("n", node) == says


def test_a_rank_on_a_not_ready_node_is_a_node_fault_now_and_its_agent_is_not_asked():
    record = running_record()
    pods = {s.pod: {**running_pod(s.pod), "spec": {"nodeName": s.node}} for s in record.pods}
    nodes = {
        "node-0": a_node("node-0"),
        "node-1": a_node("node-1", ready="Unknown"),
        "node-2": a_node("node-2"),
    }
    troubles = node_troubles(record, pods, nodes)
    assert troubles == {"llama-1": "node node-1 is NotReady (NodeStatusUnknown)"}
    assert unreachable(record, pods, troubles) == {"llama-1"}
    answers = {p: answer(p, AgentState.RUNNING) for p in ("llama-0", "llama-2")}
    verdict = judge_round(record, pods, answers, troubles=troubles)
    assert verdict.next == "fault"
    (fault,) = verdict.faults
    assert (fault.kind, fault.pod, fault.rank, fault.node) == ("node", "llama-1", 1, "node-1")


def test_terminating_and_missing_pods_are_not_asked():
    record = running_record()
    pods = all_pods(record)
    del pods["llama-2"]
    pods["llama-1"]["metadata"]["deletionTimestamp"] = "2026-12-07T10:00:00Z"
    assert unreachable(record, pods, {}) == {"llama-1", "llama-2"}


def silent(pod: str) -> AgentAnswer:
    return AgentAnswer(pod=pod, ok=False, error="no answer in time", silent=True)


def test_an_agent_silent_for_the_limit_of_rounds_is_a_hang_of_its_pod():
    record = running_record()
    answers = {"llama-0": answer("llama-0", AgentState.RUNNING), "llama-1": silent("llama-1")}
    for _ in range(2):  # two silent rounds: still a blip
        assert judge_round(record, all_pods(record), answers, silent_limit=3).next == "running"
        record = record.model_copy(update={"pods": silence(record, answers)})
    verdict = judge_round(record, all_pods(record), answers, silent_limit=3)
    assert verdict.next == "fault"
    (fault,) = verdict.faults
    assert (fault.kind, fault.pod, fault.rank) == ("pod", "llama-1", 1)
    assert "has not answered 3 rounds in a row" in fault.reason


def test_any_answer_or_a_non_silent_failure_resets_the_silence():
    record = running_record()
    record = record.model_copy(update={"pods": silence(record, {"llama-1": silent("llama-1")})})
    assert [s.silent_rounds for s in record.pods] == [0, 1, 0]
    again = silence(record, {"llama-1": answer("llama-1", None)})  # a 503 of the API server
    assert [s.silent_rounds for s in again] == [0, 0, 0]


def test_a_fault_reported_before_the_current_start_is_not_a_new_fault():
    record = running_record(ip_version="v2")
    old = answer("llama-1", AgentState.FAULTED, reason="WorkerFault", ipversion="v1")
    now_running = answer("llama-0", AgentState.RUNNING, ipversion="v2")
    assert judge_round(record, all_pods(record), {"llama-0": now_running, "llama-1": old}).next == "running"
    fresh = answer("llama-1", AgentState.FAULTED, reason="WorkerFault", ipversion="v2")
    assert judge_round(record, all_pods(record), {"llama-0": now_running, "llama-1": fresh}).next == "fault"


def test_a_pending_agent_fault_of_an_earlier_start_is_dropped():
    record = running_record(
        ip_version="v2",
        pending_faults=[{"kind": "worker", "pod": "llama-1", "reason": "WorkerFault", "ip_version": "v1"}],
    )
    answers = {p: answer(p, AgentState.RUNNING, ipversion="v2") for p in ("llama-0", "llama-1")}
    assert judge_round(record, all_pods(record), answers).next == "running"


def test_stale_status_needs_both_versions_to_differ():
    assert stale_status("v1", "v2")
    assert not stale_status("v2", "v2")
    assert not stale_status(None, "v2") and not stale_status("v1", None)


def test_pod_failure_reads_terminating_and_failed_pods():
    assert pod_failure(None) == "PodDeleted"
    assert pod_failure({"metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z"}, "status": {}}) == (
        "PodTerminating"
    )
    assert pod_failure(running_pod("p", "Failed")) == "PodFailed"
    assert pod_failure(running_pod("p", "Running")) is None
    assert pod_failure(running_pod("p", "Pending")) is None


# ============================================================== agents_ready


def creating_record(n: int = 3) -> JobRecord:
    return JobRecord(
        cluster_arn=ARN, uid=UID, namespace="team-a", name="llama", nnodes=2, spares=n - 2,
        pods=[PodSlot(pod=f"llama-{i}") for i in range(n)],
    )  # fmt: skip


def test_ready_waits_for_pending_pods_and_agents_not_ready():
    record = creating_record()
    pods = all_pods(record)
    pods["llama-2"] = running_pod("llama-2", "Pending")
    answers = {
        "llama-0": answer("llama-0", AgentState.READY),
        "llama-1": answer("llama-1", AgentState.INIT),
    }
    verdict, why = agents_ready(record, pods, answers)
    assert verdict == "wait"
    assert "llama-1 agent init" in why
    assert "llama-2 Pending" in why
    assert "llama-0" not in why


def test_ready_waits_for_an_agent_that_does_not_answer_yet():
    record = creating_record()
    answers = {p: answer(p, AgentState.READY) for p in ("llama-0", "llama-1")}
    answers["llama-2"] = answer("llama-2", None)
    verdict, why = agents_ready(record, all_pods(record), answers)
    assert (verdict, why) == ("wait", "llama-2 agent not answering")


def test_ready_fails_on_a_failed_pod():
    record = creating_record()
    pods = all_pods(record)
    pods["llama-1"] = running_pod("llama-1", "Failed")
    verdict, why = agents_ready(record, pods, {p: answer(p, AgentState.READY) for p in pods})
    assert verdict == "fail"
    assert "llama-1" in why and "PodFailed" in why


def test_ready_starts_when_every_agent_is_ready():
    record = creating_record()
    answers = {s.pod: answer(s.pod, AgentState.READY) for s in record.pods}
    assert agents_ready(record, all_pods(record), answers) == ("start", None)


# ============================================================== clean_targets, conditions


def test_clean_pod_policy_chooses_what_to_delete():
    slots = [PodSlot(pod=f"llama-{i}") for i in range(3)]
    completed = {"llama-0", "llama-2"}
    assert clean_targets(CleanPodPolicy.ALL, slots, completed) == ["llama-0", "llama-1", "llama-2"]
    assert clean_targets(CleanPodPolicy.ONLY_COMPLETE, slots, completed) == ["llama-0", "llama-2"]
    assert clean_targets(CleanPodPolicy.NONE, slots, completed) == []


def test_completed_condition_turns_running_false():
    obj = job_obj()
    obj["status"] = {
        "conditions": [
            {
                "type": "Created",
                "status": "True",
                "reason": "Admitted",
                "message": "",
                "lastTransitionTime": "t0",
            },
            {
                "type": "Running",
                "status": "True",
                "reason": "Running",
                "message": "",
                "lastTransitionTime": "t1",
            },
        ]
    }
    conditions = {
        c["type"]: c for c in conditions_after(parse_job(obj), "Completed", "JobCompleted", "done", "t2")
    }
    assert conditions["Completed"]["status"] == "True"
    assert conditions["Completed"]["lastTransitionTime"] == "t2"
    assert conditions["Running"]["status"] == "False"
    assert conditions["Created"] == {
        "type": "Created", "status": "True", "reason": "Admitted", "message": "", "lastTransitionTime": "t0",
    }  # fmt: skip
    assert "Failed" not in conditions


def _arm_request(record: JobRecord):
    from hyperpod_control.models.supervisor import StepInput, SupervisedJob

    ref = SupervisedJob(
        cluster_arn=record.cluster_arn, namespace=record.namespace, name=record.name, uid=record.uid
    )
    return StepInput(job=ref, token="task-token")


def test_arm_keeps_the_token_so_a_fault_can_wake_the_execution():
    from hyperpod_control.services.supervisor import Supervisor, arm

    record = running_record()
    store = FakeStore(record)
    arm(_arm_request(record), Supervisor(store=store, kube=None, agents=None))
    assert store.jobs[UID].task_token == "task-token"


def test_arm_with_a_fault_already_pending_polls_at_once_instead_of_waiting():
    from hyperpod_control.exceptions import FaultPendingError
    from hyperpod_control.services.supervisor import Supervisor, arm

    record = running_record(pending_faults=[{"kind": "node", "pod": "llama-1", "reason": "NodeUnhealthy"}])
    store = FakeStore(record)
    with pytest.raises(FaultPendingError):
        arm(_arm_request(record), Supervisor(store=store, kube=None, agents=None))
    assert store.jobs[UID].task_token is None, "no token kept: nobody needs to wake this wait"


def test_a_late_report_about_a_replaced_pod_is_ignored():
    record = running_record(pending_faults=[{"kind": "node", "pod": "llama-9", "reason": "NodeUnhealthy"}])
    answers = {p: answer(p, AgentState.RUNNING) for p in ("llama-0", "llama-1", "llama-2")}
    assert judge_round(record, all_pods(record), answers).next == "running"
