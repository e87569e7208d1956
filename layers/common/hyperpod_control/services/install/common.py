"""The small pieces the install steps share: the word an outcome reports for each decision, and
reading a JSON policy or schema value that may be one item or a list.
"""

from __future__ import annotations

from typing import Any

#: The word an outcome reports for what ``decide_*`` chose.
DONE = {"create": "created", "update": "updated", "unchanged": "unchanged"}


def as_list(value: Any) -> list[Any]:
    """A JSON value that may be one item, a list of them, or absent, as a list."""
    return value if isinstance(value, list) else [value] if value is not None else []
