"""The fault hook: the next N calls of an operation throttle or fail, in any moto service."""

from __future__ import annotations

import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from sandbox.aws_ext import api_faults
from tests.sandbox.aws_ext.conftest import code, make_eks, status


def test_throttling_then_success(aws):
    make_eks(aws)
    eks = aws.client("eks")
    api_faults.inject("ListAddons", times=2)
    for _ in range(2):
        with pytest.raises(ClientError) as throttled:
            eks.list_addons(clusterName="eks1")
        assert (code(throttled), status(throttled)) == ("ThrottlingException", 400)
    assert eks.list_addons(clusterName="eks1")["addons"] == []
    assert api_faults.pending() == []


@pytest.mark.parametrize(
    ("service", "call", "operation"),
    [
        ("dynamodb", lambda c: c.list_tables(), "ListTables"),  # json 1.0
        ("iam", lambda c: c.list_roles(), "list_roles"),  # query, snake_case name
        ("sagemaker", lambda c: c.list_clusters(), "ListClusters"),  # json 1.1
        ("sqs", lambda c: c.list_queues(), "ListQueues"),
    ],
)
def test_internal_errors_in_any_protocol(aws, service, call, operation):
    client = aws.client(service)
    api_faults.inject(operation, error="internal", service=service)
    with pytest.raises(ClientError) as failed:
        call(client)
    assert (code(failed), status(failed)) == ("InternalFailure", 500)
    call(client)  # used up


def test_service_filter_and_custom_code(aws):
    make_eks(aws)
    api_faults.inject("ListClusters", service="sagemaker", error="ServerException", status=503)
    assert aws.client("eks").list_clusters()["clusters"] == ["eks1"]  # same operation name, other service
    with pytest.raises(ClientError) as failed:
        aws.client("sagemaker").list_clusters()
    assert (code(failed), status(failed)) == ("ServerException", 503)


def test_botocore_retries_through_injected_faults(aws):
    retrying = aws.client("dynamodb", config=Config(retries={"mode": "standard", "total_max_attempts": 5}))
    api_faults.inject("ListTables", times=2)
    api_faults.inject("ListTables", times=1, error="internal")
    answer = retrying.list_tables()
    assert answer["ResponseMetadata"]["RetryAttempts"] == 3


def test_injected_context_drops_what_did_not_fire(aws):
    with api_faults.injected("ListTables", times=3) as fault:
        with pytest.raises(ClientError):
            aws.client("dynamodb").list_tables()
        assert fault.fired == 1
    assert api_faults.pending() == []
    aws.client("dynamodb").list_tables()
    with pytest.raises(ValueError):
        api_faults.inject("ListTables", times=0)
