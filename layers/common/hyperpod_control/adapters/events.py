"""EventBridge PutEvents on the stack's bus, in batches of ten (the API's limit per call)."""

from __future__ import annotations

from typing import Any

from hyperpod_control.adapters.aws import AwsAdapter, map_client_error
from hyperpod_control.exceptions import DependencyUnavailableError

BATCH = 10


class EventsAdapter(AwsAdapter):
    service = "events"

    def put(self, entries: list[dict[str, Any]]) -> None:
        """Put every entry; an entry EventBridge refuses raises (the caller's retry puts it again)."""
        for start in range(0, len(entries), BATCH):
            batch = entries[start : start + BATCH]
            try:
                answer = self.client.put_events(Entries=batch)
            except Exception as exc:
                raise map_client_error(exc, resource="the stack's event bus") from exc
            if answer.get("FailedEntryCount"):
                failed = [e for e in answer.get("Entries", []) if e.get("ErrorCode")]
                raise DependencyUnavailableError(f"EventBridge refused {len(failed)} entries: {failed[:3]}")
