"""Cold-start bench: each handler's import time, and the Lambda invocations a node fault waits for
(``make bench``).

Import time: the median of ``--runs`` fresh interpreters, each importing one ``functions/*/app.py``
the way Lambda's runtime does (tests/coldstart.py: the layer and the function directory on the
path, the template's environment), after one unmeasured import that writes the bytecode caches
(Lambda's package ships them; a "second run"). Wall and CPU time are both printed: on a shared
machine the CPU time is the steadier of the two. The budgets are 300 ms for every handler and
150 ms for the event-driven ones on the fault path.

It then prints what a cold start pays on its first invocation and not at import (boto3 and one
client, the Kubernetes client), the X-Ray SDK's import for comparison (what ``XRaySubsegments``
costs), and the critical path from a node-health event to ``/start`` of the new rank set, read
from state_machines/supervise_job.asl.json: which invocations run one after the other, and which
of them can be cold.

    python tests/bench/coldstart_bench.py [--runs 5] [--check]

``--check`` exits 1 when a median is over its budget; ``pytest -m bench tests/bench/coldstart_bench.py``
runs the same check as a test.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.coldstart import (  # noqa: E402
    BUDGET_MS,
    FAULT_PATH,
    FAULT_PATH_BUDGET_MS,
    FUNCTIONS,
    HANDLERS,
    LAYER,
    _clean_env,
    function_environments,
    time_import,
)

pytestmark = pytest.mark.bench

ASL = ROOT / "state_machines" / "supervise_job.asl.json"

#: Work a cold start does on its first invocation instead of at import (each in a fresh
#: interpreter, after the handler's own imports would have run).
FIRST_USE = {
    "boto3 + a DynamoDB client": (
        "import boto3; boto3.session.Session().client('dynamodb', region_name='us-west-2')"
    ),
    "kubernetes client": "import kubernetes.client",
    "X-Ray SDK (XRaySubsegments=true)": (
        "from aws_lambda_powertools import Tracer; Tracer(disabled=False, auto_patch=True)"
    ),
}


def budget(name: str) -> int:
    return FAULT_PATH_BUDGET_MS if name in FAULT_PATH else BUDGET_MS


def measure(names: tuple[str, ...], runs: int) -> dict[str, tuple[float, float]]:
    """``{handler: (median wall ms, median CPU ms)}``. The runs go round the handlers (one sample
    of each, then the next), so a burst of other work on a shared machine spoils one sample of
    several handlers, which the median drops, rather than every sample of one."""
    envs = function_environments()
    for name in names:
        time_import(name, envs[name])  # bytecode caches written: the "second run" is measured
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in names}
    for _ in range(runs):
        for name in names:
            samples[name].append(time_import(name, envs[name]))
    return {
        name: (statistics.median(s[0] for s in got), statistics.median(s[1] for s in got))
        for name, got in samples.items()
    }


def time_statement(statement: str, runs: int) -> float:
    """Median wall ms of ``statement`` in fresh interpreters (the layer on the path)."""
    probe = (
        "import sys, time; sys.path.insert(0, sys.argv[1]); start = time.perf_counter()\n"
        f"{statement}\n"
        "print((time.perf_counter() - start) * 1000)"
    )
    env = _clean_env(function_environments()["node_health"])
    samples = []
    for _ in range(runs + 1):
        out = subprocess.run(
            [sys.executable, "-c", probe, str(LAYER)], env=env, cwd="/", capture_output=True, text=True
        )
        if out.returncode != 0:
            raise RuntimeError(f"{statement!r} failed: {out.stderr[-1000:]}")
        samples.append(float(out.stdout.split()[-1]))
    return statistics.median(samples[1:])


def _hop(states: dict, source: str, target: str) -> None:
    """Fail loudly when the state machine no longer goes from ``source`` to ``target``."""
    state = states[source]
    nexts = {state.get("Next"), state.get("Default")} | {c.get("Next") for c in state.get("Choices", [])}
    if target not in nexts:
        raise AssertionError(f"{ASL.name}: {source} no longer leads to {target}; recount the path")


def critical_paths() -> list[tuple[str, list[tuple[str, str]]]]:
    """The invocations from a node-health event to /start, per remediation kind, each with whether
    it can be cold; every transition is checked against the ASL."""
    states = json.loads(ASL.read_text())["States"]
    for source, target in [
        ("Monitor", "Poll"),  # node_health's SendTaskSuccess ends Monitor's waitForTaskToken
        ("Poll", "Verdict"),
        ("Verdict", "Remediate"),  # verdict "fault"
        ("Remediate", "Remediated"),
        ("Remediated", "Monitor"),  # restart in place / spare swap: /start was sent in Remediate
        ("Remediated", "WaitForAgents"),  # full restart: new pods first
        ("WaitForAgents", "CheckAgents"),
        ("CheckAgents", "AgentsReady?"),
        ("AgentsReady?", "StartAgents"),
    ]:
        _hop(states, source, target)
    rare = "cold unless provisioned: invoked only by fault events"
    warm = "warm while the job runs (a poll every SupervisorPollSeconds); cold only if none is idle"
    reuse = "reuses the environment the step before it just freed"
    in_place = [
        ("node_health (EventBridge, async)", rare),
        ("supervise_job poll", warm),
        ("supervise_job remediate -> /stop, /start", reuse),
    ]
    full = [
        *in_place[:2],
        ("supervise_job remediate -> pods recreated", reuse),
        ("supervise_job check_agents (xN, after WaitForAgents)", reuse),
        ("supervise_job start_agents -> /start", reuse),
    ]
    return [
        ("process-level / in-process restart, spare swap", in_place),
        ("full job restart (pods recreated)", full),
    ]


def report(medians: dict[str, tuple[float, float]], first_use: dict[str, float]) -> list[str]:
    say = print
    over = []
    say(f"{'handler':34} {'wall ms':>8} {'cpu ms':>8} {'budget':>7}")
    for name, (wall, cpu) in medians.items():
        ok = wall <= budget(name)
        if not ok:
            over.append(name)
        mark = "" if ok else "  OVER"
        fault = " (fault path)" if name in FAULT_PATH else ""
        say(f"{name + fault:34} {wall:8.0f} {cpu:8.0f} {budget(name):7d}{mark}")
    if first_use:
        say("\nnot at import (what the first invocation, or an opt-in, adds):")
        for what, ms in first_use.items():
            say(f"  {what:40} {ms:6.0f} ms")
    say("\ncritical path, node-health event -> /start of the new rank set (sequential invocations):")
    for kind, hops in critical_paths():
        say(f"  {kind}: {len(hops)} invocations")
        for i, (hop, cold) in enumerate(hops, 1):
            say(f"    {i}. {hop:52} {cold}")
    fault_sum = sum(medians[n][0] for n in ("node_health", "supervise_job") if n in medians)
    if fault_sum:
        say(
            f"  import time a fully cold in-place path pays: node_health + supervise_job = {fault_sum:.0f} ms"
            " (the second and third supervise_job steps reuse its environment)"
        )
    return over


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="fresh interpreters per handler (median)")
    parser.add_argument("--check", action="store_true", help="exit 1 when a handler is over its budget")
    parser.add_argument("handlers", nargs="*", default=list(HANDLERS))
    args = parser.parse_args(argv)
    unknown = set(args.handlers) - set(HANDLERS)
    if unknown:
        parser.error(f"no such handler(s): {', '.join(sorted(unknown))} (see {FUNCTIONS})")
    load, cores = os.getloadavg()[0], os.cpu_count() or 1
    print(
        f"load average {load:.1f} on {cores} CPUs"
        + ("  (busy: wall times inflate)" if load > cores / 2 else "")
    )
    medians = measure(tuple(args.handlers), args.runs)
    first_use = {what: time_statement(code, args.runs) for what, code in FIRST_USE.items()}
    over = report(medians, first_use)
    return 1 if args.check and over else 0


def test_every_handler_imports_within_its_budget():
    medians = measure(HANDLERS, 5)
    over = {n: round(w) for n, (w, _) in medians.items() if w > budget(n)}
    assert over == {}, (
        f"median import ms over budget ({BUDGET_MS}, fault path {FAULT_PATH_BUDGET_MS}): {over}"
    )


if __name__ == "__main__":
    sys.exit(main())
