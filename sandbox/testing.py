"""Helpers for tests that drive the sandbox: wait on a condition, never on a fixed sleep."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def eventually(
    check: Callable[[], T], timeout: float = 20.0, what: str = "condition", interval: float | None = None
) -> T:
    """Poll ``check`` until it returns something truthy; raise AssertionError after ``timeout``.
    Backs off from 10 ms to 250 ms, or polls every ``interval`` s (a time measured with it is then
    late by at most ``interval``)."""
    deadline = time.monotonic() + timeout
    delay = interval or 0.01
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(delay)
        if interval is None:
            delay = min(delay * 2, 0.25)
