"""Fault-to-training-again benchmark: in-process restart vs process restart vs plain torchrun.

Same training script (tests/agent/train_allreduce.py: gloo all-reduce, 2 pods x 2 workers on
loopback), same fault (rank 3 raises in its training step). Time = from the fault to the first
all-reduce step completed by the restarted job, read from the script's event log. For the two
hyperpodrun modes this script plays the control plane: it polls /status, sends /stop to every
agent on a fault, waits for READY and sends /start with faultCount + 1. torchrun restarts on its
own (--max-restarts 1, c10d rendezvous). Agent and torchrun start-up is not counted.

    python tests/bench/restart_bench.py [--runs 3]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = str(ROOT / "tests" / "agent" / "train_allreduce.py")
BIN = Path(sys.executable).parent
PG_TIMEOUT = 60


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(pred, timeout, what):
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.01)


def events(ctl: Path) -> list[dict]:
    path = ctl / "events.jsonl"
    out = []
    if path.exists():
        for line in path.read_text().splitlines():
            with contextlib.suppress(json.JSONDecodeError):  # a line being written
                out.append(json.loads(line))
    return out


def call(port: int, method: str, path: str, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        data=data,
        method=method,
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read() or b"null")


def script_args(ctl: Path) -> list[str]:
    return [
        SCRIPT,
        "--ctl",
        str(ctl),
        "--steps",
        "100000",
        "--step-time",
        "0.01",
        "--pg-timeout",
        str(PG_TIMEOUT),
    ]


def measure(ctl: Path, on_fault=None) -> float:
    wait_for(lambda: sum(e["event"] == "step" for e in events(ctl)) >= 20, 120, "training")
    # Atomic (rename): the worker must never read a half-written file.
    (ctl / "fault.tmp").write_text("raise")
    os.replace(ctl / "fault.tmp", ctl / "fault_rank3")
    fault = wait_for(lambda: next((e for e in events(ctl) if e["event"] == "fault"), None), 60, "fault")
    if on_fault:
        on_fault()
    again = wait_for(
        lambda: next((e for e in events(ctl) if e["event"] == "step" and e["restart_count"] >= 1), None),
        PG_TIMEOUT * 3,
        "training again",
    )
    return again["time"] - fault["time"]


def run_agents(ctl: Path, inprocess: bool) -> float:
    ports, procs = [free_port(), free_port()], []
    flags = ["--inprocess-restart"] if inprocess else []
    env = {**os.environ, "HYPERPOD_RESOURCE_CONFIG_PATH": str(ctl / "ipt.json")}
    log = open(ctl / "agents.log", "w")  # noqa: SIM115
    try:
        for port in ports:
            cmd = [
                str(BIN / "hyperpodrun"),
                "--server-host",
                "127.0.0.1",
                "--server-port",
                str(port),
                "--monitor-interval",
                "0.02",
                "--nproc-per-node",
                "2",
                *flags,
                *script_args(ctl),
            ]
            procs.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env))
        master = free_port()

        def all_in(state):
            return all(_status(p) == state for p in ports)

        wait_for(lambda: all_in("ready"), 120, "agents ready")
        for rank, port in enumerate(ports):
            call(
                port,
                "POST",
                "/start",
                {
                    "rank": rank,
                    "nnodes": 2,
                    "faultCount": 0,
                    "master_addr": "127.0.0.1",
                    "master_port": master,
                },
            )

        def control_plane():
            wait_for(lambda: any(_status(p) == "faulted" for p in ports), 60, "a faulted agent")
            for port in ports:
                call(port, "POST", "/stop")
            wait_for(lambda: all_in("ready"), 120, "agents ready after stop")
            for rank, port in enumerate(ports):
                call(
                    port,
                    "POST",
                    "/start",
                    {
                        "rank": rank,
                        "nnodes": 2,
                        "faultCount": 1,
                        "master_addr": "127.0.0.1",
                        "master_port": master,
                    },
                )

        return measure(ctl, control_plane)
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            p.wait(60)
        log.close()


def _status(port: int) -> str | None:
    try:
        return call(port, "GET", "/status")["status"]
    except OSError:
        return None


def run_torchrun(ctl: Path) -> float:
    endpoint = f"127.0.0.1:{free_port()}"
    log = open(ctl / "torchrun.log", "w")  # noqa: SIM115
    procs = []
    try:
        for _ in range(2):
            cmd = [
                str(BIN / "torchrun"),
                "--nnodes",
                "2",
                "--nproc-per-node",
                "2",
                "--rdzv-backend",
                "c10d",
                "--rdzv-endpoint",
                endpoint,
                "--rdzv-id",
                "bench",
                "--max-restarts",
                "1",
                "--monitor-interval",
                "0.02",
                *script_args(ctl),
            ]
            procs.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT))
        return measure(ctl)
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(60)
            except subprocess.TimeoutExpired:
                p.kill()
        log.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    modes = {
        "in-process restart (hyperpodrun --inprocess-restart)": lambda d: run_agents(d, True),
        "process restart (hyperpodrun)": lambda d: run_agents(d, False),
        "torchrun --max-restarts 1": run_torchrun,
    }
    results: dict[str, list[float]] = {}
    for name, fn in modes.items():
        results[name] = []
        for i in range(args.runs):
            ctl = Path(tempfile.mkdtemp(prefix="hp-bench-"))
            (ctl / "ckpt").mkdir()
            try:
                results[name].append(fn(ctl))
            finally:
                if os.environ.get("HP_BENCH_KEEP") != "1":
                    shutil.rmtree(ctl, ignore_errors=True)
            print(f"  {name} run {i + 1}: {results[name][-1]:.3f}s", file=sys.stderr, flush=True)
    base = statistics.median(results["torchrun --max-restarts 1"])
    print(
        f"\nfault -> training again, 2 pods x 2 gloo workers on loopback, "
        f"process-group timeout {PG_TIMEOUT}s, {args.runs} runs each (cpus: {os.cpu_count()})\n"
    )
    print(f"{'mode':<55} {'median s':>9} {'min s':>7} {'max s':>7} {'torchrun/this':>14}")
    for name, times in results.items():
        med = statistics.median(times)
        print(f"{name:<55} {med:>9.3f} {min(times):>7.3f} {max(times):>7.3f} {base / med:>13.1f}x")


if __name__ == "__main__":
    main()
