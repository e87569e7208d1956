"""Process restart, side by side: this project's hyperpodrun (new processes, and with
--process-standby) and AWS's hyperpod-elastic-agent 1.1.3, on the same script and fault.

Each run starts 2 agents x 2 gloo workers on loopback (tests/bench/plain_allreduce.py: plain torch,
no agent API, so both agents run it unchanged), lets them train, SIGKILLs one worker of the second
pod and plays the control plane over HTTP as the operator does: poll /status until an agent is
FAULTED, /stop both, wait for READY, /start both with faultCount + 1. Time = from the kill to the
first all-reduce step of the new generation. Modes alternate run by run, so a busy machine weighs on
all of them alike. Agent start-up is not counted.

AWS's agent comes from --aws-agent (or HYPERPOD_AWS_AGENT), a command line, by default the
project's AWS-agent environment (`.venv-aws-agent/bin/python agent/aws_compat/hyperpodrun_aws.py`,
the launcher that runs 1.1.3 on torch >= 2.12). When it is not there the bench says so and
measures this project's agent alone.

    python tests/bench/agent_restart_bench.py [--runs 5] [--aws-agent "CMD ..."]
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = str(ROOT / "tests" / "bench" / "plain_allreduce.py")
HYPERPODRUN = str(Path(sys.executable).parent / "hyperpodrun")
DEFAULT_AWS_AGENT = f"{ROOT}/.venv-aws-agent/bin/python {ROOT}/agent/aws_compat/hyperpodrun_aws.py"
STEPS_BEFORE_FAULT = 20

sys.path.insert(0, str(ROOT / "tests" / "bench"))
from restart_bench import call, events, free_port, wait_for  # noqa: E402 - the in-process bench's helpers


def _status(port: int) -> str | None:
    try:
        return call(port, "GET", "/status")["status"]
    except OSError:
        return None


def run_once(command: list[str], extra: list[str], ctl: Path) -> float:
    ports, procs = [free_port(), free_port()], []
    env = {
        **os.environ,
        "HYPERPOD_RESOURCE_CONFIG_PATH": str(ctl / "ipt.json"),
        "OMP_NUM_THREADS": "1",
        "NNODES": "2",  # HyperPod sets it in every pod; AWS's agent reads it at start
    }
    log = open(ctl / "agents.log", "w")  # noqa: SIM115 - closed in finally
    try:
        for port in ports:
            cmd = [
                *command,
                "--server-host",
                "127.0.0.1",
                "--server-port",
                str(port),
                "--monitor-interval",
                "0.02",
                "--nproc-per-node",
                "2",
                *extra,
                SCRIPT,
                "--ctl",
                str(ctl),
            ]
            procs.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env))

        def ready() -> bool:
            if any(p.poll() is not None for p in procs):
                log.flush()
                raise RuntimeError(f"an agent exited: {(ctl / 'agents.log').read_text()[-3000:]}")
            return all(_status(p) == "ready" for p in ports)

        wait_for(ready, 120, "agents ready")
        master = free_port()

        def start(fault_count: int) -> None:
            for rank, port in enumerate(ports):
                body = {
                    "rank": rank,
                    "nnodes": 2,
                    "faultCount": fault_count,
                    "master_addr": "127.0.0.1",
                    "master_port": master,
                }
                call(port, "POST", "/start", body)

        start(0)
        steps = wait_for(
            lambda: [e for e in events(ctl) if e["event"] == "step"][STEPS_BEFORE_FAULT * 4 :],
            120,
            "training",
        )
        victim = next(e["pid"] for e in steps if e["rank"] == 3)
        killed_at = time.time()
        os.kill(victim, signal.SIGKILL)
        wait_for(lambda: any(_status(p) == "faulted" for p in ports), 60, "a faulted agent")
        for port in ports:
            call(port, "POST", "/stop")
        wait_for(lambda: all(_status(p) == "ready" for p in ports), 120, "agents ready after the stop")
        start(1)
        again = wait_for(
            lambda: next((e for e in events(ctl) if e["event"] == "step" and e["gen"] >= 1), None),
            180,
            "training again",
        )
        return again["time"] - killed_at
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(60)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        log.close()


def aws_agent_command(value: str) -> list[str] | None:
    command = shlex.split(value)
    missing = [part for part in command[:2] if part.startswith("/") and not Path(part).exists()]
    return None if missing or not command else command


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument(
        "--aws-agent",
        default=os.environ.get("HYPERPOD_AWS_AGENT", DEFAULT_AWS_AGENT),
        help="command line that starts AWS's agent (its hyperpodrun); default: %(default)s",
    )
    args = parser.parse_args()
    modes: dict[str, tuple[list[str], list[str]]] = {
        "hyperpodrun --process-standby": ([HYPERPODRUN], ["--process-standby"]),
        "hyperpodrun (new processes)": ([HYPERPODRUN], []),
    }
    aws = aws_agent_command(args.aws_agent)
    if aws is None:
        print(
            f"AWS's agent is not installed ({args.aws_agent}): `make .venv-aws-agent/.installed` builds "
            "it, or pass --aws-agent / HYPERPOD_AWS_AGENT; measuring this project's agent only.",
            file=sys.stderr,
        )
    else:
        modes["AWS hyperpod-elastic-agent 1.1.3"] = (aws, [])
    results: dict[str, list[float]] = {name: [] for name in modes}
    for i in range(args.runs):
        for name, (command, extra) in modes.items():
            ctl = Path(tempfile.mkdtemp(prefix="hp-agent-bench-"))
            try:
                results[name].append(run_once(command, extra, ctl))
            finally:
                if os.environ.get("HP_BENCH_KEEP") != "1":
                    shutil.rmtree(ctl, ignore_errors=True)
            print(f"  {name} run {i + 1}: {results[name][-1]:.3f}s", file=sys.stderr, flush=True)
    base_name = "AWS hyperpod-elastic-agent 1.1.3"
    base = statistics.median(results[base_name]) if base_name in results else None
    print(
        f"\nprocess restart: SIGKILL of one worker -> training again, 2 pods x 2 gloo workers on loopback, "
        f"{args.runs} runs each, alternating (cpus: {os.cpu_count()})\n"
    )
    print(f"{'agent':<36} {'median s':>9} {'min s':>7} {'max s':>7} {'this/AWS':>9}")
    for name, times in results.items():
        med = statistics.median(times)
        ratio = f"{med / base:>8.2f}x" if base else f"{'-':>9}"
        print(f"{name:<36} {med:>9.3f} {min(times):>7.3f} {max(times):>7.3f} {ratio}")


if __name__ == "__main__":
    main()
