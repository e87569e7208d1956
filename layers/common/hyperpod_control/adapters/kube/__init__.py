"""The Kubernetes API of an EKS cluster, reached the production way: endpoint and CA from EKS
DescribeCluster, an EKS bearer token for the caller's own AWS principal, TLS verified.

- ``adapter``: ``KubeAdapter``, one cluster's API (reads, apply, deletes, pods, the job watch, the
  pod proxy);
- ``auth``: the EKS token and the CA file;
- ``errors``: Kubernetes' failures as the project's exceptions (``map_api_exception``);
- ``apply``: the pure comparisons behind apply.

This package re-exports the names its callers import from ``hyperpod_control.adapters.kube``.
"""

from __future__ import annotations

from hyperpod_control.adapters.kube.adapter import CONNECTION_POOL_SIZE, KubeAdapter
from hyperpod_control.adapters.kube.apply import contains, differs, merged_for_replace
from hyperpod_control.adapters.kube.auth import eks_token
from hyperpod_control.adapters.kube.errors import map_api_exception

__all__ = [
    "CONNECTION_POOL_SIZE",
    "KubeAdapter",
    "contains",
    "differs",
    "eks_token",
    "map_api_exception",
    "merged_for_replace",
]
