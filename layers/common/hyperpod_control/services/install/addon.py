"""The EKS add-on that runs AWS's training operator: the version, the configuration checked against
the add-on's schema, create or update, and the wait for it to become ACTIVE (or gone).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

from hyperpod_control.adapters.eks import EksAdapter
from hyperpod_control.exceptions import (
    AddonFailedError,
    InvalidInputError,
    ResourceNotFoundError,
    VersionConflictError,
)
from hyperpod_control.models.install import (
    ADDON_NAME,
    MANAGED_BY,
    AddonConfiguration,
    AddonInput,
    AddonOutcome,
    AddonState,
    DescribeAddonInput,
    resolve_version,
    version_key,
)
from hyperpod_control.models.names import MANAGED_TAG
from hyperpod_control.services.install.common import DONE, as_list

BUSY = ("CREATING", "UPDATING", "DELETING")
BROKEN = ("CREATE_FAILED", "UPDATE_FAILED", "DEGRADED", "DELETE_FAILED")


def choose_version(requested: str | None, available: Iterable[str], kubernetes_version: str | None) -> str:
    """Pure: the requested version if the cluster supports it, else the latest one it supports."""
    versions = sorted(set(available), key=version_key, reverse=True)
    if not versions:
        raise InvalidInputError(
            f"addonVersion: no version of {ADDON_NAME} supports Kubernetes {kubernetes_version}.",
            remedy="upgrade the EKS cluster to a Kubernetes version the add-on supports.",
        )
    if requested is None:
        return versions[0]
    resolved = resolve_version(requested, versions)
    if resolved is None:
        raise InvalidInputError(
            f"addonVersion: {requested} is not a version of {ADDON_NAME} for Kubernetes "
            f"{kubernetes_version}; available: {', '.join(versions)}.",
            remedy="pick one of the available versions, or leave addonVersion out for the latest.",
        )
    return resolved


def configuration_json(config: AddonConfiguration | None) -> str | None:
    """Pure: the add-on's ``configurationValues`` string (None when nothing is configured)."""
    if config is None:
        return None
    data = config.dump()
    return json.dumps(data, sort_keys=True, separators=(",", ":")) if data else None


_TYPES = {
    "object": dict,
    "string": str,
    "integer": int,
    "number": (int, float),
    "boolean": bool,
    "array": list,
}


def schema_errors(value: Any, schema: dict[str, Any], path: str = "configurationValues") -> list[str]:
    """Pure: where ``value`` breaks the add-on's JSON schema (the subset EKS schemas use: type,
    properties, additionalProperties, pattern, enum), each error naming its path."""
    errors: list[str] = []
    types = as_list(schema.get("type"))
    if types and not any(
        isinstance(value, _TYPES[t]) and not (t in ("integer", "number") and isinstance(value, bool))
        for t in types
        if t in _TYPES
    ):
        return [f"{path}: must be {' or '.join(types)}"]
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{path}: must be one of {schema['enum']}")
    if isinstance(value, str) and "pattern" in schema and not re.search(schema["pattern"], value):
        errors.append(f"{path}: {value!r} does not match {schema['pattern']}")
    if (
        isinstance(value, (int, float))
        and "pattern" in schema
        and not re.search(schema["pattern"], str(value))
    ):
        errors.append(f"{path}: {value!r} does not match {schema['pattern']}")
    if isinstance(value, dict):
        properties = schema.get("properties") or {}
        extra = schema.get("additionalProperties", True)
        for key, item in value.items():
            where = f"{path}.{key}"
            if key in properties:
                errors.extend(schema_errors(item, properties[key], where))
            elif extra is False:
                errors.append(f"{where}: is not a configuration value of {ADDON_NAME}")
            elif isinstance(extra, dict):
                errors.extend(schema_errors(item, extra, where))
    return errors


def decide_addon(existing: dict[str, Any] | None, version: str, config: str | None) -> str:
    """Pure: ``create``, ``update`` or ``unchanged`` (busy: the wait that follows sees it through)."""
    if existing is None:
        return "create"
    status = existing.get("status", "")
    if status in BUSY:
        if status == "DELETING":
            raise VersionConflictError(f"{ADDON_NAME} is being deleted; installing it again once it is gone.")
        return "unchanged"
    current = existing.get("configurationValues") or None
    same_config = _parsed(current) == _parsed(config)
    if existing.get("addonVersion") == version and same_config and status not in BROKEN:
        return "unchanged"
    return "update"


def _parsed(values: str | None) -> Any:
    if not values:
        return None
    try:
        return json.loads(values)
    except ValueError:
        return values


def create_or_update_addon(request: AddonInput, eks: EksAdapter) -> AddonOutcome:
    cluster = request.cluster
    available = [
        v["addonVersion"]
        for v in eks.addon_versions(ADDON_NAME, cluster.kubernetes_version)
        if "addonVersion" in v
    ]
    version = choose_version(request.addon_version, available, cluster.kubernetes_version)
    config = configuration_json(request.configuration_values)
    if config is not None:
        errors = schema_errors(json.loads(config), eks.configuration_schema(ADDON_NAME, version))
        if errors:
            raise InvalidInputError(
                f"configurationValues: not accepted by {ADDON_NAME} {version}: {'; '.join(errors)}.",
                remedy="use the keys of the add-on's parameter table (aws eks describe-addon-configuration).",
            )
    existing = eks.describe_addon(cluster.eks_cluster_name, ADDON_NAME)
    action = decide_addon(existing, version, config)
    # The association stays standalone (EnsurePodIdentityAssociation): never podIdentityAssociations here.
    params: dict[str, Any] = {"addonVersion": version, "resolveConflicts": "OVERWRITE"}
    if action == "create":
        if config is not None:
            params["configurationValues"] = config
        params["tags"] = {MANAGED_TAG: MANAGED_BY}
        found = eks.create_addon(cluster.eks_cluster_name, ADDON_NAME, **params)
        status = found.get("status", "CREATING")
    elif action == "update":
        params["configurationValues"] = config or ""
        eks.update_addon(cluster.eks_cluster_name, ADDON_NAME, **params)
        status = "UPDATING"
    else:
        assert existing is not None
        status = existing.get("status", "ACTIVE")
        version = existing.get("addonVersion", version)
    return AddonOutcome(addon_version=version, action=DONE[action], status=status)


def addon_state(addon: dict[str, Any] | None, expect_gone: bool) -> AddonState:
    """Pure: where the add-on is; a failed or degraded one ends the wait with its health issues."""
    if addon is None:
        if expect_gone:
            return AddonState(status="GONE", done=True)
        raise ResourceNotFoundError(f"the {ADDON_NAME} add-on disappeared while the workflow waited for it.")
    status = addon.get("status", "UNKNOWN")
    issues = [
        f"{i.get('code', 'Issue')}: {i.get('message', '')}".strip()
        for i in (addon.get("health") or {}).get("issues", [])
    ]
    if status in BROKEN:
        raise AddonFailedError(
            f"the {ADDON_NAME} add-on is {status}: "
            + ("; ".join(issues) or "no health issue reported")
            + ".",
            remedy="fix what the health issues name (aws eks describe-addon), then run the install again.",
        )
    done = (status == "ACTIVE") and not expect_gone
    return AddonState(status=status, addon_version=addon.get("addonVersion"), done=done, issues=issues)


def describe_addon(request: DescribeAddonInput, eks: EksAdapter) -> AddonState:
    return addon_state(eks.describe_addon(request.cluster.eks_cluster_name, ADDON_NAME), request.expect_gone)
