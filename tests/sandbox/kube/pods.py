"""Helpers for the kubelet, proxy and fault tests: pod bodies and waits on pod state."""

from __future__ import annotations

from typing import Any

from sandbox.testing import eventually


def pod_body(name: str, command: list[str], **spec: object) -> dict:
    """A one-container pod running ``command`` (the image is never pulled in the sandbox)."""
    container = {"name": "main", "image": "python:3.11", "command": command}
    container.update(spec.pop("container", {}))  # type: ignore[arg-type]
    return {
        "metadata": {"name": name, **spec.pop("metadata", {})},
        "spec": {"containers": [container], **spec},
    }  # type: ignore[dict-item]


def pod_status(runtime: Any, namespace: str, name: str) -> dict | None:
    """The pod's status from the store, or None once it is gone."""
    store = runtime.store
    pod = store.find(store.rt("", "pods"), namespace, name)
    return None if pod is None else pod.get("status") or {}


def wait_phase(runtime: Any, namespace: str, name: str, *phases: str, timeout: float = 20.0) -> dict:
    def check() -> dict | None:
        status = pod_status(runtime, namespace, name)
        return status if status and status.get("phase") in phases else None

    return eventually(check, timeout, f"pod {namespace}/{name} in phase {phases}")


def wait_gone(runtime: Any, namespace: str, name: str, timeout: float = 20.0) -> None:
    eventually(lambda: pod_status(runtime, namespace, name) is None, timeout, f"pod {namespace}/{name} gone")


def create_pod(runtime: Any, namespace: str, body: dict) -> dict:
    store = runtime.store
    return store.create(store.rt("", "pods"), namespace, body)
