"""The default HyperPod world and the options that break it."""

from __future__ import annotations

from sandbox.world import WorldOptions, build_world
from tests.sandbox.aws_ext.conftest import ACCOUNT


def test_default_world(aws):
    world = build_world(aws.client)
    ec2, eks, sm, iam = (aws.client(s) for s in ("ec2", "eks", "sagemaker", "iam"))

    assert world.env()["HYPERPOD_CLUSTER_NAME"] == "sandbox-hyperpod"
    assert world.env()["EKS_CLUSTER_NAME"] == "sandbox-eks"
    subnets = ec2.describe_subnets(SubnetIds=world.private_subnet_ids)["Subnets"]
    assert len(subnets) == 2 and not any(s["MapPublicIpOnLaunch"] for s in subnets)
    assert (
        ec2.describe_internet_gateways(Filters=[{"Name": "attachment.vpc-id", "Values": [world.vpc_id]}])[
            "InternetGateways"
        ]
        == []
    )
    endpoints = ec2.describe_vpc_endpoints(Filters=[{"Name": "vpc-id", "Values": [world.vpc_id]}])[
        "VpcEndpoints"
    ]
    services = {e["ServiceName"] for e in endpoints}
    assert {"com.amazonaws.us-west-2.sagemaker.api", "com.amazonaws.us-west-2.eks-auth"} <= services
    [group] = ec2.describe_security_groups(GroupIds=[world.security_group_id])["SecurityGroups"]
    assert group["IpPermissions"][0]["UserIdGroupPairs"][0]["GroupId"] == world.security_group_id
    assert all(r.get("IpRanges") == [] for r in group["IpPermissionsEgress"])

    cluster = eks.describe_cluster(name=world.eks_cluster_name)["cluster"]
    assert cluster["accessConfig"]["authenticationMode"] == "API_AND_CONFIG_MAP"
    assert cluster["resourcesVpcConfig"]["endpointPrivateAccess"] is True
    addons = {
        name: eks.describe_addon(clusterName=world.eks_cluster_name, addonName=name)["addon"]["status"]
        for name in eks.list_addons(clusterName=world.eks_cluster_name)["addons"]
    }
    assert addons == {"cert-manager": "ACTIVE", "eks-pod-identity-agent": "ACTIVE"}

    hyperpod = sm.describe_cluster(ClusterName=world.hyperpod_cluster_name)
    assert hyperpod["ClusterStatus"] == world.hyperpod_status == "InService"
    assert hyperpod["Orchestrator"]["Eks"]["ClusterArn"] == cluster["arn"] == world.eks_cluster_arn
    assert hyperpod["NodeRecovery"] == "Automatic"
    assert len(world.node_ids) == 4
    assert sm.list_tags(ResourceArn=world.hyperpod_cluster_arn)["Tags"] == [
        {"Key": "SageMaker", "Value": "true"}
    ]
    policy = "arn:aws:iam::aws:policy/AmazonSageMakerHyperPodTrainingOperatorAccess"
    assert iam.get_policy(PolicyArn=policy)["Policy"]["Arn"] == policy
    assert world.execution_role_arn == f"arn:aws:iam::{ACCOUNT}:role/sandbox-hyperpod-nodes"


def test_a_broken_world(aws):
    options = WorldOptions(
        nodes=2,
        subnet_prefix=28,
        interface_endpoints=(),
        gateway_endpoints=(),
        security_group_self_rules=False,
        authentication_mode="CONFIG_MAP",
        endpoint_public_access=False,
        addons={},
        quotas={("sagemaker", "ml.g5.8xlarge for cluster usage"): 1, ("vpc", "L-DF5E4CA3"): 3},
        software_update_available=True,
        sagemaker_tag=False,
    )
    world = build_world(aws.client, options)
    ec2, eks, sm, sq = (aws.client(s) for s in ("ec2", "eks", "sagemaker", "service-quotas"))

    assert world.vpc_endpoint_ids == {}
    assert (
        ec2.describe_vpc_endpoints(Filters=[{"Name": "vpc-id", "Values": [world.vpc_id]}])["VpcEndpoints"]
        == []
    )
    [subnet] = ec2.describe_subnets(SubnetIds=world.private_subnet_ids[:1])["Subnets"]
    assert (
        subnet["CidrBlock"].endswith("/28") and subnet["AvailableIpAddressCount"] == 11 - 2
    )  # one ENI per node
    [group] = ec2.describe_security_groups(GroupIds=[world.security_group_id])["SecurityGroups"]
    assert group["IpPermissions"] == []
    cluster = eks.describe_cluster(name=world.eks_cluster_name)["cluster"]
    assert cluster["accessConfig"]["authenticationMode"] == "CONFIG_MAP"
    assert cluster["resourcesVpcConfig"]["endpointPublicAccess"] is False
    assert eks.list_addons(clusterName=world.eks_cluster_name)["addons"] == []
    assert len(world.node_ids) == 2 and world.hyperpod_status == "InService"
    nodes = sm.list_cluster_nodes(ClusterName=world.hyperpod_cluster_name)["ClusterNodeSummaries"]
    assert {n["ImageVersionStatus"] for n in nodes} == {"UpdateAvailable"}
    eni = sq.get_service_quota(ServiceCode="vpc", QuotaCode="L-DF5E4CA3")["Quota"]["Value"]
    assert eni == 3.0
    assert sm.list_tags(ResourceArn=world.hyperpod_cluster_arn)["Tags"] == []
