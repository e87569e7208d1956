"""The sandbox's own test app: a small SAM template whose handlers exercise the emulated Lambda,
Step Functions and EventBridge, one sandbox per module (moto's state is process-wide)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from sandbox import Sandbox, SandboxConfig

RUNNER_APP = Path(__file__).resolve().parent / "runner_app" / "template.yaml"


@pytest.fixture(scope="module")
def fixture_app() -> Iterator[Sandbox]:
    """The runner test app, in process, sandbox time 1000x faster than wall time."""
    config = SandboxConfig(template=RUNNER_APP, stack_name="fixture", time_scale=0.001)
    with Sandbox(config) as sb:
        yield sb
