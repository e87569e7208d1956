"""Label and field selectors, parsed and matched the way kube-apiserver does (pure functions).

Label selectors (``labelSelector=``): comma-separated requirements ``k=v``, ``k==v``, ``k!=v``,
``k in (a,b)``, ``k notin (a,b)``, ``k`` (exists) and ``!k`` (does not exist). ``!=`` and ``notin``
match objects that lack the key, as upstream does. Field selectors (``fieldSelector=``): ``f=v``,
``f==v``, ``f!=v``, comma-separated, over the fields each resource supports (see
``resources.FIELD_GETTERS``); an unsupported field is a 400 BadRequest, as upstream.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any


class SelectorError(ValueError):
    """A selector that does not parse; the server answers 400 BadRequest with this message."""


_KEY = re.compile(
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
)
_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")


@dataclass(frozen=True)
class Requirement:
    key: str
    op: str  # "=", "!=", "in", "notin", "exists", "!"
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        if self.op == "exists":
            return present
        if self.op == "!":
            return not present
        if self.op in ("=", "in"):
            return present and labels[self.key] in self.values
        # "!=" and "notin": true when the key is absent (upstream semantics)
        return not present or labels[self.key] not in self.values


def _split_top_level(text: str) -> list[str]:
    """Split on commas that are not inside ``( )``."""
    parts, depth, current = [], 0, []
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                raise SelectorError(f"unable to parse requirement: unbalanced ')' in {text!r}")
        if ch == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    if depth != 0:
        raise SelectorError(f"unable to parse requirement: unbalanced '(' in {text!r}")
    parts.append("".join(current))
    return parts


def _check_key(key: str) -> str:
    name = key.rsplit("/", 1)[-1]
    if not key or not _KEY.match(key) or len(name) > 63:
        raise SelectorError(f'unable to parse requirement: invalid label key "{key}"')
    return key


def _check_value(value: str) -> str:
    if len(value) > 63 or not _VALUE.match(value):
        raise SelectorError(f'unable to parse requirement: invalid label value: "{value}"')
    return value


_SET_RE = re.compile(r"^\s*(\S+)\s+(in|notin)\s*\((.*)\)\s*$")


def parse_label_selector(text: str | None) -> tuple[Requirement, ...]:
    """Parse a label selector string; an empty one selects everything."""
    if text is None or not text.strip():
        return ()
    reqs: list[Requirement] = []
    for raw in _split_top_level(text):
        part = raw.strip()
        if not part:
            raise SelectorError(f"unable to parse requirement: empty requirement in {text!r}")
        m = _SET_RE.match(part)
        if m:
            values_text = m.group(3).strip()
            if not values_text:
                raise SelectorError(
                    f"unable to parse requirement: for '{m.group(2)}' operator, values set can't be empty"
                )
            values = tuple(_check_value(v.strip()) for v in values_text.split(","))
            reqs.append(Requirement(_check_key(m.group(1)), m.group(2), tuple(sorted(set(values)))))
            continue
        for op, name in (("!=", "!="), ("==", "="), ("=", "=")):
            if op in part:
                key, value = part.split(op, 1)
                reqs.append(Requirement(_check_key(key.strip()), name, (_check_value(value.strip()),)))
                break
        else:
            if part.startswith("!"):
                reqs.append(Requirement(_check_key(part[1:].strip()), "!"))
            elif " " in part or "(" in part or ")" in part:
                raise SelectorError(
                    f"unable to parse requirement: found '{part}', expected: in, notin, =, ==, !="
                )
            else:
                reqs.append(Requirement(_check_key(part), "exists"))
    return tuple(reqs)


def labels_match(requirements: tuple[Requirement, ...], labels: Mapping[str, str] | None) -> bool:
    labels = labels or {}
    return all(r.matches(labels) for r in requirements)


@dataclass(frozen=True)
class FieldRequirement:
    field: str
    op: str  # "=" or "!="
    value: str


def parse_field_selector(
    text: str | None, supported: Mapping[str, Callable[[dict], Any]]
) -> tuple[FieldRequirement, ...]:
    """Parse a field selector, refusing fields the resource does not index (as upstream)."""
    if text is None or not text.strip():
        return ()
    reqs = []
    for raw in text.split(","):
        part = raw.strip()
        op = next((o for o in ("!=", "==", "=") if o in part), None)
        if op is None:
            raise SelectorError(f"invalid selector: '{part}'; can't understand '{part}'")
        field, value = part.split(op, 1)
        field = field.strip()
        if field not in supported:
            raise SelectorError(f"field label not supported: {field}")
        reqs.append(FieldRequirement(field, "!=" if op == "!=" else "=", value.strip()))
    return tuple(reqs)


def _field_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def fields_match(
    requirements: tuple[FieldRequirement, ...], obj: dict, getters: Mapping[str, Callable[[dict], Any]]
) -> bool:
    for req in requirements:
        actual = _field_text(getters[req.field](obj))
        if (actual == req.value) != (req.op == "="):
            return False
    return True


def dig(obj: Any, *path: str) -> Any:
    """``obj[a][b]...`` or None where a step is missing (for field getters and printers)."""
    for key in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj
