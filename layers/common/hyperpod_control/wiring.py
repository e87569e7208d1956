"""The composition root: the adapters the handlers work with, built from the settings (settings.py).

A handler asks here for the stack's table, its snapshot bucket, its event bus or a cluster's agent
client instead of building them from the environment itself, so what each is built from lives in
one place. Nothing here builds a client: every adapter builds its boto3 or Kubernetes client on
first use, and the adapter modules a handler may not need are imported when first asked for
(cold start: README, Performance).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hyperpod_control.adapters.store import Store
from hyperpod_control.settings import agent_transport, get_settings

if TYPE_CHECKING:
    from hyperpod_control.adapters.agents import AgentClient
    from hyperpod_control.adapters.kube import KubeAdapter
    from hyperpod_control.adapters.snapshots import SnapshotBucket


def store() -> Store:
    """The stack's table (``TABLE_NAME``)."""
    return Store(get_settings().table_name)


def snapshot_bucket() -> SnapshotBucket:
    """The stack's bucket for job manifests during an upgrade (``SNAPSHOT_BUCKET``)."""
    from hyperpod_control.adapters.snapshots import SnapshotBucket

    return SnapshotBucket(get_settings().snapshot_bucket or "")


def event_bus() -> tuple[Any, str]:
    """The EventBridge client and the stack's bus (``EVENT_BUS_NAME``) the record steps announce on."""
    from hyperpod_control.adapters.aws import get_client

    return get_client("events"), get_settings().event_bus_name


def agent_client(kube: KubeAdapter) -> AgentClient:
    """A job's agents, reached through ``kube``'s pod proxy or directly (``AGENT_TRANSPORT``)."""
    from hyperpod_control.adapters.agents import AgentClient, DirectTransport, ProxyTransport

    return AgentClient(DirectTransport() if agent_transport() == "direct" else ProxyTransport(kube))
