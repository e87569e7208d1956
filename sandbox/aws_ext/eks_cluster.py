"""EKS cluster settings moto drops: ``accessConfig``, endpoint access, ``update_cluster_config`` and updates.

moto keeps ``resourcesVpcConfig`` as sent and forgets ``accessConfig``. Here a created cluster
keeps ``accessConfig`` (``authenticationMode`` defaults to ``CONFIG_MAP`` as the API does,
``bootstrapClusterCreatorAdminPermissions`` to true), and its ``resourcesVpcConfig`` gets
AWS's defaults (public endpoint on, private off, ``0.0.0.0/0``) plus the VPC id of its subnets.
``update_cluster_config`` answers with an ``update`` (moto answers with the cluster) that
``describe_update`` follows from InProgress to Successful; the authentication mode only moves
forward (CONFIG_MAP -> API_AND_CONFIG_MAP -> API), as on AWS.

The other modules keep their per-cluster state on moto's ``Cluster`` object through ``state()``.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from moto.core.responses import ActionResult
from moto.core.utils import utcnow

from sandbox.aws_ext._base import AwsError, Timed, delays, drop_none, parsed_params

AUTH_MODES = ("CONFIG_MAP", "API_AND_CONFIG_MAP", "API")
CLUSTER_ADMIN_POLICY = "arn:aws:eks::aws:cluster-access-policy/AmazonEKSClusterAdminPolicy"


@dataclass
class ClusterState:
    addons: dict[str, Any] = field(default_factory=dict)
    associations: dict[str, Any] = field(default_factory=dict)
    access_entries: dict[str, Any] = field(default_factory=dict)
    updates: dict[str, Update] = field(default_factory=dict)


def state(cluster: Any) -> ClusterState:
    if not hasattr(cluster, "ext_state"):
        cluster.ext_state = ClusterState()
    return cluster.ext_state


def eks_backend(response: Any) -> Any:
    return response.eks_backend


def get_cluster(backend: Any, name: str) -> Any:
    cluster = backend.clusters.get(name)
    if cluster is None:
        raise AwsError("ResourceNotFoundException", f"No cluster found for name: {name}.", clusterName=name)
    return cluster


class Update(Timed):
    """An EKS ``Update`` record (add-on or cluster config), InProgress until its change lands."""

    def __init__(self, update_type: str, params: list[dict[str, str]], addon_name: str | None = None) -> None:
        self.id = str(uuid.uuid4())
        self.addon_name = addon_name
        self.type = update_type
        self.status = "InProgress"
        self.params = params
        self.created_at = utcnow()
        self.errors: list[dict[str, Any]] = []

    def finish(self, errors: list[dict[str, Any]] | None = None) -> None:
        self.errors = errors or []
        self.status = "Failed" if self.errors else "Successful"

    def to_dict(self) -> dict[str, Any]:
        self.settle()
        return {
            "id": self.id,
            "status": self.status,
            "type": self.type,
            "params": self.params,
            "createdAt": self.created_at,
            "errors": self.errors,
        }


# -- create_cluster: keep accessConfig and fill resourcesVpcConfig ---------------------------------


def _wrap_create_cluster(original: Any) -> Any:
    def create_cluster(self: Any) -> ActionResult:
        params = parsed_params(self)
        access = params.get("accessConfig") or {}
        mode = access.get("authenticationMode", "CONFIG_MAP")
        result = original(self)
        cluster = self.eks_backend.clusters[params["name"]]
        cluster.access_config = {
            "bootstrapClusterCreatorAdminPermissions": access.get(
                "bootstrapClusterCreatorAdminPermissions", True
            ),
            "authenticationMode": mode,
        }
        vpc = dict(cluster.resources_vpc_config or {})
        vpc.setdefault("endpointPublicAccess", True)
        vpc.setdefault("endpointPrivateAccess", False)
        vpc.setdefault("publicAccessCidrs", ["0.0.0.0/0"] if vpc["endpointPublicAccess"] else [])
        vpc.setdefault("subnetIds", [])
        vpc.setdefault("securityGroupIds", [])
        if "vpcId" not in vpc:
            vpc["vpcId"] = _vpc_of(self, vpc["subnetIds"])
        cluster.resources_vpc_config = vpc
        # The creator's admin access entry (bootstrapClusterCreatorAdminPermissions) is added by
        # access_entries' wrapper around this one.
        return result

    return create_cluster


def _vpc_of(response: Any, subnet_ids: list[str]) -> str | None:
    if not subnet_ids:
        return None
    from moto.ec2.models import ec2_backends

    ec2 = ec2_backends[response.current_account][response.region]
    for subnet_id in subnet_ids:
        try:
            return ec2.get_subnet(subnet_id).vpc_id
        except Exception:
            continue
    return None


# -- update_cluster_config -----------------------------------------------------------------------


def update_cluster_config(self: Any) -> ActionResult:
    params = parsed_params(self)
    cluster = get_cluster(self.eks_backend, params["name"])
    settle_cluster(cluster)
    busy = [u for u in state(cluster).updates.values() if u.status == "InProgress" and u.addon_name is None]
    if busy:
        raise AwsError(
            "ResourceInUseException",
            f"Cluster {cluster.name} has an update in progress: {busy[0].id}.",
            clusterName=cluster.name,
        )
    changes: list[tuple[str, dict[str, str]]] = []
    vpc_request = params.get("resourcesVpcConfig")
    access = params.get("accessConfig")
    if vpc_request:
        merged = dict(cluster.resources_vpc_config)
        merged.update(drop_none(vpc_request))
        if not merged.get("endpointPublicAccess") and not merged.get("endpointPrivateAccess"):
            raise AwsError(
                "InvalidParameterException",
                "resourcesVpcConfig: Either endpointPublicAccess or endpointPrivateAccess must be true.",
                clusterName=cluster.name,
            )
        for key, kind in (
            ("endpointPublicAccess", "EndpointPublicAccess"),
            ("endpointPrivateAccess", "EndpointPrivateAccess"),
            ("publicAccessCidrs", "PublicAccessCidrs"),
        ):
            if key in vpc_request:
                value = vpc_request[key]
                text = ",".join(value) if isinstance(value, list) else str(value).lower()
                changes.append(("EndpointAccessUpdate", {"type": kind, "value": text}))

        def apply_vpc(merged: dict[str, Any] = merged) -> None:
            cluster.resources_vpc_config = merged

        applies = [apply_vpc]
    else:
        applies = []
    if access and access.get("authenticationMode"):
        current = getattr(cluster, "access_config", {}).get("authenticationMode", "CONFIG_MAP")
        wanted = access["authenticationMode"]
        if AUTH_MODES.index(wanted) < AUTH_MODES.index(current):
            raise AwsError(
                "InvalidParameterException",
                f"accessConfig.authenticationMode: Unsupported authentication mode update from {current} to "
                f"{wanted}; the mode can only move from CONFIG_MAP to API_AND_CONFIG_MAP or API, and from "
                "API_AND_CONFIG_MAP to API.",
                clusterName=cluster.name,
            )
        if wanted == current:
            raise AwsError(
                "InvalidParameterException",
                f"accessConfig.authenticationMode: Cluster is already in {current} mode.",
                clusterName=cluster.name,
            )
        changes.append(("AccessConfigUpdate", {"type": "AuthenticationMode", "value": wanted}))

        def apply_access(wanted: str = wanted) -> None:
            cluster.access_config = {**getattr(cluster, "access_config", {}), "authenticationMode": wanted}

        applies.append(apply_access)
    if params.get("logging"):
        changes.append(("LoggingUpdate", {"type": "ClusterLogging", "value": str(params["logging"])}))

        def apply_logging(logging: Any = params["logging"]) -> None:
            cluster.logging = logging

        applies.append(apply_logging)
    if not changes:
        raise AwsError(
            "InvalidParameterException",
            "No changes needed: the request does not change the cluster configuration.",
        )
    kinds = {kind for kind, _ in changes}
    if len(kinds) > 1:
        raise AwsError(
            "InvalidParameterException",
            f"Only one type of update can be allowed per request; this one asks for {sorted(kinds)}.",
            clusterName=cluster.name,
        )
    update = Update(changes[0][0], [param for _, param in changes])
    state(cluster).updates[update.id] = update
    cluster.status = "UPDATING"

    def land() -> None:
        for apply in applies:
            apply()
        cluster.status = "ACTIVE"
        update.finish()

    update.schedule(delays.cluster_update, land)
    return ActionResult({"update": update.to_dict()})


def settle_cluster(cluster: Any) -> None:
    """Apply the cluster's due updates, so a read sees ``status`` leave UPDATING on time."""
    for update in list(state(cluster).updates.values()):
        update.settle()


