"""SageMaker HyperPod clusters orchestrated by EKS: create, nodes, reboot, replace, software update."""

from __future__ import annotations

import re

import pytest
from botocore.exceptions import ClientError

from sandbox.aws_ext import quotas, sagemaker_hyperpod
from tests.sandbox.aws_ext.conftest import ACCOUNT, code, make_eks, make_vpc

NODE_ID = re.compile(r"^i-[0-9a-f]{17}$")


def group(count=4, instance_type="ml.g5.8xlarge", name="workers"):
    return {
        "InstanceGroupName": name,
        "InstanceType": instance_type,
        "InstanceCount": count,
        "LifeCycleConfig": {"SourceS3Uri": "s3://sagemaker-lifecycle/x", "OnCreate": "on_create.sh"},
        "ExecutionRole": f"arn:aws:iam::{ACCOUNT}:role/nodes",
    }


def create(aws, name="hp", groups=None, subnet_cidr="10.0.0.0/20", **extra):
    _, subnet = make_vpc(aws, subnet=subnet_cidr)
    eks = make_eks(aws, subnetIds=[subnet])
    kwargs = {
        "ClusterName": name,
        "InstanceGroups": groups or [group()],
        "VpcConfig": {"SecurityGroupIds": ["sg-12345678"], "Subnets": [subnet]},
        "Orchestrator": {"Eks": {"ClusterArn": eks["arn"]}},
        **extra,
    }
    return aws.client("sagemaker").create_cluster(**kwargs)["ClusterArn"], eks["arn"], subnet


def nodes(sm, name="hp"):
    return {n["InstanceId"]: n for n in sm.list_cluster_nodes(ClusterName=name)["ClusterNodeSummaries"]}


def test_cluster_keeps_orchestrator_recovery_and_vpc(aws):
    arn, eks_arn, subnet = create(aws, NodeRecovery="None", Tags=[{"Key": "SageMaker", "Value": "true"}])
    sm = aws.client("sagemaker")

    assert re.fullmatch(rf"arn:aws:sagemaker:us-west-2:{ACCOUNT}:cluster/[a-z0-9]{{12}}", arn)
    by_name = sm.describe_cluster(ClusterName="hp")
    by_arn = sm.describe_cluster(ClusterName=arn)
    assert by_name["ClusterArn"] == by_arn["ClusterArn"] == arn
    assert by_name["ClusterStatus"] == "InService"
    assert by_name["Orchestrator"] == {"Eks": {"ClusterArn": eks_arn}}
    assert by_name["NodeRecovery"] == "None"
    assert by_name["VpcConfig"] == {"SecurityGroupIds": ["sg-12345678"], "Subnets": [subnet]}
    [details] = by_name["InstanceGroups"]
    assert (details["CurrentCount"], details["TargetCount"], details["ThreadsPerCore"]) == (4, 4, 1)
    assert sm.list_tags(ResourceArn=arn)["Tags"] == [{"Key": "SageMaker", "Value": "true"}]
    assert [c["ClusterName"] for c in sm.list_clusters()["ClusterSummaries"]] == ["hp"]

    found = nodes(sm)
    assert len(found) == 4 and all(NODE_ID.match(i) for i in found)
    node_id = next(iter(found))
    detail = sm.describe_cluster_node(ClusterName="hp", NodeId=node_id)["NodeDetails"]
    assert detail["InstanceStatus"]["Status"] == "Running"
    assert detail["PrivatePrimaryIp"].startswith("10.0.")
    assert detail["Placement"]["AvailabilityZone"] == "us-west-2a"
    enis = aws.client("ec2").describe_network_interfaces(Filters=[{"Name": "subnet-id", "Values": [subnet]}])
    assert len(enis["NetworkInterfaces"]) == 4  # one per node, in the customer's subnet


