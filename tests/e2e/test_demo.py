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
    # The switch to the serverless operator, and a real PyTorch job run by it to Completed.
    assert re.search(r"-> SUCCEEDED: \d+ states .*ending in Uninstalled", text)
    assert "-> JOB item: Running (rank 0: tiny-regression-0 on hyperpod-i-" in text and "; spare " in text
    assert "-> job condition Completed: all 2 ranks completed" in text
    assert re.search(r"rank 0 log: step 0 loss [\d.]+ \.\.\. step 299 loss 0\.0", text), text
    assert "history: Admitted -> PodsCreated -> Started -> Completed" in text
    assert "events in the dead-letter queue: 0; executions: 2 FAILED, 5 SUCCEEDED" in text
