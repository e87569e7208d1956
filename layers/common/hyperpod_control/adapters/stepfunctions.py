"""Step Functions calls: the job supervisor's (start a job's execution segment idempotently, stop
it, read its status, wake a waiting execution with its task token), and following an execution to
its end (``follow``, ``Outcome``), which ``hpctl`` and the sandbox share; an execution's children
(the executions its ``startExecution.sync:2`` tasks ran) are followed with it."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
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
    input: Any = None
    #: The executions its ``startExecution`` tasks started, in the order they started.
    children: list[Outcome] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status == "SUCCEEDED"

    def states_entered(self) -> list[str]:
        return [
            e["stateEnteredEventDetails"]["name"] for e in self.history if "stateEnteredEventDetails" in e
        ]

    def steps_entered(self) -> list[str]:
        """``states_entered`` with each child's steps (its own ``steps_entered``) in the place of
        the task that ran it: the whole path, in order, across workflows."""
        children = {child.execution_arn: child for child in self.children}
        steps: list[str] = []
        for event in self.history:
            if "stateEnteredEventDetails" in event:
                steps.append(event["stateEnteredEventDetails"]["name"])
            arn = child_execution(event)
            if event["type"] == "TaskSubmitted" and arn in children:
                steps.extend(children[arn].steps_entered())
        return steps

    def assigned(self, variable: str) -> Any:
        """The last value the execution assigned to ``variable`` (an ``Assign`` on a state or a
        catcher), as its history records it when that state exits; None if it never was."""
        for event in reversed(self.history):
            values = event.get("stateExitedEventDetails", {}).get("assignedVariables", {})
            if variable in values:
                return json.loads(values[variable])
        return None


_CHILD_EVENTS = {
    "TaskSubmitted": ("taskSubmittedEventDetails", "output"),
    "TaskSucceeded": ("taskSucceededEventDetails", "output"),
    "TaskFailed": ("taskFailedEventDetails", "cause"),
}


def child_execution(event: dict[str, Any]) -> str | None:
    """The ARN of the execution a ``startExecution`` task started, from the event that says so:
    TaskSubmitted and TaskSucceeded carry StartExecution's or DescribeExecution's answer as
    output, TaskFailed (``.sync``: the child failed) the child's DescribeExecution as cause."""
    details_key, value_key = _CHILD_EVENTS.get(event["type"], ("", ""))
    details = event.get(details_key) or {}
    if details.get("resourceType") != "states" or not details.get(value_key):
        return None
    try:
        value = json.loads(details[value_key])
    except ValueError:
        return None
    return value.get("ExecutionArn") if isinstance(value, dict) else None


def _children(events: list[dict[str, Any]]) -> list[str]:
    return list(dict.fromkeys(arn for arn in map(child_execution, events) if arn))


def outcome_of(sfn: Any, execution_arn: str) -> Outcome:
    """The Outcome of an execution that has ended, its children's included."""
    desc = sfn.describe_execution(executionArn=execution_arn)
    events = execution_history(sfn, execution_arn)
    output, raw_input = desc.get("output"), desc.get("input")
    return Outcome(
        execution_arn,
        desc["status"],
        json.loads(output) if output else None,
        desc.get("error"),
        desc.get("cause"),
        events,
        json.loads(raw_input) if raw_input else None,
        [outcome_of(sfn, arn) for arn in _children(events)],
    )


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
    the execution started, a child execution's states indented under the task that ran it;
    ``hide`` names plumbing states (Pass steps) not worth a line."""
    deadline = time.monotonic() + timeout
    seen: dict[str, int] = {}
    running: dict[str, int] = {}  # children started and not yet ended, with their depth
    delay = 0.01
    started = None

    def show(arn: str, depth: int) -> None:
        """Print the states ``arn`` entered since the last look, and its children's."""
        events = execution_history(sfn, arn)
        for event in events[seen.get(arn, 0) :]:
            details = event.get("stateEnteredEventDetails")
            if details and details["name"] not in hide and out is not None:
                elapsed = (event["timestamp"] - started).total_seconds()
                print(f"  {'  ' * depth}{elapsed:7.1f}s  {details['name']}", file=out, flush=True)
            child = child_execution(event)
            if child is not None:
                running[child] = depth + 1
                if event["type"] != "TaskSubmitted":
                    del running[child]  # it ended: show all it did before what came after
                show(child, depth + 1)
        seen[arn] = len(events)

    while True:
        desc = sfn.describe_execution(executionArn=execution_arn)
        started = started or desc["startDate"]
        show(execution_arn, 0)
        for child, depth in list(running.items()):
            if child in running:
                show(child, depth)
        if desc["status"] in TERMINAL:
            return outcome_of(sfn, execution_arn)
        if time.monotonic() > deadline:
            raise TimeoutError(f"{execution_arn} still {desc['status']} after {timeout:.0f}s")
        poll(delay)
        delay = min(delay * 1.5, 2.0)
