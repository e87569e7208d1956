"""Who the control plane is in a cluster and what it may do there: its functions' IAM roles by
access tier, their EKS access entries carrying each tier's Kubernetes group, the tiers' RBAC, and
the installer's own short-lived cluster-admin while it writes that RBAC.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from hyperpod_control.adapters.eks import EksAdapter
from hyperpod_control.adapters.kube import KubeAdapter
from hyperpod_control.exceptions import (
    AccessDeniedError,
    KubernetesAccessPendingError,
    PermanentError,
)
from hyperpod_control.models.install import (
    ACCESS_TIERS,
    CONTROL_PLANE_GROUP,
    MANAGED_BY,
    AccessOutcome,
    ClusterRef,
    RemoveAccessOutcome,
    tier_group,
)
from hyperpod_control.models.names import MANAGED_TAG
from hyperpod_control.services.install.rbac import tier_binding, tier_cluster_role
from hyperpod_control.settings import kubernetes_client_functions


def _ours(group: str) -> bool:
    return group == CONTROL_PLANE_GROUP or group.startswith(f"{CONTROL_PLANE_GROUP}:")


def decide_entry(existing: dict[str, Any] | None, tier: str) -> tuple[str, list[str]]:
    """Pure: (``create`` | ``update`` | ``unchanged``, groups) for a control-plane principal of
    ``tier``: its entry carries that tier's group and no other of the control plane's."""
    group = tier_group(tier)
    if existing is None:
        return "create", [group]
    current = list(existing.get("kubernetesGroups") or [])
    wanted = [g for g in current if not _ours(g)] + [group]
    if sorted(current) == sorted(wanted):
        return "unchanged", current
    if existing.get("type", "STANDARD") != "STANDARD":
        raise PermanentError(
            f"access entry {existing.get('principalArn')} is of type {existing.get('type')}; it cannot carry "
            "Kubernetes groups.",
            remedy="delete it, then run the install again.",
        )
    return "update", wanted


CLUSTER_ADMIN_POLICY = "arn:aws:eks::aws:cluster-access-policy/AmazonEKSClusterAdminPolicy"


def canonical_principal(arn: str) -> str:
    """Pure: the IAM principal an STS caller ARN stands for, as access entries name it:
    ``arn:aws:sts::1:assumed-role/R/session`` -> ``arn:aws:iam::1:role/R``; a user stays a user
    (some STS emulations answer ``sts::...:user/x``; IAM spells it ``iam::``)."""
    match = re.match(r"^arn:(aws[a-z-]*):(?:iam|sts)::(\d{12}):([a-z-]+)/(.+)$", arn)
    if not match:
        return arn
    partition, account, kind, rest = match.groups()
    if kind == "assumed-role":
        return f"arn:{partition}:iam::{account}:role/{rest.split('/')[0]}"
    if kind in ("role", "user"):
        return f"arn:{partition}:iam::{account}:{kind}/{rest}"
    return arn


@contextmanager
def installer_admin(
    cluster: ClusterRef, principal: str, eks: EksAdapter, *, keep: bool = True
) -> Iterator[None]:
    """Cluster-admin for the installer's own role only while it writes or deletes RBAC (Kubernetes'
    escalation rule: it must hold what it grants), removed again however the block ends. Its entry
    stays, without any policy or group, unless ``keep`` is False (removing the control plane's
    access: then the entry goes too, when the block succeeded)."""
    name = cluster.eks_cluster_name
    if eks.describe_access_entry(name, principal) is None:
        eks.create_access_entry(name, principal, [], {MANAGED_TAG: MANAGED_BY})
    eks.associate_access_policy(name, principal, CLUSTER_ADMIN_POLICY)
    try:
        yield
    except AccessDeniedError as exc:
        # EKS applies a new association within seconds: a 403 now is that delay, retried.
        raise KubernetesAccessPendingError(
            f"the installer's cluster-admin access on {name} is not applied yet: {exc}"
        ) from exc
    else:
        if not keep:
            eks.delete_access_entry(name, principal)  # its policy goes with it
    finally:
        eks.disassociate_access_policy(name, principal, CLUSTER_ADMIN_POLICY)


def ensure_access(
    cluster: ClusterRef, principals: dict[str, list[str]], eks: EksAdapter, kube: KubeAdapter
) -> AccessOutcome:
    """Each tier's principals get their tier's group; each tier its ClusterRole and binding. The
    caller holds cluster-admin meanwhile (``installer_admin``)."""
    created: list[str] = []
    for tier, members in principals.items():
        for principal in members:
            existing = eks.describe_access_entry(cluster.eks_cluster_name, principal)
            action, groups = decide_entry(existing, tier)
            if action == "create":
                eks.create_access_entry(
                    cluster.eks_cluster_name, principal, groups, {MANAGED_TAG: MANAGED_BY}
                )
                created.append(principal)
            elif action == "update":
                eks.update_access_entry(cluster.eks_cluster_name, principal, groups)
    for tier in ACCESS_TIERS:
        kube.apply_cluster_role(tier_cluster_role(tier))
        kube.apply_cluster_role_binding(tier_binding(tier))
    # The single ClusterRole every function shared before the tiers: gone with its power.
    kube.delete_cluster_role_binding(CONTROL_PLANE_GROUP)
    kube.delete_cluster_role(CONTROL_PLANE_GROUP)
    return AccessOutcome(
        principals=[p for members in principals.values() for p in members],
        created=created,
        cluster_role=",".join(tier_group(t) for t in ACCESS_TIERS),
        binding=",".join(tier_group(t) for t in ACCESS_TIERS),
    )


def remove_access(
    cluster: ClusterRef, principals: dict[str, list[str]], eks: EksAdapter, kube: KubeAdapter
) -> RemoveAccessOutcome:
    removed: list[str] = []
    for principal in [p for members in principals.values() for p in members]:
        existing = eks.describe_access_entry(cluster.eks_cluster_name, principal)
        if existing is None:
            continue
        groups = [g for g in existing.get("kubernetesGroups") or [] if not _ours(g)]
        if groups == list(existing.get("kubernetesGroups") or []):
            continue
        if (existing.get("tags") or {}).get(MANAGED_TAG) == MANAGED_BY or not (
            groups or eks.list_associated_access_policies(cluster.eks_cluster_name, principal)
        ):
            eks.delete_access_entry(cluster.eks_cluster_name, principal)
        else:  # someone else's entry that we only added our group to
            eks.update_access_entry(cluster.eks_cluster_name, principal, groups)
        removed.append(principal)
    for name in [CONTROL_PLANE_GROUP, *(tier_group(t) for t in ACCESS_TIERS)]:
        kube.delete_cluster_role_binding(name)
        kube.delete_cluster_role(name)
    return RemoveAccessOutcome(removed_entries=removed, rbac_removed=True)


# ============================================================== who the control plane is in a cluster


def control_plane_principals(functions: dict[str, list[str]], lambda_client: Any) -> dict[str, list[str]]:
    """The IAM roles of the functions that call the Kubernetes API (their access entries), by tier."""
    from hyperpod_control.adapters.aws import map_client_error

    roles: dict[str, list[str]] = {}
    for tier, names in functions.items():
        for name in names:
            try:
                role = lambda_client.get_function_configuration(FunctionName=name)["Role"]
            except Exception as exc:
                raise map_client_error(exc, resource=f"function {name}") from exc
            if role not in roles.setdefault(tier, []):
                roles[tier].append(role)
    return roles


def parse_kubernetes_functions(value: str) -> dict[str, list[str]]:
    """Pure: ``reader=FnA,FnB;supervisor=FnC`` (KUBERNETES_CLIENT_FUNCTIONS) -> tiers' functions."""
    tiers: dict[str, list[str]] = {}
    for part in filter(None, (p.strip() for p in value.split(";"))):
        tier, sep, names = part.partition("=")
        if not sep or tier.strip() not in ACCESS_TIERS:
            raise PermanentError(
                f"KUBERNETES_CLIENT_FUNCTIONS: {part!r} is not <tier>=<function,...> with a tier of "
                f"{', '.join(ACCESS_TIERS)}.",
                remedy="fix the variable in template.yaml (ClusterAccessFunction).",
            )
        tiers.setdefault(tier.strip(), []).extend(n.strip() for n in names.split(",") if n.strip())
    return tiers


def kubernetes_functions() -> dict[str, list[str]]:
    return parse_kubernetes_functions(kubernetes_client_functions())
