"""Unit tests of the agent's pure pieces: state machine, request validation, the shutdown-timeout
resolution, log rules (with a fake clock), checkpoint progress and the EventBridge push."""

import json
import threading

import pytest

from hyperpod_agent.agent import _Progress
from hyperpod_agent.config import build_parser, normalize_args, resolve_shutdown_timeout
from hyperpod_agent.errors import ConfigurationError, RequestValidationError
from hyperpod_agent.events import DETAIL_TYPE, SOURCE, EventPublisher
from hyperpod_agent.logmon import LogMonitor
from hyperpod_agent.models import master_outside, parse_log_rules, parse_start, parse_stop
from hyperpod_agent.state import IPR_TRANSITIONS, PLR_TRANSITIONS, AgentState, StateMachine

pytestmark = pytest.mark.unit
S = AgentState


def test_plr_transitions_refuse_invalid_and_keep_state():
    sm = StateMachine(S.READY, PLR_TRANSITIONS)
    assert not sm.transition(S.COMPLETED)
    assert sm.state is S.READY
    assert sm.transition(S.RUNNING, "RunningStarted")
    assert sm.transition(S.FAULTED, "WorkerCrash", "boom")
    assert not sm.transition(S.READY)
    assert sm.transition(S.STOPPING) and sm.transition(S.READY)
    assert set(sm.transitions) == {"READY", "RUNNING", "FAULTED", "STOPPING"}


def test_ipr_adds_init_paths_and_only_from_guards_races():
    sm = StateMachine(S.INIT, IPR_TRANSITIONS)
    assert sm.transition(S.FAULTED)  # a worker died while waiting at the barrier
    assert sm.transition(S.STOPPING) and sm.transition(S.INIT)
    assert not sm.transition(S.READY, only_from={S.STOPPING})
    assert sm.state is S.INIT
    assert S.INIT not in PLR_TRANSITIONS[S.STOPPING]


def test_parse_start_coerces_and_collects_every_error():
    req = parse_start(
        {
            "rank": 1,
            "nnodes": 2,
            "faultCount": 3,
            "master_addr": "10.0.0.1",
            "master_port": "29500",
            "spare": 1,
            "rankIps": [{"rank": 0, "ip": "10.0.0.1"}],
        }
    )
    assert (req.master_port, req.spare, req.fault_count, req.rank_ips[0].ip) == (29500, True, 3, "10.0.0.1")
    assert (
        parse_start(
            {"rank": 0, "nnodes": 1, "faultCount": 0, "master_addr": "a", "master_port": ""}
        ).master_port
        == 0
    )
    with pytest.raises(RequestValidationError) as exc:
        parse_start({"rank": True, "nnodes": 0, "master_addr": "", "master_port": 70000, "spare": "yes"})
    fields = {e["loc"][1] for e in exc.value.errors}
    assert fields == {"rank", "nnodes", "faultCount", "master_addr", "master_port", "spare"}


def test_parse_start_refuses_a_master_addr_outside_the_rank_table():
    body = {"rank": 1, "nnodes": 2, "faultCount": 0, "master_port": 1}
    table = [{"rank": 0, "ip": "fd00::a"}, {"rank": 1, "ip": "10.0.0.2"}]
    assert parse_start({**body, "master_addr": "fd00:0::a", "rankIps": table}).master_addr == "fd00:0::a"
    assert parse_start({**body, "master_addr": "10.0.0.2", "rankIps": table}).rank == 1
    # No table: nothing to check against (a control plane that sends none is trusted as before).
    assert parse_start({**body, "master_addr": "203.0.113.9"}).rank_ips == []
    with pytest.raises(RequestValidationError) as exc:
        parse_start({**body, "master_addr": "203.0.113.9", "rankIps": table})
    assert [e["loc"] for e in exc.value.errors] == [["body", "master_addr"]]
    assert "'203.0.113.9' is not one of the job's pod IPs in 'rankIps'" in exc.value.errors[0]["msg"]


def test_parse_log_rules_and_stop():
    errs_holder = []

    class Errs:
        def add(self, loc, msg, kind="value_error"):
            errs_holder.append((loc, msg))

    rules = parse_log_rules(
        [
            {"name": "r", "logPattern": ".*loss (\\d+)", "metricThreshold": 5, "operator": "gt"},
            {"name": "bad", "logPattern": "("},
            {"logPattern": ".*"},
        ],
        Errs(),
    )
    assert [r.name for r in rules] == ["r"]
    assert len(errs_holder) == 2
    assert parse_stop(None).restart_mode == "ipr"
    assert (
        parse_stop({"restart_mode": "process_level_restart", "is_graceful": True, "timeout": 5}).timeout == 5
    )
    with pytest.raises(RequestValidationError):
        parse_stop({"timeout": -1})


