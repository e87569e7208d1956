"""Starting the control plane's workflows and following them to the end, with progress output."""

from __future__ import annotations

import json
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TextIO

TERMINAL = {"SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED"}


@dataclass
class Outcome:
    execution_arn: str
    status: str
    output: Any
    error: str | None
    cause: str | None
    history: list[dict[str, Any]]

    @property
    def ok(self) -> bool:
        return self.status == "SUCCEEDED"

    def states_entered(self) -> list[str]:
        return [
            e["stateEnteredEventDetails"]["name"] for e in self.history if "stateEnteredEventDetails" in e
        ]


def execution_name(prefix: str) -> str:
    """Readable and unique: a prefix a person recognises, a time, and a random suffix."""
    safe = "".join(c if c.isalnum() or c in "-_" else "-" for c in prefix)[:40]
    return f"{safe}-{datetime.now().strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}"


def start(sfn: Any, state_machine_arn: str, prefix: str, payload: dict[str, Any]) -> str:
    """Start an execution under a readable unique name; returns its ARN."""
    return sfn.start_execution(
        stateMachineArn=state_machine_arn, name=execution_name(prefix), input=json.dumps(payload)
    )["executionArn"]


def history(sfn: Any, execution_arn: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    kwargs: dict[str, Any] = {"executionArn": execution_arn, "maxResults": 1000}
    while True:
        page = sfn.get_execution_history(**kwargs)
        events.extend(page["events"])
        if not page.get("nextToken"):
            return events
        kwargs["nextToken"] = page["nextToken"]


def follow(
    sfn: Any,
    execution_arn: str,
    *,
    timeout: float = 3600.0,
    out: TextIO | None = sys.stderr,
    poll: Callable[[float], None] = time.sleep,
    hide: frozenset[str] = frozenset(),
) -> Outcome:
    """Wait for an execution to end, printing each state as it is entered with the seconds since
    the execution started; ``hide`` names plumbing states (Pass steps) not worth a line."""
    deadline = time.monotonic() + timeout
    seen = 0
    delay = 0.01
    started = None
    while True:
        desc = sfn.describe_execution(executionArn=execution_arn)
        started = started or desc["startDate"]
        events = history(sfn, execution_arn)
        for event in events[seen:]:
            details = event.get("stateEnteredEventDetails")
            if details and details["name"] not in hide and out is not None:
                elapsed = (event["timestamp"] - started).total_seconds()
                print(f"  {elapsed:7.1f}s  {details['name']}", file=out, flush=True)
        seen = len(events)
        if desc["status"] in TERMINAL:
            output = desc.get("output")
            return Outcome(
                execution_arn,
                desc["status"],
                json.loads(output) if output else None,
                desc.get("error"),
                desc.get("cause"),
                events,
            )
        if time.monotonic() > deadline:
            raise TimeoutError(f"{execution_arn} still {desc['status']} after {timeout:.0f}s")
        poll(delay)
        delay = min(delay * 1.5, 2.0)
