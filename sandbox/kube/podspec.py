"""Pure functions over pod specs that the scheduler and the kubelet share.

- ``expand``: Kubernetes' ``$(VAR)`` expansion in env values, command and args (``$$`` escapes,
  unknown references stay as written);
- ``container_env``: a container's environment from ``env`` (values, ``fieldRef``,
  ``resourceFieldRef``, ``configMapKeyRef``/``secretKeyRef``) and ``envFrom``, in upstream's order;
- ``pod_requests`` / ``quantity``: what a pod asks of a node's allocatable resources, with
  upstream's rules (limits stand for missing requests; init containers count by their maximum).
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

from kubernetes.utils.quantity import parse_quantity

_REF = re.compile(r"\$\$|\$\(([A-Za-z_][-._A-Za-z0-9]*)\)")


class SpecError(ValueError):
    """A container spec the kubelet cannot run; the message is what the pod status reports."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def expand(text: str, env: Mapping[str, str]) -> str:
    """``$(VAR)`` -> env[VAR] if defined, ``$$`` -> ``$``, anything else as written (upstream's
    ``expansion.Expand``)."""

    def one(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        return env[name] if name in env else match.group(0)

    return _REF.sub(one, text)


def quantity(value: Any) -> Decimal:
    """A resource quantity ("500m", "2", "1Gi", 3) as a number (cores, bytes, counts)."""
    try:
        return Decimal(parse_quantity(value))
    except ValueError as exc:
        raise SpecError("InvalidQuantity", f"invalid quantity {value!r}: {exc}") from exc


def container_requests(container: Mapping[str, Any]) -> dict[str, Decimal]:
    resources = container.get("resources") or {}
    limits = resources.get("limits") or {}
    requests = resources.get("requests") or {}
    # upstream defaults a missing request to the limit
    merged = {**limits, **requests}
    return {name: quantity(v) for name, v in merged.items()}


def pod_requests(pod: Mapping[str, Any]) -> dict[str, Decimal]:
    """max(sum over containers, max over init containers) per resource, plus the pod overhead."""
    spec = pod.get("spec") or {}
    total: dict[str, Decimal] = {}
    for c in spec.get("containers") or []:
        for name, v in container_requests(c).items():
            total[name] = total.get(name, Decimal(0)) + v
    for c in spec.get("initContainers") or []:
        for name, v in container_requests(c).items():
            total[name] = max(total.get(name, Decimal(0)), v)
    for name, v in (spec.get("overhead") or {}).items():
        total[name] = total.get(name, Decimal(0)) + quantity(v)
    return total


def memory_limit_bytes(container: Mapping[str, Any]) -> int:
    limit = ((container.get("resources") or {}).get("limits") or {}).get("memory")
    return int(quantity(limit)) if limit is not None else 0


_FIELD = re.compile(r"^metadata\.(labels|annotations)\['([^']+)'\]$")


def field_ref(pod: Mapping[str, Any], path: str) -> str:
    """The value of a downward-API ``fieldRef.fieldPath`` (the ones upstream allows in env)."""
    meta, spec, status = pod.get("metadata") or {}, pod.get("spec") or {}, pod.get("status") or {}
    simple = {
        "metadata.name": meta.get("name"),
        "metadata.namespace": meta.get("namespace"),
        "metadata.uid": meta.get("uid"),
        "spec.nodeName": spec.get("nodeName"),
        "spec.serviceAccountName": spec.get("serviceAccountName"),
        "status.podIP": status.get("podIP"),
        "status.podIPs": ",".join(p["ip"] for p in status.get("podIPs") or []) or status.get("podIP"),
        "status.hostIP": status.get("hostIP"),
        "status.hostIPs": status.get("hostIP"),
    }
    if path in simple:
        return simple[path] or ""
    match = _FIELD.match(path)
    if match:
        return str((meta.get(match.group(1)) or {}).get(match.group(2), ""))
    raise SpecError("CreateContainerConfigError", f'unsupported fieldPath "{path}"')


def _resource_ref(container: Mapping[str, Any], ref: Mapping[str, Any], node_allocatable: Mapping) -> str:
    resource = ref.get("resource", "")
    kind, _, name = resource.partition(".")
    resources = container.get("resources") or {}
    value = (resources.get(kind) or {}).get(name)
    if value is None:
        # upstream falls back to the node's allocatable when no limit is set
        value = node_allocatable.get(name, "0")
    divisor = quantity(ref.get("divisor") or "1")
    result = quantity(value) / divisor
    return str(int(result.to_integral_value(rounding="ROUND_CEILING")))


Lookup = Callable[[str, str, str], "dict | None"]


def _key_ref(kind: str, ref: Mapping[str, Any], namespace: str, lookup: Lookup) -> str | None:
    obj = lookup(kind, namespace, ref.get("name", ""))
    optional = bool(ref.get("optional"))
    if obj is None:
        if optional:
            return None
        raise SpecError("CreateContainerConfigError", f'{kind[:-1]} "{ref.get("name")}" not found')
    data = obj.get("data") or {}
    key = ref.get("key", "")
    if key not in data:
        if optional:
            return None
        raise SpecError(
            "CreateContainerConfigError",
            f"couldn't find key {key} in {kind[:-1].capitalize()} {namespace}/{ref.get('name')}",
        )
    value = data[key]
    return base64.b64decode(value).decode() if kind == "secrets" else str(value)


def container_env(
    pod: Mapping[str, Any],
    container: Mapping[str, Any],
    lookup: Lookup,
    node_allocatable: Mapping[str, Any] | None = None,
) -> dict[str, str]:
    """The container's declared environment, as the kubelet computes it: ``envFrom`` first, then
    ``env`` in order, each value expanded against what is defined before it.

    ``lookup(kind, namespace, name)`` returns a ConfigMap ("configmaps") or Secret ("secrets").
    """
    namespace = (pod.get("metadata") or {}).get("namespace", "default")
    env: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        prefix = source.get("prefix", "")
        for kind, key in (("configmaps", "configMapRef"), ("secrets", "secretRef")):
            ref = source.get(key)
            if not ref:
                continue
            obj = lookup(kind, namespace, ref.get("name", ""))
            if obj is None:
                if ref.get("optional"):
                    continue
                raise SpecError("CreateContainerConfigError", f'{kind[:-1]} "{ref.get("name")}" not found')
            for k, v in (obj.get("data") or {}).items():
                env[prefix + k] = base64.b64decode(v).decode() if kind == "secrets" else str(v)
    for item in container.get("env") or []:
        name = item["name"]
        if "value" in item or "valueFrom" not in item:
            env[name] = expand(str(item.get("value", "")), env)
            continue
        source = item["valueFrom"]
        value: str | None
        if "fieldRef" in source:
            value = field_ref(pod, source["fieldRef"].get("fieldPath", ""))
        elif "resourceFieldRef" in source:
            value = _resource_ref(container, source["resourceFieldRef"], node_allocatable or {})
        elif "configMapKeyRef" in source:
            value = _key_ref("configmaps", source["configMapKeyRef"], namespace, lookup)
        elif "secretKeyRef" in source:
            value = _key_ref("secrets", source["secretKeyRef"], namespace, lookup)
        else:
            raise SpecError(
                "CreateContainerConfigError", f"env {name}: unsupported valueFrom {sorted(source)}"
            )
        if value is not None:
            env[name] = value
    return env


def container_argv(container: Mapping[str, Any], env: Mapping[str, str], entrypoints: Mapping) -> list[str]:
    """command + args with ``$(VAR)`` expanded; an image's entrypoint comes from ``entrypoints``
    (the sandbox pulls no images, so it cannot read one)."""
    command = list(container.get("command") or [])
    args = list(container.get("args") or [])
    if not command:
        image = container.get("image", "")
        image_entry = entrypoints.get(image) or entrypoints.get(image.rsplit(":", 1)[0])
        if image_entry is None:
            raise SpecError(
                "CreateContainerError",
                f'the sandbox runs no images: container "{container.get("name")}" needs a command '
                f'(image "{image}" has no entrypoint registered with the kubelet)',
            )
        command = list(image_entry)
    return [expand(str(part), env) for part in command + args]
