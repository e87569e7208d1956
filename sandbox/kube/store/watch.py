"""Watches: the store's event history and the streams read from it.

Every write appends one event (ADDED, MODIFIED with the object before, DELETED) under the store's
lock, numbered by its resourceVersion. The history is compacted as etcd's: once it holds twice
``HISTORY_LIMIT`` events the oldest are dropped, and a watch from a resourceVersion before them
answers 410 Expired. A stream sends the initial objects (with ``sendInitialEvents``, a BOOKMARK
after them), then the events of its type from its resourceVersion on, with selector transitions:
an object that stops matching is sent as DELETED, one that starts matching as ADDED.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from sandbox.kube.resources import ResourceType
from sandbox.kube.selectors import FieldRequirement, Requirement, fields_match, labels_match
from sandbox.kube.store.errors import expired

HISTORY_LIMIT = 20_000


@dataclass(frozen=True)
class WatchEvent:
    rv: int
    key: tuple[str, str]
    type: str  # ADDED, MODIFIED, DELETED
    obj: dict
    old: dict | None


def resource_version(obj: dict) -> str:
    return obj.get("metadata", {}).get("resourceVersion", "")


def selector(
    rt: ResourceType,
    namespace: str | None,
    labels: tuple[Requirement, ...],
    fields: tuple[FieldRequirement, ...],
) -> Callable[[dict | None], bool]:
    """Whether an object (or the version before an event, None for none) is in a watch's view."""

    def selected(obj: dict | None) -> bool:
        if obj is None:
            return False
        if namespace is not None and obj["metadata"].get("namespace", "") != namespace:
            return False
        return labels_match(labels, obj["metadata"].get("labels")) and fields_match(
            fields, obj, rt.field_getters
        )

    return selected


class History:
    """The event history, guarded by the store's lock through ``changed`` (its condition), which
    is notified on every event and when the store closes."""

    def __init__(self, changed: threading.Condition) -> None:
        self._changed = changed
        self._events: list[WatchEvent] = []
        self._rvs: list[int] = []
        self.compacted_rv = 1  # the history holds every event with rv > this
        self.closed = False

    def append(self, event: WatchEvent) -> None:
        """Record ``event``; the caller holds the store's lock."""
        self._events.append(event)
        self._rvs.append(event.rv)
        if len(self._events) > 2 * HISTORY_LIMIT:
            drop = len(self._events) - HISTORY_LIMIT
            self.compacted_rv = self._rvs[drop - 1]
            del self._events[:drop]
            del self._rvs[:drop]
        self._changed.notify_all()

    def check(self, last: int) -> None:
        """410 Expired if events after ``last`` were compacted away."""
        if last < self.compacted_rv:
            raise expired(last, self.compacted_rv)

    def close(self) -> None:
        with self._changed:
            self.closed = True
            self._changed.notify_all()

    def stream(
        self,
        rt: ResourceType,
        selected: Callable[[dict | None], bool],
        initial: list[dict],
        last: int,
        stop: threading.Event,
        deadline: float | None,
        send_initial: bool,
    ) -> Iterator[tuple[str, dict]]:
        """The events of a watch: ``initial`` as ADDED, then the history after ``last``."""
        for obj in sorted(initial, key=lambda o: int(resource_version(o))):
            yield "ADDED", obj
        if send_initial:
            yield (
                "BOOKMARK",
                {
                    "kind": rt.kind,
                    "apiVersion": rt.api_version(),
                    "metadata": {
                        "resourceVersion": str(last),
                        "annotations": {"k8s.io/initial-events-end": "true"},
                    },
                },
            )
        while not stop.is_set():
            with self._changed:
                idx = bisect.bisect_right(self._rvs, last)
                while idx >= len(self._events) and not stop.is_set() and not self.closed:
                    wait = 0.5 if deadline is None else min(0.5, deadline - time.monotonic())
                    if wait <= 0:
                        return
                    self._changed.wait(wait)
                    idx = bisect.bisect_right(self._rvs, last)
                if self.closed:
                    return
                self.check(last)
                batch = self._events[idx:]
            for ev in batch:
                last = ev.rv
                if ev.key != rt.key:
                    continue
                now_in, was_in = selected(ev.obj), selected(ev.old)
                if ev.type == "MODIFIED":
                    if now_in and was_in:
                        yield "MODIFIED", ev.obj
                    elif now_in:
                        yield "ADDED", ev.obj
                    elif was_in:
                        yield "DELETED", ev.obj
                elif now_in:
                    yield ev.type, ev.obj
            if deadline is not None and time.monotonic() >= deadline:
                return
