"""Pod Identity associations through a plain boto3 client."""

from __future__ import annotations

import re

import pytest
from botocore.exceptions import ClientError

from tests.sandbox.aws_ext.conftest import ACCOUNT, code, make_eks

ROLE = f"arn:aws:iam::{ACCOUNT}:role/operator"


def test_create_describe_list_update_delete(aws):
    make_eks(aws)
    eks = aws.client("eks")

    created = eks.create_pod_identity_association(
        clusterName="eks1",
        namespace="aws-hyperpod",
        serviceAccount="hp-training-operator-controller-manager",
        roleArn=ROLE,
        tags={"team": "ml"},
    )["association"]

    assert re.fullmatch(r"a-[a-z0-9]{17}", created["associationId"])
    assert created["associationArn"] == (
        f"arn:aws:eks:us-west-2:{ACCOUNT}:podidentityassociation/eks1/{created['associationId']}"
    )
    assert created["tags"] == {"team": "ml"} and created["roleArn"] == ROLE
    eks.create_pod_identity_association(
        clusterName="eks1", namespace="other", serviceAccount="sa", roleArn=ROLE
    )
    described = eks.describe_pod_identity_association(
        clusterName="eks1", associationId=created["associationId"]
    )
    assert described["association"]["serviceAccount"] == "hp-training-operator-controller-manager"

    everything = eks.list_pod_identity_associations(clusterName="eks1")["associations"]
    by_namespace = eks.list_pod_identity_associations(clusterName="eks1", namespace="aws-hyperpod")[
        "associations"
    ]
    by_account = eks.list_pod_identity_associations(clusterName="eks1", serviceAccount="sa")["associations"]
    assert len(everything) == 2
    assert [a["associationId"] for a in by_namespace] == [created["associationId"]]
    assert [a["namespace"] for a in by_account] == ["other"]
    assert set(by_namespace[0]) == {
        "clusterName",
        "namespace",
        "serviceAccount",
        "associationArn",
        "associationId",
    }
    page = eks.list_pod_identity_associations(clusterName="eks1", maxResults=1)
    assert len(page["associations"]) == 1 and page["nextToken"]

    other_role = f"arn:aws:iam::{ACCOUNT}:role/other"
    updated = eks.update_pod_identity_association(
        clusterName="eks1", associationId=created["associationId"], roleArn=other_role
    )["association"]
    assert updated["roleArn"] == other_role

    deleted = eks.delete_pod_identity_association(clusterName="eks1", associationId=created["associationId"])
    assert deleted["association"]["associationId"] == created["associationId"]
    assert len(eks.list_pod_identity_associations(clusterName="eks1")["associations"]) == 1


def test_errors(aws):
    make_eks(aws)
    eks = aws.client("eks")
    with pytest.raises(ClientError) as no_cluster:
        eks.create_pod_identity_association(
            clusterName="nope", namespace="n", serviceAccount="s", roleArn=ROLE
        )
    assert code(no_cluster) == "ResourceNotFoundException"
    with pytest.raises(ClientError) as bad_role:
        eks.create_pod_identity_association(
            clusterName="eks1", namespace="n", serviceAccount="s", roleArn="role"
        )
    assert code(bad_role) == "InvalidParameterException" and "roleArn" in str(bad_role.value)

    eks.create_pod_identity_association(clusterName="eks1", namespace="n", serviceAccount="s", roleArn=ROLE)
    with pytest.raises(ClientError) as twice:
        eks.create_pod_identity_association(
            clusterName="eks1", namespace="n", serviceAccount="s", roleArn=ROLE
        )
    assert code(twice) == "ResourceInUseException"

    for call in (
        eks.describe_pod_identity_association,
        eks.delete_pod_identity_association,
    ):
        with pytest.raises(ClientError) as missing:
            call(clusterName="eks1", associationId="a-00000000000000000")
        assert code(missing) == "ResourceNotFoundException" and "associationId" in str(missing.value)
    with pytest.raises(ClientError) as missing_update:
        eks.update_pod_identity_association(
            clusterName="eks1", associationId="a-00000000000000000", roleArn=ROLE
        )
    assert code(missing_update) == "ResourceNotFoundException"


def test_an_add_on_owned_association_changes_only_through_the_add_on(aws):
    make_eks(aws)
    eks = aws.client("eks")
    eks.create_addon(
        clusterName="eks1",
        addonName="amazon-sagemaker-hyperpod-training-operator",
        addonVersion="v1.1.2-eksbuild.1",
        podIdentityAssociations=[
            {"serviceAccount": "hp-training-operator-controller-manager", "roleArn": ROLE}
        ],
    )
    [owned] = eks.list_pod_identity_associations(clusterName="eks1")["associations"]
    for call, kwargs in (
        (eks.update_pod_identity_association, {"roleArn": ROLE}),
        (eks.delete_pod_identity_association, {}),
    ):
        with pytest.raises(ClientError) as refused:
            call(clusterName="eks1", associationId=owned["associationId"], **kwargs)
        assert code(refused) == "InvalidRequestException" and "owned by" in str(refused.value)
    with pytest.raises(ClientError) as taken:
        eks.create_pod_identity_association(
            clusterName="eks1",
            namespace="aws-hyperpod",
            serviceAccount="hp-training-operator-controller-manager",
            roleArn=ROLE,
        )
    assert code(taken) == "ResourceInUseException"
