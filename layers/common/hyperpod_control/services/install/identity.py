"""The training operator's AWS identity: its IAM execution role (created, or the user's validated)
and the EKS Pod Identity association that hands it to the operator's service account, and their
removal at uninstall.
"""

from __future__ import annotations

import hashlib
from typing import Any

from hyperpod_control.adapters.eks import EksAdapter
from hyperpod_control.adapters.iam import IamAdapter
from hyperpod_control.exceptions import (
    InvalidInputError,
    PermanentError,
)
from hyperpod_control.models.install import (
    MANAGED_BY,
    OPERATOR_NAMESPACE,
    OPERATOR_POLICY_NAME,
    OPERATOR_SERVICE_ACCOUNT,
    AssociationOutcome,
    EnsureAssociationInput,
    EnsureRoleInput,
    RemoveIdentityInput,
    RemoveIdentityOutcome,
    RoleOutcome,
)
from hyperpod_control.models.names import MANAGED_TAG
from hyperpod_control.services.install.common import DONE, as_list
from hyperpod_control.settings import operator_role_boundary_arn, operator_role_path, operator_role_prefix

POD_IDENTITY_PRINCIPAL = "pods.eks.amazonaws.com"
POD_IDENTITY_ACTIONS = ("sts:AssumeRole", "sts:TagSession")


def partition_of(arn: str) -> str:
    return arn.split(":")[1] if arn.startswith("arn:") else "aws"


def operator_policy_arn(partition: str = "aws") -> str:
    return f"arn:{partition}:iam::aws:policy/{OPERATOR_POLICY_NAME}"


# ============================================================== execution role


def role_name_for(cluster_name: str, prefix: str) -> str:
    """Pure: ``<prefix><cluster>``, shortened with a hash to IAM's 64 characters."""
    name = f"{prefix}{cluster_name}"
    if len(name) <= 64:
        return name
    digest = hashlib.sha256(cluster_name.encode()).hexdigest()[:8]
    return f"{name[: 64 - 9]}-{digest}"


def trust_policy(account_id: str, eks_cluster_arn: str) -> dict[str, Any]:
    """Pure: EKS Pod Identity's trust policy, limited to this cluster.

    AWS's documented policy also lists ``eks-auth:AssumeRoleForPodIdentity``: that action belongs to the
    node side (the node role calls it on the Pod Identity Agent's behalf, and the managed
    AmazonEKSWorkerNodePolicy grants it); in a role's trust policy it grants nothing, so it is
    left out, as EKS's own Pod Identity documentation does.
    """
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "AllowEksAuthToAssumeRoleForPodIdentity",
                "Effect": "Allow",
                "Principal": {"Service": POD_IDENTITY_PRINCIPAL},
                "Action": list(POD_IDENTITY_ACTIONS),
                "Condition": {
                    "StringEquals": {"aws:SourceAccount": account_id},
                    "ArnEquals": {"aws:SourceArn": eks_cluster_arn},
                },
            }
        ],
    }


def trust_problems(document: dict[str, Any]) -> list[str]:
    """Pure: what keeps EKS Pod Identity from using a role with this trust policy ([] if nothing)."""
    needed = set(POD_IDENTITY_ACTIONS)
    for statement in as_list(document.get("Statement")):
        if statement.get("Effect") != "Allow":
            continue
        principal = statement.get("Principal") or {}
        services = as_list(principal.get("Service")) if isinstance(principal, dict) else []
        if POD_IDENTITY_PRINCIPAL not in services:
            continue
        for action in as_list(statement.get("Action")):
            if action in ("sts:*", "*"):
                needed.clear()
            needed.discard(action)
    if not needed:
        return []
    return [f"its trust policy does not allow {POD_IDENTITY_PRINCIPAL} to {' and '.join(sorted(needed))}"]


def role_name_from_arn(arn: str) -> str:
    return arn.rsplit("/", 1)[-1]


