"""The API server's errors: each is answered as a ``Status`` object with upstream's code, reason,
message and details, so a client's error handling (``kubernetes.client.ApiException``, kubectl's
messages) sees what a real kube-apiserver sends."""

from __future__ import annotations

from typing import Any

from sandbox.kube.resources import ResourceType


class ApiError(Exception):
    """An error the server answers as a ``Status`` object."""

    def __init__(
        self,
        code: int,
        reason: str,
        message: str,
        details: dict | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message
        self.details = details
        self.headers = headers or {}

    def status(self) -> dict:
        body = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details is not None:
            body["details"] = self.details
        return body


def details(rt: ResourceType, name: str | None, **extra: Any) -> dict:
    details: dict[str, Any] = {"kind": rt.plural}
    if name:
        details["name"] = name
    if rt.group:
        details["group"] = rt.group
    details.update(extra)
    return details


def not_found(rt: ResourceType, name: str) -> ApiError:
    return ApiError(404, "NotFound", f'{rt.qualified} "{name}" not found', details(rt, name))


def already_exists(rt: ResourceType, name: str) -> ApiError:
    return ApiError(409, "AlreadyExists", f'{rt.qualified} "{name}" already exists', details(rt, name))


def conflict(rt: ResourceType, name: str, why: str) -> ApiError:
    return ApiError(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {rt.qualified} "{name}": {why}',
        details(rt, name),
    )


STALE = "the object has been modified; please apply your changes to the latest version and try again"


def invalid(rt: ResourceType, name: str, causes: list[tuple[str, str]]) -> ApiError:
    """422 with one cause per (field, message), worded as upstream's field errors."""
    text = ", ".join(f"{f}: {m}" for f, m in causes)
    kind = f"{rt.kind}.{rt.group}" if rt.group else rt.kind
    return ApiError(
        422,
        "Invalid",
        f'{kind} "{name}" is invalid: {text}',
        details(
            rt, name, causes=[{"reason": "FieldValueInvalid", "message": m, "field": f} for f, m in causes]
        ),
    )


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def expired(last: int, compacted: int) -> ApiError:
    """410: a watch from a resourceVersion older than the event history (etcd compacted it)."""
    return ApiError(410, "Expired", f"too old resource version: {last} ({compacted})")
