"""One sandbox for the whole end-to-end session: a 4-node HyperPod cluster with the serverless
operator installed, pods that really run, reconcile_jobs on its one-minute schedule (sandbox
time runs 50x faster: a minute is 1.2 s, the supervisor's 30 s poll 0.6 s). A job's execution
continues as a new segment every 10 poll rounds (1,000 in production), so jobs longer than a few
seconds cross segments."""

from __future__ import annotations

import fcntl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandbox import Sandbox, SandboxConfig
from sandbox.workloads import AGENTS, AWS_AGENT_VENV
from sandbox.world import WorldOptions

REPO = Path(__file__).resolve().parents[2]


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


@pytest.fixture(scope="session")
def aws_agent_env() -> Path:
    """AWS's agent's environment (``.venv-aws-agent``, from its locks; README "The agent"), built
    when it is missing or older than its locks: make decides, in about 40 s the first time. Test
    workers running in parallel take turns: the first builds it, the others find it built.

    ``-o .venv/.installed``: never rebuild the environment these tests are running in. In a tree
    whose pyproject.toml changed since ``.venv`` was built, make would otherwise delete and rebuild
    it under the running tests (their subprocesses and pods then fail to import anything)."""
    with open(REPO / f"{AWS_AGENT_VENV.name}.build-lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        subprocess.run(
            ["make", "--no-print-directory", "-o", ".venv/.installed", f"{AWS_AGENT_VENV.name}/.installed"],
            cwd=REPO,
            check=True,
        )
    return AWS_AGENT_VENV


@pytest.fixture(params=AGENTS)
def agent(request) -> str:
    """The agent a job's pods run: this project's hyperpodrun, or AWS's 1.1.3 (``tiny_job(agent=)``)."""
    if request.param == "aws":
        request.getfixturevalue("aws_agent_env")
    return request.param
