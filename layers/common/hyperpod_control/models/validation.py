"""Turn pydantic validation errors into ``InvalidInputError`` messages that name field and fix."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from hyperpod_control.exceptions import InvalidInputError

M = TypeVar("M", bound=BaseModel)


def describe_errors(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"]) or "(input)"
        parts.append(f"{field}: {err['msg']}")
    return "; ".join(parts)


def parse_input(model: type[M], data: Any) -> M:
    """Validate ``data`` as ``model`` or raise ``InvalidInputError`` naming each bad field."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        fields = model.model_fields
        hints = []
        for err in exc.errors():
            name = str(err["loc"][0]) if err["loc"] else ""
            info = next((f for k, f in fields.items() if name in (k, f.alias)), None)
            if info is not None and info.description:
                hints.append(f"{name}: {info.description}")
        raise InvalidInputError(
            f"invalid {model.__name__}: {describe_errors(exc)}",
            remedy="correct the named fields and start again" + (f" ({'; '.join(hints)})" if hints else ""),
        ) from None
