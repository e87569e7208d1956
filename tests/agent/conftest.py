"""Fixtures of the agent tests; the helpers live in agent_harness."""

from __future__ import annotations

from pathlib import Path

import pytest
from agent_harness import Agent


@pytest.fixture
def ctl(tmp_path: Path) -> Path:
    (tmp_path / "ckpt").mkdir()
    return tmp_path


@pytest.fixture
def agents():
    """Agents started by the test; all are ended (SIGTERM, then SIGKILL) when it ends."""
    started: list[Agent] = []

    def make(*args, **kwargs) -> Agent:
        agent = Agent(*args, **kwargs)
        started.append(agent)
        return agent

    yield make
    for agent in started:
        agent.close()
