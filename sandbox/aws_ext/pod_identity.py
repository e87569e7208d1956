"""EKS Pod Identity associations: create, describe, list (namespace/serviceAccount filters), update, delete.

One association per (namespace, service account) in a cluster; ids are ``a-`` + 17 lowercase
letters and digits, ARNs ``arn:aws:eks:<region>:<account>:podidentityassociation/<cluster>/<id>``
(both as in the operator install docs). Associations an add-on creates from its
``podIdentityAssociations`` carry the add-on's ARN as ``ownerArn`` and can only be changed
through the add-on. The role is checked for ARN syntax only; EKS does not check its trust policy
at create time either (a pod finds out when it asks for credentials).
"""

from __future__ import annotations

import re
from typing import Any

from moto.core.responses import ActionResult
from moto.core.utils import utcnow

from sandbox.aws_ext._base import AwsError, drop_none, paginate, parsed_params, random_chars
from sandbox.aws_ext.eks_cluster import get_cluster, state

ROLE_ARN = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]+$")
MAX_PER_CLUSTER = 5000


class Association:
    def __init__(
        self,
        cluster: Any,
        namespace: str,
        service_account: str,
        role_arn: str,
        tags: dict[str, str] | None = None,
        owner_arn: str | None = None,
        disable_session_tags: bool | None = None,
        target_role_arn: str | None = None,
        policy: str | None = None,
    ) -> None:
        self.cluster_name = cluster.name
        self.namespace = namespace
        self.service_account = service_account
        self.role_arn = role_arn
        self.id = "a-" + random_chars(17)
        region, account = cluster.arn.split(":")[3], cluster.arn.split(":")[4]
        self.arn = f"arn:aws:eks:{region}:{account}:podidentityassociation/{cluster.name}/{self.id}"
        self.tags = dict(tags or {})
        self.owner_arn = owner_arn
        self.disable_session_tags = bool(disable_session_tags)
        self.target_role_arn = target_role_arn
        self.policy = policy
        self.created_at = self.modified_at = utcnow()

    def summary(self) -> dict[str, Any]:
        return drop_none(
            {
                "clusterName": self.cluster_name,
                "namespace": self.namespace,
                "serviceAccount": self.service_account,
                "associationArn": self.arn,
                "associationId": self.id,
                "ownerArn": self.owner_arn,
            }
        )

    def to_dict(self) -> dict[str, Any]:
        return drop_none(
            {
                **self.summary(),
                "roleArn": self.role_arn,
                "tags": self.tags or None,
                "createdAt": self.created_at,
                "modifiedAt": self.modified_at,
                "disableSessionTags": self.disable_session_tags,
                "targetRoleArn": self.target_role_arn,
                "policy": self.policy,
            }
        )


def check_role_arn(role_arn: Any, field: str = "roleArn") -> None:
    if not isinstance(role_arn, str) or not ROLE_ARN.match(role_arn):
        raise AwsError("InvalidParameterException", f"{field}: {role_arn!r} is not a valid IAM role ARN.")


def add_association(
    cluster: Any, namespace: str, service_account: str, role_arn: str, **kwargs: Any
) -> Association:
    """Create one association, with the checks CreatePodIdentityAssociation makes."""
    for field, value in (("namespace", namespace), ("serviceAccount", service_account)):
        if not value:
            raise AwsError(
                "InvalidParameterException", f"{field} must not be empty.", clusterName=cluster.name
            )
    check_role_arn(role_arn)
    associations = state(cluster).associations
    existing = next(
        (
            a
            for a in associations.values()
            if (a.namespace, a.service_account) == (namespace, service_account)
        ),
        None,
    )
    if existing is not None:
        raise AwsError(
            "ResourceInUseException",
            f"Association already exists: {existing.id} for namespace {namespace} and service account "
            f"{service_account}.",
            clusterName=cluster.name,
        )
    if len(associations) >= MAX_PER_CLUSTER:
        raise AwsError(
            "ResourceLimitExceededException",
            f"Cluster {cluster.name} already has the maximum of {MAX_PER_CLUSTER} pod identity associations.",
            clusterName=cluster.name,
        )
    association = Association(cluster, namespace, service_account, role_arn, **kwargs)
    associations[association.id] = association
    return association


