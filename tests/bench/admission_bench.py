"""Admission bench: from ``kubectl apply`` of a HyperPodPyTorchJob to its supervise_job execution
started, and from its deletion to the execution stopped (``make bench``).

The sandbox runs in real time (time_scale 1: the one-minute schedule is a real minute, so the
watch's effect is measured against it, not against a scaled clock). One serverless cluster; pods
are not run (the execution's start is what is measured). Each run submits one job, waits for its
execution to be listed RUNNING, deletes the job, and waits for the execution to end.

    python tests/bench/admission_bench.py [--runs 3]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
for _path in (ROOT, ROOT / "layers" / "common", ROOT / "tests" / "e2e"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from job_support import GROUP, PLURAL, VERSION, apis, executions, submit  # noqa: E402

from sandbox import Sandbox, SandboxConfig  # noqa: E402
from sandbox.workloads import tiny_job  # noqa: E402
from sandbox.world import WorldOptions  # noqa: E402

OUT = sys.stdout


def say(*parts: object) -> None:
    print(*parts, file=OUT, flush=True)


def _wait(check, timeout: float, what: str) -> float:
    """Seconds until ``check()`` is true, polled every 20 ms."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if check():
            return time.monotonic() - start
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def one_run(sb: Sandbox, custom: object, name: str) -> tuple[float, float]:
    manifest = tiny_job(name, replicas=1, steps=10, ckpt_dir="/tmp/admission-bench")
    uid = submit(sb, manifest)["metadata"]["uid"]
    admitted = _wait(lambda: executions(sb, uid), 120, f"{name}'s execution")
    custom.delete_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, name)  # type: ignore[attr-defined]
    ended = _wait(lambda: all(e["status"] != "RUNNING" for e in executions(sb, uid)), 120, f"{name} ended")
    return admitted, ended


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    config = SandboxConfig(
        world=WorldOptions(nodes=2),
        kube=True,
        pods=False,
        time_scale=1.0,
        parameters={"LogLevel": "WARNING"},
    )
    admitted, stopped = [], []
    with open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet), Sandbox(config) as sb:
        outcome = sb.run_execution(
            "InstallOperatorStateMachine",
            {"clusterName": sb.world.hyperpod_cluster_name, "operator": "serverless"},
            timeout=300,
        )
        if not outcome.ok:
            sys.stderr.write(f"install_operator failed: {outcome.error}: {outcome.cause}\n")
            return 1
        custom, _ = apis(sb)
        for run in range(1, args.runs + 1):
            a, b = one_run(sb, custom, f"admit-{run}")
            admitted.append(a)
            stopped.append(b)
            say(f"  run {run}: apply -> execution started {a:.2f} s; delete -> execution ended {b:.2f} s")
    say(
        f"median apply -> supervise_job execution started: {statistics.median(admitted):.2f} s (target < 5 s)"
    )
    say(f"median delete -> execution ended:                {statistics.median(stopped):.2f} s (target < 5 s)")
    say("time_scale 1: real seconds; without the watch, the one-minute schedule alone takes up to 60 s.")
    return 0 if statistics.median(admitted) < 5 and statistics.median(stopped) < 5 else 1


if __name__ == "__main__":
    sys.exit(main())
