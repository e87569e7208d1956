"""The sandbox's EKS add-on catalogue: versions, Kubernetes compatibility, configuration schemas.

What ``describe_addon_versions`` and ``describe_addon_configuration`` answer, and what
``create_addon``/``update_addon`` validate against.

Sources (docs/hyperpod-contract.md, "The training-operator add-on"): the training operator's
published versions and the ``requiresIamPermissions`` flip of v1.2.1-eksbuild.1 (reported in
github.com/awslabs/awsome-distributed-ai PR #1076); Kubernetes 1.28-1.33 from the operator docs
snapshot; its configuration keys from AWS's page "Installing the training operator" (a
translated version capitalises them, ``Manager.Resources.Requests.CPU``: a translation artefact,
the Helm values are camelCase). Versions of the other add-ons are plausible sandbox data, not a copy
of AWS's list; the prerequisite checks only need "present, and at least version X".
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

TRAINING_OPERATOR = "amazon-sagemaker-hyperpod-training-operator"
POD_IDENTITY_AGENT = "eks-pod-identity-agent"
CERT_MANAGER = "cert-manager"
TASK_GOVERNANCE = "amazon-sagemaker-hyperpod-taskgovernance"

OPERATOR_NAMESPACE = "aws-hyperpod"
OPERATOR_SERVICE_ACCOUNT = "hp-training-operator-controller-manager"
OPERATOR_POLICY_ARN = "arn:aws:iam::aws:policy/AmazonSageMakerHyperPodTrainingOperatorAccess"

#: Kubernetes versions the docs snapshot lists for the training operator.
OPERATOR_K8S = ("1.28", "1.29", "1.30", "1.31", "1.32", "1.33")
ALL_K8S = ("1.28", "1.29", "1.30", "1.31", "1.32", "1.33", "1.34")


@dataclass(frozen=True)
class AddonVersion:
    version: str
    cluster_versions: tuple[str, ...]
    default: bool = False
    requires_iam: bool = False
    requires_configuration: bool = False


@dataclass(frozen=True)
class AddonSpec:
    name: str
    type: str
    owner: str
    publisher: str
    default_namespace: str
    versions: tuple[AddonVersion, ...]
    schema: dict[str, Any] = field(default_factory=dict)
    service_account: str | None = None
    recommended_policies: tuple[str, ...] = ()

    def version(self, version: str) -> AddonVersion | None:
        return next((v for v in self.versions if v.version == version), None)

    def default_version(self, k8s: str) -> AddonVersion | None:
        compatible = [v for v in self.versions if k8s in v.cluster_versions]
        marked = [v for v in compatible if v.default]
        return (marked or compatible[-1:] or [None])[0]


_QUANTITY = r"^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$"
_RESOURCE_PAIR = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "cpu": {"type": ["string", "integer", "number"], "pattern": _QUANTITY},
        "memory": {"type": ["string", "integer"], "pattern": _QUANTITY},
    },
}

#: The training operator's configuration values (defaults from the install docs).
OPERATOR_SCHEMA: dict[str, Any] = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "hpTrainingControllerManager": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "manager": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "resources": {
                            "type": "object",
                            "additionalProperties": False,
                            "properties": {
                                "requests": {
                                    **_RESOURCE_PAIR,
                                    "default": {"cpu": "1", "memory": "2Gi"},
                                },
                                "limits": {**_RESOURCE_PAIR, "default": {"cpu": "2", "memory": "4Gi"}},
                            },
                        }
                    },
                },
                "nodeSelector": {
                    "type": "object",
                    "additionalProperties": {"type": "string"},
                    "default": {"sagemaker.amazonaws.com/compute-type": "HyperPod"},
                },
            },
        }
    },
}

_OPEN_SCHEMA: dict[str, Any] = {"$schema": "http://json-schema.org/draft-07/schema#", "type": "object"}

#: As EKS publishes add-on versions: every one with its build suffix.
_OPERATOR_VERSIONS = (
    "v1.0.0-eksbuild.1",
    "v1.0.1-eksbuild.1",
    "v1.1.0-eksbuild.1",
    "v1.1.1-eksbuild.1",
    "v1.1.2-eksbuild.1",
    "v1.2.0-eksbuild.1",
    "v1.2.1-eksbuild.1",
)

CATALOG: dict[str, AddonSpec] = {
    TRAINING_OPERATOR: AddonSpec(
        name=TRAINING_OPERATOR,
        type="machine-learning",
        owner="aws",
        publisher="eks",
        default_namespace=OPERATOR_NAMESPACE,
        versions=tuple(
            AddonVersion(
                v,
                OPERATOR_K8S,
                default=v == "v1.2.1-eksbuild.1",
                # The flip that broke IaC declaring the association inline (PR #1076).
                requires_iam=v != "v1.2.1-eksbuild.1",
            )
            for v in _OPERATOR_VERSIONS
        ),
        schema=OPERATOR_SCHEMA,
        service_account=OPERATOR_SERVICE_ACCOUNT,
        recommended_policies=(OPERATOR_POLICY_ARN,),
    ),
    POD_IDENTITY_AGENT: AddonSpec(
        name=POD_IDENTITY_AGENT,
        type="security",
        owner="aws",
        publisher="eks",
        default_namespace="kube-system",
        versions=tuple(
            AddonVersion(v, ALL_K8S, default=v == "v1.3.8-eksbuild.2")
            for v in ("v1.3.4-eksbuild.1", "v1.3.7-eksbuild.2", "v1.3.8-eksbuild.2")
        ),
        schema=_OPEN_SCHEMA,
    ),
    CERT_MANAGER: AddonSpec(
        name=CERT_MANAGER,
        type="security",
        owner="community",
        publisher="cert-manager",
        default_namespace="cert-manager",
        versions=tuple(
            AddonVersion(v, ALL_K8S, default=v == "v1.17.2-eksbuild.1")
            for v in ("v1.16.3-eksbuild.1", "v1.17.2-eksbuild.1")
        ),
        schema=_OPEN_SCHEMA,
    ),
    TASK_GOVERNANCE: AddonSpec(
        name=TASK_GOVERNANCE,
        type="machine-learning",
        owner="aws",
        publisher="eks",
        default_namespace="kube-system",
        versions=tuple(
            AddonVersion(v, OPERATOR_K8S, default=v == "v1.3.0-eksbuild.1")
            for v in ("v1.2.0-eksbuild.1", "v1.3.0-eksbuild.1")
        ),
        schema=_OPEN_SCHEMA,
    ),
}


# -- configuration values -----------------------------------------------------------------------


class ConfigurationError(ValueError):
    pass


def parse_configuration(values: str) -> Any:
    """EKS takes configuration values as JSON or YAML."""
    try:
        return json.loads(values)
    except ValueError:
        pass
    import yaml

    try:
        return yaml.safe_load(values)
    except yaml.YAMLError as exc:
        raise ConfigurationError(
            f"Json schema validation failed with error: [invalid JSON or YAML: {exc}]"
        ) from exc


_TYPES = {
    "object": dict,
    "string": str,
    "integer": int,
    "number": (int, float),
    "boolean": bool,
    "array": list,
}


def validate(instance: Any, schema: dict[str, Any]) -> list[str]:
    """The JSON-schema subset the catalogue uses; returns messages naming each bad field."""
    errors: list[str] = []
    _validate(instance, schema, "$", errors)
    return errors


def _validate(value: Any, schema: dict[str, Any], path: str, errors: list[str]) -> None:
    kinds = schema.get("type")
    if kinds is not None:
        kinds = [kinds] if isinstance(kinds, str) else list(kinds)
        ok = any(
            isinstance(value, _TYPES[k]) and not (k in ("integer", "number") and isinstance(value, bool))
            for k in kinds
        )
        if not ok:
            errors.append(f"{path}: {_type_name(value)} found, {' or '.join(kinds)} expected")
            return
    if isinstance(value, str) and "pattern" in schema and not re.search(schema["pattern"], value):
        errors.append(f"{path}: does not match the regex pattern {schema['pattern']}")
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        extra = schema.get("additionalProperties", True)
        for key, item in value.items():
            child = f"{path}.{key}"
            if key in properties:
                _validate(item, properties[key], child, errors)
            elif extra is False:
                errors.append(
                    f"{child}: is not defined in the schema and the schema does not allow additional "
                    "properties"
                )
            elif isinstance(extra, dict):
                _validate(item, extra, child, errors)


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    for name, kind in (
        ("integer", int),
        ("number", float),
        ("string", str),
        ("object", dict),
        ("array", list),
    ):
        if isinstance(value, kind):
            return name
    return type(value).__name__
