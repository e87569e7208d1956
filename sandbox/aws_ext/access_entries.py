"""EKS access entries and access policies: how an IAM principal is let into a cluster's Kubernetes API.

Create, describe, list (with ``associatedPolicyArn``), update, delete an access entry;
associate, list and disassociate access policies; list the access policies EKS offers. Entries
need the cluster's ``authenticationMode`` to be API or API_AND_CONFIG_MAP
(``InvalidRequestException`` otherwise); a cluster created in one of those modes with
``bootstrapClusterCreatorAdminPermissions`` gets an entry for its creator with
AmazonEKSClusterAdminPolicy, as on AWS. The Kubernetes side (what the policies allow) is the
sandbox API server's business; it can read the entries with ``entries_for()``.
"""

from __future__ import annotations

import re
from typing import Any

from moto.core.responses import ActionResult, EmptyResult
from moto.core.utils import utcnow

from sandbox.aws_ext._base import AwsError, drop_none, paginate, parsed_params, random_chars
from sandbox.aws_ext.eks_cluster import CLUSTER_ADMIN_POLICY, get_cluster, state

PRINCIPAL = re.compile(r"^arn:aws[a-z-]*:iam::(\d{12}):(role|user)/(?:[\w+=,.@-]+/)*([\w+=,.@-]+)$")
TYPES = ("STANDARD", "EC2", "EC2_LINUX", "EC2_WINDOWS", "FARGATE_LINUX", "HYBRID_LINUX", "HYPERPOD_LINUX")
ACCESS_POLICIES = (
    "AmazonEKSClusterAdminPolicy",
    "AmazonEKSAdminPolicy",
    "AmazonEKSAdminViewPolicy",
    "AmazonEKSEditPolicy",
    "AmazonEKSViewPolicy",
)
POLICY_ARN = "arn:aws:eks::aws:cluster-access-policy/{}"
NOT_FOUND = (
    "The specified principalArn could not be found. You can view your available access entries with "
    "'list-access-entries'."
)


class AccessEntry:
    def __init__(self, cluster: Any, principal_arn: str, params: dict[str, Any]) -> None:
        account, kind, name = PRINCIPAL.match(principal_arn).groups()  # type: ignore[union-attr]
        region = cluster.arn.split(":")[3]
        self.cluster_name = cluster.name
        self.principal_arn = principal_arn
        self.type = params.get("type") or "STANDARD"
        self.kubernetes_groups = list(params.get("kubernetesGroups") or [])
        if params.get("username"):
            self.username = params["username"]
        elif kind == "role":
            self.username = f"arn:aws:sts::{account}:assumed-role/{name}/{{{{SessionName}}}}"
        else:
            self.username = principal_arn
        self.arn = (
            f"arn:aws:eks:{region}:{cluster.arn.split(':')[4]}:access-entry/{cluster.name}/{kind}/{account}/"
            f"{name}/{random_chars(8)}-{random_chars(4)}"
        )
        self.tags = dict(params.get("tags") or {})
        self.created_at = self.modified_at = utcnow()
        self.policies: dict[str, dict[str, Any]] = {}

    def to_dict(self) -> dict[str, Any]:
        return drop_none(
            {
                "clusterName": self.cluster_name,
                "principalArn": self.principal_arn,
                "kubernetesGroups": self.kubernetes_groups,
                "accessEntryArn": self.arn,
                "createdAt": self.created_at,
                "modifiedAt": self.modified_at,
                "tags": self.tags or None,
                "username": self.username,
                "type": self.type,
            }
        )


def entries_for(cluster: Any) -> dict[str, AccessEntry]:
    """A cluster's access entries by principal ARN (for the sandbox's Kubernetes authenticator)."""
    return state(cluster).access_entries


def bootstrap_creator(response: Any, cluster: Any) -> None:
    # moto's caller is the IAM user "moto" (sts get_caller_identity answers arn:aws:sts::<acct>:user/moto).
    principal = f"arn:aws:iam::{response.current_account}:user/moto"
    entry = AccessEntry(cluster, principal, {})
    entry.policies[CLUSTER_ADMIN_POLICY] = {
        "policyArn": CLUSTER_ADMIN_POLICY,
        "accessScope": {"type": "cluster", "namespaces": []},
        "associatedAt": entry.created_at,
        "modifiedAt": entry.created_at,
    }
    state(cluster).access_entries[principal] = entry


