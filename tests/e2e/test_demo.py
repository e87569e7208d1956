"""`hpctl demo`, the README's first command, runs its real scenario to the end."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.e2e


def test_demo_runs_the_scenario_and_reports_real_outcomes():
    out = subprocess.run(
        [sys.executable, "-m", "hpctl.cli", "demo"], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stdout + out.stderr
    text = out.stdout
    assert "HyperPod patches its software: cluster is SystemUpdating" in text
    # Registration waited for InService (CheckCluster more than once), then recorded the operator.
    assert re.search(r"-> SUCCEEDED: \d+ states \(CheckCluster x\d+, .*\), ending in Registered", text), text
    assert "its server answers through the API server's pod proxy" in text
    assert "-> pod gone; node UnschedulablePendingReplacement" in text
    assert "node_health ran 2 times" in text and "NODE item: Unhealthy (version 1)" in text
    assert "NODE item unchanged: Unhealthy (version 1)" in text
    assert "node Ready=True; NODE item: Healthy (version 2)" in text
    assert re.search(r"-> 23 checks: \d+ passed, 0 failed, \d+ skipped", text), "preflight found a failure"
    assert re.search(r"-> SUCCEEDED: \d+ states .*ending in Installed", text)
    assert (
        "add-on ACTIVE at v1.2.1-eksbuild.1; 1 Pod Identity association; controller Deployment available"
        in text
    )
    assert "-> FAILED: OperatorConflictError: cluster 'demo-cluster' already runs the addon" in text
    assert "-> FAILED: ResourceNotFoundError" in text
    assert "events in the dead-letter queue: 0; executions: 2 FAILED, 2 SUCCEEDED" in text
