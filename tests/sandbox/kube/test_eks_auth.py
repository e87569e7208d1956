"""EKS-style authentication: k8s-aws-v1 tokens checked against the sandbox's STS (moto in process),
the principal mapped through access entries; no entry -> 401, entry without permission -> 403."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator

import boto3
import pytest
from botocore.stub import Stubber
from kubernetes import client
from kubernetes.client.rest import ApiException
from moto import mock_aws

from sandbox.kube import (
    AccessEntry,
    EksAccessEntryAuthorizer,
    EksTokenVerifier,
    KubeApiServer,
    StaticAuthorizer,
    install_presigned_sts_identity,
    make_eks_token,
)
from sandbox.kube.auth import CallerIdentity, RequestAttributes, canonical_principal_arn

pytestmark = pytest.mark.integration

CLUSTER = "sandbox-eks"
ACCOUNT = "123456789012"
ADMIN_POLICY = "arn:aws:eks::aws:cluster-access-policy/AmazonEKSClusterAdminPolicy"
VIEW_POLICY = "arn:aws:eks::aws:cluster-access-policy/AmazonEKSViewPolicy"
TRUST = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"},
                "Action": "sts:AssumeRole",
            }
        ],
    }
)


def role_session(name: str) -> boto3.session.Session:
    iam, sts = boto3.client("iam", region_name="us-west-2"), boto3.client("sts", region_name="us-west-2")
    arn = iam.create_role(RoleName=name, AssumeRolePolicyDocument=TRUST)["Role"]["Arn"]
    creds = sts.assume_role(RoleArn=arn, RoleSessionName=f"{name}-session")["Credentials"]
    return boto3.session.Session(
        aws_access_key_id=creds["AccessKeyId"],
        aws_secret_access_key=creds["SecretAccessKey"],
        aws_session_token=creds["SessionToken"],
        region_name="us-west-2",
    )


def role_arn(name: str) -> str:
    return f"arn:aws:iam::{ACCOUNT}:role/{name}"


@pytest.fixture(scope="module")
def eks_server() -> Iterator[tuple[KubeApiServer, StaticAuthorizer]]:
    install_presigned_sts_identity()
    authorizer = StaticAuthorizer(
        {
            role_arn("admin-role"): AccessEntry(
                role_arn("admin-role"), policies=[(ADMIN_POLICY, {"type": "cluster"})]
            ),
            role_arn("viewer-role"): AccessEntry(
                role_arn("viewer-role"),
                policies=[(VIEW_POLICY, {"type": "namespace", "namespaces": ["default"]})],
            ),
            role_arn("rbac-role"): AccessEntry(
                role_arn("rbac-role"),
                username="lambda:{{SessionName}}",
                kubernetes_groups=["hyperpod-control"],
            ),
        }
    )
    with mock_aws():
        # the verifier sends the presigned URL with `requests`, which mock_aws intercepts
        server = KubeApiServer(verifier=EksTokenVerifier(CLUSTER), authorizer=authorizer).start()
        try:
            yield server, authorizer
        finally:
            server.stop()


def core_for(server: KubeApiServer, token: str) -> tuple[client.ApiClient, client.CoreV1Api]:
    api = client.ApiClient(server.client_configuration(token=token))
    return api, client.CoreV1Api(api)


def reason(exc: ApiException) -> str:
    return json.loads(exc.body)["reason"]


def test_principal_with_an_access_entry_works_and_without_one_is_refused(eks_server) -> None:
    server, _ = eks_server
    api, core = core_for(server, make_eks_token(role_session("admin-role"), CLUSTER))
    with api:
        assert "default" in [n.metadata.name for n in core.list_namespace().items]
        core.create_namespaced_config_map("default", {"metadata": {"name": "by-admin-role"}})
    api, core = core_for(server, make_eks_token(role_session("stranger-role"), CLUSTER))
    with api, pytest.raises(ApiException) as exc:
        core.list_namespace()
    # EKS answers a principal with no access entry "Unauthorized": it maps to no Kubernetes user
    assert exc.value.status == 401 and reason(exc.value) == "Unauthorized"


def test_entry_without_the_permission_gets_403(eks_server) -> None:
    server, _ = eks_server
    api, core = core_for(server, make_eks_token(role_session("viewer-role"), CLUSTER))
    with api:
        core.list_namespaced_config_map("default")  # view policy, namespace scope
        with pytest.raises(ApiException) as exc:
            core.create_namespaced_config_map("default", {"metadata": {"name": "nope"}})
        assert exc.value.status == 403 and reason(exc.value) == "Forbidden"
        body = json.loads(exc.value.body)
        assert "assumed-role/viewer-role/viewer-role-session" in body["message"]
        assert 'cannot create resource "configmaps"' in body["message"]
        with pytest.raises(ApiException) as exc:
            core.list_namespaced_config_map("kube-system")  # outside the policy's namespaces
        assert exc.value.status == 403


def test_rbac_grants_what_the_entry_groups_are_bound_to(eks_server) -> None:
    server, _ = eks_server
    store = server.store
    rbac = "rbac.authorization.k8s.io"
    store.create(
        store.rt(rbac, "roles"),
        "default",
        {
            "metadata": {"name": "pods-reader"},
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}],
        },
    )
    store.create(
        store.rt(rbac, "rolebindings"),
        "default",
        {
            "metadata": {"name": "control"},
            "roleRef": {"apiGroup": rbac, "kind": "Role", "name": "pods-reader"},
            "subjects": [{"kind": "Group", "name": "hyperpod-control", "apiGroup": rbac}],
        },
    )
    api, core = core_for(server, make_eks_token(role_session("rbac-role"), CLUSTER))
    with api:
        assert core.list_namespaced_pod("default").items == []
        with pytest.raises(ApiException) as exc:
            core.list_namespaced_config_map("default")
        assert exc.value.status == 403
        assert 'User "lambda:rbac-role-session"' in json.loads(exc.value.body)["message"]


def _forged(url: str) -> str:
    return "k8s-aws-v1." + base64.urlsafe_b64encode(url.encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    "token",
    [
        "k8s-aws-v1.!!!notbase64",
        _forged(
            "https://evil.example.com/?Action=GetCallerIdentity&X-Amz-SignedHeaders=host;x-k8s-aws-id"
            "&X-Amz-Date=20990101T000000Z"
        ),
        _forged(
            "https://sts.us-west-2.amazonaws.com/?Action=AssumeRole&X-Amz-SignedHeaders=host;x-k8s-aws-id"
        ),
        _forged(
            "https://sts.us-west-2.amazonaws.com/?Action=GetCallerIdentity&X-Amz-SignedHeaders=host"
            "&X-Amz-Date=20990101T000000Z"
        ),
        _forged(
            "https://sts.us-west-2.amazonaws.com/?Action=GetCallerIdentity&X-Amz-SignedHeaders=host;x-k8s-aws-id"
            "&X-Amz-Date=20200101T000000Z"
        ),  # older than 15 minutes
    ],
    ids=["not-base64", "foreign-host", "wrong-action", "cluster-id-unsigned", "expired"],
)
def test_malformed_or_expired_tokens_get_401(eks_server, token: str) -> None:
    server, _ = eks_server
    api, core = core_for(server, token)
    with api, pytest.raises(ApiException) as exc:
        core.list_namespace()
    assert exc.value.status == 401


@pytest.mark.parametrize(
    ("arn", "principal"),
    [
        ("arn:aws:sts::123456789012:assumed-role/Ctrl/lambda-123", "arn:aws:iam::123456789012:role/Ctrl"),
        ("arn:aws:iam::123456789012:role/path/Ctrl", "arn:aws:iam::123456789012:role/Ctrl"),
        ("arn:aws:iam::123456789012:user/alice", "arn:aws:iam::123456789012:user/alice"),
        ("arn:aws:iam::123456789012:root", "arn:aws:iam::123456789012:root"),
        ("arn:aws:sts::123456789012:user/moto", "arn:aws:iam::123456789012:user/moto"),
    ],
)
def test_sts_arns_map_to_access_entry_principals(arn: str, principal: str) -> None:
    assert canonical_principal_arn(arn) == principal


def test_eks_access_entry_authorizer_asks_eks_the_real_api() -> None:
    eks = boto3.client("eks", region_name="us-west-2", aws_access_key_id="x", aws_secret_access_key="x")
    arn = role_arn("ctrl")
    identity = CallerIdentity(f"arn:aws:sts::{ACCOUNT}:assumed-role/ctrl/s1", ACCOUNT, "AROA:s1")
    attrs = RequestAttributes("list", "", "pods", namespace="default", path="/api/v1/namespaces/default/pods")
    with Stubber(eks) as stub:
        stub.add_response("list_access_entries", {"accessEntries": []}, {"clusterName": CLUSTER})
        stub.add_response("list_access_entries", {"accessEntries": [arn]}, {"clusterName": CLUSTER})
        stub.add_response(
            "describe_access_entry",
            {
                "accessEntry": {
                    "principalArn": arn,
                    "username": "ctrl:{{SessionName}}",
                    "kubernetesGroups": ["g"],
                    "type": "STANDARD",
                }
            },
            {"clusterName": CLUSTER, "principalArn": arn},
        )
        stub.add_response(
            "list_associated_access_policies",
            {
                "clusterName": CLUSTER,
                "principalArn": arn,
                "associatedAccessPolicies": [{"policyArn": VIEW_POLICY, "accessScope": {"type": "cluster"}}],
            },
            {"clusterName": CLUSTER, "principalArn": arn},
        )
        authorizer = EksAccessEntryAuthorizer(eks, CLUSTER, cache_ttl=60)
        refused = authorizer.decide(identity, attrs)
        assert (refused.allowed, refused.status) == (False, 401)
        allowed = authorizer.decide(identity, attrs)  # the entry now exists: not cached while missing
        assert allowed.allowed and allowed.principal.username == "ctrl:s1" and "g" in allowed.principal.groups
        write = RequestAttributes("delete", "", "pods", namespace="default", name="p")
        denied = authorizer.decide(identity, write)  # cached entry, view policy only
        assert (denied.allowed, denied.status) == (False, 403)
        stub.assert_no_pending_responses()
