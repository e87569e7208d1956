"""The kinds the sandbox API server serves: built-in types and the types CRDs define.

A ``ResourceType`` carries what routing, discovery, storage and selectors need about one resource
(group, version(s), plural, kind, scope, subresources, which fields a field selector may use).
``Registry`` holds the built-ins and adds or removes a custom type whenever a
CustomResourceDefinition is established or deleted; it also renders the discovery documents
(``/api``, ``/apis``, ``/api/v1``, ``/apis/<g>/<v>``) and the minimal OpenAPI v3 documents kubectl
reads to decide that the server validates fields itself (so ``kubectl apply`` needs no OpenAPI v2
protobuf from us).

NetworkPolicies are served (the control plane makes one per job) but, as on a cluster without a
network plugin that implements them, not enforced.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sandbox.kube.selectors import dig

VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]


def _meta(*path: str) -> Callable[[dict], Any]:
    return lambda obj: dig(obj, *path)


COMMON_FIELDS: dict[str, Callable[[dict], Any]] = {
    "metadata.name": _meta("metadata", "name"),
    "metadata.namespace": _meta("metadata", "namespace"),
}
POD_FIELDS = {
    **COMMON_FIELDS,
    "spec.nodeName": _meta("spec", "nodeName"),
    "spec.restartPolicy": _meta("spec", "restartPolicy"),
    "spec.schedulerName": _meta("spec", "schedulerName"),
    "spec.serviceAccountName": _meta("spec", "serviceAccountName"),
    "spec.hostNetwork": lambda o: bool(dig(o, "spec", "hostNetwork")),
    "status.phase": _meta("status", "phase"),
    "status.podIP": _meta("status", "podIP"),
    "status.nominatedNodeName": _meta("status", "nominatedNodeName"),
}
NODE_FIELDS = {**COMMON_FIELDS, "spec.unschedulable": lambda o: bool(dig(o, "spec", "unschedulable"))}
EVENT_FIELDS = {
    **COMMON_FIELDS,
    **{
        f"involvedObject.{k}": _meta("involvedObject", k)
        for k in ("kind", "namespace", "name", "uid", "apiVersion", "resourceVersion", "fieldPath")
    },
    "reason": _meta("reason"),
    "reportingComponent": _meta("reportingComponent"),
    "source": _meta("source", "component"),
    "type": _meta("type"),
}
SECRET_FIELDS = {**COMMON_FIELDS, "type": _meta("type")}
NAMESPACE_FIELDS = {**COMMON_FIELDS, "status.phase": _meta("status", "phase")}


@dataclass
class ResourceType:
    group: str
    versions: list[str]
    plural: str
    kind: str
    namespaced: bool
    singular: str = ""
    short_names: list[str] = field(default_factory=list)
    categories: list[str] = field(default_factory=list)
    status_subresource: bool = False
    #: metadata.generation counts changes to everything but metadata and status
    tracks_generation: bool = False
    #: DELETE answers the object (pods, custom objects) rather than a Status
    returns_deleted_object: bool = False
    custom: bool = False
    verbs: list[str] = field(default_factory=lambda: list(VERBS))
    field_getters: dict[str, Callable[[dict], Any]] = field(default_factory=lambda: dict(COMMON_FIELDS))
    #: extra (name, jsonPath, type) columns for table output (CRD additionalPrinterColumns)
    printer_columns: list[dict] = field(default_factory=list)
    #: a CRD's openAPIV3Schema (storage version): objects are pruned and validated against it
    schema: dict | None = None

    def __post_init__(self) -> None:
        self.singular = self.singular or self.kind.lower()

    @property
    def key(self) -> tuple[str, str]:
        return (self.group, self.plural)

    @property
    def storage_version(self) -> str:
        return self.versions[0]

    def api_version(self, version: str | None = None) -> str:
        version = version or self.storage_version
        return f"{self.group}/{version}" if self.group else version

    @property
    def qualified(self) -> str:
        """``pods`` or ``deployments.apps``: how upstream names a resource in messages."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def subresources(self) -> list[str]:
        subs = ["status"] if self.status_subresource else []
        if self.plural == "pods":
            subs += ["binding"]
        if self.plural == "namespaces":
            subs += ["finalize"]
        return subs


