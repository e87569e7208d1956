"""The Lambda handlers, called the way the Lambda runtime calls them, on moto in process."""

from __future__ import annotations

import copy

import pytest
from unit_support import CLUSTER_ARN, TABLE, node_health_event

from hyperpod_control.exceptions import InvalidInputError, ResourceNotFoundError
from hyperpod_control.models.records import NodeHealth, OperatorMode, OperatorRecord, OperatorStatus

pytestmark = pytest.mark.unit


def idempotency_items(ddb) -> list[dict]:
    items = ddb.scan(TableName=TABLE)["Items"]
    return [it for it in items if it["PK"]["S"].startswith("IDEMPOTENCY#")]


# -- node_health --------------------------------------------------------------------------------


def test_node_health_stores_the_node(moto_aws, app_loader, context, store):
    app = app_loader("node_health")

    result = app.lambda_handler(node_health_event(), context)

    assert result == {"node": "hyperpod-i-0123456789abcdef0", "healthStatus": "Unhealthy", "changed": True}
    stored = store.get_node(CLUSTER_ARN, "i-0123456789abcdef0")
    assert stored.health_status is NodeHealth.UNHEALTHY
    assert stored.version == 1


def test_an_unknown_health_status_or_repair_action_is_recorded_and_left_alone(
    moto_aws, app_loader, context, store
):
    app = app_loader("node_health")
    event = node_health_event("Degraded")
    event["id"] = "2f1c9a4e-0000-4000-8000-00000000000d"
    result = app.lambda_handler(event, context)  # no error: nothing to retry into the dead-letter queue
    assert result == {"node": "i-0123456789abcdef0", "healthStatus": "Degraded", "changed": False}
    assert store.get_node(CLUSTER_ARN, "i-0123456789abcdef0") is None, "no action on a guess"
    odd = node_health_event()
    odd["detail"]["HealthSummary"]["RepairAction"] = "Reimage"
    result = app.lambda_handler(odd, context)
    assert result["changed"] is True
    stored = store.get_node(CLUSTER_ARN, "i-0123456789abcdef0")
    assert stored.repair_action == "Reimage" and not stored.repair_requested


def test_node_health_same_event_id_twice_runs_once(moto_aws, app_loader, context, store, ddb):
    app = app_loader("node_health")
    event = node_health_event()

    first = app.lambda_handler(copy.deepcopy(event), context)
    version_after_first = store.get_node(CLUSTER_ARN, "i-0123456789abcdef0").version
    second = app.lambda_handler(copy.deepcopy(event), type(context)())

    # Without idempotency the body would run again and report changed=False (a duplicate);
    # Powertools returns the first run's result instead.
    assert second == first
    assert second["changed"] is True
    assert store.get_node(CLUSTER_ARN, "i-0123456789abcdef0").version == version_after_first == 1
    records = idempotency_items(ddb)
    assert len(records) == 1
    assert records[0]["PK"]["S"] == "IDEMPOTENCY#node_health"
    assert "expiration" in records[0]


def test_node_health_new_id_for_the_same_change_is_a_duplicate(moto_aws, app_loader, context, store):
    app = app_loader("node_health")
    app.lambda_handler(node_health_event(), context)

    copy_event = node_health_event(id="2f1c9a4e-0000-4000-8000-000000000002", time="2025-03-04T10:20:45Z")
    result = app.lambda_handler(copy_event, type(context)())

    assert result["changed"] is False
    assert store.get_node(CLUSTER_ARN, "i-0123456789abcdef0").version == 1


def test_node_health_recovery_changes_the_node(moto_aws, app_loader, context, store):
    app = app_loader("node_health")
    app.lambda_handler(node_health_event(), context)

    recovered = node_health_event(
        status="Healthy", id="2f1c9a4e-0000-4000-8000-000000000003", time="2025-03-04T10:40:00Z"
    )
    result = app.lambda_handler(recovered, type(context)())

    assert result == {"node": "hyperpod-i-0123456789abcdef0", "healthStatus": "Healthy", "changed": True}
    stored = store.get_node(CLUSTER_ARN, "i-0123456789abcdef0")
    assert stored.health_status is NodeHealth.HEALTHY
    assert stored.version == 2


