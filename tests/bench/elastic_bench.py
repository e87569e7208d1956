"""Elastic benchmark: a node lost with no spare and no free node, fault -> training again, for a
job with an ``elasticPolicy`` (it shrinks onto its healthy pods at once) against the same job
without one (a full job restart, whose new pods wait for the replacement node).

ONE sandbox (4 nodes, the serverless operator installed, pods run as local processes), the
kubelet's pod start delay ``--start-delay`` (default 20 s: a node that caches the image). Each run
submits a 3-rank job (2 procs each) on 3 of the nodes; the fourth node fails first (no room for a
replacement), then the node under rank 2 dies dirty with HyperPod's event. The replacement node
arrives ``--replacement-after`` seconds later (real seconds, default 60: on HyperPod a replacement
takes many minutes): the fourth node heals (the full restart avoids the node that failed under
the job, as a repeat offender). Measured: the wall time from the node's failure until
every rank of the job's size after the remediation (2 when elastic, 3 otherwise) answers RUNNING
under the new IP table, median of ``--runs``.

    python tests/bench/elastic_bench.py [--runs 3] [--replacement-after 60] [--start-delay 20]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
for _path in (ROOT, ROOT / "layers" / "common", ROOT / "tests" / "e2e", ROOT / "tests" / "bench"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from job_support import apis, history, job_item, pods_of, submit  # noqa: E402
from remediation_bench import (  # noqa: E402
    TIME_SCALE,
    _delete_job,
    _ranks_running,
    _wait_running_with_progress,
    eventually,
    say,
)

from sandbox import Sandbox, SandboxConfig  # noqa: E402
from sandbox.workloads import tiny_job  # noqa: E402
from sandbox.world import WorldOptions  # noqa: E402

STEP_TIME = "0.03"


def scenario(sb: Sandbox, run: int, elastic: bool, args: argparse.Namespace) -> tuple[str, int]:
    """One job, one lost node: (the action taken, ms from the failure to every rank running)."""
    name = f"{'elastic' if elastic else 'rigid'}-{run}"
    ckpt = tempfile.mkdtemp(prefix=f"bench-{name}-")
    policy = {"minReplicas": 2, "maxReplicas": 3} if elastic else None
    manifest = tiny_job(
        name,
        replicas=3,
        steps=args.steps,
        ckpt_dir=ckpt,
        extra_args=["--step-time", STEP_TIME],
        elastic_policy=policy,
    )
    # No growth back during the measurement: the snooze outlasts it.
    manifest["spec"]["runPolicy"]["restartPolicy"] = {
        "evalPeriodSeconds": 3600,
        "scaleUpSnoozeTimeInSeconds": 86400,
    }
    uid = submit(sb, manifest)["metadata"]["uid"]
    failed: list[str] = []
    healer = None
    try:
        item = _wait_running_with_progress(sb, uid, 120 + 3 * args.start_delay)
        _, core = apis(sb)
        used = {s.node for s in item.pods}
        for node in sorted(n.metadata.name for n in core.list_node().items if n.metadata.name not in used):
            sb.faults.fail_node(node)
            failed.append(node)
        bad = item.ranked()[2].node
        t_fault = time.time()
        sb.faults.fail_node(bad)
        failed.append(bad)
        # The replacement is another node (a full restart avoids the failed one): the node that
        # failed first comes back.
        healer = threading.Timer(args.replacement_after, sb.faults.heal_node, (failed[0],))
        healer.start()
        size = 2 if elastic else 3
        eventually(
            lambda: _ranks_running(sb, name, item.ip_version, size),
            120 + args.replacement_after + 3 * args.start_delay,
            "every rank's agent running again",
            interval=0.02,
        )
        wall_ms = int((time.time() - t_fault) * 1000)
        remediated = eventually(
            lambda: [e for e in history(sb, uid) if e.kind == "Remediated"], 60, "the Remediated entry"
        )[0]
        return remediated.details["action"], wall_ms
    finally:
        if healer is not None:
            healer.join()
        _delete_job(sb, name)
        for node in failed:
            sb.faults.heal_node(node)
        eventually(lambda: not pods_of(sb, name), 60, f"job {name}'s pods gone", interval=0.2)
        with contextlib.suppress(Exception):
            eventually(
                lambda: job_item(sb, uid) is None or job_item(sb, uid).phase != "Running", 30, "cleanup"
            )
        sb.wait_idle()
        shutil.rmtree(ckpt, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--replacement-after", type=float, default=60.0, help="replacement node arrives, s")
    parser.add_argument("--start-delay", type=float, default=20.0, help="kubelet pod start delay, s")
    parser.add_argument("--steps", type=int, default=100000, help="training steps (0.03 s each)")
    args = parser.parse_args(argv)
    began = time.time()
    config = SandboxConfig(
        world=WorldOptions(nodes=4),
        kube=True,
        pods=True,
        time_scale=TIME_SCALE,
        pod_start_delay=args.start_delay,
        parameters={"LogLevel": "WARNING", "AgentStatusTimeoutSeconds": "1"},
    )
    say(
        f"elastic bench: {args.runs} runs, replacement node after {args.replacement_after:g} s, pod start "
        f"delay {args.start_delay:g} s, time_scale {TIME_SCALE}, jobs of 3 ranks x 2 procs"
    )
    rows: list[tuple[int, str, str, int]] = []
    with open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet), Sandbox(config) as sb:
        outcome = sb.run_execution(
            "InstallOperatorStateMachine",
            {"clusterName": sb.world.hyperpod_cluster_name, "operator": "serverless"},
            timeout=180,
        )
        if not outcome.ok:
            say(f"install failed: {outcome.error}: {outcome.cause}")
            return 1
        for run in range(1, args.runs + 1):
            for elastic in (True, False):
                action, wall = scenario(sb, run, elastic, args)
                label = "elastic shrink" if elastic else "full restart"
                rows.append((run, label, action, wall))
                say(f"run {run} {label:<15}: {action:<17} fault -> training again {wall:>7} ms")
    say()
    medians = {}
    for label in ("elastic shrink", "full restart"):
        medians[label] = statistics.median(w for _, name, _, w in rows if name == label)
        say(f"median {label:<15}: {medians[label]:>8.0f} ms")
    ok = all(a == ("scale_down" if n == "elastic shrink" else "full_job_restart") for _, n, a, _ in rows)
    ratio = medians["full restart"] / max(medians["elastic shrink"], 1)
    say(f"ratio full restart / elastic shrink: {ratio:.1f}x ({'PASS' if ok and ratio > 1 else 'FAIL'})")
    say(
        f"- the full restart waits for the replacement node ({args.replacement_after:g} s here, many "
        "minutes on HyperPod), then the pod start delay; the shrink waits for neither (its healthy pods "
        f"keep running); {len(rows)} jobs, {time.time() - began:.0f} s in all"
    )
    return 0 if ok and ratio > 1 else 1


if __name__ == "__main__":
    sys.exit(main())
