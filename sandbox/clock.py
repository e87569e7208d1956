"""Sandbox time: the one clock of the sandbox, and the manual clock tests drive it with.

Sandbox time runs ``1 / scale`` times faster than wall time. The scale is read on every call: a
number or a callable given to the clock, by default the active sandbox's ``time_scale``
(``sandbox.active``, 1.0 when none is active), so a sandbox started with ``time_scale=0.01``
sees a 30 s add-on install finish after 0.3 wall seconds. It is accumulated piecewise, so a
change of scale never makes sandbox time jump back. One clock gives two readings of that time:

- ``seconds()``: sandbox seconds since the clock started, for the lazily evaluated transitions of
  the emulated services (``aws_ext._base.Timed``: CREATING -> ACTIVE after 30 s);
- ``now()``: the sandbox's date, wall time when the clock started and scaled since, for scheduled
  rules and schedules (``eventbus``), metric data points (``cloudwatch``) and event ages.

``sleep(s)`` waits ``s`` sandbox seconds; ``wall_seconds(s)`` says how long that is in wall time
(the Step Functions interpreter's Wait, Retry and timeouts, ``patches.py``). A callable
``manual`` (a ``ManualClock``) replaces the scaled time: it moves only when a test advances it.

``clock`` is the process-wide clock (moto's backends are process-wide too); a ``Sandbox`` starts
its own at its own ``time_scale`` (``Sandbox.clock``), so its dates begin at its start. The
Kubernetes API server stamps objects with wall time, as a real one does (``now_rfc3339``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from sandbox.active import scale as active_scale

#: How AWS events and Kubernetes objects write a time (RFC 3339, whole seconds, UTC).
RFC3339 = "%Y-%m-%dT%H:%M:%SZ"


class ManualClock:
    """A clock that moves only when told to: ``configure(manual=ManualClock())`` in tests."""

    def __init__(self, start: float = 0.0) -> None:
        self.value = start

    def __call__(self) -> float:
        return self.value

    def advance(self, seconds: float) -> None:
        self.value += seconds


class SandboxClock:
    """Sandbox time: wall time at the start, then ``1 / scale`` times faster (see the module)."""

    def __init__(
        self, scale: float | Callable[[], float] | None = None, manual: Callable[[], float] | None = None
    ) -> None:
        self._lock = threading.Lock()
        self._wall0 = time.time()
        self._mono = time.monotonic()
        self._seconds = 0.0
        self._manual: Callable[[], float] | None = None
        self._scale: Callable[[], float] = active_scale
        self.configure(manual, scale)

    def configure(
        self, manual: Callable[[], float] | None = None, scale: float | Callable[[], float] | None = None
    ) -> None:
        """Replace the scaled time by ``manual``, or set the scale (None: the active sandbox's)."""
        with self._lock:
            self._manual = manual
            self._mono = time.monotonic()
            if scale is None:
                self._scale = active_scale
            else:
                self._scale = scale if callable(scale) else (lambda value=float(scale): value)

    @property
    def scale(self) -> float:
        return max(self._scale(), 1e-9)

    def _advance(self) -> None:
        wall = time.monotonic()
        self._seconds += (wall - self._mono) / self.scale
        self._mono = wall

    def seconds(self) -> float:
        """Sandbox seconds since the clock started (or the manual clock's reading)."""
        if self._manual is not None:
            return float(self._manual())
        with self._lock:
            self._advance()
            return self._seconds

    def now(self) -> datetime:
        """The sandbox's date: wall time when the clock started, plus ``seconds()``."""
        return datetime.fromtimestamp(self._wall0, UTC) + timedelta(seconds=self.seconds())

    def wall_seconds(self, sandbox_seconds: float) -> float:
        return sandbox_seconds * self.scale

    def sleep(self, sandbox_seconds: float) -> None:
        time.sleep(self.wall_seconds(sandbox_seconds))


clock = SandboxClock()


def now_rfc3339(offset_s: float = 0) -> str:
    """Wall time (plus ``offset_s``) as Kubernetes and AWS events write it."""
    return (datetime.now(UTC) + timedelta(seconds=offset_s)).strftime(RFC3339)
