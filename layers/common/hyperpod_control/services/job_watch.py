"""Admission in seconds: HyperPodPyTorchJobs found from a Kubernetes watch, not only from the
minute's poll.

``watch_jobs`` runs every minute (EventBridge Scheduler) and, for each registered cluster, holds a
watch on its HyperPodPyTorchJobs for most of its invocation. Each job created, being deleted or
deleted becomes a "HyperPodPyTorchJob Change" event on the stack's bus, which starts
``reconcile_jobs`` at once: a new job's supervise_job execution starts, a deleted job's stops.

- One watcher per cluster at a time: a ``WATCH#jobs`` item taken with a conditional write
  (``claim``) until the watch ends, so overlapping invocations never watch twice.
- No gap between watchers: each resumes from the resourceVersion the last one reached (bookmarks
  included); when the server no longer keeps it (410 Gone) the watcher lists again and puts one
  ``resync`` change, so reconcile_jobs looks at everything.
- Status updates (every poll patches a running job's status) are not changes: only a job added, a
  deletion started, or a job gone. Spec edits of a running job are seen by the minute's
  reconcile (the safety net, kept).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from hyperpod_control.exceptions import VersionConflictError, WatchExpiredError
from hyperpod_control.models.records import JOB_WATCH_SK, JobWatchRecord, OperatorRecord, cluster_pk, utcnow

DETAIL_TYPE = "HyperPodPyTorchJob Change"
SOURCE = "hyperpod-control-plane.watch-jobs"

ChangeKind = Literal["added", "deleting", "deleted", "resync"]


class JobChange(BaseModel):
    """One change of one job (or ``resync``: look at every job), as the bus carries it."""

    # Schema built on first use, not at import (cold start: README, Performance).
    model_config = ConfigDict(defer_build=True)

    cluster_arn: str
    change: ChangeKind
    namespace: str | None = None
    name: str | None = None
    uid: str | None = None


class WatchReport(BaseModel):
    model_config = ConfigDict(defer_build=True)

    cluster_arn: str
    watched: bool
    changes: list[JobChange] = []
    resource_version: str | None = None
    note: str | None = None


# ============================================================== pure


def change_of(cluster_arn: str, event_type: str, obj: dict[str, Any]) -> JobChange | None:
    """Pure: the change a watch event is, or None (a status update, a bookmark)."""
    meta = obj.get("metadata") or {}
    kind: ChangeKind | None = None
    if event_type == "ADDED":
        kind = "added"
    elif event_type == "DELETED":
        kind = "deleted"
    elif event_type == "MODIFIED" and meta.get("deletionTimestamp"):
        kind = "deleting"
    if kind is None:
        return None
    return JobChange(
        cluster_arn=cluster_arn,
        change=kind,
        namespace=meta.get("namespace"),
        name=meta.get("name"),
        uid=meta.get("uid"),
    )


def change_entry(bus: str, change: JobChange) -> dict[str, Any]:
    """Pure: the PutEvents entry of ``change`` (the JobChanged rule matches its detail-type)."""
    return {
        "Source": SOURCE,
        "DetailType": DETAIL_TYPE,
        "EventBusName": bus,
        "Resources": [change.cluster_arn],
        "Detail": json.dumps(change.model_dump(mode="json", by_alias=True, exclude_none=True)),
    }


def claim(
    current: JobWatchRecord | None, cluster_arn: str, holder: str, now: datetime, seconds: int
) -> JobWatchRecord | None:
    """Pure: the WATCH item that makes ``holder`` the cluster's watcher for ``seconds``, or None
    while another holds it."""
    if (
        current is not None
        and current.holder not in (None, holder)
        and current.held_until
        and current.held_until > now
    ):
        return None
    base = current or JobWatchRecord(cluster_arn=cluster_arn)
    return base.model_copy(update={"holder": holder, "held_until": now + timedelta(seconds=seconds)})


# ============================================================== one cluster


def watch_cluster(
    operator: OperatorRecord,
    *,
    store: Any,
    kube: Any,
    put: Callable[[list[dict[str, Any]]], None],
    bus: str,
    holder: str,
    seconds: int,
    now: Callable[[], datetime] = utcnow,
) -> WatchReport:
    """Hold the cluster's job watch for up to ``seconds``, putting each change on the bus as it
    comes; then hand the resourceVersion reached to the next watcher."""
    arn = operator.cluster_arn
    current = store.get(JobWatchRecord, cluster_pk(arn), JOB_WATCH_SK)
    claimed = claim(current, arn, holder, now(), seconds)
    if claimed is None:
        return WatchReport(
            cluster_arn=arn, watched=False, note=f"watched by {current.holder} until {current.held_until}"
        )
    try:
        record = store.put(claimed, expected_version=current.version if current else None)
    except VersionConflictError:
        return WatchReport(cluster_arn=arn, watched=False, note="another watcher took the cluster first")
    changes: list[JobChange] = []
    version = record.resource_version

    def emit(change: JobChange) -> None:
        put([change_entry(bus, change)])  # at once: the point is seconds, not batches
        changes.append(change)

    if version is None:
        _, version = kube.list_jobs()
    try:
        for event_type, obj in kube.watch_jobs(version, seconds):
            version = (obj.get("metadata") or {}).get("resourceVersion") or version
            change = change_of(arn, event_type, obj)
            if change is not None:
                emit(change)
    except WatchExpiredError:
        _, version = kube.list_jobs()
        emit(JobChange(cluster_arn=arn, change="resync"))
    done = record.model_copy(update={"resource_version": version, "holder": None, "held_until": None})
    # A later watcher took over after our hold expired: its version wins.
    with contextlib.suppress(VersionConflictError):
        store.put(done, expected_version=record.version)
    return WatchReport(cluster_arn=arn, watched=True, changes=changes, resource_version=version)