def test_create_errors(aws):
    create(aws)
    sm = aws.client("sagemaker")
    eks_arn = f"arn:aws:eks:us-west-2:{ACCOUNT}:cluster/eks1"
    vpc = {"SecurityGroupIds": ["sg-1"], "Subnets": ["subnet-1"]}
    cases = [
        ({"ClusterName": "hp", "InstanceGroups": [group()]}, "ResourceInUse", "already exists"),
        (
            {
                "ClusterName": "x",
                "InstanceGroups": [group()],
                "VpcConfig": vpc,
                "Orchestrator": {"Eks": {"ClusterArn": eks_arn.replace("eks1", "gone")}},
            },
            "ValidationException",
            "Orchestrator.Eks.ClusterArn",
        ),
        (
            {
                "ClusterName": "x",
                "InstanceGroups": [group()],
                "Orchestrator": {"Eks": {"ClusterArn": eks_arn}},
            },
            "ValidationException",
            "VpcConfig",
        ),
        (
            {"ClusterName": "x", "InstanceGroups": [group(instance_type="ml.z9.huge")]},
            "ValidationException",
            "instanceType",
        ),
        (
            {"ClusterName": "x", "InstanceGroups": [group(count=13)]},
            "ResourceLimitExceeded",
            "for cluster usage",
        ),
    ]
    for kwargs, expected, text in cases:
        with pytest.raises(ClientError) as refused:
            sm.create_cluster(**kwargs)
        assert code(refused) == expected and text in str(refused.value), kwargs
    with pytest.raises(ClientError) as missing:
        sm.describe_cluster(ClusterName="nope")
    assert code(missing) == "ResourceNotFound" and "Could not find cluster 'nope'." in str(missing.value)
    with pytest.raises(ClientError) as missing_node:
        sm.describe_cluster_node(ClusterName="hp", NodeId="i-0123456789abcdef0")
    assert code(missing_node) == "ResourceNotFound" and "i-0123456789abcdef0" in str(missing_node.value)


def test_quota_message_names_the_limit_and_the_usage(aws):
    quotas.set_quota("sagemaker", "ml.p5.48xlarge for cluster usage", 2)
    with pytest.raises(ClientError) as refused:
        create(aws, groups=[group(count=3, instance_type="ml.p5.48xlarge")])
    assert code(refused) == "ResourceLimitExceeded"
    assert (
        "The account-level service limit 'ml.p5.48xlarge for cluster usage' is 2 Instances, with current "
        "utilization of 0 Instances and a request delta of 3 Instances."
    ) in str(refused.value)


def test_reboot_and_replace_change_node_status_over_time(aws):
    create(aws)
    sm = aws.client("sagemaker")
    first, second, third, _ = nodes(sm)

    rebooted = sm.batch_reboot_cluster_nodes(ClusterName="hp", NodeIds=[first, "i-0123456789abcdef0"])

    assert rebooted["Successful"] == [first]
    assert rebooted["Failed"] == [
        {
            "NodeId": "i-0123456789abcdef0",
            "ErrorCode": "InstanceIdNotFound",
            "Message": rebooted["Failed"][0]["Message"],
        }
    ]
    assert nodes(sm)[first]["InstanceStatus"]["Status"] == "Pending"
    in_use = sm.batch_replace_cluster_nodes(ClusterName="hp", NodeIds=[first])["Failed"]
    assert in_use[0]["ErrorCode"] == "InstanceIdInUse"
    aws.clock.advance(120)
    assert nodes(sm)[first]["InstanceStatus"]["Status"] == "Running"

    replaced = sm.batch_replace_cluster_nodes(ClusterName="hp", NodeIds=[second])
    assert replaced["Successful"] == [second]
    assert nodes(sm)[second]["InstanceStatus"]["Status"] == "ShuttingDown"
    aws.clock.advance(300)
    now = nodes(sm)
    assert second not in now and len(now) == 4
    [fresh] = set(now) - {first, third} - {n for n in now if now[n]["InstanceStatus"]["Status"] == "Running"}
    assert now[fresh]["InstanceStatus"]["Status"] == "Pending" and NODE_ID.match(fresh)
    aws.clock.advance(300)
    assert nodes(sm)[fresh]["InstanceStatus"]["Status"] == "Running"
    assert sm.describe_cluster(ClusterName="hp")["InstanceGroups"][0]["CurrentCount"] == 4


def test_batch_errors(aws):
    create(aws)
    sm = aws.client("sagemaker")
    with pytest.raises(ClientError) as too_many:
        sm.batch_reboot_cluster_nodes(ClusterName="hp", NodeIds=[f"i-{n:017x}" for n in range(26)])
    assert code(too_many) == "ValidationException" and "less than or equal to 25" in str(too_many.value)
    with pytest.raises(ClientError) as no_cluster:
        sm.batch_replace_cluster_nodes(ClusterName="nope", NodeIds=["i-0123456789abcdef0"])
    assert code(no_cluster) == "ResourceNotFound"
    with pytest.raises(ClientError) as nothing:
        sm.batch_reboot_cluster_nodes(ClusterName="hp")
    assert code(nothing) == "ValidationException" and "NodeIds" in str(nothing.value)


