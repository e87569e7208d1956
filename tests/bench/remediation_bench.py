"""Remediation benchmark: fault-to-resumed time of a spare swap against a full job restart, on the
same job and the same fault (``make bench``).

ONE sandbox (4 nodes, the serverless operator installed, pods run as local processes), the
kubelet's pod start delay set to a realistic value (``--start-delay``, default 20 s). Each run:

(a) spare swap: a job of 2 ranks x 2 procs + 1 spare; once it runs with progress, the node under
    rank 1 dies dirty, as on EKS (``sb.faults.fail_node``: frozen, connections hang), and
    HyperPod's health event comes at once; the supervisor promotes the spare, which is already
    running (its start delay was paid at submission).
(b) the same with no health event ever (``event="never"``): the fault is found from Kubernetes
    alone (the node NotReady after its 40 s grace period, or the agent silent 3 rounds).
(c) a hung agent on a healthy node (``sb.faults.hang_agent``: its port accepts and never answers):
    found by its silence, then the same spare swap.
(d) full job restart: the job of (a) with no spare, the same fault on the same rank; every pod is
    deleted and recreated, so the start delay is on the critical path.

Measured per run: the ``Remediated`` history entry's ``recovery_ms``; the wall time from the
``fail_node`` call until every rank's agent reports RUNNING again under the new IP table (polled
from here, ``GET /status`` on each pod's agent); the sequential Lambda invocations on the critical
path (the waker, node_health or job_events, then the execution's own steps: Poll, Remediate, for a
full restart the CheckAgents rounds and StartAgents), and the Step Functions state transitions in
the same window (from the execution's history). Each job is then deleted and its node healed.

    python tests/bench/remediation_bench.py [--runs 3] [--start-delay 20] [--steps 2000]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parents[2]
for _path in (ROOT, ROOT / "layers" / "common", ROOT / "tests" / "e2e"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from job_support import GROUP, PLURAL, VERSION, apis, history, job_item, pods_of, submit  # noqa: E402

from hyperpod_control.models.agent import AGENT_PORT  # noqa: E402
from sandbox import Sandbox, SandboxConfig  # noqa: E402
from sandbox.testing import eventually as sandbox_eventually  # noqa: E402
from sandbox.workloads import tiny_job  # noqa: E402
from sandbox.world import WorldOptions  # noqa: E402

TIME_SCALE = 0.02
STEP_TIME = "0.03"
SUPERVISOR = "SuperviseJobFunction"
WAKERS = ("NodeHealthFunction", "JobEventsFunction")
STEP_STATE = {  # supervise_job's step name -> its state in supervise_job.asl.json
    "arm": "Monitor",
    "poll": "Poll",
    "remediate": "Remediate",
    "check_agents": "CheckAgents",
    "start_agents": "StartAgents",
}
T = TypeVar("T")
#: The report's stream: the in-process Lambdas print (EMF metrics, logs) to sys.stdout, which
#: main() points at /dev/null while the sandbox runs.
OUT = sys.stdout


def say(*parts: Any, **kwargs: Any) -> None:
    print(*parts, file=OUT, flush=True, **kwargs)


WAKER_NAME = {"NodeHealthFunction": "node_health", "JobEventsFunction": "job_events"}


@dataclass
class Result:
    run: int
    scenario: str
    action: str = "?"
    recovery_ms: int = 0
    wall_ms: int = 0
    lambdas: int = 0
    transitions: int = 0
    chain: list[tuple[str, float]] = field(default_factory=list)
    t_fault: float = 0.0
    #: When node_health started after the fault (ms), on the path or not; -1: not invoked.
    node_health_ms: int = -1
    #: From the fault to when the supervisor judged it (the Remediated entry's fault_at), ms.
    detected_ms: int = 0


# ============================================================== measuring


# A fixed interval, so a time measured with it is late by at most 0.2 s.
eventually = functools.partial(sandbox_eventually, interval=0.2)


def _agent_status(ip: str) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(f"http://{ip}:{AGENT_PORT}/status", timeout=0.5) as answer:
            return json.loads(answer.read())
    except (OSError, ValueError):
        return None


def _ranks_running(sb: Sandbox, name: str, old_ip_version: str | None, nnodes: int) -> bool:
    """Every rank's agent RUNNING under an IP table newer than the one before the fault."""
    running = set()
    for pod in pods_of(sb, name):
        ip = pod.status.pod_ip if pod.status else None
        if not ip or pod.metadata.deletion_timestamp:
            continue
        status = _agent_status(ip)
        if (
            status
            and status.get("status") == "running"
            and status.get("assigned_rank") is not None
            and status.get("ipversion") != old_ip_version
        ):
            running.add(status["assigned_rank"])
    return running >= {str(r) for r in range(nnodes)}


