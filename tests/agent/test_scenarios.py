"""The agent's other end-to-end scenarios, each over HTTP against real hyperpodrun processes:
a hang caught by a log rule, a failing pre-train script, SIGTERM with no orphans, a spare promoted
to a rank, a bad /start body (malformed, foreign master, oversized, beside a stalled client)."""

import signal
import socket

import pytest
from agent_harness import free_port, inject_fault, pid_alive, read_events, start_body, wait_for

from hyperpod_agent.server import MAX_BODY_BYTES

pytestmark = pytest.mark.integration


def test_hang_on_local_rank_1_caught_by_a_log_rule_without_tee(ctl, agents):
    # No --tee: the rule reads every local rank through the agent, and the output still reaches
    # the agent's stdout (the container log) as the workers printed it.
    a = agents("a", ctl, ["--nproc-per-node", "2"], ["--steps", "2000", "--step-time", "0.02"])
    rule = {
        "name": "progress",
        "logPattern": ".*STEP (\\d+)",
        "expectedStartCutOffInSeconds": 60,
        "expectedRecurringFrequencyInSeconds": 1.5,
    }
    a.post("/start", start_body(0, 1, free_port(), log_monitoring_configuration=[rule]))
    wait_for(lambda: len([e for e in read_events(ctl) if e["event"] == "step"]) >= 10, 60, "training steps")
    assert a.status()["status"] == "running"
    # Rank 1 trains on but stops printing: rank 0's lines keep coming, so only a rule that reads
    # local rank 1 can see it.
    inject_fault(ctl, 1, "silent")
    faulted = a.wait_state("faulted", 30)
    assert faulted["reason"] == "LogHang_progress"
    assert "local rank 1" in faulted["message"] and "expected every 1.5s" in faulted["message"]
    lines = a.logtext().splitlines()
    for rank in (0, 1):
        assert any(line.startswith(f"STEP 3 rank {rank} sum ") for line in lines), f"rank {rank}'s output"
    a.post("/stop")
    a.wait_state("ready", 30)


def test_failing_pre_train_script_is_a_fault(ctl, agents):
    pre = ctl / "pre.sh"
    pre.write_text('echo "pre-train got: $1"\nexit 3\n')
    a = agents(
        "a", ctl, ["--nproc-per-node", "2", "--pre-train-script", str(pre), "--pre-train-args", "x y"], []
    )
    a.post("/start", start_body(0, 1, free_port()))
    faulted = a.wait_state("faulted", 30)
    assert faulted["reason"] == "WorkerCrash"
    assert "exit code 3" in faulted["message"]
    assert "pre-train got: x y" in a.logtext()  # one opaque argument string, as HyperPod passes it
    assert not [e for e in read_events(ctl) if e["event"] == "spawned"], "training must not start"


def test_sigterm_ends_every_worker_within_the_shutdown_timeout(ctl, agents):
    # Workers that ignore SIGTERM: only the SIGKILL after --shutdown-timeout ends them.
    a = agents(
        "a",
        ctl,
        ["--nproc-per-node", "2", "--shutdown-signal", "SIGTERM", "--shutdown-timeout", "2"],
        ["--steps", "100000", "--ignore-sigterm"],
    )
    a.post("/start", start_body(0, 1, free_port()))
    wait_for(lambda: len([e for e in read_events(ctl) if e["event"] == "step"]) >= 4, 60, "training steps")
    pids = list(a.pids().values())
    assert len(pids) == 2
    a.proc.send_signal(signal.SIGTERM)
    assert a.proc.wait(2 + 15) == 128 + signal.SIGTERM
    assert not [p for p in pids if pid_alive(p)], "orphaned workers"
    assert "Sending process" in a.logtext() and "SIGTERM" in a.logtext()


