"""How the control plane signs in to an EKS cluster's Kubernetes API, the production way: an EKS
bearer token for the caller's own AWS principal, and the cluster's CA (from EKS DescribeCluster)
as the file the ``kubernetes`` client reads.

The token is what ``aws eks get-token`` prints: ``k8s-aws-v1.`` + base64url of a presigned STS
GetCallerIdentity URL that signs the ``x-k8s-aws-id`` header (the cluster name), so the cluster sees
the caller's role and admits it through its access entry. EKS accepts it for 15 minutes; the
adapter renews it after 10.
"""

from __future__ import annotations

import base64
import hashlib
import os
import tempfile
import threading
from typing import Any

from hyperpod_control.adapters.aws import get_client, session_credentials
from hyperpod_control.exceptions import (
    AccessDeniedError,
)

TOKEN_PREFIX = "k8s-aws-v1."
CLUSTER_ID_HEADER = "x-k8s-aws-id"
TOKEN_LIFETIME_S = 10 * 60  # EKS honours a token for 15 minutes after its X-Amz-Date


def eks_token(cluster_name: str, region: str | None = None, session: Any = None) -> str:
    """An EKS bearer token for ``cluster_name``, signed with ``session``'s credentials (default: the
    process's, through the cached STS client of ``region``)."""
    from botocore.signers import RequestSigner

    if session is None:
        sts = get_client("sts", region)
        credentials = session_credentials()
    else:
        sts = session.client("sts", region_name=region)
        credentials = session.get_credentials()
    if credentials is None:
        raise AccessDeniedError(
            "no AWS credentials to sign an EKS token with.",
            remedy="run with credentials (the Lambda role, or AWS_PROFILE for hpctl).",
        )
    region = sts.meta.region_name
    signer = RequestSigner(
        sts.meta.service_model.service_id, region, "sts", "v4", credentials, sts.meta.events
    )
    # The STS endpoint botocore resolved (regional; AWS_ENDPOINT_URL in the sandbox): the cluster's
    # authenticator sends the presigned request to the host the token names.
    base = sts.meta.endpoint_url.rstrip("/")
    url = signer.generate_presigned_url(
        {
            "method": "GET",
            "url": f"{base}/?Action=GetCallerIdentity&Version=2011-06-15",
            "body": {},
            "headers": {CLUSTER_ID_HEADER: cluster_name},
            "context": {},
        },
        region_name=region,
        expires_in=60,
        operation_name="",
    )
    return TOKEN_PREFIX + base64.urlsafe_b64encode(url.encode()).decode().rstrip("=")


def ca_file(ca_data: str) -> str:
    """The CA bundle as a file (the kubernetes client takes a path), written once per CA."""
    digest = hashlib.sha256(ca_data.encode()).hexdigest()[:16]
    path = os.path.join(tempfile.gettempdir(), f"eks-ca-{digest}.crt")
    if not os.path.exists(path):
        tmp = f"{path}.{os.getpid()}.{threading.get_ident()}"
        with open(tmp, "wb") as fh:
            fh.write(base64.b64decode(ca_data))
        os.replace(tmp, path)
    return path