def _wrap_describe_cluster(original: Any) -> Any:
    def describe_cluster(self: Any) -> ActionResult:
        cluster = self.eks_backend.clusters.get(self._get_param("name"))
        if cluster is not None:
            settle_cluster(cluster)
        return original(self)

    return describe_cluster


def describe_update(self: Any) -> ActionResult:
    params = parsed_params(self)
    cluster = get_cluster(self.eks_backend, params["name"])
    update = state(cluster).updates.get(params["updateId"])
    if update is None or (params.get("addonName") and update.addon_name != params["addonName"]):
        raise AwsError(
            "ResourceNotFoundException",
            f"No update found for ID: {params['updateId']}.",
            clusterName=cluster.name,
            addonName=params.get("addonName"),
        )
    return ActionResult({"update": update.to_dict()})


def list_updates(self: Any) -> ActionResult:
    from sandbox.aws_ext._base import paginate

    params = parsed_params(self)
    cluster = get_cluster(self.eks_backend, params["name"])
    addon = params.get("addonName")
    ids = [u.id for u in state(cluster).updates.values() if u.addon_name == addon]
    page, token = paginate(ids, params.get("maxResults"), params.get("nextToken"))
    return ActionResult(drop_none({"updateIds": page, "nextToken": token}))


ROUTES = (
    "{0}/clusters/(?P<name>[^/]+)/updates$",
    "{0}/clusters/(?P<name>[^/]+)/updates/(?P<updateId>[^/]+)$",
)


def install(response_cls: Any) -> None:
    response_cls.create_cluster = _wrap_create_cluster(response_cls.create_cluster)
    response_cls.describe_cluster = _wrap_describe_cluster(response_cls.describe_cluster)
    response_cls.update_cluster_config = update_cluster_config
    response_cls.describe_update = describe_update
    response_cls.list_updates = list_updates