def test_shutdown_timeout_resolution(monkeypatch):
    assert resolve_shutdown_timeout(None, {}) == 15
    assert resolve_shutdown_timeout(None, {"TORCH_ELASTIC_SHUTDOWN_TIMEOUT": "40"}) == 40
    assert resolve_shutdown_timeout(7, {"TORCH_ELASTIC_SHUTDOWN_TIMEOUT": "40"}) == 7
    with pytest.raises(ConfigurationError, match="TORCH_ELASTIC_SHUTDOWN_TIMEOUT"):
        resolve_shutdown_timeout(None, {"TORCH_ELASTIC_SHUTDOWN_TIMEOUT": "soon"})
    # PET_SHUTDOWN_TIMEOUT is read by torch's env action at parser construction, as if it were the flag.
    monkeypatch.setenv("PET_SHUTDOWN_TIMEOUT", "9")
    args = build_parser().parse_args(["train.py"])
    assert normalize_args(args, {"TORCH_ELASTIC_SHUTDOWN_TIMEOUT": "40"}).shutdown_timeout == 9


def test_parser_has_torchrun_and_hyperpod_arguments_with_seed_defaults():
    args = build_parser().parse_args(["--nnodes", "2", "--nproc-per-node", "2", "train.py", "--lr", "1"])
    opts = normalize_args(args, {})
    assert (opts.shutdown_signal.name, opts.shutdown_timeout, opts.server_host, opts.server_port) == (
        "SIGKILL",
        15,
        "0.0.0.0",
        8080,
    )
    assert (opts.server_log_level, opts.server_shutdown_timeout, opts.inprocess_restart) == (
        "info",
        300,
        False,
    )
    assert args.rdzv_backend == "hyperpod" and args.training_script_args == ["--lr", "1"]
    with pytest.raises(ConfigurationError, match="elastic cluster size"):
        normalize_args(build_parser().parse_args(["--nnodes", "1:4", "t.py"]), {})


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def _monitor(rule, ranks=(0,)):
    clock = Clock()
    mon = LogMonitor(interval=3600, clock=clock)

    class Errs:
        def add(self, *a, **k):
            raise AssertionError(a)

    mon.set_rules(parse_log_rules([rule], Errs()))
    mon.attach(ranks)
    return mon, clock


def test_log_rules_hang_slow_fault_and_pause():
    mon, clock = _monitor(
        {
            "name": "step",
            "logPattern": ".*STEP",
            "expectedStartCutOffInSeconds": 5,
            "expectedRecurringFrequencyInSeconds": 2,
        },
    )
    clock.t = 4
    mon.tick()
    assert mon.verdict() is None
    clock.t = 6
    mon.tick()
    assert mon.verdict().reason == "LogHang_step"
    mon.feed(0, "STEP 1")
    mon.tick()
    assert mon.verdict() is None  # recovered
    mon.pause()
    clock.t = 100
    mon.feed(0, "STEP 2")  # parked at the barrier: not evaluated
    mon.resume()
    mon.tick()
    assert mon.verdict() is None  # paused time does not count
    clock.t = 103
    mon.tick()
    assert mon.verdict().reason == "LogHang_step"

    mon, clock = _monitor(
        {
            "name": "tput",
            "logPattern": ".*time (\\d+)",
            "metricThreshold": 10,
            "operator": "gt",
            "metricEvaluationDataPoints": 2,
        },
    )
    for line in ("time 20", "time 5", "time 30"):
        mon.feed(0, line)
    mon.tick()
    assert mon.verdict() is None
    mon.feed(0, "time 31")
    mon.tick()
    assert mon.verdict().reason == "LogSlow_tput"

    mon, clock = _monitor({"name": "nan", "logPattern": ".*loss nan", "faultOnMatch": True})
    mon.feed(0, "loss nan")
    mon.tick()
    assert mon.verdict().reason == "LogFault_nan"


