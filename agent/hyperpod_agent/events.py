"""Optional push of the agent's FAULTED and COMPLETED states to Amazon EventBridge.

With HYPERPOD_EVENT_BUS set, each such transition puts one event (source
``hyperpod-control.agent``, detail-type ``HyperPod Agent State Change``) so the control plane's
workflow wakes at once instead of at its next poll. Polling stays the source of truth, so the push
is best effort by design: events go through a bounded queue to a daemon thread, a full queue drops
the event, and every failure (no boto3, no credentials, throttling) is logged and swallowed. It
never blocks or fails training.

Credentials come from the pod's environment as the AWS SDK finds them: on EKS, Pod Identity's
``AWS_CONTAINER_CREDENTIALS_FULL_URI`` and token file (the control plane associates the job's
service account with its agent role). When the bus is given as an ARN (the control plane does so)
the client is made in the bus's Region, so no Region needs to be configured in the pod.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import queue
import threading
from collections.abc import Callable, Mapping
from typing import Any

logger = logging.getLogger(__name__)

SOURCE = "hyperpod-control.agent"
DETAIL_TYPE = "HyperPod Agent State Change"


class EventPublisher:
    def __init__(
        self, bus_name: str, identity: Mapping[str, str], client_factory: Callable[[], Any] | None = None
    ):
        self.bus_name = bus_name
        self._identity = dict(identity)
        self._client_factory = client_factory or (lambda: _boto3_client(bus_region(bus_name)))
        self._queue: queue.Queue[dict | None] = queue.Queue(maxsize=64)
        self._thread = threading.Thread(target=self._loop, name="hyperpod-events", daemon=True)
        self._thread.start()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> EventPublisher | None:
        environ = os.environ if environ is None else environ
        bus = environ.get("HYPERPOD_EVENT_BUS")
        if not bus:
            return None
        identity = {
            "jobName": environ.get("HYPERPOD_JOB_NAME", ""),
            "namespace": environ.get("HYPERPOD_JOB_NAMESPACE", ""),
            "jobUid": environ.get("HYPERPOD_JOB_UID", ""),
            "pod": environ.get("POD_NAME", ""),
        }
        return cls(bus, identity)

    def publish(
        self, status: str, reason: str | None, message: str | None, rank: int | None, fault_count: int
    ) -> None:
        """Queue one event; returns at once."""
        detail = {
            **self._identity,
            "rank": rank,
            "status": status.lower(),
            "reason": reason,
            "message": message,
            "faultCount": fault_count,
            "time": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        }
        try:
            self._queue.put_nowait(detail)
        except queue.Full:
            logger.warning(
                "EventBridge queue full; dropping %s event (the control plane still polls)", status
            )

    def _loop(self) -> None:
        client = None
        while True:
            detail = self._queue.get()
            if detail is None:
                return
            try:
                if client is None:
                    client = self._client_factory()
                entry = {
                    "Source": SOURCE,
                    "DetailType": DETAIL_TYPE,
                    "Detail": json.dumps(detail),
                    "EventBusName": self.bus_name,
                }
                response = client.put_events(Entries=[entry])
                if response.get("FailedEntryCount"):
                    logger.warning(
                        "EventBridge refused the %s event: %s", detail["status"], response.get("Entries")
                    )
            except Exception as exc:
                logger.warning("could not put the %s event on %s: %s", detail["status"], self.bus_name, exc)

    def close(self, timeout: float = 2.0) -> None:
        """Let queued events go out, but never hold the agent's exit longer than ``timeout``."""
        try:
            self._queue.put(None, timeout=timeout)
        except queue.Full:
            return
        self._thread.join(timeout)


def bus_region(bus: str) -> str | None:
    """The Region of a bus ARN (``arn:aws:events:<region>:<account>:event-bus/<name>``); None
    for a bare name, which is then looked up in the SDK's configured Region."""
    parts = bus.split(":")
    if len(parts) >= 6 and parts[0] == "arn" and parts[2] == "events" and parts[3]:
        return parts[3]
    return None


def _boto3_client(region: str | None = None):
    try:
        import boto3
    except ImportError as exc:
        raise RuntimeError("boto3 is not installed: pip install 'hyperpod-agent[events]'") from exc
    return boto3.client("events", region_name=region) if region else boto3.client("events")
