"""The sandbox's default HyperPod world, and options that break it in the ways tests need.

``build_world(client_factory, options)`` creates, through the AWS APIs of the emulated account
(``client_factory(service)`` returns a boto3 client, like ``Sandbox.client``):

- a VPC with private subnets in two zones and no internet gateway;
- one security group for the nodes and the endpoints that admits traffic from itself only
  (the EFA guidance in the VPC prerequisites: no ``0.0.0.0/0`` egress);
- the VPC endpoints a private HyperPod EKS cluster needs: interface endpoints for
  ``sagemaker.api`` and ``eks-auth`` (the operator's prerequisites), ``eks``, ``sts``,
  ``ecr.api``, ``ecr.dkr``, ``logs``, and the ``s3`` gateway endpoint (lifecycle scripts);
- IAM roles for EKS and the HyperPod nodes with their AWS managed policies, and those
  policies loaded (AmazonSageMakerHyperPodTrainingOperatorAccess among them);
- an EKS cluster with ``accessConfig`` (API_AND_CONFIG_MAP) and public and private endpoint
  access, with the operator's prerequisite add-ons (eks-pod-identity-agent, cert-manager)
  ACTIVE;
- a HyperPod cluster orchestrated by it (tagged ``SageMaker: true``, NodeRecovery Automatic)
  with ``nodes`` nodes, InService.

``WorldOptions`` fields shape a broken world: no endpoints (or some missing), a small subnet, no
self-referencing security-group rules, CONFIG_MAP authentication, a private-only or
public-only endpoint, missing prerequisite add-ons, low quotas (applied once the cluster
exists, so the world stands and a preflight sees the low value), a stale node image.

The builder calls the APIs for everything AWS would do through them and reaches into moto's
backends only for what no API does (finishing add-on installs at once, a newer AMI being
published); so it needs the moto backends in this process, which both Sandbox modes have.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from moto.core import DEFAULT_ACCOUNT_ID

from sandbox.aws_ext import catalog

INTERFACE_ENDPOINTS = ("sagemaker.api", "eks-auth", "eks", "sts", "ecr.api", "ecr.dkr", "logs")
GATEWAY_ENDPOINTS = ("s3",)
PREREQUISITE_ADDONS = (catalog.POD_IDENTITY_AGENT, catalog.CERT_MANAGER)


@dataclass
class WorldOptions:
    hyperpod_cluster_name: str = "sandbox-hyperpod"
    eks_cluster_name: str = "sandbox-eks"
    nodes: int = 4
    instance_type: str = "ml.g5.8xlarge"
    instance_group: str = "workers"
    kubernetes_version: str = "1.31"
    region: str = "us-west-2"
    account_id: str = DEFAULT_ACCOUNT_ID
    vpc_cidr: str = "10.192.0.0/16"
    #: Prefix length of each private subnet; 28 leaves 11 addresses ("a small subnet").
    subnet_prefix: int = 20
    availability_zones: tuple[str, ...] = ("us-west-2a", "us-west-2b")
    #: Interface endpoints to create (service suffixes); () for "no endpoints".
    interface_endpoints: tuple[str, ...] = INTERFACE_ENDPOINTS
    gateway_endpoints: tuple[str, ...] = GATEWAY_ENDPOINTS
    #: False: the security group does not admit traffic from itself.
    security_group_self_rules: bool = True
    authentication_mode: str = "API_AND_CONFIG_MAP"
    endpoint_public_access: bool = True
    endpoint_private_access: bool = True
    node_recovery: str = "Automatic"
    #: The tag the EKS-console install of the operator requires on the HyperPod cluster.
    sagemaker_tag: bool = True
    #: Add-ons installed and ACTIVE in the EKS cluster: name -> version (None: the default one).
    addons: dict[str, str | None] = field(default_factory=lambda: dict.fromkeys(PREREQUISITE_ADDONS))
    #: Applied quota values after the cluster exists: {(service code, quota name or code): value},
    #: e.g. {("sagemaker", "ml.g5.8xlarge for cluster usage"): 2, ("vpc", "L-DF5E4CA3"): 10}.
    quotas: dict[tuple[str, str], float] = field(default_factory=dict)
    #: A newer HyperPod AMI is published: nodes report ImageVersionStatus UpdateAvailable.
    software_update_available: bool = False
    load_managed_policies: bool = True


@dataclass
class World:
    options: WorldOptions
    region: str
    account_id: str
    vpc_id: str
    private_subnet_ids: list[str]
    security_group_id: str
    vpc_endpoint_ids: dict[str, str]
    eks_cluster_name: str
    eks_cluster_arn: str
    eks_role_arn: str
    hyperpod_cluster_name: str
    hyperpod_cluster_arn: str
    hyperpod_status: str
    execution_role_arn: str
    node_ids: list[str]
    lifecycle_s3_uri: str

    def env(self) -> dict[str, str]:
        """What ``hpctl sandbox up`` writes to its env file for this world."""
        return {
            "HYPERPOD_CLUSTER_NAME": self.hyperpod_cluster_name,
            "HYPERPOD_CLUSTER_ARN": self.hyperpod_cluster_arn,
            "EKS_CLUSTER_NAME": self.eks_cluster_name,
            "EKS_CLUSTER_ARN": self.eks_cluster_arn,
        }


TRUST = {
    "eks": "eks.amazonaws.com",
    "sagemaker": "sagemaker.amazonaws.com",
}


def _role(iam: Any, name: str, service: str, policy_arns: list[str]) -> str:
    import json

    document = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"Service": service}, "Action": "sts:AssumeRole"}],
    }
    arn = iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(document))["Role"]["Arn"]
    for policy_arn in policy_arns:
        iam.attach_role_policy(RoleName=name, PolicyArn=policy_arn)
    return arn


def _network(ec2: Any, opts: WorldOptions) -> tuple[str, list[str], str]:
    vpc_id = ec2.create_vpc(CidrBlock=opts.vpc_cidr)["Vpc"]["VpcId"]
    ec2.create_tags(Resources=[vpc_id], Tags=[{"Key": "Name", "Value": f"{opts.hyperpod_cluster_name}-vpc"}])
    ec2.modify_vpc_attribute(VpcId=vpc_id, EnableDnsSupport={"Value": True})
    ec2.modify_vpc_attribute(VpcId=vpc_id, EnableDnsHostnames={"Value": True})
    blocks = ipaddress.ip_network(opts.vpc_cidr).subnets(new_prefix=opts.subnet_prefix)
    subnet_ids = []
    for zone, block in zip(opts.availability_zones, blocks, strict=False):
        subnet = ec2.create_subnet(VpcId=vpc_id, CidrBlock=str(block), AvailabilityZone=zone)["Subnet"]
        ec2.create_tags(
            Resources=[subnet["SubnetId"]],
            Tags=[{"Key": "Name", "Value": f"{opts.hyperpod_cluster_name}-private-{zone}"}],
        )
        subnet_ids.append(subnet["SubnetId"])
    group_id = ec2.create_security_group(
        GroupName=f"{opts.hyperpod_cluster_name}-nodes",
        Description="HyperPod nodes, EKS control plane ENIs and VPC endpoints",
        VpcId=vpc_id,
    )["GroupId"]
    # No 0.0.0.0/0 egress (EFA health checks fail with it); traffic stays within the group.
    ec2.revoke_security_group_egress(
        GroupId=group_id, IpPermissions=[{"IpProtocol": "-1", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}]
    )
    if opts.security_group_self_rules:
        rule = [{"IpProtocol": "-1", "UserIdGroupPairs": [{"GroupId": group_id}]}]
        ec2.authorize_security_group_ingress(GroupId=group_id, IpPermissions=rule)
        ec2.authorize_security_group_egress(GroupId=group_id, IpPermissions=rule)
    return vpc_id, subnet_ids, group_id


def _endpoints(
    ec2: Any, opts: WorldOptions, vpc_id: str, subnet_ids: list[str], group_id: str
) -> dict[str, str]:
    created = {}
    for suffix in opts.interface_endpoints:
        service = f"com.amazonaws.{opts.region}.{suffix}"
        created[suffix] = ec2.create_vpc_endpoint(
            VpcId=vpc_id,
            ServiceName=service,
            VpcEndpointType="Interface",
            SubnetIds=subnet_ids,
            SecurityGroupIds=[group_id],
            PrivateDnsEnabled=True,
        )["VpcEndpoint"]["VpcEndpointId"]
    if opts.gateway_endpoints:
        tables = ec2.describe_route_tables(Filters=[{"Name": "vpc-id", "Values": [vpc_id]}])["RouteTables"]
        for suffix in opts.gateway_endpoints:
            created[suffix] = ec2.create_vpc_endpoint(
                VpcId=vpc_id,
                ServiceName=f"com.amazonaws.{opts.region}.{suffix}",
                VpcEndpointType="Gateway",
                RouteTableIds=[t["RouteTableId"] for t in tables],
            )["VpcEndpoint"]["VpcEndpointId"]
    return created


def _finish_addons(opts: WorldOptions) -> None:
    """Add-ons the world starts with are already installed: no CREATING window to wait out."""
    from moto.eks.models import eks_backends

    from sandbox.aws_ext.eks_cluster import state

    cluster = eks_backends[opts.account_id][opts.region].clusters[opts.eks_cluster_name]
    for addon in state(cluster).addons.values():
        addon.complete()


def build_world(client_factory: Callable[[str], Any], options: WorldOptions | None = None) -> World:
    from sandbox import aws_ext
    from sandbox.aws_ext import iam_policies, quotas, sagemaker_hyperpod

    aws_ext.install()
    opts = options or WorldOptions()
    if opts.nodes < 1:
        raise ValueError("a HyperPod world needs at least one node")
    if opts.load_managed_policies:
        iam_policies.ensure(account_id=opts.account_id)
    ec2, iam, eks, sagemaker, s3 = (client_factory(s) for s in ("ec2", "iam", "eks", "sagemaker", "s3"))

    vpc_id, subnet_ids, group_id = _network(ec2, opts)
    endpoint_ids = _endpoints(ec2, opts, vpc_id, subnet_ids, group_id)

    eks_role = _role(
        iam,
        f"{opts.eks_cluster_name}-cluster-role",
        TRUST["eks"],
        ["arn:aws:iam::aws:policy/AmazonEKSClusterPolicy"],
    )
    node_role = _role(
        iam,
        f"{opts.hyperpod_cluster_name}-nodes",
        TRUST["sagemaker"],
        ["arn:aws:iam::aws:policy/AmazonSageMakerClusterInstanceRolePolicy"],
    )
    bucket = f"sagemaker-{opts.hyperpod_cluster_name}-lifecycle"
    create_bucket: dict[str, Any] = {"Bucket": bucket}
    if opts.region != "us-east-1":
        create_bucket["CreateBucketConfiguration"] = {"LocationConstraint": opts.region}
    s3.create_bucket(**create_bucket)
    s3.put_object(Bucket=bucket, Key="lifecycle/on_create.sh", Body=b"#!/bin/bash\nset -euo pipefail\n")

    eks_cluster = eks.create_cluster(
        name=opts.eks_cluster_name,
        version=opts.kubernetes_version,
        roleArn=eks_role,
        resourcesVpcConfig={
            "subnetIds": subnet_ids,
            "securityGroupIds": [group_id],
            "endpointPublicAccess": opts.endpoint_public_access,
            "endpointPrivateAccess": opts.endpoint_private_access,
        },
        accessConfig={
            "authenticationMode": opts.authentication_mode,
            "bootstrapClusterCreatorAdminPermissions": True,
        },
    )["cluster"]
    for addon, version in opts.addons.items():
        eks.create_addon(
            clusterName=opts.eks_cluster_name,
            addonName=addon,
            **({"addonVersion": version} if version else {}),
        )
    _finish_addons(opts)

    tags = [{"Key": "SageMaker", "Value": "true"}] if opts.sagemaker_tag else []
    hyperpod_arn = sagemaker.create_cluster(
        ClusterName=opts.hyperpod_cluster_name,
        InstanceGroups=[
            {
                "InstanceGroupName": opts.instance_group,
                "InstanceType": opts.instance_type,
                "InstanceCount": opts.nodes,
                "LifeCycleConfig": {"SourceS3Uri": f"s3://{bucket}/lifecycle", "OnCreate": "on_create.sh"},
                "ExecutionRole": node_role,
                "ThreadsPerCore": 1,
            }
        ],
        VpcConfig={"SecurityGroupIds": [group_id], "Subnets": subnet_ids},
        Orchestrator={"Eks": {"ClusterArn": eks_cluster["arn"]}},
        NodeRecovery=opts.node_recovery,
        Tags=tags,
    )["ClusterArn"]
    hyperpod = sagemaker.describe_cluster(ClusterName=opts.hyperpod_cluster_name)
    node_ids = [
        n["InstanceId"]
        for n in sagemaker.list_cluster_nodes(ClusterName=opts.hyperpod_cluster_name)["ClusterNodeSummaries"]
    ]
    if opts.software_update_available:
        sagemaker_hyperpod.offer_software_update(
            opts.hyperpod_cluster_name, region=opts.region, account_id=opts.account_id
        )
    for (service, quota), value in opts.quotas.items():
        quotas.set_quota(service, quota, value, region=opts.region, account_id=opts.account_id)

    return World(
        options=opts,
        region=opts.region,
        account_id=opts.account_id,
        vpc_id=vpc_id,
        private_subnet_ids=subnet_ids,
        security_group_id=group_id,
        vpc_endpoint_ids=endpoint_ids,
        eks_cluster_name=opts.eks_cluster_name,
        eks_cluster_arn=eks_cluster["arn"],
        eks_role_arn=eks_role,
        hyperpod_cluster_name=opts.hyperpod_cluster_name,
        hyperpod_cluster_arn=hyperpod_arn,
        hyperpod_status=hyperpod["ClusterStatus"],
        execution_role_arn=node_role,
        node_ids=node_ids,
        lifecycle_s3_uri=f"s3://{bucket}/lifecycle",
    )
