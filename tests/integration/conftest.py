"""Sandboxes for the integration tests: one per module, since moto's state is process-wide."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from sandbox import Sandbox, SandboxConfig

FIXTURE_APP = Path(__file__).resolve().parent.parent / "fixtures" / "runner_app" / "template.yaml"


@pytest.fixture(scope="module")
def fixture_app() -> Iterator[Sandbox]:
    """The runner test app, in process, sandbox time 1000x faster than wall time."""
    config = SandboxConfig(template=FIXTURE_APP, stack_name="fixture", time_scale=0.001)
    with Sandbox(config) as sb:
        yield sb


@pytest.fixture(scope="module")
def project_server() -> Iterator[Sandbox]:
    """The project's own template.yaml, with moto as an HTTP server on loopback."""
    with Sandbox(SandboxConfig(server=True, time_scale=0.01)) as sb:
        yield sb
