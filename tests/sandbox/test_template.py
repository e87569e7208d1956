"""sandbox.template: template.yaml read the way CloudFormation reads it, intrinsics resolved."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from sandbox.template import Resolver, TemplateError, load_template, references, substitute_definition

pytestmark = pytest.mark.unit

PSEUDO = {
    "AWS::Region": "us-west-2",
    "AWS::AccountId": "123456789012",
    "AWS::StackName": "hp",
    "AWS::Partition": "aws",
}

TEMPLATE = """
AWSTemplateFormatVersion: "2010-09-09"
Parameters:
  Stage:
    Type: String
    Default: prod
Conditions:
  IsProd: !Equals [!Ref Stage, prod]
  IsDev: !Not [!Condition IsProd]
  Always: !Or [!Condition IsProd, !Condition IsDev]
  Both: !And [!Condition IsProd, !Condition IsDev]
Mappings:
  Sizes:
    prod: {Memory: 1024}
    dev: {Memory: 256}
Resources:
  Table:
    Type: AWS::DynamoDB::Table
  Queue:
    Type: AWS::SQS::Queue
  Fn:
    Type: AWS::Serverless::Function
    Properties:
      TableName: !Ref Table
      QueueArn: !GetAtt Queue.Arn
      LongForm: {"Fn::GetAtt": [Queue, QueueName]}
      Plain: !Sub "${Table}"
      Arn: !Sub "arn:aws:sqs:${AWS::Region}:${AWS::AccountId}:${Queue.QueueName}"
      WithVars: !Sub
        - "${Prefix}-${Stage}-${Table}"
        - Prefix: !Join ["", [hp, "-", !Ref "AWS::StackName"]]
      Joined: !Join [",", [a, !Ref Stage, !GetAtt Queue.Arn]]
      Second: !Select [1, !Split [",", "x,y,z"]]
      SecondOfJoin: !Select ["2", !Split ["/", !Join ["/", [p, q, !Ref Table]]]]
      Memory: !If [IsProd, 2048, 128]
      Size: !FindInMap [Sizes, !Ref Stage, Memory]
      Dropped: !If [IsDev, keep, !Ref "AWS::NoValue"]
      List: [one, !If [IsDev, two, !Ref "AWS::NoValue"], three]
      Checks: [!Condition Always, !Condition Both]
      Json: !ToJsonString {a: !Ref Stage}
      IamCondition:
        Effect: Allow
        Condition: {StringEquals: {"aws:SourceAccount": !Ref "AWS::AccountId"}}
