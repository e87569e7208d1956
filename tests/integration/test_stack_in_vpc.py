"""template.yaml deployed with its VPC parameters naming the sandbox world's subnets and security
group: the functions that call Kubernetes or the agents are created in the VPC, the others are
not; Lambda's checks of a VpcConfig (the subnets and groups exist, in one VPC) and the template's
Rules refuse a bad placement before anything is created."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from sandbox import Sandbox, SandboxConfig
from sandbox.stack import StackDeployer
from sandbox.template import TemplateError
from sandbox.world import WorldOptions

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
QUIET = {"LogLevel": "ERROR"}


@pytest.fixture(scope="module")
def sb() -> Iterator[Sandbox]:
    with Sandbox(SandboxConfig(world=WorldOptions(nodes=1), parameters=QUIET)) as sandbox:
        yield sandbox


def deploy(sb: Sandbox, name: str, **parameters: str):
    """A second stack of the project's template in the sandbox's account, beside its own."""
    deployer = StackDeployer(
        REPO / "template.yaml", name, sb.config.region, sb.client, sb.runtime, {**QUIET, **parameters}
    )
    return deployer.deploy()


def test_the_kubernetes_calling_functions_are_created_in_the_worlds_vpc(sb):
    world = sb.world
    stack = deploy(
        sb,
        "hp-in-vpc",
        VpcSubnetIds=",".join(world.private_subnet_ids),
        VpcSecurityGroupIds=world.security_group_id,
        AgentTransport="direct",
    )
    lam = sb.client("lambda")
    placed = {}
    for logical, rtype in stack.types.items():
        if rtype != "AWS::Serverless::Function":
            continue
        config = lam.get_function_configuration(FunctionName=stack.physical(logical))
        placed[logical] = config.get("VpcConfig") or {}
    in_vpc = {logical for logical, vpc in placed.items() if vpc.get("SubnetIds")}
    assert {
        "PreflightFunction",
        "ClusterAccessFunction",
        "SuperviseJobFunction",
        "WatchJobsFunction",
    } <= in_vpc
    assert len(in_vpc) == 14
    assert "AcquireLockFunction" not in in_vpc and "EnsurePodIdentityAssociationFunction" not in in_vpc
    supervise = placed["SuperviseJobFunction"]
    assert sorted(supervise["SubnetIds"]) == sorted(world.private_subnet_ids)
    assert supervise["SecurityGroupIds"] == [world.security_group_id]
    env = lam.get_function_configuration(FunctionName=stack.physical("PreflightFunction"))["Environment"]
    assert env["Variables"]["CONTROL_PLANE_IN_VPC"] == "true"
    supervise_env = lam.get_function_configuration(FunctionName=stack.physical("SuperviseJobFunction"))
    assert supervise_env["Environment"]["Variables"]["AGENT_TRANSPORT"] == "direct"


def test_the_sandboxs_own_stack_without_the_parameters_has_no_function_in_a_vpc(sb):
    lam = sb.client("lambda")
    assert sb.stack is not None
    for logical, rtype in sb.stack.types.items():
        if rtype == "AWS::Serverless::Function":
            config = lam.get_function_configuration(FunctionName=sb.stack.physical(logical))
            assert not (config.get("VpcConfig") or {}).get("SubnetIds"), logical


def test_a_subnet_that_does_not_exist_is_refused_as_lambda_refuses_it(sb):
    with pytest.raises(TemplateError, match=r"InvalidParameterValueException.*subnet-0000000000000000f"):
        deploy(
            sb,
            "hp-no-subnet",
            VpcSubnetIds="subnet-0000000000000000f",
            VpcSecurityGroupIds=sb.world.security_group_id,
        )


def test_a_security_group_of_another_vpc_is_refused(sb):
    ec2 = sb.client("ec2")
    other_vpc = ec2.create_vpc(CidrBlock="10.50.0.0/16")["Vpc"]["VpcId"]
    other_group = ec2.create_security_group(GroupName="elsewhere", Description="x", VpcId=other_vpc)[
        "GroupId"
    ]
    with pytest.raises(TemplateError, match="different VPCs"):
        deploy(
            sb,
            "hp-two-vpcs",
            VpcSubnetIds=",".join(sb.world.private_subnet_ids),
            VpcSecurityGroupIds=other_group,
        )


def _function_names(sb: Sandbox) -> set[str]:
    pages = sb.client("lambda").get_paginator("list_functions").paginate()
    return {f["FunctionName"] for page in pages for f in page["Functions"]}


def test_the_rules_refuse_subnets_without_groups_before_anything_is_created(sb):
    before = _function_names(sb)
    with pytest.raises(TemplateError, match="go together"):
        deploy(sb, "hp-half-vpc", VpcSubnetIds=",".join(sb.world.private_subnet_ids))
    with pytest.raises(TemplateError, match="pod IPs"):
        deploy(sb, "hp-direct-outside", AgentTransport="direct")
    assert _function_names(sb) == before
    assert not any(
        table.startswith("hp-half-vpc") for table in sb.client("dynamodb").list_tables()["TableNames"]
    )
