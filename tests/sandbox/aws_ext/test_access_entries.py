"""EKS access entries, access policies, accessConfig and update_cluster_config through boto3."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError

from tests.sandbox.aws_ext.conftest import ACCOUNT, code, make_eks, make_vpc

LAMBDA_ROLE = f"arn:aws:iam::{ACCOUNT}:role/service-role/control-plane-lambda"
VIEW = "arn:aws:eks::aws:cluster-access-policy/AmazonEKSViewPolicy"
ADMIN = "arn:aws:eks::aws:cluster-access-policy/AmazonEKSClusterAdminPolicy"


def test_cluster_keeps_access_config_and_endpoint_settings(aws):
    _, subnet = make_vpc(aws)
    eks = aws.client("eks")
    make_eks(
        aws,
        name="api",
        mode="API",
        subnetIds=[subnet],
        endpointPrivateAccess=True,
        endpointPublicAccess=False,
    )
    make_eks(aws, name="legacy", mode=None)

    api = eks.describe_cluster(name="api")["cluster"]
    legacy = eks.describe_cluster(name="legacy")["cluster"]

    assert api["accessConfig"] == {
        "bootstrapClusterCreatorAdminPermissions": True,
        "authenticationMode": "API",
    }
    assert legacy["accessConfig"]["authenticationMode"] == "CONFIG_MAP"
    vpc = api["resourcesVpcConfig"]
    assert (vpc["endpointPublicAccess"], vpc["endpointPrivateAccess"], vpc["publicAccessCidrs"]) == (
        False,
        True,
        [],
    )
    assert vpc["vpcId"].startswith("vpc-")
    assert legacy["resourcesVpcConfig"]["endpointPublicAccess"] is True
    # The creator gets an admin entry when the cluster starts in an API mode.
    assert eks.list_access_entries(clusterName="api")["accessEntries"] == [
        f"arn:aws:iam::{ACCOUNT}:user/moto"
    ]


def test_access_entry_lifecycle(aws):
    make_eks(aws)
    eks = aws.client("eks")

    entry = eks.create_access_entry(clusterName="eks1", principalArn=LAMBDA_ROLE, kubernetesGroups=["hpctl"])[
        "accessEntry"
    ]

    assert entry["type"] == "STANDARD" and entry["kubernetesGroups"] == ["hpctl"]
    assert (
        entry["username"] == f"arn:aws:sts::{ACCOUNT}:assumed-role/control-plane-lambda/{{{{SessionName}}}}"
    )
    assert entry["accessEntryArn"].startswith(
        f"arn:aws:eks:us-west-2:{ACCOUNT}:access-entry/eks1/role/{ACCOUNT}/control-plane-lambda/"
    )
    described = eks.describe_access_entry(clusterName="eks1", principalArn=LAMBDA_ROLE)["accessEntry"]
    assert described["accessEntryArn"] == entry["accessEntryArn"]
    assert LAMBDA_ROLE in eks.list_access_entries(clusterName="eks1")["accessEntries"]

    updated = eks.update_access_entry(
        clusterName="eks1", principalArn=LAMBDA_ROLE, kubernetesGroups=["a", "b"]
    )
    assert updated["accessEntry"]["kubernetesGroups"] == ["a", "b"]

    associated = eks.associate_access_policy(
        clusterName="eks1",
        principalArn=LAMBDA_ROLE,
        policyArn=VIEW,
        accessScope={"type": "namespace", "namespaces": ["hyperpod"]},
    )
    assert associated["associatedAccessPolicy"]["accessScope"] == {
        "type": "namespace",
        "namespaces": ["hyperpod"],
    }
    listed = eks.list_associated_access_policies(clusterName="eks1", principalArn=LAMBDA_ROLE)
    assert [p["policyArn"] for p in listed["associatedAccessPolicies"]] == [VIEW]
    assert eks.list_access_entries(clusterName="eks1", associatedPolicyArn=VIEW)["accessEntries"] == [
        LAMBDA_ROLE
    ]
    assert (
        LAMBDA_ROLE
        not in eks.list_access_entries(clusterName="eks1", associatedPolicyArn=ADMIN)["accessEntries"]
    )

    eks.disassociate_access_policy(clusterName="eks1", principalArn=LAMBDA_ROLE, policyArn=VIEW)
    assert (
        eks.list_associated_access_policies(clusterName="eks1", principalArn=LAMBDA_ROLE)[
            "associatedAccessPolicies"
        ]
        == []
    )
    eks.delete_access_entry(clusterName="eks1", principalArn=LAMBDA_ROLE)
    assert LAMBDA_ROLE not in eks.list_access_entries(clusterName="eks1")["accessEntries"]

    policies = eks.list_access_policies()["accessPolicies"]
    assert {"name": "AmazonEKSClusterAdminPolicy", "arn": ADMIN} in policies


def test_access_entry_errors(aws):
    make_eks(aws)
    make_eks(aws, name="legacy", mode="CONFIG_MAP")
    eks = aws.client("eks")
    with pytest.raises(ClientError) as config_map:
        eks.create_access_entry(clusterName="legacy", principalArn=LAMBDA_ROLE)
    assert code(config_map) == "InvalidRequestException"
    assert "authentication mode must be set to one of [API, API_AND_CONFIG_MAP]" in str(config_map.value)
    with pytest.raises(ClientError) as bad_principal:
        eks.create_access_entry(clusterName="eks1", principalArn="arn:aws:s3:::bucket")
    assert code(bad_principal) == "InvalidParameterException" and "principalArn" in str(bad_principal.value)
    with pytest.raises(ClientError) as system_group:
        eks.create_access_entry(
            clusterName="eks1", principalArn=LAMBDA_ROLE, kubernetesGroups=["system:masters"]
        )
    assert code(system_group) == "InvalidParameterException" and "kubernetesGroups" in str(system_group.value)

    eks.create_access_entry(clusterName="eks1", principalArn=LAMBDA_ROLE)
    with pytest.raises(ClientError) as twice:
        eks.create_access_entry(clusterName="eks1", principalArn=LAMBDA_ROLE)
    assert code(twice) == "ResourceInUseException"
    assert "already in use on this cluster" in str(twice.value)

    with pytest.raises(ClientError) as unknown_policy:
        eks.associate_access_policy(
            clusterName="eks1", principalArn=LAMBDA_ROLE, policyArn="arn:x", accessScope={"type": "cluster"}
        )
    assert code(unknown_policy) == "InvalidParameterException" and "policyArn" in str(unknown_policy.value)
    with pytest.raises(ClientError) as no_namespaces:
        eks.associate_access_policy(
            clusterName="eks1", principalArn=LAMBDA_ROLE, policyArn=VIEW, accessScope={"type": "namespace"}
        )
    assert code(no_namespaces) == "InvalidParameterException" and "namespaces" in str(no_namespaces.value)
    with pytest.raises(ClientError) as not_associated:
        eks.disassociate_access_policy(clusterName="eks1", principalArn=LAMBDA_ROLE, policyArn=VIEW)
    assert code(not_associated) == "ResourceNotFoundException"

    other = f"arn:aws:iam::{ACCOUNT}:user/nobody"
    for call, kwargs in (
        (eks.describe_access_entry, {}),
        (eks.delete_access_entry, {}),
        (eks.list_associated_access_policies, {}),
        (eks.associate_access_policy, {"policyArn": VIEW, "accessScope": {"type": "cluster"}}),
    ):
        with pytest.raises(ClientError) as missing:
            call(clusterName="eks1", principalArn=other, **kwargs)
        assert code(missing) == "ResourceNotFoundException"
        assert "The specified principalArn could not be found" in str(missing.value)


def test_update_cluster_config_moves_auth_mode_forward_after_the_delay(aws):
    make_eks(aws, mode="CONFIG_MAP")
    eks = aws.client("eks")

    update = eks.update_cluster_config(
        name="eks1", accessConfig={"authenticationMode": "API_AND_CONFIG_MAP"}
    )["update"]

    assert (update["type"], update["status"]) == ("AccessConfigUpdate", "InProgress")
    assert update["params"] == [{"type": "AuthenticationMode", "value": "API_AND_CONFIG_MAP"}]
    cluster = eks.describe_cluster(name="eks1")["cluster"]
    assert cluster["status"] == "UPDATING" and cluster["accessConfig"]["authenticationMode"] == "CONFIG_MAP"
    with pytest.raises(ClientError) as busy:
        eks.update_cluster_config(name="eks1", accessConfig={"authenticationMode": "API"})
    assert code(busy) == "ResourceInUseException"
    aws.clock.advance(60)
    cluster = eks.describe_cluster(name="eks1")["cluster"]
    assert (
        cluster["status"] == "ACTIVE"
        and cluster["accessConfig"]["authenticationMode"] == "API_AND_CONFIG_MAP"
    )
    assert eks.describe_update(name="eks1", updateId=update["id"])["update"]["status"] == "Successful"

    with pytest.raises(ClientError) as backwards:
        eks.update_cluster_config(name="eks1", accessConfig={"authenticationMode": "CONFIG_MAP"})
    assert code(backwards) == "InvalidParameterException" and "authenticationMode" in str(backwards.value)


def test_update_cluster_config_endpoint_access(aws):
    make_eks(aws)
    eks = aws.client("eks")
    with pytest.raises(ClientError) as neither:
        eks.update_cluster_config(
            name="eks1", resourcesVpcConfig={"endpointPublicAccess": False, "endpointPrivateAccess": False}
        )
    assert code(neither) == "InvalidParameterException" and "endpointPrivateAccess" in str(neither.value)
    with pytest.raises(ClientError) as missing:
        eks.update_cluster_config(name="nope", resourcesVpcConfig={"endpointPrivateAccess": True})
    assert code(missing) == "ResourceNotFoundException"

    update = eks.update_cluster_config(
        name="eks1", resourcesVpcConfig={"endpointPublicAccess": False, "endpointPrivateAccess": True}
    )["update"]
    assert update["type"] == "EndpointAccessUpdate"
    aws.clock.advance(60)
    vpc = eks.describe_cluster(name="eks1")["cluster"]["resourcesVpcConfig"]
    assert (vpc["endpointPublicAccess"], vpc["endpointPrivateAccess"]) == (False, True)
