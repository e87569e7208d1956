"""Service Quotas for SageMaker cluster usage and the VPC ENI quota; AWS managed IAM policies."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError

from sandbox.aws_ext import iam_policies, quotas
from tests.sandbox.aws_ext.conftest import ACCOUNT, code

P5 = "ml.p5.48xlarge for cluster usage"


def find(client, name, operation="list_service_quotas"):
    pages = client.get_paginator(operation).paginate(ServiceCode="sagemaker")
    return next((q for page in pages for q in page["Quotas"] if q["QuotaName"] == name), None)


def test_sagemaker_cluster_usage_quotas_and_applied_values(aws):
    sq = aws.client("service-quotas")
    # As AWS documents: a quota with no applied value is "not retrieved" by the applied-value calls.
    assert find(sq, P5) is None
    listed = find(sq, P5, "list_aws_default_service_quotas")
    assert listed["ServiceCode"] == "sagemaker" and listed["QuotaCode"].startswith("L-")
    with pytest.raises(ClientError) as unapplied:
        sq.get_service_quota(ServiceCode="sagemaker", QuotaCode=listed["QuotaCode"])
    assert unapplied.value.response["Error"]["Code"] == "NoSuchResourceException"
    first = sq.list_aws_default_service_quotas(ServiceCode="sagemaker", MaxResults=10)
    assert len(first["Quotas"]) == 10 and first["NextToken"]

    quotas.set_quota("sagemaker", P5, 4)
    applied_listed = find(sq, P5)
    assert (
        applied_listed["QuotaArn"]
        == f"arn:aws:servicequotas:us-west-2:{ACCOUNT}:sagemaker/{listed['QuotaCode']}"
    )

    applied = sq.get_service_quota(ServiceCode="sagemaker", QuotaCode=listed["QuotaCode"])["Quota"]
    default = sq.get_aws_default_service_quota(ServiceCode="sagemaker", QuotaCode=listed["QuotaCode"])[
        "Quota"
    ]
    assert applied["Value"] == 4.0 and applied["QuotaName"] == P5
    assert default["Value"] == quotas.DEFAULT_CLUSTER_USAGE
    assert default["QuotaArn"] == f"arn:aws:servicequotas:us-west-2::sagemaker/{listed['QuotaCode']}"
    pages = sq.get_paginator("list_aws_default_service_quotas").paginate(ServiceCode="sagemaker")
    names = {q["QuotaName"] for page in pages for q in page["Quotas"]}
    assert names >= {P5, quotas.PER_CLUSTER_NAME, quotas.TOTAL_NAME}


def test_vpc_eni_quota(aws):
    sq = aws.client("service-quotas")
    with pytest.raises(ClientError) as unapplied:
        sq.get_service_quota(ServiceCode="vpc", QuotaCode="L-DF5E4CA3")
    assert unapplied.value.response["Error"]["Code"] == "NoSuchResourceException"
    eni = sq.get_aws_default_service_quota(ServiceCode="vpc", QuotaCode="L-DF5E4CA3")["Quota"]
    assert (eni["QuotaName"], eni["Value"]) == ("Network interfaces per Region", 5000.0)
    quotas.set_quota("vpc", "L-DF5E4CA3", 40)
    assert sq.get_service_quota(ServiceCode="vpc", QuotaCode="L-DF5E4CA3")["Quota"]["Value"] == 40.0
    assert (
        sq.get_aws_default_service_quota(ServiceCode="vpc", QuotaCode="L-DF5E4CA3")["Quota"]["Value"]
        == 5000.0
    )


def test_quota_errors(aws):
    sq = aws.client("service-quotas")
    with pytest.raises(ClientError) as no_service:
        sq.get_service_quota(ServiceCode="eks", QuotaCode="L-1194D53C")
    assert code(no_service) == "NoSuchResourceException"
    with pytest.raises(ClientError) as no_quota:
        sq.get_service_quota(ServiceCode="sagemaker", QuotaCode="L-00000000")
    assert code(no_quota) == "NoSuchResourceException" and "QuotaCode" in str(no_quota.value)
    with pytest.raises(KeyError):
        quotas.set_quota("sagemaker", "no such quota", 1)


def test_managed_policies_attach(aws):
    iam = aws.client("iam")
    arn = "arn:aws:iam::aws:policy/AmazonSageMakerHyperPodTrainingOperatorAccess"
    with pytest.raises(ClientError) as before:
        iam.get_policy(PolicyArn=arn)
    assert code(before) == "NoSuchEntity"
    assert arn in iam_policies.ensure()
    iam.create_role(RoleName="operator", AssumeRolePolicyDocument="{}")
    iam.attach_role_policy(RoleName="operator", PolicyArn=arn)
    attached = iam.list_attached_role_policies(RoleName="operator")["AttachedPolicies"]
    assert attached == [{"PolicyName": "AmazonSageMakerHyperPodTrainingOperatorAccess", "PolicyArn": arn}]
    document = iam.get_policy_version(
        PolicyArn=arn, VersionId=iam.get_policy(PolicyArn=arn)["Policy"]["DefaultVersionId"]
    )
    assert document["PolicyVersion"]["Document"]["Statement"]