def _get(cluster: Any, association_id: str) -> Association:
    association = state(cluster).associations.get(association_id)
    if association is None:
        raise AwsError(
            "ResourceNotFoundException",
            f"associationId: no pod identity association {association_id} in cluster {cluster.name}.",
            clusterName=cluster.name,
        )
    return association


def _not_owned(association: Association, operation: str) -> None:
    if association.owner_arn:
        raise AwsError(
            "InvalidRequestException",
            f"Cannot {operation} pod identity association {association.id}: it is owned by "
            f"{association.owner_arn}; change it through the add-on.",
            clusterName=association.cluster_name,
        )


# -- responses ----------------------------------------------------------------------------------


def create_pod_identity_association(self: Any) -> ActionResult:
    p = parsed_params(self)
    cluster = get_cluster(self.eks_backend, p["clusterName"])
    association = add_association(
        cluster,
        p.get("namespace", ""),
        p.get("serviceAccount", ""),
        p.get("roleArn"),
        tags=p.get("tags"),
        disable_session_tags=p.get("disableSessionTags"),
        target_role_arn=p.get("targetRoleArn"),
        policy=p.get("policy"),
    )
    return ActionResult({"association": association.to_dict()})


def describe_pod_identity_association(self: Any) -> ActionResult:
    p = parsed_params(self)
    cluster = get_cluster(self.eks_backend, p["clusterName"])
    return ActionResult({"association": _get(cluster, p["associationId"]).to_dict()})


def list_pod_identity_associations(self: Any) -> ActionResult:
    p = parsed_params(self)
    cluster = get_cluster(self.eks_backend, p["clusterName"])
    found = [
        a
        for a in state(cluster).associations.values()
        if (not p.get("namespace") or a.namespace == p["namespace"])
        and (not p.get("serviceAccount") or a.service_account == p["serviceAccount"])
    ]
    page, token = paginate(found, p.get("maxResults"), p.get("nextToken"))
    return ActionResult(drop_none({"associations": [a.summary() for a in page], "nextToken": token}))


def update_pod_identity_association(self: Any) -> ActionResult:
    p = parsed_params(self)
    cluster = get_cluster(self.eks_backend, p["clusterName"])
    association = _get(cluster, p["associationId"])
    _not_owned(association, "update")
    if p.get("roleArn") is not None:
        check_role_arn(p["roleArn"])
        association.role_arn = p["roleArn"]
    if p.get("targetRoleArn") is not None:
        check_role_arn(p["targetRoleArn"], "targetRoleArn")
        association.target_role_arn = p["targetRoleArn"]
    if p.get("disableSessionTags") is not None:
        association.disable_session_tags = p["disableSessionTags"]
    if p.get("policy") is not None:
        association.policy = p["policy"]
    association.modified_at = utcnow()
    return ActionResult({"association": association.to_dict()})


def delete_pod_identity_association(self: Any) -> ActionResult:
    p = parsed_params(self)
    cluster = get_cluster(self.eks_backend, p["clusterName"])
    association = _get(cluster, p["associationId"])
    _not_owned(association, "delete")
    del state(cluster).associations[association.id]
    return ActionResult({"association": association.to_dict()})


ROUTES = (
    "{0}/clusters/(?P<name>[^/]+)/pod-identity-associations$",
    "{0}/clusters/(?P<name>[^/]+)/pod-identity-associations/(?P<associationId>[^/]+)$",
)


def install(response_cls: Any) -> None:
    for fn in (
        create_pod_identity_association,
        describe_pod_identity_association,
        list_pod_identity_associations,
        update_pod_identity_association,
        delete_pod_identity_association,
    ):
        setattr(response_cls, fn.__name__, fn)