def _ts(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def _critical_path(
    sb: Sandbox, uid: str, t_fault: float, t_resumed: float
) -> tuple[list[tuple[str, float]], str | None]:
    """The Lambda invocations between the fault and the resume, in order, with their start times:
    the execution's own steps (one execution, so sequential), led by the first waker (node_health
    or job_events) that started before the first of them; none leads when the execution's Arm finds
    the fault pending and wakes itself. Also the execution's ARN."""
    steps = [
        c
        for c in sb.runtime.calls(SUPERVISOR)
        if (c.event.get("job") or {}).get("uid") == uid and t_fault <= c.started <= t_resumed
    ]
    steps.sort(key=lambda c: c.started)
    chain = [(STEP_STATE.get(c.event.get("step"), c.event.get("step")), c.started) for c in steps]
    first = steps[0].started if steps else t_resumed
    wakers = [
        (c.started, WAKER_NAME[logical])
        for logical in WAKERS
        for c in sb.runtime.calls(logical)
        if t_fault <= c.started <= first
    ]
    if wakers and (not chain or chain[0][0] != "Monitor"):
        started, waker = min(wakers)
        chain.insert(0, (waker, started))
    execution = next((c.event.get("execution") for c in steps if c.event.get("execution")), None)
    return chain, execution


def _dump(sb: Sandbox, t_fault: float, t_resumed: float) -> None:
    """Every Lambda invocation from the fault to the resume: start, duration, function, step."""
    for c in sorted(sb.runtime.invocations, key=lambda c: c.started):
        if t_fault <= c.started <= t_resumed:
            step = c.event.get("step", "") if isinstance(c.event, dict) else ""
            say(
                f"      +{(c.started - t_fault) * 1000:6.0f} ms {c.duration * 1000:6.0f} ms  "
                f"{c.function.rsplit('-', 1)[-1]} {step}",
            )


def _transitions(sb: Sandbox, execution: str | None, t_fault: float, t_resumed: float) -> int:
    """States entered by the execution between the fault and the resume."""
    if not execution:
        return 0
    sfn = sb.client("stepfunctions")
    events: list[dict] = []
    kwargs: dict[str, Any] = {"executionArn": execution, "maxResults": 1000}
    while True:
        page = sfn.get_execution_history(**kwargs)
        events += page["events"]
        if not page.get("nextToken"):
            break
        kwargs["nextToken"] = page["nextToken"]
    return sum(
        1
        for e in events
        if e["type"].endswith("StateEntered") and t_fault <= e["timestamp"].timestamp() <= t_resumed + 0.001
    )


def _compress(chain: list[tuple[str, float]], t_fault: float) -> str:
    """``node_health +850ms -> Poll +900ms -> CheckAgents x32 +1200..21000ms``: starts after the fault."""
    groups: list[list[tuple[str, float]]] = []
    for name, started in chain:
        if groups and groups[-1][0][0] == name:
            groups[-1].append((name, started))
        else:
            groups.append([(name, started)])
    parts = []
    for group in groups:
        first, last = (group[0][1] - t_fault) * 1000, (group[-1][1] - t_fault) * 1000
        if len(group) == 1:
            parts.append(f"{group[0][0]} +{first:.0f}ms")
        else:
            parts.append(f"{group[0][0]} x{len(group)} +{first:.0f}..{last:.0f}ms")
    return " -> ".join(parts)


# ============================================================== one scenario


def _wait_running_with_progress(sb: Sandbox, uid: str, timeout: float) -> Any:
    def ready() -> Any:
        item = job_item(sb, uid)
        return item if item and item.phase == "Running" and item.progress else None

    try:
        return eventually(ready, timeout, "the job running with progress", interval=0.2)
    except AssertionError as exc:
        item = job_item(sb, uid)
        state = (
            f"phase {item.phase}, reason {item.reason!r}, progress {item.progress}" if item else "no JOB item"
        )
        raise AssertionError(f"{exc}: {state}") from None


def _delete_job(sb: Sandbox, name: str) -> None:
    custom, _ = apis(sb)
    with contextlib.suppress(Exception):
        custom.delete_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, name)