"""


@pytest.fixture
def template(tmp_path: Path) -> dict:
    path = tmp_path / "template.yaml"
    path.write_text(TEMPLATE)
    return load_template(path)


def deployed(template: dict, **parameters) -> Resolver:
    params = {"Stage": "prod", **parameters}
    resolver = Resolver(template, pseudo=PSEUDO, parameters=params)
    resolver.refs.update(Table="hp-table", Queue="https://sqs.us-west-2.amazonaws.com/123456789012/hp-q")
    resolver.attrs.update(Queue={"Arn": "arn:aws:sqs:us-west-2:123456789012:hp-q", "QueueName": "hp-q"})
    return resolver


def test_short_tags_load_as_long_form_intrinsics(template):
    props = template["Resources"]["Fn"]["Properties"]

    assert props["TableName"] == {"Ref": "Table"}
    assert props["QueueArn"] == {"Fn::GetAtt": ["Queue", "Arn"]}
    assert props["Plain"] == {"Fn::Sub": "${Table}"}
    assert props["Second"] == {"Fn::Select": [1, {"Fn::Split": [",", "x,y,z"]}]}
    assert props["Memory"] == {"Fn::If": ["IsProd", 2048, 128]}
    assert template["Conditions"]["IsDev"] == {"Fn::Not": [{"Condition": "IsProd"}]}


def test_intrinsics_resolve(template):
    props = deployed(template).resolve(template["Resources"]["Fn"]["Properties"], where="Fn")

    assert props["TableName"] == "hp-table"
    assert props["QueueArn"] == "arn:aws:sqs:us-west-2:123456789012:hp-q"
    assert props["LongForm"] == "hp-q"
    assert props["Plain"] == "hp-table"
    assert props["Arn"] == "arn:aws:sqs:us-west-2:123456789012:hp-q"
    assert props["WithVars"] == "hp-hp-prod-hp-table"
    assert props["Joined"] == "a,prod,arn:aws:sqs:us-west-2:123456789012:hp-q"
    assert props["Second"] == "y"
    assert props["SecondOfJoin"] == "hp-table"
    assert props["Memory"] == 2048
    assert props["Size"] == 1024
    assert "Dropped" not in props  # AWS::NoValue removes the property
    assert props["List"] == ["one", "three"]
    assert props["Checks"] == [True, False]
    assert props["Json"] == '{"a": "prod"}'
    assert props["IamCondition"]["Condition"] == {"StringEquals": {"aws:SourceAccount": "123456789012"}}


def test_conditions_follow_parameters(template):
    props = deployed(template, Stage="dev").resolve(template["Resources"]["Fn"]["Properties"], where="Fn")

    assert props["Memory"] == 128
    assert props["Size"] == 256
    assert props["Dropped"] == "keep"
    assert props["List"] == ["one", "two", "three"]
    assert props["Checks"] == [True, False]


def test_ref_to_an_unknown_name_raises_naming_it(template):
    resolver = deployed(template)

    with pytest.raises(TemplateError, match="NotDeployedYet") as info:
        resolver.resolve({"Ref": "NotDeployedYet"}, where="Resources.Fn")
    assert "Resources.Fn" in str(info.value)

    with pytest.raises(TemplateError, match="Missing"):
        resolver.resolve({"Fn::Sub": "prefix-${Missing}"}, where="Fn")


def test_getatt_of_an_unknown_attribute_raises_naming_it(template):
    with pytest.raises(TemplateError, match=r"Queue\.Nope"):
        deployed(template).resolve({"Fn::GetAtt": ["Queue", "Nope"]}, where="Fn")
    with pytest.raises(TemplateError, match=r"Ghost\.Arn"):
        deployed(template).resolve({"Fn::Sub": "${Ghost.Arn}"}, where="Fn")


def test_undefined_condition_raises_naming_it(template):
    with pytest.raises(TemplateError, match="NoSuchCondition"):
        deployed(template).resolve({"Fn::If": ["NoSuchCondition", 1, 2]})


@pytest.mark.parametrize(
    "value",
    [
        {"Fn::Base64": "hello"},
        {"Fn::GetAZs": ""},
        {"Fn::ImportValue": "shared-vpc-id"},
        {"Fn::Cidr": ["10.0.0.0/16", 4, 8]},
        {"Fn::Length": [1, 2]},
    ],
)
def test_unsupported_intrinsic_raises_naming_it(template, value):
    (name,) = value
    with pytest.raises(TemplateError, match=name) as info:
        deployed(template).resolve({"Props": {"Thing": value}}, where="Resources.Thing")
    assert "Resources.Thing" in str(info.value)


def test_unsupported_short_tag_loads_and_then_raises(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text("Resources:\n  X:\n    Type: T\n    Properties:\n      Data: !Base64 hello\n")
    template = load_template(path)

    assert template["Resources"]["X"]["Properties"]["Data"] == {"Fn::Base64": "hello"}
    with pytest.raises(TemplateError, match="Fn::Base64"):
        Resolver(template, PSEUDO, {}).resolve(template["Resources"]["X"]["Properties"], where="X")


def test_a_file_without_resources_is_not_a_template(tmp_path):
    path = tmp_path / "not.yaml"
    path.write_text("just: data\n")

    with pytest.raises(TemplateError, match="Resources"):
        load_template(path)


def test_the_projects_own_template_loads():
    template = load_template(Path(__file__).resolve().parents[2] / "template.yaml")

    assert template["Resources"]


# -- references ---------------------------------------------------------------------------------


def test_references_finds_ref_getatt_and_sub_names(template):
    found = references(template["Resources"]["Fn"]["Properties"])

    # Pseudo parameters and Sub variables may be reported too; the deployer keeps only resources.
    assert found & {"Table", "Queue", "Stage", "Fn", "IsProd", "Sizes"} == {"Table", "Queue", "Stage"}
    assert "AWS::StackName" in found  # a Ref inside a Sub's variable map


def test_references_in_each_form():
    assert references({"Ref": "A"}) == {"A"}
    assert references({"Fn::GetAtt": ["B", "Arn"]}) == {"B"}
    assert references({"Fn::GetAtt": "C.Arn"}) == {"C"}
    assert references({"Fn::Sub": "${D}-${E.Arn}"}) == {"D", "E"}
    assert references({"Fn::Sub": ["${F}", {"F": {"Ref": "G"}}]}) >= {"G"}
    assert references([{"x": [{"Ref": "H"}]}, {"y": {"z": {"Fn::GetAtt": ["I", "Name"]}}}]) == {"H", "I"}
    assert references({"Plain": "text ${NotASub}", "n": 3}) == set()


# -- substitute_definition ----------------------------------------------------------------------

ASL = textwrap.dedent(
    """
    {"StartAt": "Check",
     "States": {"Check": {"Type": "Task", "Resource": "${CheckClusterArn}", "Next": "Record"},
                "Record": {"Type": "Task", "Resource": "${RecordOperatorArn}", "End": true}}}
    """
)


def test_substitute_definition_fills_every_placeholder():
    text = substitute_definition(
        ASL, {"CheckClusterArn": "arn:check", "RecordOperatorArn": "arn:record", "Unused": "x"}, where="sm"
    )

    assert '"Resource": "arn:check"' in text
    assert '"Resource": "arn:record"' in text
    assert "${" not in text


def test_substitute_definition_names_every_missing_placeholder():
    with pytest.raises(TemplateError) as info:
        substitute_definition(ASL, {}, where="state_machines/register.asl.json")

    message = str(info.value)
    assert "state_machines/register.asl.json" in message
    assert "CheckClusterArn" in message
    assert "RecordOperatorArn" in message


def test_sub_escape_renders_a_literal_placeholder(template):
    # CloudFormation: "${!Literal}" in Fn::Sub renders as "${Literal}", unresolved.
    resolved = deployed(template).resolve({"Fn::Sub": "echo ${!HOME} > /tmp/${Table}"}, where="Fn")

    assert resolved == "echo ${HOME} > /tmp/hp-table"
