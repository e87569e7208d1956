"""template.yaml's deployment options: the operator roles the stack may pass (OperatorRoleArns) and
the VPC placement of the functions that call Kubernetes or the agents (VpcSubnetIds,
VpcSecurityGroupIds), resolved with and without the parameters as CloudFormation would."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from hyperpod_control.models.install import passable_by
from sandbox.stack import StackDeployer
from sandbox.template import TemplateError, references

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
ACCOUNT = "123456789012"
OWN_ROLES = f"arn:aws:iam::{ACCOUNT}:role/hyperpod-control-plane/*"
#: The README's example roleArn.
README_ROLE = f"arn:aws:iam::{ACCOUNT}:role/my-operator-role"
SUBNETS = "subnet-0a1b2c3d,subnet-0e1f2a3b"
GROUP = "sg-0123abcd"
ENI_ACTIONS = {
    "ec2:CreateNetworkInterface",
    "ec2:DeleteNetworkInterface",
    "ec2:AssignPrivateIpAddresses",
    "ec2:UnassignPrivateIpAddresses",
}


class _Attrs(dict):
    def __missing__(self, attr: str) -> str:
        return f"<{attr}>"


def deployer(**parameters: str) -> StackDeployer:
    """The project's template with these parameters, every resource stubbed as deployed (a Ref is
    the logical id, a GetAtt ``<Attr>``): only parameters and conditions decide what resolves."""
    d = StackDeployer(
        REPO / "template.yaml", "hp", "us-west-2", client=lambda s: None, runtime=None, parameters=parameters
    )  # type: ignore[arg-type]
    for logical in d.template["Resources"]:
        d.resolver.refs[logical] = logical
        d.resolver.attrs[logical] = _Attrs()
    return d


def function(d: StackDeployer, logical: str) -> dict[str, Any]:
    """A function's properties, Globals merged, as CloudFormation gets them."""
    return d._function_props(
        d.resolver.resolve(d.template["Resources"][logical]["Properties"], where=logical)
    )


def statements(props: dict[str, Any]) -> list[dict[str, Any]]:
    return [s for policy in props.get("Policies", []) for s in policy["Statement"]]


def _functions(template: dict) -> list[str]:
    return [k for k, v in template["Resources"].items() if v["Type"] == "AWS::Serverless::Function"]


def _kubernetes_client_functions(template: dict) -> set[str]:
    variable = template["Resources"]["ClusterAccessFunction"]["Properties"]["Environment"]["Variables"]
    return references(variable["KUBERNETES_CLIENT_FUNCTIONS"])


# -- the operator roles the stack may pass --------------------------------------------------------


def test_the_pass_role_statement_names_the_operator_role_arns_parameter():
    raw = deployer().template["Resources"]["EnsurePodIdentityAssociationFunction"]["Properties"]
    conditional = [
        s["Fn::If"]
        for s in raw["Policies"][0]["Statement"]
        if "Fn::If" in s and s["Fn::If"][0] == "HasOperatorRoleArns"
    ]
    assert len(conditional) == 1
    statement = conditional[0][1]
    assert statement["Action"] == "iam:PassRole"
    assert statement["Resource"] == {"Ref": "OperatorRoleArns"}
    assert statement["Condition"] == {"StringEquals": {"iam:PassedToService": "pods.eks.amazonaws.com"}}


def _pass_role_resources(d: StackDeployer) -> list[str]:
    props = function(d, "EnsurePodIdentityAssociationFunction")
    found: list[str] = []
    for s in statements(props):
        if s["Action"] == "iam:PassRole":
            assert s["Condition"] == {"StringEquals": {"iam:PassedToService": "pods.eks.amazonaws.com"}}
            found += s["Resource"] if isinstance(s["Resource"], list) else [s["Resource"]]
    return found


def test_by_default_only_the_workflows_own_roles_can_be_passed_and_preflight_knows_it():
    d = deployer()
    assert _pass_role_resources(d) == [OWN_ROLES]
    env = function(d, "PreflightFunction")["Environment"]["Variables"]
    assert env["OPERATOR_PASSABLE_ROLES"] == OWN_ROLES
    # The README's example role is refused by default: the install would fail at the association.
    assert passable_by(README_ROLE, _pass_role_resources(d)) is None


def test_roles_named_in_the_parameter_can_be_passed_and_preflight_gets_the_same_list():
    team = f"arn:aws:iam::{ACCOUNT}:role/team/*"
    d = deployer(OperatorRoleArns=f"{README_ROLE}, {team}")
    allowed = _pass_role_resources(d)
    assert allowed == [OWN_ROLES, README_ROLE, team]
    env = function(d, "PreflightFunction")["Environment"]["Variables"]
    assert env["OPERATOR_PASSABLE_ROLES"].split(",") == allowed
    assert passable_by(README_ROLE, allowed) == README_ROLE


def test_the_parameter_refuses_what_is_not_a_role_arn():
    with pytest.raises(TemplateError, match="OperatorRoleArns"):
        deployer(OperatorRoleArns="my-operator-role")


