"""EKS add-ons: create, describe, list, update, delete, describe_addon_versions and _configuration.

Lifecycle, on sandbox time (``sandbox.clock``, evaluated when read): CREATING -> ACTIVE after
``delays.addon_create``, UPDATING -> ACTIVE after ``delays.addon_update`` (the ``update`` record
goes InProgress -> Successful), DELETING -> gone after ``delays.addon_delete``. Failures on
demand: ``fail_next()`` makes the next create/update of an add-on end CREATE_FAILED,
UPDATE_FAILED or DEGRADED with health issues; ``set_health()`` degrades (or heals) a live one.
``read_addon()`` reads one without an API call (for the sandbox's mirrors).

Validation follows the catalogue (``catalog.py``): unknown add-on or version, a version not
compatible with the cluster's Kubernetes version, configuration values that violate the
add-on's schema, and ``podIdentityAssociations`` on a version whose ``requiresIamPermissions``
is false ("Pod Identity feature is not supported for addon version", the v1.2.1-eksbuild.1
break) are ``InvalidParameterException``; a second create is ``ResourceInUseException``, as is
an update or delete while the add-on is changing; a missing cluster or add-on is
``ResourceNotFoundException``.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any

from moto.core import DEFAULT_ACCOUNT_ID
from moto.core.responses import ActionResult
from moto.core.utils import utcnow

from hyperpod_control.models.install import version_key
from sandbox.aws_ext import catalog, pod_identity
from sandbox.aws_ext._base import AwsError, Timed, delays, drop_none, paginate, parsed_params
from sandbox.aws_ext.eks_cluster import Update, get_cluster, state

BUSY = ("CREATING", "UPDATING", "DELETING")
DEFAULT_ISSUE = {
    "code": "InsufficientNumberOfReplicas",
    "message": "The add-on is unhealthy because it doesn't have the desired number of replicas.",
    "resourceIds": [],
}


@dataclass
class Outcome:
    """An armed failure: the next matching create/update ends in ``status`` with ``issues``."""

    addon_name: str
    status: str
    issues: list[dict[str, Any]]
    cluster_name: str | None = None
    remaining: int = 1
    operations: tuple[str, ...] = field(default=("create", "update"))


class Addon(Timed):
    def __init__(self, cluster: Any, spec: catalog.AddonSpec, version: str, params: dict[str, Any]) -> None:
        self.cluster_name = cluster.name
        self.name = spec.name
        self.spec = spec
        self.version = version
        region, account = cluster.arn.split(":")[3], cluster.arn.split(":")[4]
        self.arn = f"arn:aws:eks:{region}:{account}:addon/{cluster.name}/{spec.name}/{uuid.uuid4()}"
        self.status = "CREATING"
        self.issues: list[dict[str, Any]] = []
        self.created_at = self.modified_at = utcnow()
        self.service_account_role_arn = params.get("serviceAccountRoleArn")
        self.configuration_values = params.get("configurationValues")
        self.tags = dict(params.get("tags") or {})
        self.namespace = (params.get("namespaceConfig") or {}).get("namespace") or spec.default_namespace
        self.association_arns: list[str] = []

    def to_dict(self) -> dict[str, Any]:
        self.settle()
        return drop_none(
            {
                "addonName": self.name,
                "clusterName": self.cluster_name,
                "status": self.status,
                "addonVersion": self.version,
                "health": {"issues": self.issues},
                "addonArn": self.arn,
                "createdAt": self.created_at,
                "modifiedAt": self.modified_at,
                "serviceAccountRoleArn": self.service_account_role_arn,
                "tags": self.tags or None,
                "publisher": self.spec.publisher,
                "owner": self.spec.owner,
                "configurationValues": self.configuration_values,
                "podIdentityAssociations": list(self.association_arns),
                "namespaceConfig": {"namespace": self.namespace},
            }
        )


# -- failures on demand (Python API: tests and the world builder) -----------------------------


def _backend(account_id: str, region: str) -> Any:
    from moto.eks.models import eks_backends

    return eks_backends[account_id][region]


def fail_next(
    addon_name: str,
    status: str = "CREATE_FAILED",
    issues: list[dict[str, Any]] | None = None,
    *,
    cluster_name: str | None = None,
    times: int = 1,
    operations: tuple[str, ...] = ("create", "update"),
    region: str = "us-west-2",
    account_id: str = DEFAULT_ACCOUNT_ID,
) -> None:
    """The next ``times`` creates/updates of ``addon_name`` end in ``status`` (CREATE_FAILED,
    UPDATE_FAILED or DEGRADED) with ``issues`` (default: InsufficientNumberOfReplicas)."""
    if status not in ("CREATE_FAILED", "UPDATE_FAILED", "DEGRADED"):
        raise ValueError(f"status must be CREATE_FAILED, UPDATE_FAILED or DEGRADED, not {status!r}")
    backend = _backend(account_id, region)
    if not hasattr(backend, "ext_addon_outcomes"):
        backend.ext_addon_outcomes = []
    backend.ext_addon_outcomes.append(
        Outcome(addon_name, status, list(issues or [DEFAULT_ISSUE]), cluster_name, times, operations)
    )


def set_health(
    cluster_name: str,
    addon_name: str,
    status: str = "DEGRADED",
    issues: list[dict[str, Any]] | None = None,
    *,
    region: str = "us-west-2",
    account_id: str = DEFAULT_ACCOUNT_ID,
) -> None:
    """Degrade a live add-on now (``status="ACTIVE"`` heals it and clears its issues)."""
    cluster = _backend(account_id, region).clusters[cluster_name]
    addon = state(cluster).addons[addon_name]
    addon.settle()
    addon.status = status
    addon.issues = [] if status == "ACTIVE" else list(issues or [DEFAULT_ISSUE])


def read_addon(
    cluster_name: str,
    addon_name: str,
    *,
    region: str = "us-west-2",
    account_id: str = DEFAULT_ACCOUNT_ID,
) -> dict[str, Any] | None:
    """The add-on as ``describe_addon`` returns it (due transitions applied), or None when it or
    its cluster does not exist. Reads moto's backend directly, so unlike ``describe_addon`` it
    consumes no fault armed by ``aws_ext.api_faults`` (the sandbox's add-on mirror polls with it)."""
    cluster = _backend(account_id, region).clusters.get(cluster_name)
    if cluster is None:
        return None
    addon = state(cluster).addons.get(addon_name)
    if addon is None:
        return None
    addon.settle()
    if state(cluster).addons.get(addon_name) is not addon:  # a due delete removed it
        return None
    return addon.to_dict()


def _take_outcome(backend: Any, cluster: Any, addon_name: str, operation: str) -> Outcome | None:
    for outcome in getattr(backend, "ext_addon_outcomes", []):
        if (
            outcome.addon_name == addon_name
            and outcome.cluster_name in (None, cluster.name)
            and operation in outcome.operations
            and outcome.remaining > 0
        ):
            outcome.remaining -= 1
            return outcome
    return None


# -- validation ---------------------------------------------------------------------------------


def _spec(name: str, cluster: Any) -> catalog.AddonSpec:
    spec = catalog.CATALOG.get(name)
    if spec is None:
        raise AwsError(
            "InvalidParameterException",
            f"addonName: Addon {name} specified is not supported in {cluster.version} kubernetes version",
            clusterName=cluster.name,
            addonName=name,
        )
    return spec


def _version(spec: catalog.AddonSpec, cluster: Any, requested: str | None) -> catalog.AddonVersion:
    if requested is None:
        chosen = spec.default_version(cluster.version)
        if chosen is None:
            raise AwsError(
                "InvalidParameterException",
                f"addonName: Addon {spec.name} specified is not supported in {cluster.version} kubernetes "
                "version",
                clusterName=cluster.name,
                addonName=spec.name,
            )
        return chosen
    version = spec.version(requested)
    if version is None:
        raise AwsError(
            "InvalidParameterException",
            f"addonVersion: Addon version {requested} specified is not supported for {spec.name}",
            clusterName=cluster.name,
            addonName=spec.name,
        )
    if cluster.version not in version.cluster_versions:
        raise AwsError(
            "InvalidParameterException",
            f"addonVersion: Addon version {requested} of {spec.name} is not supported in {cluster.version} "
            "kubernetes version",
            clusterName=cluster.name,
            addonName=spec.name,
        )
    return version


def _check_configuration(spec: catalog.AddonSpec, cluster: Any, values: str | None) -> None:
    if values is None or values == "":
        return
    try:
        parsed = catalog.parse_configuration(values)
        errors = catalog.validate(parsed, spec.schema)
    except catalog.ConfigurationError as exc:
        errors = [str(exc)]
    if errors:
        raise AwsError(
            "InvalidParameterException",
            "configurationValues: ConfigurationValue provided in request is not supported: Json schema "
            "validation "
            f"failed with error: [{', '.join(errors)}]",
            clusterName=cluster.name,
            addonName=spec.name,
        )


def _check_associations(
    spec: catalog.AddonSpec,
    version: catalog.AddonVersion,
    cluster: Any,
    requested: list[dict[str, str]] | None,
) -> None:
    if not requested:
        return
    if not version.requires_iam:
        raise AwsError(
            "InvalidParameterException",
            f"Pod Identity feature is not supported for addon version: {version.version}",
            clusterName=cluster.name,
            addonName=spec.name,
        )
    for item in requested:
        if item.get("serviceAccount") != spec.service_account:
            raise AwsError(
                "InvalidParameterException",
                f"podIdentityAssociations.serviceAccount: {item.get('serviceAccount')} is not a service "
                "account "
                f"of {spec.name}; it uses {spec.service_account}.",
                clusterName=cluster.name,
                addonName=spec.name,
            )
        pod_identity.check_role_arn(item.get("roleArn"), "podIdentityAssociations.roleArn")


def _get_addon(cluster: Any, name: str) -> Addon:
    addon = state(cluster).addons.get(name)
    if addon is not None:
        addon.settle()
        addon = state(cluster).addons.get(name)  # a due delete removes it
    if addon is None:
        raise AwsError(
            "ResourceNotFoundException",
            f"No addon: {name} found in cluster: {cluster.name}",
            clusterName=cluster.name,
            addonName=name,
        )
    return addon


def _replace_associations(cluster: Any, addon: Addon, requested: list[dict[str, str]] | None) -> None:
    associations = state(cluster).associations
    for arn in addon.association_arns:
        associations.pop(arn.rsplit("/", 1)[-1], None)
    addon.association_arns = []
    for item in requested or []:
        created = pod_identity.add_association(
            cluster, addon.namespace, item["serviceAccount"], item["roleArn"], owner_arn=addon.arn
        )
        addon.association_arns.append(created.arn)


def _finish(addon: Addon, outcome: Outcome | None, failed_status: str) -> list[dict[str, Any]]:
    if outcome is None:
        addon.status, addon.issues = "ACTIVE", []
        return []
    status = outcome.status if outcome.status == "DEGRADED" else failed_status
    addon.status, addon.issues = status, list(outcome.issues)
    return [
        {
            "errorCode": i["code"],
            "errorMessage": i.get("message", ""),
            "resourceIds": i.get("resourceIds", []),
        }
        for i in outcome.issues
    ]


# -- responses ----------------------------------------------------------------------------------


def create_addon(self: Any) -> ActionResult:
    p = parsed_params(self)
    cluster = get_cluster(self.eks_backend, p["clusterName"])
    name = p["addonName"]
    existing = state(cluster).addons.get(name)
    if existing is not None:
        existing.settle()
    if state(cluster).addons.get(name) is not None:
        raise AwsError(
            "ResourceInUseException", "Addon already exists.", clusterName=cluster.name, addonName=name
        )
    spec = _spec(name, cluster)
    version = _version(spec, cluster, p.get("addonVersion"))
    _check_configuration(spec, cluster, p.get("configurationValues"))
    _check_associations(spec, version, cluster, p.get("podIdentityAssociations"))
    if p.get("serviceAccountRoleArn") is not None:
        pod_identity.check_role_arn(p["serviceAccountRoleArn"], "serviceAccountRoleArn")
    addon = Addon(cluster, spec, version.version, p)
    _replace_associations(cluster, addon, p.get("podIdentityAssociations"))
    state(cluster).addons[name] = addon
    outcome = _take_outcome(self.eks_backend, cluster, name, "create")

    def land() -> None:
        _finish(addon, outcome, "CREATE_FAILED")
        addon.modified_at = utcnow()

    addon.schedule(delays.addon_create, land)
    return ActionResult({"addon": addon.to_dict()})


def describe_addon(self: Any) -> ActionResult:
    p = parsed_params(self)
    cluster = get_cluster(self.eks_backend, p["clusterName"])
    return ActionResult({"addon": _get_addon(cluster, p["addonName"]).to_dict()})


def list_addons(self: Any) -> ActionResult:
    p = parsed_params(self)
    cluster = get_cluster(self.eks_backend, p["clusterName"])
    for addon in list(state(cluster).addons.values()):
        addon.settle()
    names = sorted(state(cluster).addons)
    page, token = paginate(names, p.get("maxResults"), p.get("nextToken"))
    return ActionResult(drop_none({"addons": page, "nextToken": token}))


def update_addon(self: Any) -> ActionResult:
    p = parsed_params(self)
    cluster = get_cluster(self.eks_backend, p["clusterName"])
    addon = _get_addon(cluster, p["addonName"])
    if addon.status in BUSY:
        raise AwsError(
            "ResourceInUseException",
            f"Addon {addon.name} is in {addon.status} status; wait until it leaves it before updating it.",
            clusterName=cluster.name,
            addonName=addon.name,
        )
    spec = addon.spec
    version = _version(spec, cluster, p.get("addonVersion") or addon.version)
    _check_configuration(spec, cluster, p.get("configurationValues"))
    _check_associations(spec, version, cluster, p.get("podIdentityAssociations"))
    if p.get("serviceAccountRoleArn"):
        pod_identity.check_role_arn(p["serviceAccountRoleArn"], "serviceAccountRoleArn")
    params = []
    for key, kind in (
        ("addonVersion", "AddonVersion"),
        ("serviceAccountRoleArn", "ServiceAccountRoleArn"),
        ("resolveConflicts", "ResolveConflicts"),
        ("configurationValues", "ConfigurationValues"),
    ):
        if p.get(key) is not None:
            params.append({"type": kind, "value": str(p[key])})
    if p.get("podIdentityAssociations") is not None:
        params.append({"type": "PodIdentityAssociations", "value": json.dumps(p["podIdentityAssociations"])})
    update = Update("AddonUpdate", params, addon_name=addon.name)
    state(cluster).updates[update.id] = update
    if p.get("podIdentityAssociations") is not None:
        _replace_associations(cluster, addon, p["podIdentityAssociations"])
    addon.status = "UPDATING"
    outcome = _take_outcome(self.eks_backend, cluster, addon.name, "update")

    def land() -> None:
        errors = _finish(addon, outcome, "UPDATE_FAILED")
        if addon.status != "UPDATE_FAILED":  # a failed update leaves the running version in place
            addon.version = version.version
            if p.get("configurationValues") is not None:
                addon.configuration_values = p["configurationValues"]
            if p.get("serviceAccountRoleArn") is not None:
                addon.service_account_role_arn = p["serviceAccountRoleArn"]
        addon.modified_at = utcnow()
        update.finish(errors if addon.status == "UPDATE_FAILED" else None)

    # The add-on carries the transition; the update record settles through it.
    addon.schedule(delays.addon_update, land)
    update.settle = addon.settle  # type: ignore[method-assign]
    return ActionResult({"update": update.to_dict()})


def delete_addon(self: Any) -> ActionResult:
    p = parsed_params(self)
    cluster = get_cluster(self.eks_backend, p["clusterName"])
    addon = _get_addon(cluster, p["addonName"])
    if addon.status == "DELETING":
        raise AwsError(
            "ResourceInUseException",
            f"Addon {addon.name} is already being deleted.",
            clusterName=cluster.name,
            addonName=addon.name,
        )
    addon.cancel_transitions()
    addon.status = "DELETING"
    _replace_associations(cluster, addon, None)
    result = addon.to_dict()

    def gone() -> None:
        state(cluster).addons.pop(addon.name, None)

    addon.schedule(delays.addon_delete, gone)
    return ActionResult({"addon": result})


def describe_addon_versions(self: Any) -> ActionResult:
    p = parsed_params(self)
    k8s = p.get("kubernetesVersion")
    found = []
    for spec in catalog.CATALOG.values():
        if p.get("addonName") and spec.name != p["addonName"]:
            continue
        if p.get("types") and spec.type not in p["types"]:
            continue
        if p.get("publishers") and spec.publisher not in p["publishers"]:
            continue
        if p.get("owners") and spec.owner not in p["owners"]:
            continue
        versions = [v for v in spec.versions if not k8s or k8s in v.cluster_versions]
        if not versions:
            continue
        versions.sort(key=lambda v: version_key(v.version), reverse=True)  # newest first, as AWS
        found.append(
            {
                "addonName": spec.name,
                "type": spec.type,
                "owner": spec.owner,
                "publisher": spec.publisher,
                "defaultNamespace": spec.default_namespace,
                "addonVersions": [
                    {
                        "addonVersion": v.version,
                        "architecture": ["amd64", "arm64"],
                        "computeTypes": ["ec2", "hyperpod"],
                        "compatibilities": [
                            {"clusterVersion": cv, "platformVersions": ["*"], "defaultVersion": v.default}
                            for cv in v.cluster_versions
                            if not k8s or cv == k8s
                        ],
                        "requiresConfiguration": v.requires_configuration,
                        "requiresIamPermissions": v.requires_iam,
                    }
                    for v in versions
                ],
            }
        )
    page, token = paginate(found, p.get("maxResults"), p.get("nextToken"))
    return ActionResult(drop_none({"addons": page, "nextToken": token}))


def describe_addon_configuration(self: Any) -> ActionResult:
    p = parsed_params(self)
    spec = catalog.CATALOG.get(p.get("addonName", ""))
    if spec is None:
        raise AwsError(
            "ResourceNotFoundException",
            f"addonName: Addon {p.get('addonName')} not found.",
            addonName=p.get("addonName"),
        )
    version = spec.version(p.get("addonVersion", ""))
    if version is None:
        raise AwsError(
            "InvalidParameterException",
            f"addonVersion: Addon version {p.get('addonVersion')} specified is not supported for {spec.name}",
            addonName=spec.name,
        )
    identity = []
    if version.requires_iam and spec.service_account:
        identity = [
            {
                "serviceAccount": spec.service_account,
                "recommendedManagedPolicies": list(spec.recommended_policies),
            }
        ]
    return ActionResult(
        {
            "addonName": spec.name,
            "addonVersion": version.version,
            "configurationSchema": json.dumps(spec.schema),
            "podIdentityConfiguration": identity,
        }
    )


ROUTES = (
    "{0}/clusters/(?P<name>[^/]+)/addons$",
    "{0}/clusters/(?P<name>[^/]+)/addons/(?P<addonName>[^/]+)$",
    "{0}/clusters/(?P<name>[^/]+)/addons/(?P<addonName>[^/]+)/update$",
    "{0}/addons/supported-versions$",
    "{0}/addons/configuration-schemas$",
)


def install(response_cls: Any) -> None:
    for fn in (
        create_addon,
        describe_addon,
        list_addons,
        update_addon,
        delete_addon,
        describe_addon_versions,
        describe_addon_configuration,
    ):
        setattr(response_cls, fn.__name__, fn)
