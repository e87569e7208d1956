"""How records fit DynamoDB's items: the 400 KB item limit, measured as DynamoDB measures it, and
the JOB item's pod table kept under it for jobs of thousands of ranks.

A JOB item holds its job's pod table (pod, rank, node, IP, silent rounds): about 135 bytes a pod as
a DynamoDB list of maps, so a 4,096-rank job's table alone would be 557 KB. A table larger than
``POD_TABLE_INLINE_BYTES`` of JSON is stored compressed instead (``pods_z``: zlib of the compact
JSON, a binary attribute, about 25 bytes a pod); reads decode either form, so a small job's item
stays readable in the console and the model never sees the difference. Pure functions, no I/O.
"""

from __future__ import annotations

import json
import zlib
from typing import Any

#: DynamoDB's limit on one item: attribute names and values together (400 KB).
ITEM_LIMIT_BYTES = 400 * 1024
#: A pod table up to this size (compact JSON) stays a plain list; larger, it is compressed.
POD_TABLE_INLINE_BYTES = 64 * 1024
PACKED_PODS = "pods_z"


def pack_pods(data: dict[str, Any]) -> dict[str, Any]:
    """A JOB record's dumped ``data`` with a large ``pods`` list compressed into ``pods_z``."""
    pods = data.get("pods")
    if not pods:
        return data
    raw = json.dumps(pods, separators=(",", ":")).encode()
    if len(raw) <= POD_TABLE_INLINE_BYTES:
        return data
    packed = {k: v for k, v in data.items() if k != "pods"}
    packed[PACKED_PODS] = zlib.compress(raw, 6)
    return packed


def unpack_pods(data: dict[str, Any]) -> dict[str, Any]:
    """The inverse of ``pack_pods``: ``pods_z`` (bytes, or boto3's ``Binary``) back to ``pods``."""
    if PACKED_PODS not in data:
        return data
    packed = data.pop(PACKED_PODS)
    data["pods"] = json.loads(zlib.decompress(getattr(packed, "value", packed)))
    return data


def _number_size(text: str) -> int:
    digits = text.lstrip("-").replace(".", "").strip("0") or "0"
    return (len(digits) + 1) // 2 + 1 + (1 if text.startswith("-") else 0)


def attribute_size(value: dict[str, Any]) -> int:
    """The size DynamoDB counts for one attribute value in its wire form (``{"S": ...}``): UTF-8
    bytes of a string, about one byte per two digits of a number plus one, the raw bytes of a
    binary, 3 bytes plus one per element for a list or map (plus each map key's bytes)."""
    ((kind, inner),) = value.items()
    if kind == "S":
        return len(inner.encode())
    if kind == "N":
        return _number_size(inner)
    if kind == "B":
        return len(inner)
    if kind in ("BOOL", "NULL"):
        return 1
    if kind == "SS":
        return sum(len(s.encode()) for s in inner)
    if kind == "NS":
        return sum(_number_size(n) for n in inner)
    if kind == "BS":
        return sum(len(b) for b in inner)
    if kind == "L":
        return 3 + sum(attribute_size(v) + 1 for v in inner)
    if kind == "M":
        return 3 + sum(len(k.encode()) + attribute_size(v) + 1 for k, v in inner.items())
    raise ValueError(f"unknown DynamoDB attribute type {kind!r}")


def item_size(item: dict[str, dict[str, Any]]) -> int:
    """The size of a serialised item as DynamoDB counts it against ``ITEM_LIMIT_BYTES``."""
    return sum(len(name.encode()) + attribute_size(value) for name, value in item.items())
