"""The agent's paths besides a crash and a hang, over HTTP against real hyperpodrun processes: the
pre- and post-train stages around training, a failing post-train stage, the fallback from an
in-process restart to a process restart after --inprocess-timeout, and a graceful /stop (the
elastic-event signal to the workers, every rank of the job stopping at the same step under
HYPERPOD_SIGNAL_COORDINATION=distributed)."""

import pytest
from agent_harness import GRACEFUL, free_port, inject_fault, pid_alive, read_events, start_body, wait_for

pytestmark = pytest.mark.integration


def test_pre_and_post_train_stages_run_around_training_and_a_failing_post_train_is_a_fault(ctl, agents):
    events = ctl / "events.jsonl"
    pre = ctl / "pre.sh"
    pre.write_text(f'printf \'{{"event": "pre_train", "args": "%s"}}\\n\' "$1" >> {events}\n')
    post = ctl / "post.py"
    post.write_text(
        "import json, sys\n"
        f"with open({str(events)!r}, 'a') as f:\n"
        "    f.write(json.dumps({'event': 'post_train', 'argv': sys.argv[1:]}) + '\\n')\n"
        "sys.exit(int(sys.argv[1].split()[-1]))\n"
    )
    stages = ["--pre-train-script", str(pre), "--pre-train-args", "--data /d x"]
    a = agents(
        "a",
        ctl,
        ["--nproc-per-node", "2", *stages, "--post-train-script", str(post), "--post-train-args", "exit 0"],
        ["--steps", "6", "--step-time", "0.01"],
    )
    a.post("/start", start_body(0, 1, free_port()))
    done = a.wait_state("completed", 90)
    assert done["reason"] == "AllStagesSucceeded" and "post_train" in done["message"]
    order = [
        e["event"] for e in read_events(ctl) if e["event"] in ("pre_train", "spawned", "done", "post_train")
    ]
    assert order == ["pre_train", "spawned", "spawned", "done", "done", "post_train"]
    (pre_event,) = [e for e in read_events(ctl) if e["event"] == "pre_train"]
    assert pre_event["args"] == "--data /d x"  # one opaque argument string
    (post_event,) = [e for e in read_events(ctl) if e["event"] == "post_train"]
    assert post_event["argv"] == ["exit 0"]
    a.post("/shutdown")
    assert a.proc.wait(30) == 0

    # The same stages, with a post-train script that fails: the job's training is done, the pod is not.
    events.unlink()
    b = agents(
        "b",
        ctl,
        ["--nproc-per-node", "1", "--post-train-script", str(post), "--post-train-args", "exit 4"],
        ["--steps", "3", "--step-time", "0.01"],
    )
    b.post("/start", start_body(0, 1, free_port()))
    faulted = b.wait_state("faulted", 90)
    assert faulted["reason"] == "WorkerCrash" and "exit code 4" in faulted["message"]
    assert [e["event"] for e in read_events(ctl) if e["event"] in ("done", "post_train")] == [
        "done",
        "post_train",
    ]


def test_ranks_not_back_at_the_barrier_in_time_fall_back_to_a_process_restart(ctl, agents):
    ipr = ["--nproc-per-node", "2", "--inprocess-restart", "--inprocess-timeout", "2"]
    a = agents("a", ctl, ipr, ["--steps", "400", "--step-time", "0.02"])
    a.wait_state("ready", 60)
    old = a.pids()
    port = free_port()
    a.post("/start", start_body(0, 1, port))
    wait_for(lambda: len([e for e in read_events(ctl) if e["event"] == "step"]) >= 6, 60, "training steps")
    # Rank 1 is stuck outside any collective and never looks at the agent again; rank 0 waits for
    # it in its all-reduce (60 s process-group timeout). Neither comes back to the barrier.
    inject_fault(ctl, 1, "stuck")
    wait_for(lambda: [e for e in read_events(ctl) if e["event"] == "fault"], 30, "rank 1 stuck")
    a.post("/stop")
    ready = a.wait_state("ready", 30)  # well before the process group's timeout
    assert ready["reason"] == "WorkersAtBarrier"
    assert "local process restart (in-process restart timed out after 2s)" in a.logtext()
    new = a.pids()
    assert set(new.values()).isdisjoint(old.values()), "the workers must be new processes"
    wait_for(lambda: not any(pid_alive(p) for p in old.values()), 10, "the stuck workers to be gone")
    n_before = len(read_events(ctl))
    a.post("/start", start_body(0, 1, port, fault_count=1))
    wait_for(
        lambda: len([e for e in read_events(ctl)[n_before:] if e["event"] == "step"]) >= 6,
        60,
        "training again in the new processes",
    )
    assert {e["pid"] for e in read_events(ctl)[n_before:] if e["event"] == "step"} == set(new.values())


def test_graceful_stop_signals_the_workers_and_every_rank_stops_at_the_same_step(ctl, agents):
    env = {"HYPERPOD_SIGNAL_COORDINATION": "distributed"}
    args = ["--nproc-per-node", "2", "--shutdown-timeout", "30"]
    a = agents("a", ctl, args, ["--step-time", "0.02"], env=env, script=GRACEFUL)
    b = agents("b", ctl, args, ["--step-time", "0.02"], env=env, script=GRACEFUL)
    port = free_port()
    a.post("/start", start_body(0, 2, port))
    b.post("/start", start_body(1, 2, port))
    wait_for(lambda: len([e for e in read_events(ctl) if e["event"] == "step"]) >= 20, 60, "training steps")
    pids_a = list(a.pids().values())
    # Only pod a is told: its workers get SIGUSR1 and end themselves (no SIGKILL within the 30 s);
    # pod b's workers learn of it through the all-reduced flag and stop at the same step.
    a.post("/stop", {"is_graceful": True, "timeout": 30})
    stopped = a.wait_state("ready", 30)
    assert stopped["reason"] == "Stopped"
    assert not any(pid_alive(p) for p in pids_a)
    b.wait_state("completed", 30)
    stops = {e["rank"]: e for e in read_events(ctl) if e["event"] == "elastic_stop"}
    assert sorted(stops) == [0, 1, 2, 3], "every rank stops by itself"
    assert len({e["step"] for e in stops.values()}) == 1, stops
    assert {r: e["signalled"] for r, e in stops.items()} == {0: True, 1: True, 2: False, 3: False}
    assert "closing signal SIGUSR1" in a.logtext()