def test_node_failure_and_automatic_recovery(aws):
    create(aws)
    sm = aws.client("sagemaker")
    victim = next(iter(nodes(sm)))
    sagemaker_hyperpod.fail_node("hp", victim, repair=None)
    failed = nodes(sm)[victim]["InstanceStatus"]
    assert failed["Status"] == "Failure" and "NvidiaErrorTerminate" in failed["Message"]

    sagemaker_hyperpod.fail_node("hp", victim)  # NodeRecovery Automatic: HyperPod replaces it
    assert nodes(sm)[victim]["InstanceStatus"]["Status"] == "ShuttingDown"
    aws.clock.advance(600)
    after = nodes(sm)
    assert victim not in after and all(n["InstanceStatus"]["Status"] == "Running" for n in after.values())


def test_update_cluster_software(aws):
    arn, _, _ = create(aws)
    sm = aws.client("sagemaker")
    sagemaker_hyperpod.offer_software_update("hp")
    assert {n["ImageVersionStatus"] for n in nodes(sm).values()} == {"UpdateAvailable"}
    with pytest.raises(ClientError) as no_group:
        sm.update_cluster_software(ClusterName="hp", InstanceGroups=[{"InstanceGroupName": "nope"}])
    assert code(no_group) == "ValidationException"

    assert sm.update_cluster_software(ClusterName="hp")["ClusterArn"] == arn
    assert sm.describe_cluster(ClusterName="hp")["ClusterStatus"] == "SystemUpdating"
    assert {n["InstanceStatus"]["Status"] for n in nodes(sm).values()} == {"SystemUpdating"}
    with pytest.raises(ClientError) as busy:
        sm.update_cluster_software(ClusterName="hp")
    assert code(busy) == "ConflictException"
    aws.clock.advance(900)
    assert sm.describe_cluster(ClusterName="hp")["ClusterStatus"] == "InService"
    after = list(nodes(sm).values())
    assert {n["ImageVersionStatus"] for n in after} == {"UpToDate"}
    assert all(n["LastSoftwareUpdateTime"] for n in after)
    assert {n["CurrentImageReleaseVersion"] for n in after} == {sagemaker_hyperpod.NEWER_IMAGE}


def test_provisioning_fails_without_addresses_or_enis(aws):
    create(
        aws, name="big", groups=[group(count=1, instance_type="ml.p5.48xlarge")], subnet_cidr="10.0.0.0/28"
    )
    sm = aws.client("sagemaker")
    failed = sm.describe_cluster(ClusterName="big")
    assert failed["ClusterStatus"] == "Failed"
    assert (
        "Insufficient free IP addresses" in failed["FailureMessage"] and "need 81" in failed["FailureMessage"]
    )

    quotas.set_quota("vpc", "L-DF5E4CA3", 2)
    _, subnet = make_vpc(aws, cidr="10.1.0.0/16", subnet="10.1.0.0/20")
    sm.create_cluster(
        ClusterName="enis",
        InstanceGroups=[group(count=3)],
        VpcConfig={"SecurityGroupIds": ["sg-1"], "Subnets": [subnet]},
    )
    enis = sm.describe_cluster(ClusterName="enis")
    assert enis["ClusterStatus"] == "Failed" and "L-DF5E4CA3" in enis["FailureMessage"]


def test_delete_nodes_and_cluster(aws):
    create(aws)
    sm = aws.client("sagemaker")
    victim = next(iter(nodes(sm)))
    deleted = sm.batch_delete_cluster_nodes(ClusterName="hp", NodeIds=[victim, "i-0123456789abcdef0"])
    assert deleted["Successful"] == [victim] and deleted["Failed"][0]["Code"] == "NodeIdNotFound"
    assert sm.describe_cluster(ClusterName="hp")["InstanceGroups"][0]["TargetCount"] == 3
    sm.delete_cluster(ClusterName="hp")
    assert sm.list_clusters()["ClusterSummaries"] == []
