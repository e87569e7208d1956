"""The sandbox's EKS cluster authenticates as EKS does: a token proves an IAM principal through
STS, and only a principal with an access entry on the cluster gets in (with the access
entries of the emulated account)."""

from __future__ import annotations

from collections.abc import Iterator

import boto3
import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from sandbox import Sandbox, SandboxConfig
from sandbox.kube.auth import make_eks_token
from sandbox.world import WorldOptions

pytestmark = pytest.mark.integration

ADMIN_POLICY = "arn:aws:eks::aws:cluster-access-policy/AmazonEKSClusterAdminPolicy"
VIEW_POLICY = "arn:aws:eks::aws:cluster-access-policy/AmazonEKSViewPolicy"


@pytest.fixture(scope="module")
def sb() -> Iterator[Sandbox]:
    config = SandboxConfig(server=True, world=WorldOptions(nodes=2), kube=True, pods=False)
    with Sandbox(config) as sandbox:
        yield sandbox


def _user(sb: Sandbox, name: str) -> tuple[str, boto3.session.Session]:
    iam = sb.client("iam")
    arn = iam.create_user(UserName=name)["User"]["Arn"]
    key = iam.create_access_key(UserName=name)["AccessKey"]
    session = boto3.session.Session(
        aws_access_key_id=key["AccessKeyId"],
        aws_secret_access_key=key["SecretAccessKey"],
        region_name=sb.config.region,
    )
    return arn, session


def _grant(sb: Sandbox, principal_arn: str, policy_arn: str) -> None:
    eks, cluster = sb.client("eks"), sb.world.eks_cluster_name
    eks.create_access_entry(clusterName=cluster, principalArn=principal_arn)
    eks.associate_access_policy(
        clusterName=cluster, principalArn=principal_arn, policyArn=policy_arn, accessScope={"type": "cluster"}
    )


def _core(sb: Sandbox, session: boto3.session.Session) -> client.CoreV1Api:
    token = make_eks_token(session, sb.world.eks_cluster_name)  # AWS_ENDPOINT_URL: the sandbox's STS
    # Connect the production way: endpoint and CA from describe_cluster, TLS verified.
    cluster = sb.client("eks").describe_cluster(name=sb.world.eks_cluster_name)["cluster"]
    assert cluster["endpoint"] == sb.kube.url
    return client.CoreV1Api(client.ApiClient(sb.kube.client_configuration(token)))


def test_a_principal_without_an_access_entry_is_refused_and_with_one_gets_in(sb):
    arn, session = _user(sb, "ml-engineer")
    core = _core(sb, session)
    with pytest.raises(ApiException) as refused:
        core.list_node()
    assert refused.value.status == 401  # EKS: no entry maps the principal to no Kubernetes user

    _grant(sb, arn, ADMIN_POLICY)
    nodes = _eventually_listed(lambda: core.list_node().items)
    assert len(nodes) == 2


def test_a_view_policy_reads_but_cannot_write(sb):
    arn, session = _user(sb, "viewer")
    _grant(sb, arn, VIEW_POLICY)
    core = _core(sb, session)
    # Kubernetes' "view" role, which this policy maps to: namespaced reads, no nodes, no writes.
    assert _eventually_listed(lambda: core.list_namespaced_config_map("default").items is not None)
    for forbidden in (
        core.list_node,
        lambda: core.create_namespaced_config_map(
            "default", client.V1ConfigMap(metadata=client.V1ObjectMeta(name="not-allowed"))
        ),
    ):
        with pytest.raises(ApiException) as denied:
            forbidden()
        assert denied.value.status == 403


def _eventually_listed(call):
    # The authorizer caches access-entry answers for a couple of seconds, as EKS propagates them.
    from sandbox.testing import eventually

    def listed():
        try:
            return call()
        except ApiException as exc:
            if exc.status in (401, 403):
                return None
            raise

    return eventually(listed, timeout=15, what="the access entry to take effect")
