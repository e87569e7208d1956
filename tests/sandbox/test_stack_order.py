"""StackDeployer._order: resources are created after what they refer to; cycles are refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from sandbox.stack import StackDeployer
from sandbox.template import TemplateError

pytestmark = pytest.mark.unit

REPO_ROOT = Path(__file__).resolve().parents[2]


def deployer(tmp_path: Path, text: str) -> StackDeployer:
    path = tmp_path / "template.yaml"
    path.write_text(text)
    # No AWS call happens before deploy(); the client factory and the runtime are never used.
    return StackDeployer(path, "unit", "us-west-2", client=lambda service: None, runtime=None)  # type: ignore[arg-type]


def before(order: list[str], first: str, then: str) -> bool:
    return order.index(first) < order.index(then)


def test_dependencies_come_first(tmp_path):
    order = deployer(
        tmp_path,
        """
Resources:
  Machine:
    Type: AWS::Serverless::StateMachine
    Properties:
      DefinitionSubstitutions:
        Fn: !GetAtt Func.Arn
      Name: !Sub "${AWS::StackName}-${Logs}"
  Func:
    Type: AWS::Serverless::Function
    Properties:
      Environment: {Variables: {TABLE: !Ref Table}}
  Logs:
    Type: AWS::Logs::LogGroup
  Table:
    Type: AWS::DynamoDB::Table
  Later:
    Type: AWS::SQS::Queue
    DependsOn: Machine
  Many:
    Type: AWS::SQS::Queue
    DependsOn: [Later, Table]
""",
    )._order()

    assert sorted(order) == ["Func", "Later", "Logs", "Machine", "Many", "Table"]
    assert before(order, "Table", "Func")
    assert before(order, "Func", "Machine")
    assert before(order, "Logs", "Machine")
    assert before(order, "Machine", "Later")
    assert before(order, "Later", "Many")


def test_functions_depend_on_what_globals_refer_to(tmp_path):
    order = deployer(
        tmp_path,
        """
Globals:
  Function:
    Layers: [!Ref Layer]
    Environment: {Variables: {BUS: !Ref Bus}}
Resources:
  Func:
    Type: AWS::Serverless::Function
    Properties: {CodeUri: functions/x/}
  Layer:
    Type: AWS::Serverless::LayerVersion
  Bus:
    Type: AWS::Events::EventBus
  Queue:
    Type: AWS::SQS::Queue
""",
    )._order()

    assert before(order, "Layer", "Func")
    assert before(order, "Bus", "Func")


def test_parameters_pseudo_parameters_and_self_references_are_not_dependencies(tmp_path):
    order = deployer(
        tmp_path,
        """
Parameters:
  Stage: {Type: String, Default: dev}
Resources:
  Queue:
    Type: AWS::SQS::Queue
    Properties:
      QueueName: !Sub "${AWS::StackName}-${Stage}-${Queue}"
""",
    )._order()

    assert order == ["Queue"]


def test_a_cycle_is_refused_naming_its_path(tmp_path):
    d = deployer(
        tmp_path,
        """
Resources:
  A:
    Type: AWS::SQS::Queue
    Properties: {Name: !Ref B}
  B:
    Type: AWS::SQS::Queue
    Properties: {Name: !GetAtt C.Arn}
  C:
    Type: AWS::SQS::Queue
    Properties: {Name: !Sub "${A}"}
""",
    )

    with pytest.raises(TemplateError, match="circular dependency") as info:
        d._order()
    path = str(info.value)
    assert "A -> B -> C -> A" in path


def test_a_depends_on_cycle_is_refused(tmp_path):
    d = deployer(
        tmp_path,
        """
Resources:
  A: {Type: AWS::SQS::Queue, DependsOn: B}
  B: {Type: AWS::SQS::Queue, DependsOn: [A]}
""",
    )

    with pytest.raises(TemplateError, match="circular"):
        d._order()


def test_unknown_parameter_override_is_refused(tmp_path):
    path = tmp_path / "template.yaml"
    path.write_text(
        "Parameters:\n  Stage: {Type: String, Default: dev}\nResources:\n  Q: {Type: AWS::SQS::Queue}\n"
    )

    with pytest.raises(TemplateError, match="Stagee"):
        StackDeployer(path, "u", "us-west-2", client=lambda s: None, runtime=None, parameters={"Stagee": "x"})  # type: ignore[arg-type]


def test_the_projects_template_orders_every_resource(tmp_path):
    d = StackDeployer(REPO_ROOT / "template.yaml", "unit", "us-west-2", client=lambda s: None, runtime=None)  # type: ignore[arg-type]
    order = d._order()

    resources = d.template["Resources"]
    assert sorted(order) == sorted(resources)
    for logical, res in resources.items():
        if res["Type"] == "AWS::Serverless::Function":
            assert before(order, "ControlPlaneTable", logical)
            assert before(order, "CommonLayer", logical)
        if res["Type"] == "AWS::Serverless::StateMachine":
            assert before(order, "CheckClusterFunction", logical)
            assert before(order, "RecordFailureFunction", logical)
