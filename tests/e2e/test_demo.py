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
    print(text)  # the whole story in the report of a failed assertion below (their reprs are cut)
    assert "HyperPod patches its software: cluster is SystemUpdating" in text
    # Registration waited for InService (CheckCluster more than once), then recorded the operator.
    assert re.search(r"-> SUCCEEDED: \d+ states \(CheckCluster x\d+, .*\), ending in Registered", text), text
    assert "its server answers through the API server's pod proxy" in text
    # A dead instance as on EKS: its pod stays Running and silent, the node goes NotReady after the
    # grace period, the pod is evicted after its toleration and stays Terminating.
    assert "-> pod still Running: its processes are frozen, a request to it hangs" in text
    assert "after the node-monitor grace period (40 s): node Ready=Unknown" in text
    assert "-> after its 300 s toleration: pod Terminating; node UnschedulablePendingReplacement" in text
    assert "node_health ran 2 times" in text and "NODE item: Unhealthy (version 1)" in text
    assert "NODE item unchanged: Unhealthy (version 1)" in text
    assert "node Ready=True; NODE item: Healthy (version 2)" in text
    assert re.search(r"-> 24 checks: \d+ passed, 0 failed, \d+ skipped", text), "preflight found a failure"
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
    # A node fails under rank 1: the spare takes the rank, training resumes from the checkpoint.
    assert re.search(r"12\. hpctl sandbox fail-node hyperpod-i-\w+ \(under rank 1, tiny-regression-1", text)
    assert re.search(
        r"remediated in \d+ milliseconds \(spare_swap\).*spare tiny-regression-2 promoted to rank 1", text
    )
    assert "rank 0: tiny-regression-0 on" in text.split("JOB item now:")[1], "rank 0 keeps its pod"
    assert re.search(
        r"tiny-regression-2 log: rank [23]/4 starting at step [1-9]\d* \.\.\. step 599 loss", text
    ), text
    assert "-> job condition Completed: all 2 ranks completed" in text
    assert re.search(
        r"history: Admitted -> (AgentIdentity -> )?PodsCreated -> Started -> Remediated -> .*Completed", text
    )
    assert "events in the dead-letter queue: 0; executions: 2 FAILED, 5 SUCCEEDED" in text
    # Rank 1's output while the job runs, read through the cluster's Kubernetes API.
    assert re.search(r"hpctl jobs logs tiny-regression --rank 1: .*step \d+", text), text
    # It ends with the job's timeline drawn, and where its HTML page was written.
    assert re.search(r"\nfaults +F", text) and re.search(r"\ndecisions +M", text), text
    assert re.search(r"\nrecoveries +R", text), text
    assert re.search(r"timeline written to \S+\.html\n", text)
    # The functions' metrics (EMF) and logs went to their log groups, never to the console.
    assert '"_aws"' not in text and '"_aws"' not in out.stderr