def builtin_types() -> list[ResourceType]:
    rt = ResourceType
    return [
        rt(
            "",
            ["v1"],
            "namespaces",
            "Namespace",
            False,
            short_names=["ns"],
            status_subresource=True,
            returns_deleted_object=True,
            field_getters=dict(NAMESPACE_FIELDS),
            verbs=["create", "delete", "get", "list", "patch", "update", "watch"],
        ),
        rt(
            "",
            ["v1"],
            "nodes",
            "Node",
            False,
            short_names=["no"],
            status_subresource=True,
            field_getters=dict(NODE_FIELDS),
        ),
        rt(
            "",
            ["v1"],
            "pods",
            "Pod",
            True,
            short_names=["po"],
            categories=["all"],
            status_subresource=True,
            returns_deleted_object=True,
            field_getters=dict(POD_FIELDS),
        ),
        rt("", ["v1"], "events", "Event", True, short_names=["ev"], field_getters=dict(EVENT_FIELDS)),
        rt("", ["v1"], "configmaps", "ConfigMap", True, short_names=["cm"]),
        rt("", ["v1"], "secrets", "Secret", True, field_getters=dict(SECRET_FIELDS)),
        rt("", ["v1"], "serviceaccounts", "ServiceAccount", True, short_names=["sa"]),
        rt(
            "apps",
            ["v1"],
            "deployments",
            "Deployment",
            True,
            short_names=["deploy"],
            categories=["all"],
            status_subresource=True,
            tracks_generation=True,
        ),
        rt(
            "apps",
            ["v1"],
            "daemonsets",
            "DaemonSet",
            True,
            short_names=["ds"],
            categories=["all"],
            status_subresource=True,
            tracks_generation=True,
        ),
        # Stored, validated and defaulted as kube-apiserver does; not enforced: the sandbox has no
        # network plugin, so every pod still reaches every other (as on a cluster without one).
        rt("networking.k8s.io", ["v1"], "networkpolicies", "NetworkPolicy", True, short_names=["netpol"]),
        rt("rbac.authorization.k8s.io", ["v1"], "roles", "Role", True),
        rt("rbac.authorization.k8s.io", ["v1"], "rolebindings", "RoleBinding", True),
        rt("rbac.authorization.k8s.io", ["v1"], "clusterroles", "ClusterRole", False),
        rt("rbac.authorization.k8s.io", ["v1"], "clusterrolebindings", "ClusterRoleBinding", False),
        rt(
            "apiextensions.k8s.io",
            ["v1"],
            "customresourcedefinitions",
            "CustomResourceDefinition",
            False,
            short_names=["crd", "crds"],
            status_subresource=True,
            tracks_generation=True,
            returns_deleted_object=True,
        ),
    ]


#: Group preferred versions and the order groups are listed in ``/apis``.
BUILTIN_GROUP_ORDER = ["apps", "networking.k8s.io", "rbac.authorization.k8s.io", "apiextensions.k8s.io"]


def custom_type_from_crd(crd: dict) -> ResourceType:
    spec = crd["spec"]
    names = spec["names"]
    served = [v for v in spec.get("versions", []) if v.get("served", True)]
    # the storage version first: objects are kept in it and their apiVersion rewritten on the way out
    served.sort(key=lambda v: not v.get("storage", False))
    status = any("status" in (v.get("subresources") or {}) for v in served)
    columns = next((v.get("additionalPrinterColumns") or [] for v in served if v.get("storage")), [])
    storage = next((v for v in served if v.get("storage")), served[0] if served else {})
    schema = ((storage.get("schema") or {}).get("openAPIV3Schema")) or None
    return ResourceType(
        group=spec["group"],
        versions=[v["name"] for v in served],
        plural=names["plural"],
        kind=names["kind"],
        namespaced=spec.get("scope", "Namespaced") == "Namespaced",
        singular=names.get("singular") or names["kind"].lower(),
        short_names=list(names.get("shortNames") or []),
        categories=list(names.get("categories") or []),
        status_subresource=status,
        tracks_generation=True,
        returns_deleted_object=True,
        custom=True,
        printer_columns=list(columns),
        schema=schema,
    )


