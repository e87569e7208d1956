"""Nodes mirror the HyperPod cluster's instances (moto's SageMaker list_cluster_nodes)."""

from __future__ import annotations

import boto3
import pytest
from moto import mock_aws

from sandbox.kube import Store
from sandbox.kube.cluster import ClusterSeed, seed_cluster, sync_hyperpod_nodes

pytestmark = pytest.mark.unit


@mock_aws
def test_nodes_mirror_list_cluster_nodes_and_seed_is_optional() -> None:
    sm = boto3.client("sagemaker", region_name="us-west-2")
    sm.create_cluster(
        ClusterName="hp",
        InstanceGroups=[
            {
                "InstanceGroupName": "workers",
                "InstanceType": "ml.g5.8xlarge",
                "InstanceCount": 2,
                "ThreadsPerCore": 1,
                "ExecutionRole": "arn:aws:iam::123456789012:role/hp",
                "LifeCycleConfig": {"SourceS3Uri": "s3://sagemaker-bucket/lc", "OnCreate": "on_create.sh"},
            }
        ],
    )
    instances = {n["InstanceId"] for n in sm.list_cluster_nodes(ClusterName="hp")["ClusterNodeSummaries"]}
    store = Store()
    try:
        names = sync_hyperpod_nodes(store, sm, "hp")
        assert names == sorted(f"hyperpod-{i}" for i in instances)
        node = store.get(store.rt("", "nodes"), None, names[0])
        labels = node["metadata"]["labels"]
        assert labels["kubernetes.io/hostname"] == names[0]
        assert labels["node.kubernetes.io/instance-type"] == "ml.g5.8xlarge"
        assert labels["sagemaker.amazonaws.com/instance-group-name"] == "workers"
        assert node["status"]["allocatable"]["nvidia.com/gpu"] == "1"
        seed_cluster(store, ClusterSeed(cert_manager=False, pod_identity_agent=True))
        assert store.find(store.rt("", "namespaces"), None, "cert-manager") is None
        agent = store.get(store.rt("apps", "daemonsets"), "kube-system", "eks-pod-identity-agent")
        assert agent["status"]["numberReady"] == 2
    finally:
        store.close()
