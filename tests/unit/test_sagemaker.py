"""SageMakerAdapter: SageMaker's own ways of saying "not found", and paging through nodes."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError

from hyperpod_control.adapters.sagemaker import SageMakerAdapter
from hyperpod_control.exceptions import InvalidInputError, ResourceNotFoundError, ThrottledError

pytestmark = pytest.mark.unit


def client_error(code: str, message: str, operation: str = "DescribeCluster") -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": message}, "ResponseMetadata": {"HTTPStatusCode": 400}}, operation
    )


class FakeSageMaker:
    def __init__(self, error: Exception | None = None, pages: list[dict] | None = None) -> None:
        self.error = error
        self.pages = list(pages or [])
        self.calls: list[dict] = []

    def describe_cluster(self, **kwargs):
        self.calls.append(kwargs)
        if self.error:
            raise self.error
        return {"ClusterName": kwargs["ClusterName"], "ClusterStatus": "InService"}

    def list_cluster_nodes(self, **kwargs):
        self.calls.append(kwargs)
        if self.error:
            raise self.error
        return self.pages.pop(0)


def test_resource_not_found_is_not_found_with_a_remedy():
    adapter = SageMakerAdapter(
        FakeSageMaker(client_error("ResourceNotFound", "Resource being access is not found."))
    )
    with pytest.raises(ResourceNotFoundError) as info:
        adapter.describe_cluster("x")
    assert "'x'" in info.value.message and info.value.remedy
    nodes = SageMakerAdapter(FakeSageMaker(client_error("ResourceNotFound", "not found")))
    with pytest.raises(ResourceNotFoundError):
        nodes.list_cluster_nodes("x")


def test_could_not_find_is_not_found_with_a_remedy():
    adapter = SageMakerAdapter(
        FakeSageMaker(client_error("ValidationException", "Could not find cluster 'x'."))
    )

    with pytest.raises(ResourceNotFoundError) as info:
        adapter.describe_cluster("x")
    assert "'x'" in info.value.message
    assert info.value.remedy


def test_another_validation_error_stays_invalid_input():
    adapter = SageMakerAdapter(FakeSageMaker(client_error("ValidationException", "ClusterName is too long")))

    with pytest.raises(InvalidInputError, match="too long"):
        adapter.describe_cluster("x" * 100)


def test_throttling_is_mapped():
    adapter = SageMakerAdapter(FakeSageMaker(client_error("ThrottlingException", "Rate exceeded")))

    with pytest.raises(ThrottledError):
        adapter.describe_cluster("x")


def test_list_cluster_nodes_follows_next_token():
    fake = FakeSageMaker(
        pages=[
            {"ClusterNodeSummaries": [{"InstanceId": "i-1"}, {"InstanceId": "i-2"}], "NextToken": "t1"},
            {"ClusterNodeSummaries": [{"InstanceId": "i-3"}], "NextToken": "t2"},
            {"ClusterNodeSummaries": []},
        ]
    )

    nodes = SageMakerAdapter(fake).list_cluster_nodes("c")

    assert [n["InstanceId"] for n in nodes] == ["i-1", "i-2", "i-3"]
    assert fake.calls == [
        {"ClusterName": "c"},
        {"ClusterName": "c", "NextToken": "t1"},
        {"ClusterName": "c", "NextToken": "t2"},
    ]


def test_list_cluster_nodes_maps_errors():
    fake = FakeSageMaker(error=client_error("ResourceNotFoundException", "no cluster", "ListClusterNodes"))

    with pytest.raises(ResourceNotFoundError, match="HyperPod cluster c"):
        SageMakerAdapter(fake).list_cluster_nodes("c")
