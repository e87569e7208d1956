"""Pure helpers of the adapter's apply (create, or replace when the stored object differs): does
the server's object already say what ours says, and the replace made conditional on its version.
"""

from __future__ import annotations

from typing import Any


def contains(current: Any, wanted: Any) -> bool:
    """Pure: ``current`` holds everything ``wanted`` says (the server adds defaults we ignore)."""
    if isinstance(wanted, dict):
        return isinstance(current, dict) and all(contains(current.get(k), v) for k, v in wanted.items())
    if isinstance(wanted, list):
        return (
            isinstance(current, list)
            and len(current) == len(wanted)
            and all(contains(c, w) for c, w in zip(current, wanted, strict=True))
        )
    return current == wanted


def differs(current: dict[str, Any], body: dict[str, Any]) -> bool:
    """Pure: must ``current`` be replaced to become ``body``? Metadata counts by its labels only."""
    wanted = {k: v for k, v in body.items() if k not in ("metadata", "apiVersion", "kind")}
    labels = (body.get("metadata") or {}).get("labels") or {}
    current_labels = (current.get("metadata") or {}).get("labels") or {}
    return not contains(current, wanted) or not contains(current_labels, labels)


def merged_for_replace(current: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
    """Pure: ``body`` carrying ``current``'s resourceVersion, so a replace is conditional on it."""
    metadata = {**body.get("metadata", {})}
    metadata["resourceVersion"] = (current.get("metadata") or {}).get("resourceVersion")
    return {**body, "metadata": metadata}