# -- the VPC placement ------------------------------------------------------------------------------


def _calls_kubernetes_or_agents(template: dict, logical: str) -> bool:
    code = REPO / template["Resources"][logical]["Properties"]["CodeUri"] / "app.py"
    return bool(
        re.search(r"KubeAdapter|AgentClient|adapters\.agents|PreflightAdapters|kube", code.read_text())
    )


def test_vpc_config_is_declared_on_exactly_the_functions_that_call_kubernetes_or_the_agents():
    template = deployer().template
    in_vpc = {f for f in _functions(template) if "VpcConfig" in template["Resources"][f]["Properties"]}
    assert in_vpc == _kubernetes_client_functions(template) | {"PreflightFunction", "ClusterAccessFunction"}
    # Every function whose code reaches a cluster is among them (a new one must be added).
    assert {f for f in _functions(template) if _calls_kubernetes_or_agents(template, f)} <= in_vpc
    assert "VpcConfig" not in template["Globals"]["Function"]


def test_without_the_vpc_parameters_no_function_is_in_a_vpc_and_eni_actions_are_denied():
    d = deployer()
    assert not d.resolver.condition("HasVpc")
    for logical in _functions(d.template):
        props = function(d, logical)
        assert "VpcConfig" not in props, logical
        denied = {a for s in statements(props) if s["Effect"] == "Deny" for a in s["Action"]}
        if "VpcConfig" in d.template["Resources"][logical]["Properties"]:
            # SAM attaches AWSLambdaVPCAccessExecutionRole to these whatever the condition.
            assert denied == ENI_ACTIONS, logical
    assert function(d, "PreflightFunction")["Environment"]["Variables"]["CONTROL_PLANE_IN_VPC"] == "false"


def test_with_the_vpc_parameters_those_functions_run_in_the_subnets_and_may_create_enis():
    d = deployer(VpcSubnetIds=SUBNETS, VpcSecurityGroupIds=GROUP)
    assert d.resolver.condition("HasVpc")
    placed = set()
    for logical in _functions(d.template):
        props = function(d, logical)
        assert not [s for s in statements(props) if s["Effect"] == "Deny"], logical
        if "VpcConfig" in props:
            assert props["VpcConfig"] == {"SubnetIds": SUBNETS.split(","), "SecurityGroupIds": [GROUP]}
            placed.add(logical)
    assert placed == _kubernetes_client_functions(d.template) | {"PreflightFunction", "ClusterAccessFunction"}
    assert "AcquireLockFunction" not in placed and "EnsurePodIdentityAssociationFunction" not in placed
    assert function(d, "PreflightFunction")["Environment"]["Variables"]["CONTROL_PLANE_IN_VPC"] == "true"


def test_large_jobs_go_direct_only_where_the_supervisor_runs_in_the_vpc():
    """DirectTransportMinRanks reaches supervise_job (AGENT_DIRECT_MIN_RANKS) only with the VPC
    parameters: outside the VPC the pod IPs cannot be reached, so it is 0 (never)."""
    from hyperpod_control.services.supervisor import SupervisorConfig

    outside = function(deployer(), "SuperviseJobFunction")["Environment"]["Variables"]
    inside = function(deployer(VpcSubnetIds=SUBNETS, VpcSecurityGroupIds=GROUP), "SuperviseJobFunction")
    variables = inside["Environment"]["Variables"]
    assert SupervisorConfig.from_env(outside).direct_min_ranks == 0
    assert SupervisorConfig.from_env(variables).direct_min_ranks == 1024
    assert SupervisorConfig.from_env(variables).rank_ips == "changed"
    small = deployer(VpcSubnetIds=SUBNETS, VpcSecurityGroupIds=GROUP, DirectTransportMinRanks="256")
    small_variables = function(small, "SuperviseJobFunction")["Environment"]["Variables"]
    assert small_variables["AGENT_DIRECT_MIN_RANKS"] == "256"


@pytest.mark.parametrize(
    ("parameters", "words"),
    [
        ({"VpcSubnetIds": SUBNETS}, "go together"),
        ({"VpcSecurityGroupIds": GROUP}, "go together"),
        ({"AgentTransport": "direct"}, "pod IPs"),
    ],
)
def test_the_rules_refuse_a_half_vpc_and_direct_transport_outside_one(parameters, words):
    with pytest.raises(TemplateError, match=words):
        deployer(**parameters).resolver.check_rules()


def test_the_rules_admit_both_lists_and_direct_transport_in_the_vpc():
    deployer().resolver.check_rules()
    deployer(VpcSubnetIds=SUBNETS, VpcSecurityGroupIds=GROUP, AgentTransport="direct").resolver.check_rules()


def test_the_vpc_parameters_refuse_what_is_not_a_subnet_or_security_group_id():
    with pytest.raises(TemplateError, match="VpcSubnetIds"):
        deployer(VpcSubnetIds="sg-0123abcd")
    with pytest.raises(TemplateError, match="VpcSecurityGroupIds"):
        deployer(VpcSecurityGroupIds="subnet-0a1b2c3d")
