"""Step Functions calls of the job supervisor: start a job's execution segment (idempotently),
stop it, read its status, and wake a waiting execution with its task token."""

from __future__ import annotations

import json
from typing import Any

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