class Registry:
    """Built-in and CRD-defined resource types, looked up by group/version/plural or by kind."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._types: dict[tuple[str, str], ResourceType] = {t.key: t for t in builtin_types()}

    def add(self, rt: ResourceType) -> None:
        with self._lock:
            self._types[rt.key] = rt

    def remove(self, key: tuple[str, str]) -> None:
        with self._lock:
            self._types.pop(key, None)

    def all(self) -> list[ResourceType]:
        with self._lock:
            return list(self._types.values())

    def get(self, group: str, plural: str) -> ResourceType | None:
        with self._lock:
            return self._types.get((group, plural))

    def lookup(self, group: str, version: str, plural: str) -> ResourceType | None:
        rt = self.get(group, plural)
        return rt if rt is not None and version in rt.versions else None

    def by_kind(self, api_version: str, kind: str) -> ResourceType | None:
        group, _, version = api_version.rpartition("/")
        for rt in self.all():
            if rt.group == group and rt.kind == kind and version in rt.versions:
                return rt
        return None

    # -- discovery --------------------------------------------------------------------------------

    def groups(self) -> dict[str, list[str]]:
        """group -> served versions, preferred first; core ("") excluded."""
        result: dict[str, list[str]] = {}
        for rt in self.all():
            if rt.group:
                versions = result.setdefault(rt.group, [])
                for v in rt.versions:
                    if v not in versions:
                        versions.append(v)
        order = {g: i for i, g in enumerate(BUILTIN_GROUP_ORDER)}
        return dict(sorted(result.items(), key=lambda kv: (order.get(kv[0], len(order)), kv[0])))

    def api_versions(self) -> dict:
        return {
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1:443"}],
        }

    def api_group_list(self) -> dict:
        groups = []
        for group, versions in self.groups().items():
            gvs = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
            groups.append({"name": group, "versions": gvs, "preferredVersion": gvs[0]})
        return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}

    def api_group(self, group: str) -> dict | None:
        versions = self.groups().get(group)
        if not versions:
            return None
        gvs = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
        return {
            "kind": "APIGroup",
            "apiVersion": "v1",
            "name": group,
            "versions": gvs,
            "preferredVersion": gvs[0],
        }

    def resource_list(self, group: str, version: str) -> dict | None:
        resources = []
        for rt in sorted(self.all(), key=lambda r: r.plural):
            if rt.group != group or version not in rt.versions:
                continue
            entry = {
                "name": rt.plural,
                "singularName": rt.singular,
                "namespaced": rt.namespaced,
                "kind": rt.kind,
                "verbs": rt.verbs,
            }
            if rt.short_names:
                entry["shortNames"] = rt.short_names
            if rt.categories:
                entry["categories"] = rt.categories
            resources.append(entry)
            for sub in rt.subresources:
                verbs = (
                    ["create"]
                    if sub == "binding"
                    else ["update"]
                    if sub == "finalize"
                    else ["get", "patch", "update"]
                )
                kind = "Binding" if sub == "binding" else rt.kind
                resources.append(
                    {
                        "name": f"{rt.plural}/{sub}",
                        "singularName": "",
                        "namespaced": rt.namespaced,
                        "kind": kind,
                        "verbs": verbs,
                    }
                )
        if not resources:
            return None
        gv = f"{group}/{version}" if group else version
        return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}

    # -- OpenAPI v3 (just enough for kubectl's field-validation probe) ----------------------------

    def openapi_index(self) -> dict:
        paths = {"api/v1": {"serverRelativeURL": "/openapi/v3/api/v1"}}
        for group, versions in self.groups().items():
            for v in versions:
                paths[f"apis/{group}/{v}"] = {"serverRelativeURL": f"/openapi/v3/apis/{group}/{v}"}
        return {"paths": paths}

    def openapi_group_version(self, group: str, version: str) -> dict | None:
        paths: dict[str, Any] = {}
        prefix = f"/apis/{group}/{version}" if group else f"/api/{version}"
        for rt in self.all():
            if rt.group != group or version not in rt.versions:
                continue
            base = (
                f"{prefix}/namespaces/{{namespace}}/{rt.plural}/{{name}}"
                if rt.namespaced
                else f"{prefix}/{rt.plural}/{{name}}"
            )
            paths[base] = {
                "patch": {
                    "operationId": f"patch{rt.kind}",
                    "x-kubernetes-action": "patch",
                    "x-kubernetes-group-version-kind": {"group": group, "version": version, "kind": rt.kind},
                    "parameters": [
                        {
                            "name": "fieldValidation",
                            "in": "query",
                            "schema": {"type": "string", "uniqueItems": True},
                        },
                        {
                            "name": "fieldManager",
                            "in": "query",
                            "schema": {"type": "string", "uniqueItems": True},
                        },
                    ],
                    "responses": {"200": {"description": "OK"}},
                }
            }
        if not paths:
            return None
        return {
            "openapi": "3.0.0",
            "info": {"title": "Kubernetes", "version": "v1.33.0"},
            "paths": paths,
            "components": {"schemas": {}},
        }
