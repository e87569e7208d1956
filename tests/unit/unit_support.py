"""Helpers shared by the unit tests (a module name no other test directory will reuse)."""

from __future__ import annotations

import importlib.util
import sys
import uuid
from pathlib import Path
from types import ModuleType

REPO_ROOT = Path(__file__).resolve().parents[2]
FUNCTIONS = REPO_ROOT / "functions"
TABLE = "hyperpod-control-unit"
REGION = "us-west-2"
ACCOUNT = "123456789012"
CLUSTER_ARN = f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:cluster/abcdef123456"


class FakeContext:
    """Just what Powertools' Logger and idempotency read from a Lambda context."""

    function_name = "unit-test-function"
    memory_limit_in_mb = 256
    invoked_function_arn = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:unit-test-function"

    def __init__(self) -> None:
        self.aws_request_id = str(uuid.uuid4())

    def get_remaining_time_in_millis(self) -> int:
        return 60_000


def create_table(name: str = TABLE) -> None:
    import boto3

    from hyperpod_control.models.records import OPERATORS_INDEX, OPERATORS_INDEX_KEY

    client = boto3.client("dynamodb", region_name=REGION)
    client.create_table(
        TableName=name,
        AttributeDefinitions=[
            {"AttributeName": "PK", "AttributeType": "S"},
            {"AttributeName": "SK", "AttributeType": "S"},
            {"AttributeName": OPERATORS_INDEX_KEY, "AttributeType": "S"},
        ],
        KeySchema=[{"AttributeName": "PK", "KeyType": "HASH"}, {"AttributeName": "SK", "KeyType": "RANGE"}],
        # template.yaml's sparse index of the OPERATOR items (Store.list_operators)
        GlobalSecondaryIndexes=[
            {
                "IndexName": OPERATORS_INDEX,
                "KeySchema": [{"AttributeName": OPERATORS_INDEX_KEY, "KeyType": "HASH"}],
                "Projection": {"ProjectionType": "ALL"},
            }
        ],
        BillingMode="PAY_PER_REQUEST",
    )
    client.update_time_to_live(
        TableName=name, TimeToLiveSpecification={"Enabled": True, "AttributeName": "expiration"}
    )


def load_app(function: str) -> ModuleType:
    """Import ``functions/<function>/app.py`` under a unique module name (every one is app.py)."""
    path = FUNCTIONS / function / "app.py"
    name = f"unit_app_{function}_{uuid.uuid4().hex[:8]}"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


def node_health_event(status: str = "Unhealthy", **overrides) -> dict:
    event = {
        "version": "0",
        "id": "2f1c9a4e-0000-4000-8000-000000000001",
        "detail-type": "SageMaker HyperPod Cluster Node Health Event",
        "source": "aws.sagemaker",
        "account": "123456789012",
        "time": "2025-03-04T10:20:30Z",
        "region": "us-west-2",
        "resources": [CLUSTER_ARN],
        "detail": {
            "ClusterName": "ml-cluster",
            "ClusterArn": CLUSTER_ARN,
            "InstanceId": "i-0123456789abcdef0",
            "Tags": {"team": "ml"},
            "HealthSummary": {
                "HealthStatus": status,
                "HealthStatusReason": "HyperPod Health Monitoring Agent (HMA) has detected fault type "
                "NvidiaErrorTerminate on this node and is unhealthy.",
                "RepairAction": "Replace",
                "Recommendation": "Please Replace the Faulty Node.",
            },
        },
    }
    event.update(overrides)
    return event
