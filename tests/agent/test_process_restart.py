"""The agent's main scenario (process-level restart): two agents of two workers each on loopback, driven
over HTTP like the control plane drives them: start -> kill a worker -> faulted/WorkerCrash -> stop all
-> ready -> start with faultCount 1 and the reported progress -> resume -> completed -> shutdown -> exit
0."""

import os
import signal

import pytest
from agent_harness import free_port, pid_alive, read_events, start_body, wait_for

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("standby", [False, True], ids=["new-processes", "process-standby"])
def test_crash_stop_restart_resume_complete_shutdown(ctl, agents, standby):
    flags = ["--nproc-per-node", "2", *(["--process-standby"] if standby else [])]
    a = agents("a", ctl, flags, ["--steps", "24"])
    b = agents("b", ctl, flags, ["--steps", "24"])
    assert a.status()["status"] == b.status()["status"] == "ready"
    port = free_port()
    a.post("/start", start_body(0, 2, port))
    b.post("/start", start_body(1, 2, port))
    assert b.status()["status"] == "running"

    # Real training: all four ranks all-reduce and checkpoint; progress shows up in /status.
    wait_for(lambda: all("progress" in x.status() for x in (a, b)), 60, "checkpoint progress on both agents")
    starts = [e for e in read_events(ctl) if e["event"] == "start"]
    assert sorted(e["rank"] for e in starts) == [0, 1, 2, 3]
    assert {e["world"] for e in starts} == {4}
    assert {e["env_restart_count"] for e in starts} == {"0"}

    victim = b.pids()[1]
    os.kill(victim, signal.SIGKILL)
    faulted = b.wait_state("faulted", 30)
    assert faulted["reason"] == "WorkerCrash"
    assert "SIGKILL" in faulted["message"] and str(victim) in faulted["message"]

    for agent in (a, b):
        agent.post("/stop")
    old_pids = set(a.pids().values()) | set(b.pids().values())
    for agent in (a, b):
        agent.wait_state("ready", 30)
    wait_for(lambda: not any(pid_alive(p) for p in old_pids), 10, "old workers to be gone")

    # The control plane aggregates progress: the lowest step every pod finished.
    progress = [x.status()["progress"]["model"] for x in (a, b)]
    resume = min(progress, key=lambda p: p["progressCount"])
    n_before = len(read_events(ctl))
    a.post("/start", start_body(0, 2, port, fault_count=1, progress={"model": resume}))
    b.post("/start", start_body(1, 2, port, fault_count=1, progress={"model": resume}))

    for agent in (a, b):
        done = agent.wait_state("completed", 90)
        assert done["reason"] == "AllStagesSucceeded"
    restarted = [e for e in read_events(ctl)[n_before:] if e["event"] == "start"]
    assert len(restarted) == 4
    assert {e["env_restart_count"] for e in restarted} == {"1"}
    assert {e["job_restart_count"] for e in restarted} == {"1"}
    assert {e["start_step"] for e in restarted} == {resume["progressCount"] + 1}
    # With --process-standby the new generation ran in the interpreters started beforehand.
    spawned = [e for e in read_events(ctl)[n_before:] if e["event"] == "spawned"]
    assert [e["standby"] for e in spawned] == [standby] * 4
    assert {e["pid"] for e in restarted} == {e["pid"] for e in spawned}
    log = a.logtext() + b.logtext()
    for rank in range(4):  # their output still reaches the container log
        assert f"STEP {resume['progressCount'] + 1} rank {rank} sum" in log
    assert len([e for e in read_events(ctl) if e["event"] == "done"]) == 4

    for agent in (a, b):
        agent.post("/shutdown")
    for agent in (a, b):
        assert agent.proc.wait(30) == 0
