"""Every ASL file is complete: placeholders substituted, states reachable, errors real classes."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import pytest

import hyperpod_control.exceptions as exceptions
from sandbox.template import PLACEHOLDER, load_template

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
TEMPLATE = load_template(REPO / "template.yaml")
MACHINES = {
    logical: res["Properties"]
    for logical, res in TEMPLATE["Resources"].items()
    if res["Type"] == "AWS::Serverless::StateMachine"
}
ASL_FILES = sorted((REPO / "state_machines").glob("*.asl.json"))
PROJECT_ERRORS = {
    name for name, cls in inspect.getmembers(exceptions, inspect.isclass) if issubclass(cls, Exception)
}


def _states(definition: dict):
    """Every (name, state) pair, Map and Parallel bodies included."""
    for name, state in definition["States"].items():
        yield name, state
        for key in ("ItemProcessor", "Iterator"):
            if key in state:
                yield from _states(state[key])
        for branch in state.get("Branches", []):
            yield from _states(branch)


def _targets(state: dict) -> set[str]:
    found = {state[k] for k in ("Next", "Default") if k in state}
    found |= {c["Next"] for c in state.get("Choices", [])}
    found |= {c["Next"] for c in state.get("Catch", [])}
    return found


def _unreachable(definition: dict) -> set[str]:
    seen, todo = set(), [definition["StartAt"]]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        state = definition["States"][name]
        todo.extend(_targets(state))
        for key in ("ItemProcessor", "Iterator"):
            if key in state:
                assert not _unreachable(state[key])
        for branch in state.get("Branches", []):
            assert not _unreachable(branch)
    return set(definition["States"]) - seen


def test_every_asl_file_is_deployed_by_the_template():
    used = {(REPO / p["DefinitionUri"]).resolve() for p in MACHINES.values() if "DefinitionUri" in p}
    assert {f.resolve() for f in ASL_FILES} == used


@pytest.mark.parametrize("logical", sorted(MACHINES))
def test_every_placeholder_has_a_substitution_and_every_substitution_is_used(logical):
    props = MACHINES[logical]
    text = (REPO / props["DefinitionUri"]).read_text()
    placeholders = set(PLACEHOLDER.findall(text))
    substitutions = set(props.get("DefinitionSubstitutions", {}))
    assert placeholders - substitutions == set(), "placeholders without a DefinitionSubstitution"
    assert substitutions - placeholders == set(), "substitutions no placeholder uses"


@pytest.mark.parametrize("path", ASL_FILES, ids=lambda p: p.name)
def test_every_state_is_reachable_and_every_transition_exists(path):
    definition = json.loads(path.read_text())
    names = {name for name, _ in _states(definition)}
    for name, state in _states(definition):
        missing = _targets(state) - names
        assert not missing, f"{name} goes to missing states {missing}"
    assert _unreachable(definition) == set()


@pytest.mark.parametrize("path", ASL_FILES, ids=lambda p: p.name)
def test_retry_and_catch_name_real_error_classes(path):
    definition = json.loads(path.read_text())
    for name, state in _states(definition):
        for rule in state.get("Retry", []) + state.get("Catch", []):
            for error in rule["ErrorEquals"]:
                if error.startswith(("States.", "Lambda.", "Sandbox.")):  # AWS-owned names
                    continue
                assert error in PROJECT_ERRORS, f"{name}: {error} is not in hyperpod_control.exceptions"


@pytest.mark.parametrize("path", ASL_FILES, ids=lambda p: p.name)
def test_lambda_tasks_retry_transient_errors_and_catch_everything(path):
    definition = json.loads(path.read_text())
    for name, state in _states(definition):
        if state.get("Type") != "Task" or "lambda" not in state.get("Resource", "") + json.dumps(
            state.get("Parameters", {})
        ):
            continue
        retried = {e for rule in state.get("Retry", []) for e in rule["ErrorEquals"]}
        # The four transient errors of the Lambda service integration, as AWS's docs list them.
        assert {
            "Lambda.ServiceException",
            "Lambda.AWSLambdaException",
            "Lambda.SdkClientException",
            "Lambda.TooManyRequestsException",
        } <= retried or "States.ALL" in retried, name
        caught = {e for rule in state.get("Catch", []) for e in rule["ErrorEquals"]}
        assert "States.ALL" in caught, f"{name} can fail without recording why"


@pytest.mark.parametrize("path", ASL_FILES, ids=lambda p: p.name)
def test_a_retried_error_class_is_retried_with_every_subclass(path):
    """Step Functions matches error names exactly, not class hierarchies: where a retrier names an
    error class, it must name each subclass the code raises too (CallTimedOutError is a
    DependencyUnavailableError: a timeout must be retried wherever an unavailable service is)."""
    classes = dict(inspect.getmembers(exceptions, inspect.isclass))
    definition = json.loads(path.read_text())
    for name, state in _states(definition):
        for rule in state.get("Retry", []):
            named = set(rule["ErrorEquals"])
            for error in named & set(classes):
                subclasses = {
                    n for n, c in classes.items() if c is not classes[error] and issubclass(c, classes[error])
                }
                assert subclasses <= named, f"{name}: retries {error} but not {sorted(subclasses - named)}"