def scenario(sb: Sandbox, run: int, kind: str, spares: int, args: argparse.Namespace) -> Result:
    name = f"{kind}-{run}"
    ckpt = tempfile.mkdtemp(prefix=f"bench-{name}-")
    manifest = tiny_job(
        name,
        replicas=2,
        spares=spares,
        steps=args.steps,
        ckpt_dir=ckpt,
        extra_args=["--step-time", STEP_TIME],
    )
    uid = submit(sb, manifest)["metadata"]["uid"]
    result = Result(run, kind)
    bad = None
    try:
        item = _wait_running_with_progress(sb, uid, 120 + 3 * args.start_delay)
        old_ip_version = item.ip_version
        t_fault = result.t_fault = time.time()
        if kind == "hang":
            sb.faults.hang_agent("default", item.ranked()[1].pod)
        else:
            bad = item.ranked()[1].node
            sb.faults.fail_node(bad, event="never" if kind == "noevent" else "first")
        eventually(
            lambda: _ranks_running(sb, name, old_ip_version, item.nnodes),
            120 + 3 * args.start_delay,
            "every rank's agent running again",
            interval=0.02,
        )
        result.wall_ms = int((time.time() - t_fault) * 1000)
        remediated = eventually(
            lambda: [e for e in history(sb, uid) if e.kind == "Remediated"], 30, "the Remediated entry"
        )[0]
        details = remediated.details
        result.action = details["action"]
        result.recovery_ms = int(details["recovery_ms"])
        result.detected_ms = int((_ts(details["fault_at"]) - t_fault) * 1000)
        t_resumed = _ts(details["resumed_at"])
        # The runtime records an invocation when it returns: wait for the step that resumed training.
        last_step = "remediate" if result.action == "spare_swap" else "start_agents"
        eventually(
            lambda: [
                c
                for c in sb.runtime.calls(SUPERVISOR)
                if (c.event.get("job") or {}).get("uid") == uid
                and c.event.get("step") == last_step
                and t_fault <= c.started <= t_resumed
            ],
            30,
            f"the {last_step} invocation's record",
            interval=0.05,
        )
        result.chain, execution = _critical_path(sb, uid, t_fault, t_resumed)
        result.lambdas = len(result.chain)
        health = [c.started for c in sb.runtime.calls("NodeHealthFunction") if c.started >= t_fault]
        result.node_health_ms = int((min(health) - t_fault) * 1000) if health else -1
        result.transitions = _transitions(sb, execution, t_fault, t_resumed)
        if args.verbose:
            _dump(sb, t_fault, t_resumed)
    finally:
        _delete_job(sb, name)
        if bad is not None:
            sb.faults.heal_node(bad)
        eventually(lambda: not pods_of(sb, name), 60, f"job {name}'s pods gone", interval=0.2)
        with contextlib.suppress(Exception):
            eventually(
                lambda: job_item(sb, uid) is None or job_item(sb, uid).phase != "Running", 30, "cleanup"
            )
        sb.wait_idle()
        shutil.rmtree(ckpt, ignore_errors=True)
    return result


# ============================================================== report


SCENARIOS = {  # kind -> (spares, what the report calls it)
    "swap": (1, "dirty node, event"),
    "noevent": (1, "dirty node, no event"),
    "hang": (1, "hung agent"),
    "full": (0, "full job restart"),
}


