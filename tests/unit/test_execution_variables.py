"""The failed step comes from the workflow's ``failedStep`` variable, as the execution history
records it (``stateExitedEventDetails.assignedVariables``, JSON-encoded values), not from state names."""

from __future__ import annotations

import pytest

from hpctl.install import summary
from hyperpod_control.adapters.stepfunctions import Outcome

pytestmark = pytest.mark.unit


def _exited(name: str, **assigned: str) -> dict:
    details: dict = {"name": name, "output": "{}"}
    if assigned:
        details["assignedVariables"] = assigned
        details["assignedVariablesDetails"] = {"truncated": False}
    return {"type": "TaskStateExited", "stateExitedEventDetails": details}


def _failed(history: list[dict]) -> Outcome:
    return Outcome("arn:exec", "FAILED", None, "PreflightFailedError", "a check failed", history)


def test_the_last_assignment_wins_and_values_are_decoded():
    outcome = _failed(
        [
            _exited("UpdateAddon", failedStep='"UpdateAddon"', attempt="2"),
            {"type": "PassStateEntered", "stateEnteredEventDetails": {"name": "RollbackFailed"}},
            _exited("RollbackUpdateAddon", failedStep='"RollbackUpdateAddon"'),
            _exited("RestoreJobs"),
        ]
    )
    assert outcome.assigned("failedStep") == "RollbackUpdateAddon"
    assert outcome.assigned("attempt") == 2
    assert outcome.assigned("never") is None


def test_the_install_summary_names_the_assigned_step_not_a_state_name():
    history = [
        {"type": "PassStateEntered", "stateEnteredEventDetails": {"name": "PreflightKubernetesFailed"}},
        _exited("Preflight", failedStep='"Preflight"'),
    ]
    assert summary(_failed(history), "install") == (
        "install FAILED at Preflight: PreflightFailedError: a check failed"
    )
    assert summary(_failed(history[:1]), "install").startswith("install FAILED at ?: ")
