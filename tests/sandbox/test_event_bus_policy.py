"""The control plane's bus policy (template.yaml's EventBusPolicy statements) as the sandbox
evaluates it on PutEvents: each restricted source only from its role, the whole call refused when
one entry is not allowed, other sources untouched, callers of another account refused without an
Allow, and the caller's ARN turned into aws:PrincipalArn."""

from __future__ import annotations

from pathlib import Path

import pytest

from sandbox.aws_ext.event_bus_policy import decide, names_caller, principal_arn
from sandbox.template import Resolver, load_template

pytestmark = pytest.mark.unit

ACCOUNT = "123456789012"
BUS = f"arn:aws:events:us-west-2:{ACCOUNT}:event-bus/hp-events"
AGENT_ROLE = f"arn:aws:iam::{ACCOUNT}:role/hp-AgentPodRole-ABC"
EXPORTER_ROLE = f"arn:aws:iam::{ACCOUNT}:role/event-exporter"
LAMBDA_ROLE = f"arn:aws:iam::{ACCOUNT}:role/hp-WatchJobsFunctionRole-DEF"
TEMPLATE = Path(__file__).resolve().parents[2] / "template.yaml"


def bus_policy(exporter_role: str = "") -> dict:
    """The bus's policy as the stack writes it: each EventBusPolicy statement whose condition
    holds, resolved."""
    template = load_template(TEMPLATE)
    resolver = Resolver(
        template,
        pseudo={"AWS::Region": "us-west-2", "AWS::AccountId": ACCOUNT, "AWS::Partition": "aws"},
        parameters={"EventExporterRoleArn": exporter_role},
    )
    resolver.refs["ControlPlaneBus"] = "hp-events"
    resolver.attrs["ControlPlaneBus"] = {"Arn": BUS}
    resolver.attrs["AgentPodRole"] = {"Arn": AGENT_ROLE}
    statements = []
    for logical, resource in template["Resources"].items():
        if resource["Type"] != "AWS::Events::EventBusPolicy":
            continue
        if "Condition" in resource and not resolver.condition(resource["Condition"]):
            continue
        statements.append(resolver.resolve(resource["Properties"]["Statement"], where=logical))
    return {"Version": "2012-10-17", "Statement": statements}


def put(policy: dict, principal: str, *sources: str, account: str = ACCOUNT) -> bool:
    entries = [{"Source": s, "DetailType": "d"} for s in sources]
    return decide(policy, BUS, principal, account, "us-west-2", entries)[0]


def test_the_agents_source_only_from_the_agent_role():
    policy = bus_policy()
    assert put(policy, AGENT_ROLE, "hyperpod-control.agent")
    assert not put(policy, LAMBDA_ROLE, "hyperpod-control.agent")
    assert not put(policy, f"arn:aws:iam::{ACCOUNT}:user/moto", "hyperpod-control.agent")
    # one entry of the agent's source refuses the whole call
    assert not put(policy, LAMBDA_ROLE, "hyperpod-control-plane.watch-jobs", "hyperpod-control.agent")
    assert put(policy, LAMBDA_ROLE, "hyperpod-control-plane.watch-jobs")


def test_without_an_exporter_role_anyone_of_the_account_puts_pod_events():
    policy = bus_policy()
    assert len(policy["Statement"]) == 1
    assert put(policy, LAMBDA_ROLE, "kubernetes-event-exporter")


def test_with_an_exporter_role_only_it_puts_pod_events():
    policy = bus_policy(EXPORTER_ROLE)
    assert put(policy, EXPORTER_ROLE, "kubernetes-event-exporter")
    assert not put(policy, AGENT_ROLE, "kubernetes-event-exporter")
    assert not put(policy, EXPORTER_ROLE, "hyperpod-control.agent")
    assert put(policy, AGENT_ROLE, "hyperpod-control.agent")


def test_another_account_needs_an_allow():
    policy = bus_policy()
    other = "arn:aws:iam::210987654321:role/hp-AgentPodRole-ABC"
    allowed, why = decide(policy, BUS, other, "210987654321", "us-west-2", [{"Source": "x"}])
    assert not allowed and "no resource-based policy allows" in why
    policy["Statement"].append(
        {
            "Sid": "Partner",
            "Effect": "Allow",
            "Principal": {"AWS": "arn:aws:iam::210987654321:root"},
            "Action": "events:PutEvents",
            "Resource": BUS,
        }
    )
    assert put(policy, other, "x", account="210987654321")


def test_the_principal_of_a_caller():
    session = f"arn:aws:sts::{ACCOUNT}:assumed-role/hp-AgentPodRole-ABC/eks-c-pod-0-1234"
    assert principal_arn(session) == AGENT_ROLE  # no such role in moto here: the ARN without a path
    assert principal_arn(f"arn:aws:sts::{ACCOUNT}:user/moto") == f"arn:aws:iam::{ACCOUNT}:user/moto"
    assert names_caller("*", AGENT_ROLE, ACCOUNT)
    assert names_caller({"AWS": ACCOUNT}, AGENT_ROLE, ACCOUNT)
    assert not names_caller({"Service": "events.amazonaws.com"}, AGENT_ROLE, ACCOUNT)
    assert not names_caller({"AWS": "arn:aws:iam::210987654321:root"}, AGENT_ROLE, ACCOUNT)
