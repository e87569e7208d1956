"""Step Functions calls: the job supervisor's (start a job's execution segment idempotently, stop
it, read its status, wake a waiting execution with its task token), and following an execution to
its end (``follow``, ``Outcome``), which ``hpctl`` and the sandbox share."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TextIO

from hyperpod_control.adapters.aws import AwsAdapter, error_code, map_client_error

#: What AWS answers SendTaskSuccess for a token nobody waits on any more: the task timed out
#: (the poll interval ran out first), was already answered, or the execution ended. Normal for a
#: wake-up: the next poll finds the fault on the JOB item anyway.
STALE_TOKEN_CODES = ("TaskTimedOut", "InvalidToken", "TaskDoesNotExist")


def execution_name(uid: str, generation: int, segment: int) -> str:
    """``<uid>-g<generation>-<segment>``: one name per job generation and segment, since a
    finished execution's name stays taken for 90 days."""
    return f"{uid}-g{generation}-{segment}"


def execution_arn(state_machine_arn: str, name: str) -> str:
    return state_machine_arn.replace(":stateMachine:", ":execution:", 1) + f":{name}"


class StepFunctionsAdapter(AwsAdapter):
    service = "stepfunctions"

    def start_execution(self, state_machine_arn: str, name: str, payload: dict[str, Any]) -> str:
        """Start ``name``; the ARN of the execution of that name if it exists already (AWS returns
        the running one for the same input; a retry after a lost answer lands here)."""
        try:
            return self.client.start_execution(
                stateMachineArn=state_machine_arn, name=name, input=json.dumps(payload)
            )["executionArn"]
        except Exception as exc:
            if error_code(exc) == "ExecutionAlreadyExists":
                return execution_arn(state_machine_arn, name)
            raise map_client_error(exc, resource=f"execution {name}") from exc

    def status(self, arn: str) -> str | None:
        """RUNNING, SUCCEEDED, FAILED, TIMED_OUT or ABORTED; None when there is no such execution."""
        try:
            return self.client.describe_execution(executionArn=arn)["status"]
        except Exception as exc:
            if error_code(exc) == "ExecutionDoesNotExist":
                return None
            raise map_client_error(exc, resource=f"execution {arn}") from exc

    def stop(self, arn: str, cause: str) -> bool:
        """Stop a running execution; False when it was not running."""
        try:
            self.client.stop_execution(executionArn=arn, error="JobDeleted", cause=cause[:32000])
        except Exception as exc:
            if error_code(exc) in ("ExecutionDoesNotExist", "ExecutionNotRunning"):
                return False
            raise map_client_error(exc, resource=f"execution {arn}") from exc
        return True

    def wake(self, token: str, output: dict[str, Any]) -> bool:
        """SendTaskSuccess; False when the token is stale (see STALE_TOKEN_CODES)."""
        try:
            self.client.send_task_success(taskToken=token, output=json.dumps(output))
        except Exception as exc:
            if error_code(exc) in STALE_TOKEN_CODES:
                return False
            raise map_client_error(exc, resource="task token") from exc
        return True


# ------------------------------------------------------- following an execution to its end

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

    def assigned(self, variable: str) -> Any:
        """The last value the execution assigned to ``variable`` (an ``Assign`` on a state or a
        catcher), as its history records it when that state exits; None if it never was."""
        for event in reversed(self.history):
            values = event.get("stateExitedEventDetails", {}).get("assignedVariables", {})
            if variable in values:
                return json.loads(values[variable])
        return None


def execution_history(sfn: Any, execution_arn: str) -> list[dict[str, Any]]:
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
        events = execution_history(sfn, execution_arn)
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
