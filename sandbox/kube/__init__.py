"""The sandbox's Kubernetes API server: see ``apiserver.py`` for the entry point,
``store/`` for the semantics modelled, ``auth.py`` for EKS-style authentication."""

from sandbox.kube.apiserver import FaultInjector, KubeApiServer
from sandbox.kube.auth import (
    AccessEntry,
    EksAccessEntryAuthorizer,
    EksTokenVerifier,
    StaticAuthorizer,
    install_presigned_sts_identity,
    make_eks_token,
)
from sandbox.kube.cluster import ClusterSeed, hyperpod_node, point_eks_cluster_at, seed_cluster
from sandbox.kube.store import ApiError, Store

__all__ = [
    "AccessEntry",
    "ApiError",
    "ClusterSeed",
    "EksAccessEntryAuthorizer",
    "EksTokenVerifier",
    "FaultInjector",
    "KubeApiServer",
    "StaticAuthorizer",
    "Store",
    "hyperpod_node",
    "install_presigned_sts_identity",
    "make_eks_token",
    "point_eks_cluster_at",
    "seed_cluster",
]