def test_a_rule_holds_for_each_local_rank_on_its_own():
    mon, clock = _monitor(
        {"name": "step", "logPattern": ".*STEP", "expectedRecurringFrequencyInSeconds": 2}, (0, 1)
    )
    mon.feed(0, "STEP 1")
    mon.feed(1, "STEP 1")
    for t in (1.5, 3.0, 4.5):  # rank 0 prints on, rank 1 went quiet after t=0
        clock.t = t
        mon.feed(0, "STEP")
        mon.tick()
    verdict = mon.verdict()
    assert verdict.reason == "LogHang_step" and "local rank 1" in verdict.message
    mon.feed(5, "STEP")  # a rank the stage does not have is ignored
    mon.detach()
    assert mon.verdict() is None


def test_the_tap_echoes_console_ranks_unchanged_and_feeds_every_rank(tmp_path):
    import os

    from torch.distributed.elastic.multiprocessing import DefaultLogsSpecs, Std

    from hyperpod_agent.logtap import OutputTap

    lines, (echo_r, echo_w) = [], os.pipe()
    tap = OutputTap(lambda rank, line: lines.append((rank, line)), echo_fd=echo_w, interval=3600)
    # Rank 1 is teed by torch (a file torch writes and copies itself); rank 0 goes to the console.
    specs = tap.wrap(DefaultLogsSpecs(log_dir=str(tmp_path), tee={1: Std.OUT}))
    dest = specs.reify({0: {}, 1: {}})
    with open(dest.stdouts[0], "wb", buffering=0) as out0, open(dest.stdouts[1], "wb", buffering=0) as out1:
        out0.write(b"hello from 0\nno end yet")
        out1.write(b"step 1 of rank 1\n")
        tap.close()  # the processes are gone: everything they wrote is read
    # Each rank's lines in its order; the ranks' turns interleave as the reader thread finds them.
    in_rank_order = sorted(lines, key=lambda entry: entry[0])  # stable: keeps each rank's order
    assert in_rank_order == [(0, "hello from 0"), (0, "no end yet"), (1, "step 1 of rank 1")], lines
    os.close(echo_w)
    with os.fdopen(echo_r, "rb") as f:
        assert f.read() == b"hello from 0\nno end yet"  # the teed rank is torch's to print
    assert not os.path.exists(dest.stdouts[0])  # the pipe is gone with its stage
    assert dest.stdouts[1].startswith(str(tmp_path)) and dest.tee_stdouts[1] == dest.stdouts[1]
    tap.stop()


def test_progress_is_the_step_every_local_rank_finished():
    p = _Progress(types={"model_checkpoint": 1})
    p.reports = {0: {3: {"model_checkpoint": 1}, 6: {"model_checkpoint": 1}}, 1: {3: {"model_checkpoint": 1}}}
    assert p.complete_step(2) == 3
    assert p.complete_step(3) is None


def test_event_publisher_puts_the_documented_event_and_never_raises():
    calls, done = [], threading.Event()

    class FakeEvents:
        def put_events(self, Entries):
            calls.append(Entries)
            done.set()
            if len(calls) == 1:
                return {"FailedEntryCount": 0}
            raise RuntimeError("throttled")

    pub = EventPublisher(
        "bus", {"jobName": "j", "namespace": "ns", "jobUid": "u", "pod": "p"}, lambda: FakeEvents()
    )
    pub.publish("FAULTED", "WorkerCrash", "boom", 1, 2)
    assert done.wait(5)
    entry = calls[0][0]
    assert (entry["Source"], entry["DetailType"], entry["EventBusName"]) == (SOURCE, DETAIL_TYPE, "bus")
    detail = json.loads(entry["Detail"])
    assert {
        k: detail[k]
        for k in ("jobName", "namespace", "jobUid", "pod", "rank", "status", "reason", "faultCount")
    } == {
        "jobName": "j",
        "namespace": "ns",
        "jobUid": "u",
        "pod": "p",
        "rank": 1,
        "status": "faulted",
        "reason": "WorkerCrash",
        "faultCount": 2,
    }
    pub.publish("COMPLETED", None, None, 1, 2)  # the client raises: logged, not propagated
    pub.close()
    assert len(calls) == 2
    assert EventPublisher.from_env({}) is None


def test_a_bus_arn_names_the_region_of_the_agents_client():
    from hyperpod_agent.events import bus_region

    assert bus_region("arn:aws:events:eu-west-1:123456789012:event-bus/hp-events") == "eu-west-1"
    assert bus_region("arn:aws-cn:events:cn-north-1:123456789012:event-bus/hp-events") == "cn-north-1"
    assert bus_region("hp-events") is None  # a name: the SDK's configured Region


