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


#: Errors worth retrying on any Lambda task: the Lambda service integration's four transient
#: errors (as AWS's docs list them) and the project's classes that mean "try again".
_TRANSIENT = [
    "ThrottledError",
    "DependencyUnavailableError",
    "CallTimedOutError",
    "VersionConflictError",
    "Lambda.ServiceException",
    "Lambda.AWSLambdaException",
    "Lambda.TooManyRequestsException",
    "Lambda.SdkClientException",
]
_TRANSIENT_RULE = {
    "ErrorEquals": _TRANSIENT,
    "IntervalSeconds": 2,
    "MaxAttempts": 5,
    "BackoffRate": 2,
    "JitterStrategy": "FULL",
}
#: A new EKS access entry takes seconds to reach the API server: the Kubernetes calls wait for it.
_ACCESS_PENDING_RULE = {
    "ErrorEquals": ["KubernetesAccessPendingError"],
    "IntervalSeconds": 3,
    "MaxAttempts": 6,
    "BackoffRate": 1.5,
}

#: The named retry policies: every Task's ``Retry`` is exactly one of these, so a change to how
#: a kind of failure is retried is made here and in every state that uses the policy, not in one.
RETRY_POLICIES: dict[str, list[dict]] = {
    # Lambda and its dependencies (AWS APIs, DynamoDB, the API server) failing for a moment.
    "lambda-transient": [_TRANSIENT_RULE],
    # Another workflow holds the cluster's lock: wait for it (about 15 minutes in all), then fail.
    "lock-wait": [
        {"ErrorEquals": ["LockHeldError"], "IntervalSeconds": 15, "MaxAttempts": 8, "BackoffRate": 1.5},
        _TRANSIENT_RULE,
    ],
    # Calls to the cluster's API server with the access the install gave.
    "kube-transient": [_ACCESS_PENDING_RULE, _TRANSIENT_RULE],
    # Waiting for the operator's pods (and its CRD) after it was installed.
    "operator-start": [
        _ACCESS_PENDING_RULE,
        {
            "ErrorEquals": ["OperatorNotReadyError"],
            "IntervalSeconds": 5,
            "MaxAttempts": 8,
            "BackoffRate": 1.5,
        },
        _TRANSIENT_RULE,
    ],
    # Starting a child workflow (startExecution.sync:2): only failures to start it are retried,
    # never States.TaskFailed (the child ran and failed; its own steps retried already).
    "start-child": [
        {
            "ErrorEquals": [
                "StepFunctions.ExecutionLimitExceededException",
                "StepFunctions.SdkClientException",
            ],
            "IntervalSeconds": 2,
            "MaxAttempts": 5,
            "BackoffRate": 2,
            "JitterStrategy": "FULL",
        }
    ],
    # Recording a failure: any error, briefly, so the reason is not lost to a blip.
    "record-failure": [
        {"ErrorEquals": ["States.ALL"], "IntervalSeconds": 1, "MaxAttempts": 3, "BackoffRate": 2}
    ],
    # A job's supervision steps: longer (capped) back-off, deadlines and a Lambda timeout included.
    "supervise-transient": [
        {
            "ErrorEquals": [
                "ThrottledError",
                "DependencyUnavailableError",
                "CallTimedOutError",
                "DeadlineExceededError",
                "VersionConflictError",
                "KubernetesAccessPendingError",
                *_TRANSIENT[4:],  # the Lambda service's
            ],
            "IntervalSeconds": 1,
            "MaxAttempts": 8,
            "BackoffRate": 2,
            "MaxDelaySeconds": 30,
            "JitterStrategy": "FULL",
        },
        {"ErrorEquals": ["Sandbox.Timedout"], "IntervalSeconds": 2, "MaxAttempts": 3, "BackoffRate": 2},
    ],
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
                if error.startswith(("States.", "Lambda.", "StepFunctions.", "Sandbox.")):  # AWS-owned
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


def test_the_retry_policies_are_distinct():
    named = [json.dumps(p, sort_keys=True) for p in RETRY_POLICIES.values()]
    assert len(set(named)) == len(named)


def _tasks():
    for path in ASL_FILES:
        for name, state in _states(json.loads(path.read_text())):
            if state.get("Type") == "Task":
                yield f"{path.name}:{name}", state


@pytest.mark.parametrize("where,state", list(_tasks()), ids=[w for w, _ in _tasks()])
def test_every_task_retries_with_exactly_one_named_policy(where, state):
    matches = [n for n, policy in RETRY_POLICIES.items() if state.get("Retry") == policy]
    assert len(matches) == 1, f"{where}: its Retry is none of RETRY_POLICIES: {state.get('Retry')}"


def test_every_retry_policy_is_used():
    retries = [state.get("Retry") for _, state in _tasks()]
    used = {name for name, policy in RETRY_POLICIES.items() if policy in retries}
    assert used == set(RETRY_POLICIES)