def _api_mode(cluster: Any) -> None:
    mode = getattr(cluster, "access_config", {}).get("authenticationMode", "CONFIG_MAP")
    if mode not in ("API", "API_AND_CONFIG_MAP"):
        raise AwsError(
            "InvalidRequestException",
            "The cluster's authentication mode must be set to one of [API, API_AND_CONFIG_MAP] to perform "
            "this "
            "operation.",
            clusterName=cluster.name,
        )


def _check_groups_and_username(entry_type: str, params: dict[str, Any], cluster: Any) -> None:
    groups = params.get("kubernetesGroups") or []
    if entry_type != "STANDARD" and (groups or params.get("username")):
        raise AwsError(
            "InvalidParameterException",
            f"kubernetesGroups and username cannot be specified for an access entry of type {entry_type}.",
            clusterName=cluster.name,
        )
    for group in groups:
        if group.startswith("system:"):
            raise AwsError(
                "InvalidParameterException",
                f"kubernetesGroups: {group} is not allowed; groups may not start with 'system:'.",
                clusterName=cluster.name,
            )
    username = params.get("username")
    if username and username.startswith(("system:", "eks:", "aws:", "amazon:", "iam:")):
        raise AwsError(
            "InvalidParameterException",
            f"username: {username} is not allowed; it uses a reserved prefix.",
            clusterName=cluster.name,
        )


def _entry(cluster: Any, principal_arn: str) -> AccessEntry:
    entry = state(cluster).access_entries.get(principal_arn)
    if entry is None:
        raise AwsError("ResourceNotFoundException", NOT_FOUND, clusterName=cluster.name)
    return entry


# -- responses ----------------------------------------------------------------------------------


def create_access_entry(self: Any) -> ActionResult:
    p = parsed_params(self)
    cluster = get_cluster(self.eks_backend, p["clusterName"])
    _api_mode(cluster)
    principal = p.get("principalArn", "")
    if not PRINCIPAL.match(principal):
        raise AwsError(
            "InvalidParameterException",
            f"principalArn: {principal!r} is not a valid IAM role or user ARN.",
            clusterName=cluster.name,
        )
    entry_type = p.get("type") or "STANDARD"
    if entry_type not in TYPES:
        raise AwsError(
            "InvalidParameterException",
            f"type: {entry_type} is not one of {', '.join(TYPES)}.",
            clusterName=cluster.name,
        )
    _check_groups_and_username(entry_type, p, cluster)
    if principal in state(cluster).access_entries:
        raise AwsError(
            "ResourceInUseException",
            "The specified access entry resource is already in use on this cluster.",
            clusterName=cluster.name,
        )
    entry = AccessEntry(cluster, principal, p)
    state(cluster).access_entries[principal] = entry
    return ActionResult({"accessEntry": entry.to_dict()})


def describe_access_entry(self: Any) -> ActionResult:
    p = parsed_params(self)
    cluster = get_cluster(self.eks_backend, p["clusterName"])
    return ActionResult({"accessEntry": _entry(cluster, p["principalArn"]).to_dict()})


def list_access_entries(self: Any) -> ActionResult:
    p = parsed_params(self)
    cluster = get_cluster(self.eks_backend, p["clusterName"])
    _api_mode(cluster)
    wanted = p.get("associatedPolicyArn")
    principals = sorted(
        arn for arn, entry in state(cluster).access_entries.items() if not wanted or wanted in entry.policies
    )
    page, token = paginate(principals, p.get("maxResults"), p.get("nextToken"))
    return ActionResult(drop_none({"accessEntries": page, "nextToken": token}))


def update_access_entry(self: Any) -> ActionResult:
    p = parsed_params(self)
    cluster = get_cluster(self.eks_backend, p["clusterName"])
    entry = _entry(cluster, p["principalArn"])
    _check_groups_and_username(entry.type, p, cluster)
    if p.get("kubernetesGroups") is not None:
        entry.kubernetes_groups = list(p["kubernetesGroups"])
    if p.get("username"):
        entry.username = p["username"]
    entry.modified_at = utcnow()
    return ActionResult({"accessEntry": entry.to_dict()})


def delete_access_entry(self: Any) -> ActionResult:
    p = parsed_params(self)
    cluster = get_cluster(self.eks_backend, p["clusterName"])
    _entry(cluster, p["principalArn"])
    del state(cluster).access_entries[p["principalArn"]]
    return EmptyResult()


