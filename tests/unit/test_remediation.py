"""The remediation decision (services/remediation.py): for a job's faults, what it has (spares, the
agents' restart mode) and what its restart budget allows, the least disruptive action. Pure
functions over models; no fakes needed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from hyperpod_control.models.agent import AgentAnswer, AgentState, AgentStatus
from hyperpod_control.models.job import RestartPolicy, RunPolicy
from hyperpod_control.models.job_faults import JobFault
from hyperpod_control.models.records import JobRecord, PodSlot
from hyperpod_control.services.remediation import (
    DEFAULT_EVAL_PERIOD_S,
    DEFAULT_MAX_RETRIES,
    Action,
    Decision,
    aggregate_progress,
    decide,
    offender_counts,
    repeat_offenders,
    restart_counters,
    restart_modes,
    restarts_in_window,
    root_faults,
    standing_spares,
    swap_plan,
    unrecorded,
    usable_spares,
)

pytestmark = pytest.mark.unit

NOW = datetime(2026, 3, 4, 12, 0, 0, tzinfo=UTC)
ARN = "arn:aws:sagemaker:us-west-2:123456789012:cluster/aaaaaaaaaaaa"


def job(ranks: int = 4, spares: int = 2, **update: Any) -> JobRecord:
    """A job with ``ranks`` ranks, llama-0..N-1 on node-0..N-1, and ``spares`` spares (spare-i on
    spare-node-i)."""
    pods = [PodSlot(pod=f"llama-{r}", rank=r, node=f"node-{r}", ip=f"10.0.0.{r + 1}") for r in range(ranks)]
    pods += [PodSlot(pod=f"spare-{i}", node=f"spare-node-{i}", ip=f"10.0.1.{i + 1}") for i in range(spares)]
    record = JobRecord(
        cluster_arn=ARN, uid="uid-1", namespace="team-a", name="llama", nnodes=ranks, spares=spares, pods=pods
    )
    return record.model_copy(update=update)


def policy(max_retries: int | None = 100, **restart: Any) -> RunPolicy:
    return RunPolicy(
        job_max_retry_count=max_retries, restart_policy=RestartPolicy(**restart) if restart else None
    )


def worker(rank: int = 1, reason: str = "rank exited with code 1") -> JobFault:
    return JobFault(kind="worker", reason=reason, pod=f"llama-{rank}", node=f"node-{rank}", rank=rank)


def node_lost(rank: int, reason: str = "NodeFault: GPU unhealthy") -> JobFault:
    return JobFault(kind="node", reason=reason, pod=f"llama-{rank}", node=f"node-{rank}", rank=rank)


def go(
    faults: list[JobFault],
    record: JobRecord | None = None,
    run_policy: RunPolicy | None = None,
    *,
    ready: set[str] | None = None,
    modes: set[str] | None = None,
) -> Decision:
    return decide(
        faults,
        record or job(),
        run_policy or policy(),
        ready_spares={"spare-0", "spare-1"} if ready is None else ready,
        restart_modes={"process_restart"} if modes is None else modes,
        now=NOW,
    )


# ============================================================== restarts in place


def test_a_worker_fault_with_plr_agents_restarts_the_processes_in_place():
    decision = go([worker()])
    assert decision.action is Action.PROCESS_RESTART
    assert decision.moves == {} and decision.delete_pods == [] and decision.avoid_nodes == []
    assert "rank exited with code 1" in decision.reason
    assert decision.restart_type == "PLR"


def test_agents_that_all_restart_in_process_get_an_in_process_restart():
    decision = go([worker()], modes={"in_process_restart"})
    assert decision.action is Action.IN_PROCESS_RESTART
    assert decision.delete_pods == []
    assert decision.restart_type == "PLR"


@pytest.mark.parametrize("modes", [{"in_process_restart", "process_restart"}, set()])
def test_agents_not_all_in_process_get_a_process_restart(modes):
    assert go([worker()], modes=modes).action is Action.PROCESS_RESTART


def test_a_hang_restarts_the_processes_in_place():
    hang = JobFault(kind="hang", reason="no log line for 600 s", pod="llama-0", node="node-0", rank=0)
    decision = go([hang])
    assert decision.action is Action.PROCESS_RESTART
    assert decision.delete_pods == []
    assert "no log line" in decision.reason


def test_the_reason_names_each_distinct_fault_once():
    decision = go([worker(1, "OOM"), worker(2, "OOM"), worker(3, "NCCL timeout")])
    assert decision.reason.endswith("OOM; NCCL timeout")


# ============================================================== spare swap


def test_a_lost_rank_moves_to_a_ready_spare_on_a_healthy_node():
    decision = go([node_lost(2)])
    assert decision.action is Action.SPARE_SWAP
    assert decision.moves == {2: "spare-0"}
    assert decision.delete_pods == ["llama-2"]
    assert decision.avoid_nodes == []
    assert decision.restart_type == "PLR"


def test_a_spare_on_the_failed_node_is_not_usable():
    record = job(ranks=2, spares=0)
    record.pods.append(PodSlot(pod="spare-0", node="node-1"))  # shares the failed node
    record.pods.append(PodSlot(pod="spare-1", node="spare-node-1"))

    assert [s.pod for s in usable_spares(record, {"spare-0", "spare-1"}, {"node-1"})] == ["spare-1"]
    decision = go([node_lost(1)], record)
    assert decision.action is Action.SPARE_SWAP
    assert decision.moves == {1: "spare-1"}


def test_a_spare_whose_agent_is_not_ready_is_not_usable():
    record = job()
    assert [s.pod for s in usable_spares(record, {"spare-1"}, set())] == ["spare-1"]
    assert go([node_lost(0)], record, ready={"spare-1"}).moves == {0: "spare-1"}


def test_two_lost_ranks_and_two_spares_move_both_in_one_decision():
    decision = go([node_lost(3), node_lost(1)])
    assert decision.action is Action.SPARE_SWAP
    assert decision.moves == {1: "spare-0", 3: "spare-1"}
    assert decision.delete_pods == ["llama-1", "llama-3"]


def test_only_a_spare_lost_replaces_it_without_moving_a_rank():
    lost = JobFault(kind="node", reason="NodeFault: EFA down", pod="spare-1", node="spare-node-1")
    decision = go([lost])
    assert decision.action is Action.SPARE_SWAP
    assert decision.moves == {}
    assert decision.delete_pods == ["spare-1"]
    assert decision.restart_type == "PLR"


def test_a_spare_that_is_itself_lost_does_not_take_a_rank():
    lost_spare = JobFault(kind="pod", reason="spare (spare-0 on no node): Evicted", pod="spare-0")
    decision = go([lost_spare, node_lost(1)])
    assert decision.action is Action.SPARE_SWAP
    assert decision.moves == {1: "spare-1"}
    assert decision.delete_pods == ["llama-1", "spare-0"]


# ============================================================== full job restart


def test_two_lost_ranks_and_one_spare_restart_the_whole_job_avoiding_the_failed_nodes():
    record = job(ranks=4, spares=1)
    decision = go([node_lost(0), node_lost(2)], record, ready={"spare-0"})
    assert decision.action is Action.FULL_JOB_RESTART
    assert decision.moves == {}
    assert sorted(decision.delete_pods) == sorted(s.pod for s in record.pods)
    assert decision.avoid_nodes == ["node-0", "node-2"]
    assert "2 rank(s) lost and 1 usable spare(s)" in decision.reason
    assert decision.restart_type == "JLR"


def test_a_lost_pod_makes_its_node_a_suspect_on_a_full_restart():
    evicted = JobFault(kind="pod", reason="pod evicted", pod="llama-1", node="node-1", rank=1)
    decision = go([evicted], job(spares=0))
    assert decision.action is Action.FULL_JOB_RESTART
    assert decision.avoid_nodes == ["node-1"]


def test_restarts_in_the_window_reaching_the_threshold_force_a_full_restart_even_with_spares():
    record = job(restart_times=[NOW - timedelta(minutes=50), NOW - timedelta(minutes=5)], restart_count=2)
    run_policy = policy(eval_period_seconds=3600, num_restart_before_full_job_restart=2)
    for fault in (node_lost(1), worker(1)):
        decision = go([fault], record, run_policy)
        assert decision.action is Action.FULL_JOB_RESTART, fault.kind
        assert "2 restarts in 3600 s reached numRestartBeforeFullJobRestart" in decision.reason
        assert decision.moves == {}


def test_restarts_outside_the_window_do_not_count():
    record = job(restart_times=[NOW - timedelta(hours=3), NOW - timedelta(minutes=5)], restart_count=2)
    run_policy = policy(eval_period_seconds=3600, num_restart_before_full_job_restart=2)
    assert restarts_in_window(record, 3600, NOW) == 1
    assert go([node_lost(1)], record, run_policy).action is Action.SPARE_SWAP
    assert go([worker(1)], record, run_policy).action is Action.PROCESS_RESTART


def test_the_window_defaults_to_six_hours():
    record = job(restart_times=[NOW - timedelta(hours=5), NOW - timedelta(hours=7)], restart_count=2)
    assert DEFAULT_EVAL_PERIOD_S == 6 * 3600
    decision = go([worker()], record, policy(num_restart_before_full_job_restart=1))
    assert decision.action is Action.FULL_JOB_RESTART
    assert f"1 restarts in {DEFAULT_EVAL_PERIOD_S} s" in decision.reason


def test_restarts_in_window_counts_a_restart_exactly_at_its_start():
    record = job(restart_times=[NOW - timedelta(seconds=60), NOW - timedelta(seconds=61)])
    assert restarts_in_window(record, 60, NOW) == 1
    assert restarts_in_window(job(), 60, NOW) == 0


# ============================================================== fail


def test_job_max_retry_count_reached_fails_naming_it():
    record = job(restart_count=3)
    decision = go([worker()], record, policy(max_retries=3))
    assert decision.action is Action.FAIL
    assert "jobMaxRetryCount" in decision.reason
    assert "3 restarts" in decision.reason
    assert "rank exited with code 1" in decision.reason  # the last fault is named too
    assert go([worker()], job(restart_count=2), policy(max_retries=3)).action is Action.PROCESS_RESTART


def test_without_job_max_retry_count_the_default_applies():
    run_policy = policy(max_retries=None)
    spent = go([worker()], job(restart_count=DEFAULT_MAX_RETRIES), run_policy)
    assert spent.action is Action.FAIL
    assert f"jobMaxRetryCount {DEFAULT_MAX_RETRIES}" in spent.reason
    left = go([worker()], job(restart_count=DEFAULT_MAX_RETRIES - 1), run_policy)
    assert left.action is Action.PROCESS_RESTART


def test_max_full_job_restarts_spent_fails_naming_it():
    record = job(spares=0, full_restart_count=2, restart_count=2)
    decision = go([node_lost(1)], record, policy(max_full_job_restarts=2))
    assert decision.action is Action.FAIL
    assert "maxFullJobRestarts" in decision.reason
    assert "NodeFault" in decision.reason
    # one left: the full restart happens
    fewer = record.model_copy(update={"full_restart_count": 1})
    assert go([node_lost(1)], fewer, policy(max_full_job_restarts=2)).action is Action.FULL_JOB_RESTART


def test_spent_full_restarts_do_not_stop_a_spare_swap():
    record = job(full_restart_count=5)
    assert go([node_lost(1)], record, policy(max_full_job_restarts=1)).action is Action.SPARE_SWAP


# ============================================================== repeat offenders


def test_repeat_offenders_are_limited_most_faults_first():
    record = job(spares=0, offenders={"node-9": 3, "node-7": 1, "node-8": 1})
    faults = [node_lost(1), node_lost(2)]
    decision = go(faults, record, policy(max_num_repeat_offenders_to_avoid=2))
    assert decision.action is Action.FULL_JOB_RESTART
    assert decision.avoid_nodes == ["node-9", "node-1"]  # 3 faults, then ties by name

    assert repeat_offenders(record, faults, None) == ["node-9", "node-1", "node-2", "node-7", "node-8"]
    assert repeat_offenders(record, faults, 0) == []


def test_a_fault_adds_to_a_nodes_earlier_count():
    record = job(offenders={"node-1": 1, "node-5": 1})
    assert repeat_offenders(record, [node_lost(1)], 1) == ["node-1"]


def test_worker_faults_do_not_make_offenders():
    assert repeat_offenders(job(), [worker(1), worker(2)], None) == []


# ============================================================== checkpoint progress


def step(count: int, prefix: str = "ckpt") -> dict[str, Any]:
    return {"progressData": f"s3://bucket/{prefix}/step-{count}", "progressCount": count}


def test_progress_is_the_lowest_step_every_rank_reported_per_prefix():
    progress = aggregate_progress(
        {
            "llama-0": {"ckpt": step(300), "opt": step(20, "opt")},
            "llama-1": {"ckpt": step(200), "opt": step(30, "opt")},
            "llama-2": {"ckpt": step(250), "opt": step(10, "opt")},
        }
    )
    assert progress == {
        "ckpt": {"progressData": "s3://bucket/ckpt/step-200", "progressCount": 200},
        "opt": {"progressData": "s3://bucket/opt/step-10", "progressCount": 10},
    }


def test_a_prefix_a_rank_lacks_is_left_out():
    progress = aggregate_progress(
        {"llama-0": {"ckpt": step(300), "extra": step(5)}, "llama-1": {"ckpt": step(200)}}
    )
    assert progress == {"ckpt": {"progressData": "s3://bucket/ckpt/step-200", "progressCount": 200}}


def test_no_progress_when_a_rank_reported_nothing():
    assert aggregate_progress({"llama-0": {"ckpt": step(300)}, "llama-1": None}) is None
    assert aggregate_progress({"llama-0": {"ckpt": step(300)}, "llama-1": {}}) is None
    assert aggregate_progress({}) is None
    assert aggregate_progress({"llama-0": {"ckpt": step(3)}, "llama-1": {"other": step(4)}}) is None


def test_progress_counts_compare_as_numbers():
    progress = aggregate_progress({"llama-0": {"ckpt": step(9)}, "llama-1": {"ckpt": step(10)}})
    assert progress["ckpt"]["progressCount"] == 9
    as_text = aggregate_progress(
        {"llama-0": {"ckpt": {**step(9), "progressCount": "9"}}, "llama-1": {"ckpt": step(10)}}
    )
    assert as_text["ckpt"]["progressCount"] == "9"


# ============================================================== carrying a decision out (pure)


def test_a_lost_node_explains_its_peers_worker_faults():
    lost, peer, other = node_lost(1), worker(0), worker(2)
    assert root_faults([peer, lost]) == [lost]
    assert root_faults([peer, other]) == [peer, other]


def test_only_faults_not_already_pending_are_recorded():
    record = job(pending_faults=[node_lost(1).model_dump(mode="json")])
    assert [f["pod"] for f in unrecorded([node_lost(1), node_lost(2)], record)] == ["llama-2"]


def _answer(pod: str, state: AgentState, mode: str | None = None) -> AgentAnswer:
    return AgentAnswer(pod=pod, ok=True, status=AgentStatus(status=state, restartMode=mode))


def test_spares_that_answered_ready_or_running_stand_by_and_ranks_say_their_restart_mode():
    record = job(ranks=2, spares=3)
    answers = {
        "spare-0": _answer("spare-0", AgentState.READY),
        "spare-1": AgentAnswer(pod="spare-1", ok=False, error="no answer", silent=True),
        "spare-2": _answer("spare-2", AgentState.FAULTED),
        "llama-0": _answer("llama-0", AgentState.RUNNING, "in_process_restart"),
        "llama-1": _answer("llama-1", AgentState.RUNNING, "process_restart"),
    }
    assert standing_spares(record, answers) == {"spare-0"}
    assert restart_modes(record, answers) == {"in_process_restart", "process_restart"}


def test_restart_counters_count_the_restart_and_the_faulty_nodes_and_clear_what_was_pending():
    record = job(fault_count=2, restart_count=1, offenders={"node-1": 1}, pending_faults=[{"pod": "x"}])
    counters = restart_counters(record, [node_lost(1), worker(0)], NOW)
    assert counters["fault_count"] == 3 and counters["restart_count"] == 2
    assert counters["restart_times"][-1] == NOW and counters["pending_faults"] == []
    assert counters["offenders"] == offender_counts(record, [node_lost(1)]) == {"node-1": 2}


def test_a_swap_stops_kept_ranks_and_promoted_spares_only_and_starts_the_new_rank_table():
    record = job(ranks=3, spares=2)
    decision = Decision(action=Action.SPARE_SWAP, reason="r", moves={1: "spare-1"}, delete_pods=["llama-1"])
    plan = swap_plan(record, decision)
    assert [s.pod for s in plan.stop] == ["llama-0", "llama-2", "spare-1"]
    assert [(s.pod, s.rank) for s in plan.slots] == [
        ("llama-0", 0),
        ("llama-2", 2),
        ("spare-0", None),
        ("spare-1", 1),
    ]
    assert sorted(s.rank for s in plan.start) == [0, 1, 2]
    assert record.pods[4].rank is None, "the record is not changed"
