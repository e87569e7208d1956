"""One sandbox for the whole end-to-end session: a 4-node HyperPod cluster with the serverless
operator installed, pods that really run, reconcile_jobs on its one-minute schedule (sandbox
time runs 50x faster: a minute is 1.2 s, the supervisor's 30 s poll 0.6 s). A job's execution
continues as a new segment every 10 poll rounds (1,000 in production), so jobs longer than a few
seconds cross segments."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from sandbox import Sandbox, SandboxConfig
from sandbox.world import WorldOptions


@pytest.fixture(scope="session")
def serverless() -> Iterator[Sandbox]:
    config = SandboxConfig(
        world=WorldOptions(nodes=4),
        kube=True,
        pods=True,
        time_scale=0.02,
        # A /status read timeout of 1 s (5 in production) keeps a silent agent from holding a
        # poll round for 250 sandbox seconds at this time scale. The API server proxies to the
        # agents from loopback: each job's NetworkPolicy admits it (stored, not enforced here).
        parameters={
            "SupervisorSegmentRounds": "10",
            "AgentStatusTimeoutSeconds": "1",
            "AgentAllowedCidrs": "127.0.0.0/8",
        },
    )
    with Sandbox(config) as sb:
        outcome = sb.run_execution(
            "InstallOperatorStateMachine",
            {"clusterName": sb.world.hyperpod_cluster_name, "operator": "serverless"},
            timeout=120,
        )
        assert outcome.ok, (outcome.error, outcome.cause)
        yield sb
