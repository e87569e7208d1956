"""The project's own stack in the sandbox, reached over real HTTP by plain boto3 clients."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import boto3
import pytest

from sandbox.cluster_faults import node_health_event
from sandbox.world import WorldOptions

pytestmark = pytest.mark.integration


def _plain_client(sb, service):
    # Built only from the environment the sandbox hands out, as another program would.
    env = sb.env
    return boto3.session.Session(
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        region_name=env["AWS_DEFAULT_REGION"],
    ).client(service, endpoint_url=env["AWS_ENDPOINT_URL"])


def test_outputs_name_the_table_the_state_machine_and_the_bus(project_server):
    sb = project_server
    assert sb.endpoint_url.startswith("http://127.0.0.1:")
    cfn = _plain_client(sb, "cloudformation")
    outputs = {
        o["OutputKey"]: o["OutputValue"]
        for o in cfn.describe_stacks(StackName=sb.config.stack_name)["Stacks"][0]["Outputs"]
    }
    assert outputs["TableName"] in _plain_client(sb, "dynamodb").list_tables()["TableNames"]
    assert outputs["EventBusName"] in [
        b["Name"] for b in _plain_client(sb, "events").list_event_buses()["EventBuses"]
    ]
    machines = _plain_client(sb, "stepfunctions").list_state_machines()["stateMachines"]
    assert outputs["RegisterClusterStateMachineArn"] in [m["stateMachineArn"] for m in machines]


def test_register_workflow_over_http(project_server):
    sb = project_server
    world = sb.build_world(
        WorldOptions(hyperpod_cluster_name="http-cluster", eks_cluster_name="http-eks", nodes=2)
    )
    sfn = _plain_client(sb, "stepfunctions")
    arn = sfn.start_execution(
        stateMachineArn=sb.output("RegisterClusterStateMachineArn"),
        name="register-http-cluster",
        input=json.dumps({"clusterName": "http-cluster", "mode": "addon"}),
    )["executionArn"]
    result = sb.wait_execution(arn)
    assert result.status == "SUCCEEDED", result.cause
    item = _plain_client(sb, "dynamodb").get_item(
        TableName=sb.output("TableName"),
        Key={
            "PK": {"S": f"CLUSTER#{world.hyperpod_cluster_arn}"},
            "SK": {"S": "OPERATOR"},
        },
    )["Item"]
    assert item["mode"]["S"] == "addon" and item["version"]["N"] == "1"


def test_node_health_events_over_http_change_the_node_once(project_server):
    sb = project_server
    sb.build_world(
        WorldOptions(hyperpod_cluster_name="events-cluster", eks_cluster_name="events-eks", nodes=2)
    )
    sm = _plain_client(sb, "sagemaker")
    cluster = sm.describe_cluster(ClusterName="events-cluster")
    node = sm.list_cluster_nodes(ClusterName="events-cluster")["ClusterNodeSummaries"][0]["InstanceId"]
    events = _plain_client(sb, "events")
    t0 = datetime.now(UTC)
    # AWS may send one change several times with distinct ids; a late, older event must not win.
    events.put_events(Entries=[node_health_event(cluster, node, False, t0)] * 3)
    sb.wait_idle()  # delivered concurrently; the late event below must arrive after these
    events.put_events(Entries=[node_health_event(cluster, node, True, t0 - timedelta(minutes=5))])
    sb.wait_idle()
    item = _plain_client(sb, "dynamodb").get_item(
        TableName=sb.output("TableName"),
        Key={"PK": {"S": f"CLUSTER#{cluster['ClusterArn']}"}, "SK": {"S": f"NODE#{node}"}},
    )["Item"]
    assert item["health_status"]["S"] == "Unhealthy"
    assert item["version"]["N"] == "1"
    assert item["repair_action"]["S"] == "Replace"


def test_another_process_reaches_the_sandbox_with_its_env(project_server):
    env = {**os.environ, **project_server.env}
    code = "import boto3; print(sorted(boto3.client('dynamodb').list_tables()['TableNames']))"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert project_server.output("TableName") in out.stdout
