"""Log-based hang, slow and fault detection (``runPolicy.logMonitoringConfiguration``).

The control plane pushes rules in /start and /update. Every local rank's stdout lines arrive from
the agent's output tap (hyperpod_agent.logtap, with or without ``--tee``); each rule is evaluated
per local rank on each new line and on every idle tick:

- ``logPattern`` (``re.match``, anchored at the line start) marks progress; with one capture group
  its value is a metric compared against ``metricThreshold`` with ``operator``, and
  ``metricEvaluationDataPoints`` consecutive hits make the rule SLOW;
- no match within ``expectedStartCutOffInSeconds`` of the start, or a gap longer than
  ``expectedRecurringFrequencyInSeconds`` between matches, makes it HANGING;
- ``faultOnMatch`` makes a match FAULTED at once; ``stopPattern`` retires the rule.

SLOW and HANGING recover when the condition clears; FAULTED does not. Time while the monitor is
paused (workers parked at the in-process barrier) does not count toward any timer.
"""

from __future__ import annotations

import logging
import operator as op
import os
import threading
import time
from dataclasses import dataclass
from enum import StrEnum

from .models import LogRule

logger = logging.getLogger(__name__)

_OPS = {"gt": op.gt, "lt": op.lt, "eq": op.eq, "gteq": op.ge, "lteq": op.le}


class LogState(StrEnum):
    WAITING = "WAITING"
    HEALTHY = "HEALTHY"
    SLOW = "SLOW"
    HANGING = "HANGING"
    FAULTED = "FAULTED"


_REASON_PREFIX = {LogState.SLOW: "LogSlow_", LogState.HANGING: "LogHang_", LogState.FAULTED: "LogFault_"}


@dataclass(frozen=True)
class Verdict:
    reason: str
    message: str


class _RuleState:
    def __init__(self, rule: LogRule, now: float):
        self.rule = rule
        self.state = LogState.WAITING
        self.started = now
        self.last_match: float | None = None
        self.hits = 0
        self.retired = False
        self.detail = ""

    def shift(self, delta: float) -> None:
        self.started += delta
        if self.last_match is not None:
            self.last_match += delta

    def on_line(self, line: str, now: float) -> None:
        if self.retired or self.state is LogState.FAULTED:
            return
        rule = self.rule
        if rule.stop_pattern is not None and rule.stop_pattern.match(line):
            self.retired = True
            self.state = LogState.HEALTHY
            return
        m = rule.pattern.match(line)
        if not m:
            return
        self.last_match = now
        if rule.fault_on_match:
            self.state = LogState.FAULTED
            self.detail = f"line matched faultOnMatch pattern: {line[:200]!r}"
            return
        if rule.threshold is not None and m.groups():
            try:
                value = float(m.group(1))
            except (TypeError, ValueError):
                return
            if _OPS[rule.operator or "gt"](value, rule.threshold):
                self.hits += 1
                if self.hits >= rule.datapoints:
                    self.state = LogState.SLOW
                    self.detail = (
                        f"metric {value} {rule.operator} {rule.threshold} for {self.hits} data points"
                    )
                    return
            else:
                self.hits = 0
        self.state = LogState.HEALTHY

    def on_tick(self, now: float) -> None:
        if self.retired or self.state is LogState.FAULTED:
            return
        rule = self.rule
        if self.last_match is None:
            if rule.start_cutoff_s is not None and now - self.started > rule.start_cutoff_s:
                self.state = LogState.HANGING
                self.detail = f"no line matched within {rule.start_cutoff_s:g}s of the start"
        elif rule.recurring_s is not None and now - self.last_match > rule.recurring_s:
            self.state = LogState.HANGING
            self.detail = (
                f"no line matched for {now - self.last_match:.1f}s (expected every {rule.recurring_s:g}s)"
            )


class LogMonitor:
    """Evaluates the rules on every local rank's lines (``feed``, from hyperpod_agent.logtap) and
    on idle ticks; ``verdict()`` is what the control loop reads. Each rule has a state per local
    rank: a rank that stops printing is HANGING even while its peers print on."""

    def __init__(self, interval: float | None = None, clock=time.monotonic):
        self._interval = (
            interval if interval is not None else float(os.environ.get("HYPERPOD_LOG_MONITOR_INTERVAL", 1.0))
        )
        self._clock = clock
        self._lock = threading.Lock()
        self._rules: list[LogRule] = []
        self._ranks: list[int] = []
        self._states: dict[int, list[_RuleState]] = {}
        self._paused_at: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _fresh_states(self) -> None:
        now = self._clock()
        self._states = {r: [_RuleState(rule, now) for rule in self._rules] for r in self._ranks}

    def set_rules(self, rules: list[LogRule]) -> None:
        with self._lock:
            self._rules = list(rules)
            self._fresh_states()

    def attach(self, local_ranks) -> None:
        """Start evaluating a new stage's ``local_ranks``; timers start now."""
        with self._lock:
            self._ranks = list(local_ranks)
            self._paused_at = None
            self._fresh_states()
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="hyperpod-logmon", daemon=True)
            self._thread.start()

    def detach(self) -> None:
        with self._lock:
            self._ranks = []
            self._states = {}

    def pause(self) -> None:
        with self._lock:
            if self._paused_at is None:
                self._paused_at = self._clock()

    def resume(self) -> None:
        with self._lock:
            if self._paused_at is not None:
                delta = self._clock() - self._paused_at
                for states in self._states.values():
                    for s in states:
                        s.shift(delta)
                self._paused_at = None

    def verdict(self) -> Verdict | None:
        with self._lock:
            for state in (LogState.FAULTED, LogState.HANGING, LogState.SLOW):
                for rank, states in sorted(self._states.items()):
                    for s in states:
                        if s.state is state:
                            return Verdict(
                                f"{_REASON_PREFIX[state]}{s.rule.name}",
                                f"log rule {s.rule.name}, local rank {rank}: {s.detail}",
                            )
        return None

    def feed(self, local_rank: int, line: str) -> None:
        """One line of ``local_rank``'s stdout. Lines while paused (workers parked at the in-process
        barrier) are not evaluated, as no timer runs then."""
        with self._lock:
            if self._paused_at is not None:
                return
            now = self._clock()
            for s in self._states.get(local_rank, ()):
                s.on_line(line, now)

    def tick(self) -> None:
        """Evaluate the timers once (the thread calls this every interval)."""
        with self._lock:
            if self._paused_at is not None:
                return
            now = self._clock()
            for states in self._states.values():
                for s in states:
                    s.on_tick(now)

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.tick()
            except Exception:
                logger.exception("log monitor tick failed")

    def stop(self) -> None:
        self._stop.set()
