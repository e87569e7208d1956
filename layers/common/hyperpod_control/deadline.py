"""An invocation's time budget: every outbound call a step makes is bounded by what is left of it.

Lambda stops an invocation at its Timeout, and Step Functions sees ``Sandbox.Timedout`` with the
step's work half done. A step that bounds each call by the time left (less a margin to finish
and report) instead raises ``DeadlineExceededError`` before that: a transient error the state
machine retries, like a throttle, on state the step's conditional writes kept consistent.

``Deadline.of(context)`` reads the Lambda context; ``Deadline()`` is unbounded (scripts, hpctl).
Each call asks ``timeout(preferred, what)`` for the timeout to use: ``preferred``, or less when
less is left, or the error when too little is left to be worth trying.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

from hyperpod_control.exceptions import DeadlineExceededError

#: Kept back from every call: time to save the step's result and answer Step Functions.
MARGIN_S = 5.0
#: ... but never more than this share of a short invocation's whole time.
MARGIN_SHARE = 0.2
#: A call with less than this left is not started: it could not finish.
MIN_CALL_S = 0.25


class Deadline:
    def __init__(
        self,
        seconds: float | None = None,
        *,
        margin: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._clock = clock
        self._end = math.inf if seconds is None else clock() + seconds
        budget = math.inf if seconds is None else seconds
        self.margin = margin if margin is not None else min(MARGIN_S, MARGIN_SHARE * budget)

    @classmethod
    def of(cls, context: Any) -> Deadline:
        """The deadline of a Lambda invocation (unbounded without a context)."""
        remaining = getattr(context, "get_remaining_time_in_millis", None)
        return cls(remaining() / 1000.0) if remaining is not None else cls()

    def remaining(self) -> float:
        """Seconds left for calls (the margin already taken off); inf when unbounded."""
        return self._end - self._clock() - self.margin

    def timeout(self, preferred: float, what: str) -> float:
        """The timeout for one call of ``what``: ``preferred`` or what is left, whichever is less."""
        left = self.remaining()
        if left < MIN_CALL_S:
            raise DeadlineExceededError(
                f"{what}: the invocation's time is spent ({max(left, 0):.1f} s left after its "
                f"{self.margin:.1f} s margin); the step runs again."
            )
        return min(preferred, left)

    def bounded(self, preferred: tuple[float, float], what: str) -> tuple[float, float]:
        """A (connect, read) timeout pair, each bounded by what is left."""
        left = self.timeout(max(preferred), what)
        return (min(preferred[0], left), min(preferred[1], left))
