"""template.yaml's FaultPathProvisionedConcurrency, deployed in the sandbox: off (the
default), node-health and job events and the supervise-job state machine invoke the functions
themselves; set, they invoke each function's "live" alias, the one that holds the provisioned
concurrency (which the sandbox does not emulate: its functions have no cold start)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandbox import Sandbox, SandboxConfig
from sandbox.stack import DeployedStack, StackDeployer
from sandbox.world import WorldOptions

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
QUIET = {"LogLevel": "ERROR"}
FAULT_PATH = ("NodeHealthFunction", "JobEventsFunction", "SuperviseJobFunction")


@pytest.fixture(scope="module")
def sb() -> Iterator[Sandbox]:
    with Sandbox(SandboxConfig(world=WorldOptions(nodes=1), parameters=QUIET)) as sandbox:
        yield sandbox


def invoked(sb: Sandbox, stack: DeployedStack) -> dict[str, list[str]]:
    """What each fault-path function's callers invoke: the rules' targets, the state machine's
    Lambda tasks."""
    events = sb.client("events")

    def targets(rule: str, bus: str | None = None) -> list[str]:
        name = stack.physical(rule)
        found = events.list_targets_by_rule(Rule=name, **({"EventBusName": bus} if bus else {}))
        return [t["Arn"] for t in found["Targets"]]

    bus = stack.physical("ControlPlaneBus")
    definition = json.loads(
        sb.client("stepfunctions").describe_state_machine(
            stateMachineArn=stack.physical("SuperviseJobStateMachine")
        )["definition"]
    )
    tasks = {
        s["Parameters"]["FunctionName"]
        for s in definition["States"].values()
        if s["Type"] == "Task" and "lambda:invoke" in s["Resource"]
    }
    return {
        "NodeHealthFunction": targets("NodeHealthRule"),
        "JobEventsFunction": targets("JobEventsAgentRule", bus) + targets("JobEventsPodRule", bus),
        "SuperviseJobFunction": sorted(tasks),
    }


def function_arn(sb: Sandbox, stack: DeployedStack, logical: str) -> str:
    return sb.client("lambda").get_function_configuration(FunctionName=stack.physical(logical))["FunctionArn"]


def test_by_default_the_fault_path_invokes_the_functions_themselves(sb):
    assert sb.stack is not None
    for logical, arns in invoked(sb, sb.stack).items():
        assert arns and set(arns) == {function_arn(sb, sb.stack, logical)}, logical


def test_with_provisioned_concurrency_it_invokes_their_live_alias(sb):
    stack = StackDeployer(
        REPO / "template.yaml",
        "hp-provisioned",
        sb.config.region,
        sb.client,
        sb.runtime,
        {**QUIET, "FaultPathProvisionedConcurrency": "2"},
    ).deploy()
    lam = sb.client("lambda")
    for logical, arns in invoked(sb, stack).items():
        alias = lam.get_alias(FunctionName=stack.physical(logical), Name="live")
        assert alias["AliasArn"] == f"{function_arn(sb, stack, logical)}:live"
        assert arns and set(arns) == {alias["AliasArn"]}, logical
    assert set(invoked(sb, stack)) == set(FAULT_PATH)
