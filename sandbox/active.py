"""The sandbox that is active in this process, and its time scale: the one place the patched AWS
services (``patches.py``) and the sandbox clock (``clock.py``, which the emulated services in
``aws_ext/`` read) find it. A module of its own, importing nothing from the sandbox, so neither
side has to import the other to reach it."""

from __future__ import annotations

from typing import Any, Protocol


class ActiveSandbox(Protocol):
    time_scale: float

    def invoke_lambda(self, function_name: str, event: Any) -> tuple[Any, str | None]: ...

    def invoke_lambda_event(self, function_name: str, event: Any) -> None: ...

    def deliver_to_target(self, rule: Any, target: dict, event: dict) -> None: ...


_active: ActiveSandbox | None = None


def activate(sandbox: ActiveSandbox | None) -> None:
    global _active
    if sandbox is not None and _active is not None and _active is not sandbox:
        raise RuntimeError("another sandbox is active in this process; stop it first")
    _active = sandbox


def active() -> ActiveSandbox:
    if _active is None:
        raise RuntimeError("no sandbox is active in this process")
    return _active


def scale() -> float:
    return _active.time_scale if _active is not None else 1.0