def report(results: list[Result], args: argparse.Namespace, elapsed: float) -> bool:
    say()
    say(
        f"{'run':>3} | {'scenario':<20} | {'action':<16} | {'detected ms':>11} | {'history ms':>10} | "
        f"{'wall ms':>8} | {'Lambdas':>7} | {'transitions':>11}"
    )
    say("-" * 110)
    for r in results:
        say(
            f"{r.run:>3} | {SCENARIOS[r.scenario][1]:<20} | {r.action:<16} | {r.detected_ms:>11} | "
            f"{r.recovery_ms:>10} | {r.wall_ms:>8} | {r.lambdas:>7} | {r.transitions:>11}"
        )
    say()
    medians: dict[str, dict[str, float]] = {}
    for kind, (_, label) in SCENARIOS.items():
        rows = [r for r in results if r.scenario == kind]
        if not rows:
            continue
        medians[kind] = {
            "detected_ms": statistics.median(r.detected_ms for r in rows),
            "recovery_ms": statistics.median(r.recovery_ms for r in rows),
            "wall_ms": statistics.median(r.wall_ms for r in rows),
            "lambdas": statistics.median(r.lambdas for r in rows),
            "transitions": statistics.median(r.transitions for r in rows),
        }
        m = medians[kind]
        say(
            f"median {label:<20}: fault -> every rank training again {m['wall_ms']:>6.0f} ms; "
            f"detected after {m['detected_ms']:>5.0f} ms ({m['detected_ms'] / 1000 / TIME_SCALE:>4.0f} "
            f"s on the sandbox clock); history {m['recovery_ms']:>5.0f} ms; {m['lambdas']:.0f} Lambdas, "
            f"{m['transitions']:.0f} transitions"
        )
        say(f"  critical path (run 1): {_compress(rows[0].chain, rows[0].t_fault)}")
    swap, full = medians["swap"], medians["full"]
    ratio = full["wall_ms"] / max(swap["wall_ms"], 1)
    ratio_history = full["recovery_ms"] / max(swap["recovery_ms"], 1)
    ok = ratio >= 3.0 and all(
        r.action == ("full_job_restart" if r.scenario == "full" else "spare_swap") for r in results
    )
    say()
    say(f"ratio full/swap (wall, fault -> every rank running): {ratio:.1f}x")
    say(f"ratio full/swap (history recovery_ms):               {ratio_history:.1f}x")
    say(f"target: spare swap at least 3x faster than a full job restart -> {'PASS' if ok else 'FAIL'}")
    say()
    say("Notes:")
    say(
        f"- pod start delay {args.start_delay:g} s (real seconds): creating a pod on a node that already "
        "caches the multi-GB training image (container create, CUDA/NCCL and torch init); a cold image "
        "pull adds minutes, which only widens the gap. Override with --start-delay."
    )
    say(
        f"- time_scale {TIME_SCALE}: Step Functions waits run 1/{1 / TIME_SCALE:.0f} of real time (the "
        f"30 s poll interval and WaitForAgents are {30 * TIME_SCALE:.1f} s), while the pod start delay is "
        "real seconds; in production each extra WaitForAgents/CheckAgents round costs up to 30 s more."
    )
    say(
        "- wall ms: from the fail_node call until every rank's agent answers RUNNING under the new IP table "
        "(polled every 20 ms). history ms: the Remediated entry's recovery_ms, measured by the supervisor "
        "from when its Remediate step judged the fault (so it leaves out the node_health event and the "
        "wake-up) to the ranks' /start."
    )
    say(
        "- sequential Lambda invocations: the execution's steps between the fault and the resume (one "
        "execution: they run one after another), led by the waker (node_health or job_events) when it "
        "started before the first of them; a Poll round already under way can find the lost pod first, "
        "and a round that misses it adds Monitor and another Poll. SFN transitions: states entered by "
        "the execution in that window."
    )
    say(f"- {len(results)} jobs, {elapsed:.0f} s in all")
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--start-delay", type=float, default=20.0, help="kubelet pod start delay, s")
    parser.add_argument("--steps", type=int, default=2000, help="training steps (0.03 s each)")
    parser.add_argument("--verbose", action="store_true", help="list every Lambda invocation of each window")
    args = parser.parse_args(argv)
    began = time.time()
    config = SandboxConfig(
        world=WorldOptions(nodes=4),
        kube=True,
        pods=True,
        time_scale=TIME_SCALE,
        pod_start_delay=args.start_delay,
        # The functions' INFO lines would drown the table. A 1 s /status timeout (5 s in
        # production) keeps a silent agent from holding a round for 250 sandbox seconds.
        parameters={"LogLevel": "WARNING", "AgentStatusTimeoutSeconds": "1"},
    )
    say(
        f"remediation bench: {args.runs} runs, pod start delay {args.start_delay:g} s, time_scale "
        f"{TIME_SCALE}, jobs of 2 ranks x 2 procs ({args.steps} steps of {STEP_TIME} s)",
    )
    results: list[Result] = []
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
            for kind, (spares, _) in SCENARIOS.items():
                r = scenario(sb, run, kind, spares, args)
                say(
                    f"  run {run} {kind}: {r.action}, wall {r.wall_ms} ms, history {r.recovery_ms} ms, "
                    f"{r.lambdas} Lambdas ({_compress(r.chain, r.t_fault)}); "
                    f"node_health started +{r.node_health_ms}ms",
                )
                results.append(r)
    return 0 if report(results, args, time.time() - began) else 1


if __name__ == "__main__":
    sys.exit(main())
