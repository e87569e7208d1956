"""template.yaml keeps least privilege and the settings the issue asks for."""

from __future__ import annotations

from pathlib import Path

import pytest

from sandbox.template import load_template

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
TEMPLATE = load_template(REPO / "template.yaml")
RESOURCES = TEMPLATE["Resources"]
#: Actions AWS defines no resource type for (Service Authorization Reference): a policy can only
#: name "*" for them. Anything else with Resource "*" fails this test.
UNSCOPABLE = {
    # Step Functions' log delivery
    "logs:CreateLogDelivery",
    "logs:GetLogDelivery",
    "logs:UpdateLogDelivery",
    "logs:DeleteLogDelivery",
    "logs:ListLogDeliveries",
    "logs:PutResourcePolicy",
    "logs:DescribeResourcePolicies",
    "logs:DescribeLogGroups",
    # read-only calls of preflight and the add-on step
    "eks:DescribeAddonVersions",
    "eks:DescribeAddonConfiguration",
    "sagemaker:ListClusters",
    "ec2:DescribeSubnets",
    "ec2:DescribeSecurityGroups",
    "ec2:DescribeRouteTables",
    "ec2:DescribeVpcEndpoints",
    "ec2:DescribeNetworkInterfaces",
    "servicequotas:ListServiceQuotas",
    "servicequotas:ListAWSDefaultServiceQuotas",
    "servicequotas:GetAWSDefaultServiceQuota",
    "fsx:DescribeFileSystems",
    # The ENI actions of Lambda functions in a VPC (AWSLambdaVPCAccessExecutionRole's): Lambda creates
    # the interfaces itself in subnets it picks, so no ARN exists to name; denied outside a VPC.
    "ec2:CreateNetworkInterface",
    "ec2:DeleteNetworkInterface",
    "ec2:AssignPrivateIpAddresses",
    "ec2:UnassignPrivateIpAddresses",
}


def _statements():
    for logical, res in RESOURCES.items():
        for policy in res.get("Properties", {}).get("Policies", []) or []:
            if isinstance(policy, dict) and "Statement" in policy:
                for statement in policy["Statement"]:
                    # A conditional statement (!If [Cond, statement, !Ref AWS::NoValue]): both branches.
                    branches = statement["Fn::If"][1:] if "Fn::If" in statement else [statement]
                    for branch in branches:
                        if branch != {"Ref": "AWS::NoValue"}:
                            yield logical, branch


def test_no_wildcard_actions_and_wildcard_resources_only_where_aws_requires():
    for logical, statement in _statements():
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        assert "*" not in actions and not any(a.endswith(":*") for a in actions), logical
        if statement.get("Resource") == "*":
            assert set(actions) <= UNSCOPABLE, f"{logical}: Resource '*' for {actions}"


def test_functions_run_python311_with_the_shared_layer_and_tracing():
    function = TEMPLATE["Globals"]["Function"]
    assert function["Runtime"] == "python3.11"
    assert function["Architectures"] == ["x86_64"]
    assert function["Tracing"] == "Active"
    assert function["Layers"] == [{"Ref": "CommonLayer"}]
    assert {"POWERTOOLS_SERVICE_NAME", "POWERTOOLS_METRICS_NAMESPACE", "TABLE_NAME"} <= set(
        function["Environment"]["Variables"]
    )
    assert RESOURCES["CommonLayer"]["Metadata"]["BuildMethod"] == "python3.11"


def test_every_function_has_a_handler_file():
    for logical, res in RESOURCES.items():
        if res["Type"] == "AWS::Serverless::Function":
            module, func = res["Properties"]["Handler"].rsplit(".", 1)
            source = (REPO / res["Properties"]["CodeUri"] / f"{module}.py").read_text()
            assert f"def {func}(" in source, logical


def test_table_keeps_data_safe():
    table = RESOURCES["ControlPlaneTable"]
    props = table["Properties"]
    assert [k["AttributeName"] for k in props["KeySchema"]] == ["PK", "SK"]
    assert props["TimeToLiveSpecification"] == {"AttributeName": "expiration", "Enabled": True}
    assert props["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True
    assert props["SSESpecification"]["SSEEnabled"] is True
    assert table["DeletionPolicy"] == "Retain"


def test_event_targets_have_a_dead_letter_queue():
    for logical, res in RESOURCES.items():
        if res["Type"] == "AWS::Events::Rule":
            for target in res["Properties"]["Targets"]:
                assert "DeadLetterConfig" in target, f"{logical} target {target['Id']}"


def test_outputs_name_what_hpctl_reads():
    assert {"TableName", "EventBusName", "RegisterClusterStateMachineArn"} <= set(TEMPLATE["Outputs"])


def test_state_machines_start_only_the_child_they_run_with_what_sync_needs():
    """startExecution.sync:2 needs StartExecution on the child, Describe/StopExecution on its
    executions and the managed rule through which Step Functions hears that a child ended; a
    workflow gets these for the child it runs and nothing wider."""
    granted = {}
    for logical, statement in _statements():
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        for action in actions:
            if action.startswith(("states:", "events:Put", "events:DescribeRule")):
                granted.setdefault(logical, {})[action] = statement["Resource"]
    child_executions = {
        "Fn::Sub": "arn:${AWS::Partition}:states:${AWS::Region}:${AWS::AccountId}:execution:"
        "${ApplyAddonVersionStateMachine.Name}:*"
    }
    rule = {
        "Fn::Sub": "arn:${AWS::Partition}:events:${AWS::Region}:${AWS::AccountId}:rule/"
        "StepFunctionsGetEventsForStepFunctionsExecutionRule"
    }
    assert granted["UpgradeOperatorStateMachine"] == {
        "states:StartExecution": {"Ref": "ApplyAddonVersionStateMachine"},
        "states:DescribeExecution": child_executions,
        "states:StopExecution": child_executions,
        "events:PutTargets": rule,
        "events:PutRule": rule,
        "events:DescribeRule": rule,
    }
    assert "ApplyAddonVersionStateMachine" not in granted  # the child starts nothing
