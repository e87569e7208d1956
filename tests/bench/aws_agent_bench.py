"""Consecutive spare jobs under AWS's agent (``make bench``): the job that
used to hang, 2 ranks x 2 processes and one spare, whose pods run AWS's ``hyperpod-elastic-agent``
1.1.3 (``.venv-aws-agent``, through agent/aws_compat/hyperpodrun_aws.py), submitted ``--runs``
times one after the other on ONE sandbox (4 nodes, the serverless operator installed, pods as local
processes). Each run must reach Completed within ``--timeout`` seconds with no restart, the spare
never /started (AWS's process-restart agent ignores ``spare``: started, it runs workers with the
placeholder rank another pod holds). Before the fix, 2 runs of 5 never completed.

    python tests/bench/aws_agent_bench.py [--runs 5] [--agent aws|ours] [--steps 200]

Exit status 1 unless every run completed.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
for _path in (ROOT, ROOT / "layers" / "common", ROOT / "tests" / "e2e"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from job_support import GROUP, PLURAL, VERSION, apis, history, job_item, named, submit  # noqa: E402

from sandbox import Sandbox, SandboxConfig  # noqa: E402
from sandbox.testing import eventually  # noqa: E402
from sandbox.workloads import AGENTS, AWS_AGENT_VENV, tiny_job  # noqa: E402
from sandbox.world import WorldOptions  # noqa: E402

OUT = sys.stdout


def say(*parts: object) -> None:
    print(*parts, file=OUT, flush=True)


def one_run(sb: Sandbox, run: int, args: argparse.Namespace) -> tuple[bool, str]:
    name = named(f"spare-{run}", args.agent)
    ckpt = tempfile.mkdtemp(prefix=f"bench-{name}-")
    manifest = tiny_job(
        name, replicas=2, spares=1, steps=args.steps, ckpt_dir=ckpt, clean_pod_policy="None", agent=args.agent
    )
    began = time.time()
    uid = submit(sb, manifest)["metadata"]["uid"]
    try:

        def finished():
            item = job_item(sb, uid)
            return item if item and item.phase.finished else None

        try:
            item = eventually(finished, args.timeout, f"job {name} finished", interval=0.5)
        except AssertionError:
            item = job_item(sb, uid)
            return False, f"not finished after {args.timeout} s: {item.phase if item else 'no JOB item'}"
        took = time.time() - began
        spare = item.spare_pods()[0].pod if item.spare_pods() else "?"
        spare_log = sb.pods.container_log("default", spare, "trainer") or ""
        faults = [
            f"{e.message}: {'; '.join(f.get('reason', '?') for f in e.details.get('faults') or [])}"
            for e in history(sb, uid)
            if e.kind in ("Remediated", "RemediationRefused")
        ]
        ok = item.phase == "Completed" and item.restart_count == 0 and "starting at step" not in spare_log
        detail = (
            f"{item.phase.value} in {took:.1f} s, restarts {item.restart_count}, spare {spare} "
            f"{'got a /start' if 'POST /start' in spare_log else 'never /started'}"
            f"{', ran workers' if 'starting at step' in spare_log else ''}"
            + (f"; {'; '.join(faults)}" if faults else "")
        )
        return ok, detail
    finally:
        custom, _ = apis(sb)
        with contextlib.suppress(Exception):
            custom.delete_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, name)
        sb.wait_idle()
        shutil.rmtree(ckpt, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--agent", choices=AGENTS, default="aws")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--timeout", type=float, default=150.0, help="seconds a run may take")
    args = parser.parse_args(argv)
    if args.agent == "aws":
        subprocess.run(
            ["make", "--no-print-directory", f"{AWS_AGENT_VENV.name}/.installed"], cwd=ROOT, check=True
        )
    config = SandboxConfig(
        world=WorldOptions(nodes=4),
        kube=True,
        pods=True,
        time_scale=0.02,
        parameters={
            "LogLevel": "WARNING",
            "AgentStatusTimeoutSeconds": "1",
            "AgentAllowedCidrs": "127.0.0.0/8",
        },
    )
    say(
        f"spare jobs under {args.agent}'s agent: {args.runs} runs of 2 ranks x 2 procs + 1 spare, "
        f"{args.steps} steps"
    )
    results = []
    began = time.time()
    with open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet), Sandbox(config) as sb:
        outcome = sb.run_execution(
            "InstallOperatorStateMachine",
            {"clusterName": sb.world.hyperpod_cluster_name, "operator": "serverless"},
            timeout=120,
        )
        if not outcome.ok:
            sys.stderr.write(f"install_operator failed: {outcome.error}: {outcome.cause}\n")
            return 1
        for run in range(1, args.runs + 1):
            ok, detail = one_run(sb, run, args)
            results.append(ok)
            say(f"  run {run}: {'ok  ' if ok else 'FAIL'} {detail}")
    say(f"- {sum(results)} of {len(results)} completed, {time.time() - began:.0f} s in all")
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
