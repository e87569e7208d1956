"""Custom resources checked against their CRD's ``openAPIV3Schema``, as kube-apiserver does.

On every create, update and patch of a custom object (its status subresource included) the API
server prunes the fields the structural schema does not declare, then validates what is left, and
refuses the request with a 422 whose causes name each field path. Modelled here, with upstream's
wording:

- ``type`` (object, array, string, integer, number, boolean) and ``nullable``;
  ``x-kubernetes-int-or-string``;
- ``properties`` (unknown fields pruned unless ``x-kubernetes-preserve-unknown-fields``),
  ``additionalProperties`` (a map), ``items``, ``required``;
- ``enum``, ``minimum``/``maximum``, ``minLength``/``maxLength``, ``pattern``,
  ``minItems``/``maxItems``;
- at the root, ``apiVersion`` and ``kind`` are the server's and ``metadata`` is not pruned (only
  ``metadata.name`` may be constrained, as upstream allows).

Not modelled: ``x-kubernetes-validations`` (CEL: no maintained Python evaluator serves here),
``default`` values, ``format`` checks, ``oneOf``/``anyOf``/``not``, ``x-kubernetes-list-type``
uniqueness, and the rule that a schema must be structural (a CRD is taken as written).
"""

from __future__ import annotations

import re
from typing import Any

Cause = tuple[str, str]

_TYPES = {
    "object": dict,
    "array": list,
    "string": str,
    "boolean": bool,
}


def _json(value: Any) -> str:
    import json

    return json.dumps(value)


def _type_ok(kind: str, value: Any) -> bool:
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    expected = _TYPES.get(kind)
    return expected is None or isinstance(value, expected)


def prune_and_validate(schema: dict[str, Any], obj: dict[str, Any]) -> list[Cause]:
    """Prune ``obj`` in place to what ``schema`` declares; return the causes it is invalid for."""
    causes: list[Cause] = []
    properties = schema.get("properties") or {}
    for key in list(obj):
        if key in ("apiVersion", "kind"):
            continue
        if key == "metadata":
            meta_schema = properties.get("metadata") or {}
            name_schema = (meta_schema.get("properties") or {}).get("name")
            name = (obj.get("metadata") or {}).get("name")
            if name_schema and isinstance(name, str):
                causes += _check("metadata.name", name_schema, name, prune=False)
            continue
        if key in properties:
            obj[key], found = _walk(key, properties[key], obj[key])
            causes += found
        elif not schema.get("x-kubernetes-preserve-unknown-fields"):
            del obj[key]
    for key in schema.get("required") or []:
        if key not in obj:
            causes.append((key, "Required value"))
    return causes


def _walk(path: str, schema: dict[str, Any], value: Any) -> tuple[Any, list[Cause]]:
    """The pruned value and the causes of ``value`` at ``path`` against ``schema``."""
    causes = _check(path, schema, value, prune=True)
    if causes:
        return value, causes
    if isinstance(value, dict) and (schema.get("properties") is not None or "additionalProperties" in schema):
        properties = schema.get("properties") or {}
        additional = schema.get("additionalProperties")
        pruned: dict[str, Any] = {}
        for key, item in value.items():
            child = f"{path}.{key}"
            if key in properties:
                pruned[key], found = _walk(child, properties[key], item)
                causes += found
            elif isinstance(additional, dict):
                pruned[key], found = _walk(child, additional, item)
                causes += found
            elif additional is True or schema.get("x-kubernetes-preserve-unknown-fields"):
                pruned[key] = item
            # else: pruned, as upstream does for fields the schema does not declare
        for key in schema.get("required") or []:
            if key not in value:
                causes.append((f"{path}.{key}", "Required value"))
        return pruned, causes
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        items = []
        for i, item in enumerate(value):
            pruned_item, found = _walk(f"{path}[{i}]", schema["items"], item)
            items.append(pruned_item)
            causes += found
        return items, causes
    return value, causes


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    return {dict: "object", list: "array", str: "string", float: "number"}.get(type(value), "object")


def _check(path: str, schema: dict[str, Any], value: Any, *, prune: bool) -> list[Cause]:
    """The causes of ``value`` itself (type, enum, bounds, length, pattern, item counts)."""

    def invalid(shown: Any, should: str) -> Cause:
        return (path, f"Invalid value: {shown}: {path} in body {should}")

    if value is None and schema.get("nullable"):
        return []
    if schema.get("x-kubernetes-int-or-string"):
        if not (isinstance(value, str) or _type_ok("integer", value)):
            return [invalid(_json(value), "must be of type integer,string")]
    elif value is None or ("type" in schema and not _type_ok(schema["type"], value)):
        got = _type_name(value)
        return [invalid(f'"{got}"', f'must be of type {schema.get("type", "object")}: "{got}"')]
    causes: list[Cause] = []
    if "enum" in schema and value not in schema["enum"]:
        supported = ", ".join(_json(v) for v in schema["enum"])
        causes.append((path, f"Unsupported value: {_json(value)}: supported values: {supported}"))
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            causes.append(invalid(value, f"should be greater than or equal to {schema['minimum']}"))
        if "maximum" in schema and value > schema["maximum"]:
            causes.append(invalid(value, f"should be less than or equal to {schema['maximum']}"))
    if isinstance(value, str):
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            causes.append((path, f"Too long: may not be more than {schema['maxLength']} bytes"))
        if "minLength" in schema and len(value) < schema["minLength"]:
            causes.append(invalid(_json(value), f"should be at least {schema['minLength']} chars long"))
        if "pattern" in schema and not re.search(schema["pattern"], value):
            causes.append(invalid(_json(value), f"should match '{schema['pattern']}'"))
    if isinstance(value, list):
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            causes.append((path, f"Too many: {len(value)}: must have at most {schema['maxItems']} items"))
        if "minItems" in schema and len(value) < schema["minItems"]:
            causes.append(invalid(len(value), f"should have at least {schema['minItems']} items"))
    return causes
