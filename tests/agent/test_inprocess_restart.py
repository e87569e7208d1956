"""In-process restart over HTTP: a fault a worker reports is recovered with the same processes; a
killed worker falls back to a process restart of that pod."""

import os
import signal

import pytest
from agent_harness import free_port, inject_fault, read_events, start_body, wait_for

pytestmark = pytest.mark.integration

IPR = ["--nproc-per-node", "2", "--inprocess-restart", "--inprocess-timeout", "20"]


def _steps_after(ctl, n_before, restart_count):
    return [
        e for e in read_events(ctl)[n_before:] if e["event"] == "step" and e["restart_count"] == restart_count
    ]


def test_reported_fault_recovers_in_process_then_kill_falls_back(ctl, agents):
    a = agents("a", ctl, IPR, ["--steps", "400", "--step-time", "0.02"])
    b = agents("b", ctl, IPR, ["--steps", "400", "--step-time", "0.02"])
    # Workers are spawned at once and park at the barrier: the agent goes INIT -> READY by itself.
    for agent in (a, b):
        agent.wait_state("ready", 60)
        assert agent.status()["restartMode"] == "in_process_restart"
    pids_a, pids_b = a.pids(), b.pids()
    port = free_port()
    a.post("/start", start_body(0, 2, port))
    b.post("/start", start_body(1, 2, port))
    wait_for(lambda: len(_steps_after(ctl, 0, 0)) >= 8, 60, "training steps")

    # 1. An exception in rank 3's training step.
    inject_fault(ctl, 3, "raise")
    faulted = b.wait_state("faulted", 30)
    assert faulted["reason"] == "WorkerReportedFault"
    assert "injected fault" in faulted["message"]
    for agent in (a, b):
        agent.post("/stop")
    for agent in (a, b):
        agent.wait_state("ready", 30)
    n_before = len(read_events(ctl))
    a.post("/start", start_body(0, 2, port, fault_count=1))
    b.post("/start", start_body(1, 2, port, fault_count=1))
    wait_for(
        lambda: len(_steps_after(ctl, n_before, 1)) >= 8, 60, "training again after the in-process restart"
    )
    assert a.pids() == pids_a and b.pids() == pids_b, "in-process restart must keep the worker processes"
    restarted = [e for e in read_events(ctl)[n_before:] if e["event"] == "start"]
    assert {e["pid"] for e in restarted} == set(pids_a.values()) | set(pids_b.values())
    assert {e["env_restart_count"] for e in restarted} == {"1"}

    # 2. A killed worker: its pod falls back to a process restart, the other pod stays in process.
    os.kill(pids_b[0], signal.SIGKILL)
    assert b.wait_state("faulted", 30)["reason"] == "WorkerCrash"
    for agent in (a, b):
        agent.post("/stop")
    for agent in (a, b):
        agent.wait_state("ready", 60)
    new_b = b.pids()
    assert set(new_b.values()).isdisjoint(pids_b.values()), "the killed pod's workers must be new processes"
    assert a.pids() == pids_a
    n_before = len(read_events(ctl))
    a.post("/start", start_body(0, 2, port, fault_count=2))
    b.post("/start", start_body(1, 2, port, fault_count=2))
    wait_for(lambda: len(_steps_after(ctl, n_before, 2)) >= 8, 60, "training again after the process restart")

    for agent in (a, b):
        agent.post("/shutdown")
    for agent in (a, b):
        assert agent.proc.wait(30) == 0