def test_node_health_event_from_another_source_is_refused(moto_aws, app_loader, context, store):
    app = app_loader("node_health")

    with pytest.raises(InvalidInputError, match="source"):
        app.lambda_handler(node_health_event(source="aws.ec2"), context)
    assert store.list_nodes(CLUSTER_ARN) == []


# -- check_cluster ------------------------------------------------------------------------------


def test_check_cluster_reports_a_moto_cluster(moto_aws, app_loader, context):
    import boto3

    sagemaker = boto3.client("sagemaker", region_name="us-west-2")
    arn = sagemaker.create_cluster(
        ClusterName="ml-cluster",
        InstanceGroups=[
            {
                "InstanceGroupName": "workers",
                "InstanceType": "ml.g5.8xlarge",
                "InstanceCount": 3,
                "LifeCycleConfig": {
                    "SourceS3Uri": "s3://sagemaker-unit/lifecycle",
                    "OnCreate": "on_create.sh",
                },
                "ExecutionRole": "arn:aws:iam::123456789012:role/nodes",
                "ThreadsPerCore": 1,  # moto needs it
            }
        ],
    )["ClusterArn"]
    status = sagemaker.describe_cluster(ClusterName="ml-cluster")["ClusterStatus"]
    app = app_loader("check_cluster")

    result = app.lambda_handler({"clusterName": "ml-cluster", "mode": "addon"}, context)

    assert result["clusterName"] == "ml-cluster"
    assert result["clusterArn"] == arn
    assert result["clusterStatus"] == status
    assert result["ready"] is (status == "InService")


def test_check_cluster_missing_cluster_is_not_found(moto_aws, app_loader, context):
    app = app_loader("check_cluster")

    with pytest.raises(ResourceNotFoundError) as info:
        app.lambda_handler({"clusterName": "no-such-cluster", "mode": "addon"}, context)
    assert "no-such-cluster" in str(info.value)
    assert "list-clusters" in (info.value.remedy or "")  # SageMaker's ValidationException, translated


@pytest.mark.parametrize(
    "event",
    [
        {"clusterName": "ml-cluster", "mode": "kubeflow"},
        {"clusterName": "not a valid name", "mode": "addon"},
        {"mode": "addon"},
    ],
)
def test_check_cluster_bad_input_is_invalid(moto_aws, app_loader, context, event):
    app = app_loader("check_cluster")

    with pytest.raises(InvalidInputError):
        app.lambda_handler(event, context)


# -- record_operator / record_failure -----------------------------------------------------------


def test_record_operator_handler_writes_the_operator(moto_aws, app_loader, context, store):
    app = app_loader("record_operator")
    event = {"clusterName": "ml-cluster", "clusterArn": CLUSTER_ARN, "mode": "serverless", "execution": "x1"}

    result = app.lambda_handler(event, context)

    assert result["mode"] == "serverless"
    assert result["status"] == "REGISTERED"
    assert result["version"] == 1
    assert store.get_operator(CLUSTER_ARN).last_workflow == "x1"


def test_record_failure_handler_keeps_the_status_and_returns_error_and_cause(
    moto_aws, app_loader, context, store
):
    store.put(
        OperatorRecord(
            cluster_arn=CLUSTER_ARN, cluster_name="ml-cluster", mode=OperatorMode.ADDON, status="ACTIVE"
        ),
        expected_version=None,
    )
    app = app_loader("record_failure")
    event = {
        "step": "CheckCluster",
        "error": {"Error": "ClusterUnusableError", "Cause": '{"errorMessage": "cluster is Failed"}'},
        "execution": "x2",
        "state": {"clusterName": "ml-cluster", "check": {"clusterArn": CLUSTER_ARN}},
    }

    result = app.lambda_handler(event, context)

    assert result == {"step": "CheckCluster", "error": "ClusterUnusableError", "cause": "cluster is Failed"}
    stored = store.get_operator(CLUSTER_ARN)
    assert stored.status is OperatorStatus.ACTIVE
    assert stored.reason == "CheckCluster: ClusterUnusableError: cluster is Failed"
