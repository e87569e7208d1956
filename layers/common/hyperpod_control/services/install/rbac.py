"""What the control plane's functions may do in a cluster: the read rules every tier shares, each
access tier's extra rules (``_TIER_RULES``), and the ClusterRole and binding of each tier.

A function that needs a new Kubernetes verb gets it here, in its tier, and nowhere else.
"""

from __future__ import annotations

from typing import Any

from hyperpod_control.models.install import (
    JOB_CRD,
    JOB_GROUP,
    JOB_PLURAL,
    MANAGED_BY,
    MANAGED_LABEL,
    tier_group,
)


def managed_labels() -> dict[str, str]:
    return {MANAGED_LABEL: MANAGED_BY}


#: What every tier may read: jobs, their pods and logs, nodes, and what preflight inspects (the
#: operator's and cert-manager's Deployments, the Pod Identity Agent, Kueue's configuration, the
#: PersistentVolumes naming FSx file systems, the CRDs).
_READ_RULES: list[dict[str, Any]] = [
    {"apiGroups": [JOB_GROUP], "resources": [JOB_PLURAL], "verbs": ["get", "list", "watch"]},
    {"apiGroups": [""], "resources": ["pods", "nodes"], "verbs": ["get", "list", "watch"]},
    {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},
    {"apiGroups": [""], "resources": ["configmaps", "persistentvolumes"], "verbs": ["get", "list"]},
    {"apiGroups": ["apps"], "resources": ["deployments", "daemonsets"], "verbs": ["get", "list"]},
    {
        "apiGroups": ["apiextensions.k8s.io"],
        "resources": ["customresourcedefinitions"],
        "verbs": ["get", "list"],
    },
]
_EVENTS_RULE = {"apiGroups": ["", "events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch"]}
#: What each tier may do beyond reading.
_TIER_RULES: dict[str, list[dict[str, Any]]] = {
    "reader": [],
    # node_health: cordon and label a faulty node, say why on it.
    "node-handler": [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["patch"]}, _EVENTS_RULE],
    # the serverless supervisor and the upgrade's drain/resubmit: run HyperPodPyTorchJobs, create
    # and remove their pods, reach the agents through the pod proxy, record events.
    "supervisor": [
        {
            "apiGroups": [JOB_GROUP],
            "resources": [JOB_PLURAL, f"{JOB_PLURAL}/status"],
            "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"],
        },
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["create", "delete"]},
        {"apiGroups": [""], "resources": ["pods/proxy"], "verbs": ["get", "create"]},
        # Each serverless job's NetworkPolicy (who may reach its agents' port), made with the pods.
        {
            "apiGroups": ["networking.k8s.io"],
            "resources": ["networkpolicies"],
            "verbs": ["get", "create", "patch"],
        },
        _EVENTS_RULE,
    ],
    # job_crd: own the one CRD (create cannot be limited to a name in RBAC; the other verbs are).
    "crd-owner": [
        {
            "apiGroups": ["apiextensions.k8s.io"],
            "resources": ["customresourcedefinitions"],
            "verbs": ["create"],
        },
        {
            "apiGroups": ["apiextensions.k8s.io"],
            "resources": ["customresourcedefinitions"],
            "resourceNames": [JOB_CRD],
            "verbs": ["update", "patch", "delete"],
        },
    ],
}


def tier_cluster_role(tier: str) -> dict[str, Any]:
    """Pure: the ClusterRole of one access tier: reading, plus what that tier's functions do."""
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": tier_group(tier), "labels": managed_labels()},
        "rules": [*_READ_RULES, *_TIER_RULES[tier]],
    }


def tier_binding(tier: str) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": tier_group(tier), "labels": managed_labels()},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": tier_group(tier)},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": tier_group(tier)}],
    }