def ensure_execution_role(request: EnsureRoleInput, iam: IamAdapter, eks: EksAdapter) -> RoleOutcome:
    cluster = request.cluster
    eks_cluster = eks.describe_cluster(cluster.eks_cluster_name)
    account = eks_cluster["arn"].split(":")[4]
    policy_arn = operator_policy_arn(partition_of(eks_cluster["arn"]))
    if request.role_arn:  # the user's role: validated, never changed
        name = role_name_from_arn(request.role_arn)
        role = iam.get_role(name)
        if role is None:
            raise InvalidInputError(
                f"roleArn: IAM role {request.role_arn} does not exist.",
                remedy="name an existing role, or leave roleArn out and the workflow creates one.",
            )
        if role["Arn"] != request.role_arn:
            # The stack's iam:PassRole (and Preflight's check of it) match the ARN as given; the
            # association would carry the real one, path included.
            raise InvalidInputError(
                f"roleArn: {request.role_arn} names IAM role {name}, whose ARN is {role['Arn']}.",
                remedy=f"give the role's ARN with its path: {role['Arn']}.",
            )
        problems = trust_problems(role["AssumeRolePolicyDocument"])
        if policy_arn not in iam.attached_policies(name):
            problems.append(f"it does not have the managed policy {OPERATOR_POLICY_NAME} attached")
        if problems:
            raise InvalidInputError(
                f"roleArn: IAM role {request.role_arn} cannot serve the training operator: "
                + "; ".join(problems)
                + ".",
                remedy=f"allow {POD_IDENTITY_PRINCIPAL} sts:AssumeRole and sts:TagSession in its trust "
                f"policy and attach {policy_arn}, or leave roleArn out.",
            )
        return RoleOutcome(role_arn=role["Arn"], role_name=name)

    name = role_name_for(cluster.cluster_name, operator_role_prefix())
    trust = trust_policy(account, eks_cluster["arn"])
    role = iam.get_role(name)
    changed: list[str] = []
    created = False
    if role is None:
        role = iam.create_role(
            name,
            trust,
            description=f"HyperPod training operator of {cluster.cluster_name} (EKS Pod Identity)",
            tags={MANAGED_TAG: MANAGED_BY, "hyperpod-cluster": cluster.cluster_name},
            boundary_arn=operator_role_boundary_arn(),
            path=operator_role_path(),
        )
        created = True
        changed.append("role")
    elif role["AssumeRolePolicyDocument"] != trust:
        iam.update_trust(name, trust)
        changed.append("trust")
    if policy_arn not in iam.attached_policies(name):
        iam.attach_policy(name, policy_arn)
        changed.append("policy")
    return RoleOutcome(role_arn=role["Arn"], role_name=name, created=created, changed=changed)


# ============================================================== Pod Identity association


def decide_association(existing: dict[str, Any] | None, role_arn: str) -> str:
    """Pure: ``create``, ``update`` (another role) or ``unchanged``. An association an add-on owns
    (declared inline in the add-on) is refused: the workflow keeps it standalone, because inline
    ones break when a version stops supporting Pod Identity in the add-on call (v1.2.1-eksbuild.1)."""
    if existing is None:
        return "create"
    if existing.get("ownerArn"):
        raise PermanentError(
            f"the Pod Identity association {existing.get('associationId')} of {OPERATOR_NAMESPACE}/"
            f"{OPERATOR_SERVICE_ACCOUNT} is owned by {existing['ownerArn']} (declared inline in the add-on).",
            remedy="update the add-on with an empty podIdentityAssociations list, then run the install "
            "again; it creates a standalone association.",
        )
    return "unchanged" if existing.get("roleArn") == role_arn else "update"


def ensure_pod_identity_association(request: EnsureAssociationInput, eks: EksAdapter) -> AssociationOutcome:
    cluster = request.cluster.eks_cluster_name
    existing = eks.find_association(cluster, OPERATOR_NAMESPACE, OPERATOR_SERVICE_ACCOUNT)
    action = decide_association(existing, request.role_arn)
    if action == "create":
        found = eks.create_association(
            cluster, OPERATOR_NAMESPACE, OPERATOR_SERVICE_ACCOUNT, request.role_arn, {MANAGED_TAG: MANAGED_BY}
        )
    elif action == "update":
        assert existing is not None
        found = eks.update_association(cluster, existing["associationId"], request.role_arn)
    else:
        assert existing is not None
        found = existing
    return AssociationOutcome(
        association_id=found["associationId"],
        association_arn=found.get("associationArn"),
        action=DONE[action],
    )


# ============================================================== removal at uninstall


def remove_pod_identity(
    request: RemoveIdentityInput, eks: EksAdapter, iam: IamAdapter
) -> RemoveIdentityOutcome:
    cluster = request.cluster.eks_cluster_name
    deleted_association = False
    existing = eks.find_association(cluster, OPERATOR_NAMESPACE, OPERATOR_SERVICE_ACCOUNT)
    if existing is not None and (existing.get("tags") or {}).get(MANAGED_TAG) == MANAGED_BY:
        deleted_association = eks.delete_association(cluster, existing["associationId"])
    elif request.association_id and existing and existing["associationId"] == request.association_id:
        deleted_association = eks.delete_association(cluster, request.association_id)
    if not request.role_arn:
        return RemoveIdentityOutcome(association_deleted=deleted_association, role_deleted=False)
    name = role_name_from_arn(request.role_arn)
    role = iam.get_role(name)
    tags = {t["Key"]: t["Value"] for t in (role or {}).get("Tags", [])}
    if role is None:
        return RemoveIdentityOutcome(association_deleted=deleted_association, role_deleted=False)
    if tags.get(MANAGED_TAG) != MANAGED_BY or not name.startswith(operator_role_prefix()):
        return RemoveIdentityOutcome(
            association_deleted=deleted_association,
            role_deleted=False,
            role_kept_reason=f"role {name} was not created by the control plane; it is left as it is.",
        )
    for policy in iam.attached_policies(name):
        iam.detach_policy(name, policy)
    return RemoveIdentityOutcome(association_deleted=deleted_association, role_deleted=iam.delete_role(name))