def test_sigterm_during_the_rendezvous_ends_the_agent_at_once(ctl, agents):
    # Rank 0 of two waits in the rendezvous for a rank 1 that never comes: a pod deleted then must
    # exit on SIGTERM, not take the signal for a stage that failed to start and idle until SIGKILL.
    a = agents("a", ctl, ["--nproc-per-node", "1"], ["--steps", "10"])
    a.post("/start", start_body(0, 2, free_port()))
    wait_for(lambda: "starting the train stage" in a.logtext(), 30, "the rendezvous to begin")
    a.proc.send_signal(signal.SIGTERM)
    assert a.proc.wait(15) == 128 + signal.SIGTERM, a.logtext()[-2000:]
    assert "cannot start the train stage" not in a.logtext()


def test_spare_holds_until_promoted(ctl, agents):
    a = agents("a", ctl, ["--nproc-per-node", "2"], ["--steps", "12"])
    spare = agents("s", ctl, ["--nproc-per-node", "2"], ["--steps", "12"])
    port = free_port()
    spare.post("/start", start_body(1, 2, port, spare=True))
    status = spare.status()
    assert status["status"] == "running" and status["spare"] == "True"
    assert status["holds_spares"] == "True", "the supervisor /starts our spares ahead of promotion"
    a.post("/start", start_body(0, 2, port))
    wait_for(
        lambda: len([e for e in read_events(ctl) if e["event"] == "spawned"]) >= 2, 60, "rank 0's workers"
    )
    assert "workers" not in spare.status(), "a spare must hold its workers"
    promoted = spare.post("/update", start_body(1, 2, port, spare=False))
    assert promoted["spare"] == "False" and promoted["assigned_rank"] == "1"
    for agent in (a, spare):
        agent.wait_state("completed", 90)
    assert sorted(e["rank"] for e in read_events(ctl) if e["event"] == "done") == [0, 1, 2, 3]


def test_bad_start_body_is_422_and_state_unchanged(ctl, agents):
    a = agents("a", ctl, ["--nproc-per-node", "1"], [])
    before = a.status()
    code, body = a.request(
        "POST", "/start", {"rank": "zero", "nnodes": 2, "master_addr": " ", "master_port": "x"}
    )
    assert code == 422
    locs = {tuple(e["loc"]) for e in body["detail"]}
    assert {
        ("body", "rank"),
        ("body", "faultCount"),
        ("body", "master_addr"),
        ("body", "master_port"),
    } <= locs
    assert any(e["msg"] == "Empty master_addr received from operator" for e in body["detail"])
    code, body = a.request("POST", "/start", raw=b"{not json")
    assert code == 422 and body["detail"][0]["type"] == "json_invalid"
    code, _ = a.request("POST", "/start", start_body(5, 2, 1234))
    assert code == 422
    # A rendezvous host that is not a pod of the job (not in its rank table) is refused.
    table = [{"rank": 0, "ip": "127.0.0.1"}, {"rank": 1, "ip": "127.0.0.2"}]
    code, body = a.request("POST", "/start", start_body(0, 2, 1234, master_addr="127.0.0.9", rankIps=table))
    assert code == 422 and [e["loc"] for e in body["detail"]] == [["body", "master_addr"]]
    # A body over the cap is refused unread, and the agent answers the next request at once; so it
    # does while another client holds a connection open and sends nothing.
    with socket.create_connection(("127.0.0.1", a.port)) as silent:
        code, body = a.request("POST", "/start", raw=b'{"pad": "' + b"x" * MAX_BODY_BYTES + b'"}')
        assert code == 413, body
        assert a.status()["status"] == "ready"
        silent.sendall(b"GET /status HTTP/1.1\r\n")
        assert a.status()["status"] == "ready"
    after = a.status()
    assert after["status"] == "ready" and after["transitions"] == before["transitions"]
    assert "assigned_rank" not in after
    # A valid /start in the wrong state is refused with 409, also without a change.
    a.post("/start", start_body(0, 1, free_port()))
    code, body = a.request("POST", "/start", start_body(0, 1, free_port()))
    assert code == 409 and "send /stop" in body["detail"]
    assert a.request("GET", "/nope")[0] == 404
    assert a.request("GET", "/start")[0] == 405