def associate_access_policy(self: Any) -> ActionResult:
    p = parsed_params(self)
    cluster = get_cluster(self.eks_backend, p["clusterName"])
    entry = _entry(cluster, p["principalArn"])
    policy_arn = p.get("policyArn", "")
    if policy_arn not in {POLICY_ARN.format(n) for n in ACCESS_POLICIES}:
        raise AwsError(
            "InvalidParameterException",
            f"policyArn: {policy_arn} is not an EKS access policy (see list-access-policies).",
            clusterName=cluster.name,
        )
    scope = p.get("accessScope") or {}
    namespaces = list(scope.get("namespaces") or [])
    if scope.get("type") == "namespace" and not namespaces:
        raise AwsError(
            "InvalidParameterException",
            "accessScope.namespaces: at least one namespace is required when accessScope.type is namespace.",
            clusterName=cluster.name,
        )
    if scope.get("type") == "cluster" and namespaces:
        raise AwsError(
            "InvalidParameterException",
            "accessScope.namespaces: namespaces cannot be specified when accessScope.type is cluster.",
            clusterName=cluster.name,
        )
    if scope.get("type") not in ("cluster", "namespace"):
        raise AwsError(
            "InvalidParameterException",
            f"accessScope.type: {scope.get('type')!r} is not one of cluster, namespace.",
            clusterName=cluster.name,
        )
    now = utcnow()
    previous = entry.policies.get(policy_arn)
    entry.policies[policy_arn] = {
        "policyArn": policy_arn,
        "accessScope": {"type": scope["type"], "namespaces": namespaces},
        "associatedAt": previous["associatedAt"] if previous else now,
        "modifiedAt": now,
    }
    return ActionResult(
        {
            "clusterName": cluster.name,
            "principalArn": entry.principal_arn,
            "associatedAccessPolicy": entry.policies[policy_arn],
        }
    )


def list_associated_access_policies(self: Any) -> ActionResult:
    p = parsed_params(self)
    cluster = get_cluster(self.eks_backend, p["clusterName"])
    entry = _entry(cluster, p["principalArn"])
    page, token = paginate(list(entry.policies.values()), p.get("maxResults"), p.get("nextToken"))
    return ActionResult(
        drop_none(
            {
                "clusterName": cluster.name,
                "principalArn": entry.principal_arn,
                "associatedAccessPolicies": page,
                "nextToken": token,
            }
        )
    )


def disassociate_access_policy(self: Any) -> ActionResult:
    p = parsed_params(self)
    cluster = get_cluster(self.eks_backend, p["clusterName"])
    entry = _entry(cluster, p["principalArn"])
    if entry.policies.pop(p["policyArn"], None) is None:
        raise AwsError(
            "ResourceNotFoundException",
            f"policyArn: {p['policyArn']} is not associated with {entry.principal_arn}.",
            clusterName=cluster.name,
        )
    return EmptyResult()


def list_access_policies(self: Any) -> ActionResult:
    p = parsed_params(self)
    policies = [{"name": n, "arn": POLICY_ARN.format(n)} for n in ACCESS_POLICIES]
    page, token = paginate(policies, p.get("maxResults"), p.get("nextToken"))
    return ActionResult(drop_none({"accessPolicies": page, "nextToken": token}))


ROUTES = (
    "{0}/clusters/(?P<name>[^/]+)/access-entries$",
    # A principal ARN holds slashes: in server mode werkzeug hands the path over decoded.
    "{0}/clusters/(?P<name>[^/]+)/access-entries/(?P<principalArn>.+)$",
    "{0}/access-policies$",
)


def _wrap_create_cluster(original: Any) -> Any:
    """After eks_cluster's create_cluster (installed first: ``aws_ext.install``), the creator's
    admin entry, as EKS adds it when ``bootstrapClusterCreatorAdminPermissions`` holds and the
    cluster authenticates by access entries."""

    def create_cluster(self: Any) -> Any:
        result = original(self)
        cluster = self.eks_backend.clusters[parsed_params(self)["name"]]
        access = getattr(cluster, "access_config", {})
        if access.get("authenticationMode", "CONFIG_MAP") != "CONFIG_MAP" and access.get(
            "bootstrapClusterCreatorAdminPermissions"
        ):
            bootstrap_creator(self, cluster)
        return result

    return create_cluster


def install(response_cls: Any) -> None:
    response_cls.create_cluster = _wrap_create_cluster(response_cls.create_cluster)
    for fn in (
        create_access_entry,
        describe_access_entry,
        list_access_entries,
        update_access_entry,
        delete_access_entry,
        associate_access_policy,
        list_associated_access_policies,
        disassociate_access_policy,
        list_access_policies,
    ):
        setattr(response_cls, fn.__name__, fn)
