"""The agent's state machine: the states and transitions of the HyperPod elastic agent.

The state names are the wire protocol (``GET /status`` reports them lower-case), so they match the
HyperPod elastic agent exactly. Invalid transitions are refused and logged, never raised: the
control loop and the HTTP threads race by design, and the loser of a race must simply observe the
new state (for example a worker crash seen just after ``/stop`` must not turn STOPPING into
FAULTED).
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable
from enum import StrEnum

logger = logging.getLogger(__name__)


class AgentState(StrEnum):
    INIT = "INIT"
    READY = "READY"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAULTED = "FAULTED"
    STOPPING = "STOPPING"
    SHUTDOWN = "SHUTDOWN"


S = AgentState

# Process-level restart agent (the default). SHUTDOWN is reachable from every state, STOPPING
# included: HyperPod 1.1.3 refuses STOPPING -> SHUTDOWN, which leaves a pod that cannot be told to
# exit while it stops its workers; a container must always be able to exit when asked.
PLR_TRANSITIONS: dict[AgentState, frozenset[AgentState]] = {
    S.INIT: frozenset({S.READY, S.SHUTDOWN}),
    S.READY: frozenset({S.RUNNING, S.SHUTDOWN}),
    S.RUNNING: frozenset({S.COMPLETED, S.FAULTED, S.STOPPING, S.SHUTDOWN}),
    S.FAULTED: frozenset({S.STOPPING, S.SHUTDOWN}),
    S.STOPPING: frozenset({S.READY, S.SHUTDOWN}),
    S.COMPLETED: frozenset({S.SHUTDOWN, S.STOPPING}),
    S.SHUTDOWN: frozenset(),
}

# In-process restart adds: back to INIT after a local process restart, and FAULTED from INIT/READY
# (a worker may die while it waits at the barrier).
IPR_TRANSITIONS: dict[AgentState, frozenset[AgentState]] = {
    state: targets
    | (frozenset({S.INIT}) if state in {S.READY, S.RUNNING, S.FAULTED, S.STOPPING} else frozenset())
    | (frozenset({S.FAULTED}) if state in {S.INIT, S.READY} else frozenset())
    for state, targets in PLR_TRANSITIONS.items()
}


def _now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class StateMachine:
    """Thread-safe holder of the agent state, its reason and message, and when each state was
    last entered. Every change wakes the control loop through ``changed``."""

    def __init__(self, initial: AgentState, transitions: dict[AgentState, frozenset[AgentState]]):
        self._transitions = transitions
        self._lock = threading.RLock()
        self.changed = threading.Condition(self._lock)
        self._state = initial
        self.reason: str | None = None
        self.message: str | None = None
        self.transitions: dict[str, str] = {initial.value: _now_iso()}
        # Called under the lock after every change; must not block (the event push only enqueues).
        self.on_change: Callable[[AgentState, str | None, str | None], None] | None = None

    @property
    def lock(self) -> threading.RLock:
        return self._lock

    @property
    def state(self) -> AgentState:
        with self._lock:
            return self._state

    def can(self, target: AgentState) -> bool:
        with self._lock:
            return target in self._transitions[self._state]

    def transition(
        self,
        target: AgentState,
        reason: str | None = None,
        message: str | None = None,
        *,
        only_from: set[AgentState] | None = None,
    ) -> bool:
        """Move to ``target`` if that is a valid transition (and, with ``only_from``, if the current
        state is one of those). Returns whether the state changed; a refusal is logged."""
        with self._lock:
            current = self._state
            if only_from is not None and current not in only_from:
                expected = "/".join(sorted(s.value for s in only_from))
                logger.info("state %s -> %s skipped: not in %s", current.value, target.value, expected)
                return False
            if target not in self._transitions[current]:
                logger.warning("invalid agent state transition %s -> %s refused", current.value, target.value)
                return False
            self._state = target
            self.reason = reason
            self.message = message
            self.transitions[target.value] = _now_iso()
            logger.info("agent state %s -> %s (reason=%s)", current.value, target.value, reason)
            if self.on_change is not None:
                try:
                    self.on_change(target, reason, message)
                except Exception:
                    logger.exception("state change hook failed")
            self.changed.notify_all()
            return True

    def amend(self, state: AgentState, reason: str, message: str | None) -> bool:
        """Replace the reason of the current state if it is ``state`` (a root cause found after a
        consequence was reported first). Not a transition: timestamps are kept."""
        with self._lock:
            if self._state is not state:
                return False
            self.reason, self.message = reason, message
            self.changed.notify_all()
            return True

    def poke(self) -> None:
        """Wake the control loop without changing the state (new rendezvous info, a worker message)."""
        with self._lock:
            self.changed.notify_all()
