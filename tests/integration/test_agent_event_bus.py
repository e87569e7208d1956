"""Who may put what on the control plane's bus, in the sandbox deployed from template.yaml: the
agent's source only as AgentPodRole (the bus's policy refuses anyone else with EventBridge's
AccessDeniedException, the whole call), kubernetes-event-exporter's from any principal of the
account while EventExporterRoleArn is empty, and the supervisor configured to hand the bus and
the role to the pods it creates."""

from __future__ import annotations

import json

import pytest
from botocore.exceptions import ClientError

from sandbox import Sandbox
from sandbox.aws_ext import event_bus_policy
from sandbox.testing import client_as

pytestmark = pytest.mark.integration

AGENT = "hyperpod-control.agent"


def entry(sb: Sandbox, source: str, detail_type: str = "HyperPod Agent State Change") -> dict:
    return {
        "Source": source,
        "DetailType": detail_type,
        "Detail": json.dumps({"jobUid": "no-such-job", "status": "faulted"}),
        "EventBusName": bus_arn(sb),
    }


def bus_arn(sb: Sandbox) -> str:
    return sb.client("events").describe_event_bus(Name=sb.output("EventBusName"))["Arn"]


def test_the_agent_role_trusts_pod_identity_and_may_put_only_the_agents_source(project_server):
    sb = project_server
    role_arn = sb.output("AgentPodRoleArn")
    iam = sb.client("iam")
    name = role_arn.rsplit("/", 1)[-1]
    trust = iam.get_role(RoleName=name)["Role"]["AssumeRolePolicyDocument"]
    statement = trust["Statement"][0]
    assert statement["Principal"] == {"Service": "pods.eks.amazonaws.com"}
    assert sorted(statement["Action"]) == ["sts:AssumeRole", "sts:TagSession"]
    policy = iam.get_role_policy(RoleName=name, PolicyName="put-agent-events")["PolicyDocument"]
    assert policy["Statement"] == [
        {
            "Effect": "Allow",
            "Action": "events:PutEvents",
            "Resource": bus_arn(sb),
            "Condition": {"ForAllValues:StringEquals": {"events:source": [AGENT]}},
        }
    ]
    env = sb.runtime.lookup(sb.stack.resources["SuperviseJobFunction"]).environment
    assert (env["AGENT_EVENT_BUS"], env["AGENT_POD_ROLE_ARN"]) == (bus_arn(sb), role_arn)


def test_the_agents_source_from_another_principal_is_refused_by_the_bus(project_server):
    sb = project_server
    since = len(sb.runtime.calls("JobEventsFunction"))
    before = len(event_bus_policy.calls())
    with pytest.raises(ClientError) as refused:
        sb.client("events").put_events(Entries=[entry(sb, AGENT)])
    error = refused.value.response["Error"]
    assert error["Code"] == "AccessDeniedException"
    assert "explicit deny in a resource-based policy" in error["Message"]
    # one entry of the agent's source among others refuses the whole call
    with pytest.raises(ClientError):
        sb.client("events").put_events(Entries=[entry(sb, "kubernetes-event-exporter"), entry(sb, AGENT)])
    sb.wait_idle()
    assert sb.runtime.calls("JobEventsFunction")[since:] == [], "nothing was delivered"
    recorded = event_bus_policy.calls()[before:]
    assert [c.allowed for c in recorded] == [False, False]
    assert recorded[0].principal_arn != sb.output("AgentPodRoleArn")


def test_a_role_other_than_the_agents_is_refused_too(project_server):
    sb = project_server
    other = sb.client("iam").create_role(
        RoleName="not-the-agent",
        AssumeRolePolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Principal": {"Service": "pods.eks.amazonaws.com"},
                        "Action": ["sts:AssumeRole", "sts:TagSession"],
                    }
                ],
            }
        ),
    )["Role"]["Arn"]
    with pytest.raises(ClientError) as refused:
        client_as(sb, "events", other, "intruder").put_events(Entries=[entry(sb, AGENT)])
    assert refused.value.response["Error"]["Code"] == "AccessDeniedException"
    assert "assumed-role/not-the-agent/intruder" in refused.value.response["Error"]["Message"]


def test_the_agent_role_puts_the_agents_events_and_its_session_is_the_caller(project_server):
    sb = project_server
    role_arn = sb.output("AgentPodRoleArn")
    before = len(event_bus_policy.calls())
    result = client_as(sb, "events", role_arn, "eks-cluster-pod-0").put_events(Entries=[entry(sb, AGENT)])
    assert result["FailedEntryCount"] == 0, result
    sb.wait_idle()
    (call,) = event_bus_policy.calls()[before:]
    assert (call.allowed, call.principal_arn, call.sources) == (True, role_arn, (AGENT,))
    assert call.caller_arn.endswith(f":assumed-role/{role_arn.rsplit('/', 1)[-1]}/eks-cluster-pod-0")


def test_without_an_exporter_role_any_principal_of_the_account_puts_pod_events(project_server):
    sb = project_server
    pod_event = entry(sb, "kubernetes-event-exporter", "Kubernetes Event")
    assert sb.client("events").put_events(Entries=[pod_event])["FailedEntryCount"] == 0
    assert "EventExporterSourceBusPolicy" not in sb.stack.resources, "the statement is conditional"