def test_the_default_client_is_made_in_the_buss_region(monkeypatch):
    import boto3

    from hyperpod_agent.events import EventPublisher

    made = []
    monkeypatch.setattr(boto3, "client", lambda service, **kw: made.append((service, kw)) or None)
    pub = EventPublisher("arn:aws:events:ap-south-1:123456789012:event-bus/b", {})
    pub.publish("FAULTED", "WorkerCrash", None, 0, 1)  # the None client fails: logged, swallowed
    pub.close()
    assert made == [("events", {"region_name": "ap-south-1"})]


def test_the_ip_table_takes_the_changed_ranks_and_the_new_version(tmp_path):
    """ "First call full, later calls only the changed ranks": what the workers read
    (pod_resourceconfig.json) and what /status reports (ipversion) follow each /start; an empty
    rankIps keeps the table and takes the version, an absent one changes nothing."""
    from hyperpod_agent.models import RankIp
    from hyperpod_agent.rendezvous import HyperPodRendezvousHandler, RankAssignment

    path = tmp_path / "pod_resourceconfig.json"
    rdzv = HyperPodRendezvousHandler("run", 3, "127.0.0.1", 1, resource_config_path=str(path))
    who = RankAssignment(1, 3, 0, "10.0.0.1", 1)
    full = [RankIp(0, "10.0.0.1"), RankIp(1, "10.0.0.2"), RankIp(2, "10.0.0.3")]
    rdzv.assign(who, full, "v1", True)
    rdzv.assign(who, [RankIp(2, "10.0.0.9")], "v2", True)
    assert json.loads(path.read_text())["ips"] == ["10.0.0.1", "10.0.0.2", "10.0.0.9"]
    assert (rdzv.ip_version, json.loads(path.read_text())["ips_timestamp"]) == ("v2", "v2")
    rdzv.assign(who, [], "v3", True)
    assert rdzv.ip_version == "v3" and rdzv.rank_ips == {0: "10.0.0.1", 1: "10.0.0.2", 2: "10.0.0.9"}
    rdzv.assign(who, [], "v4", False)
    assert rdzv.ip_version == "v3"
    # the master of a partial table is checked against the table it makes
    assert "10.0.0.9" in rdzv.merged_ips([RankIp(0, "10.0.0.7")])
    master_outside("10.0.0.9", [ip for ip in rdzv.merged_ips([RankIp(0, "10.0.0.7")]) if ip])
    with pytest.raises(RequestValidationError) as exc:
        master_outside("10.0.0.1", [ip for ip in rdzv.merged_ips([RankIp(0, "10.0.0.7")]) if ip])
    assert [e["loc"] for e in exc.value.errors] == [["body", "master_addr"]]


def test_parse_start_reads_a_table_of_changed_ranks_without_judging_its_master():
    body = {"rank": 1, "nnodes": 3, "faultCount": 1, "master_addr": "10.0.0.1", "master_port": 1}
    changed = parse_start({**body, "ipVersion": "v2", "rankIps": [{"rank": 2, "ip": "10.0.0.9"}]})
    assert (changed.rank_ips_sent, [r.rank for r in changed.rank_ips]) == (True, [2])
    assert parse_start({**body, "ipVersion": "v2", "rankIps": []}).rank_ips_sent is True
    assert parse_start(body).rank_ips_sent is False


def test_a_missing_or_stale_standby_means_new_processes():
    import sys

    from hyperpod_agent.standby import StandbyPool

    args = {0: ("-u", "/w/train.py", "--x"), 1: ("-u", "/w/train.py", "--x")}
    assert not StandbyPool.usable("/bin/sh", {0: ("run.sh",)})  # only `python -u script.py` launches
    pool = StandbyPool()
    assert pool.take(sys.executable, args) is None  # none started yet
    pool.prepare(sys.executable, args, {0: {}, 1: {}})
    # Made for another script: not used, and gone (it exits on the closed pipe, else is killed).
    other = {r: ("-u", "/w/other.py") for r in args}
    stale = dict(pool._standbys)
    assert pool.take(sys.executable, other) is None
    assert all(s.proc.poll() is not None for s in stale.values())
    pool.prepare(sys.executable, args, {0: {}, 1: {}})
    dead = pool._standbys[1].proc
    dead.kill()
    dead.wait()
    assert pool.take(sys.executable, args) is None  # one died: the whole generation starts anew
    pool.prepare(sys.executable, args, {0: {}, 1: {}})
    ready = pool.take(sys.executable, args)
    assert sorted(ready) == [0, 1] and all(s.alive for s in ready.values())
    for s in ready.values():
        s.discard()
