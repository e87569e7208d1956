"""Sandboxes for the integration tests: one per module, since moto's state is process-wide."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from sandbox import Sandbox, SandboxConfig


@pytest.fixture(scope="module")
def project_server() -> Iterator[Sandbox]:
    """The project's own template.yaml, with moto as an HTTP server on loopback."""
    with Sandbox(SandboxConfig(server=True, time_scale=0.01)) as sb:
        yield sb
