"""The production path: describe_cluster gives this server's endpoint and CA, an EKS token is
verified against moto's STS over HTTP (server mode), TLS verification stays on."""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator
from unittest import mock

import boto3
import pytest
from kubernetes import client
from moto.server import ThreadedMotoServer

from sandbox.kube import (
    AccessEntry,
    EksTokenVerifier,
    KubeApiServer,
    StaticAuthorizer,
    install_presigned_sts_identity,
    make_eks_token,
    point_eks_cluster_at,
)

pytestmark = pytest.mark.integration

CLUSTER = "hp-eks"
ADMIN_POLICY = "arn:aws:eks::aws:cluster-access-policy/AmazonEKSClusterAdminPolicy"


@pytest.fixture
def moto_url() -> Iterator[str]:
    install_presigned_sts_identity()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def test_describe_cluster_endpoint_and_ca_reach_the_server_with_an_eks_token(moto_url: str, tmp_path) -> None:
    session = boto3.session.Session(
        aws_access_key_id="AKIDEXAMPLE", aws_secret_access_key="x", region_name="us-west-2"
    )
    eks = session.client("eks", endpoint_url=moto_url)
    eks.create_cluster(
        name=CLUSTER,
        roleArn="arn:aws:iam::123456789012:role/eks",
        resourcesVpcConfig={"subnetIds": ["subnet-1"]},
    )
    caller = session.client("sts", endpoint_url=moto_url).get_caller_identity()["Arn"]
    principal = caller.replace(":sts::", ":iam::")
    authorizer = StaticAuthorizer({principal: AccessEntry(principal, policies=[(ADMIN_POLICY, {})])})
    kube = KubeApiServer(verifier=EksTokenVerifier(CLUSTER, sts_endpoint_url=moto_url), authorizer=authorizer)
    with kube:
        point_eks_cluster_at(kube, CLUSTER, "us-west-2")
        # what production code does with describe_cluster
        desc = eks.describe_cluster(name=CLUSTER)["cluster"]
        ca = tmp_path / "ca.crt"
        ca.write_bytes(base64.b64decode(desc["certificateAuthority"]["data"]))
        cfg = client.Configuration()
        cfg.host, cfg.ssl_ca_cert, cfg.verify_ssl = desc["endpoint"], str(ca), True
        with mock.patch.dict(os.environ, {"AWS_ENDPOINT_URL": moto_url}):  # STS: the sandbox's
            cfg.api_key = {"authorization": make_eks_token(session, CLUSTER)}
        cfg.api_key_prefix = {"authorization": "Bearer"}
        with client.ApiClient(cfg) as api:
            assert "kube-system" in [n.metadata.name for n in client.CoreV1Api(api).list_namespace().items]
        # a client that does not trust the sandbox CA is refused by TLS itself
        cfg.ssl_ca_cert = None
        with client.ApiClient(cfg) as api, pytest.raises(Exception, match="CERTIFICATE_VERIFY_FAILED"):
            client.CoreV1Api(api).list_namespace()
