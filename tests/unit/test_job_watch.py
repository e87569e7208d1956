"""The job watch: which watch events are changes, one watcher per cluster, no gap between two."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from hyperpod_control.exceptions import WatchExpiredError
from hyperpod_control.models.records import (
    JOB_WATCH_SK,
    JobWatchRecord,
    OperatorMode,
    OperatorRecord,
    cluster_pk,
)
from hyperpod_control.services.job_watch import DETAIL_TYPE, change_entry, change_of, claim, watch_cluster
from tests.fakes import FakeStore

pytestmark = pytest.mark.unit

ARN = "arn:aws:sagemaker:us-west-2:123456789012:cluster/aaaaaaaaaaaa"
NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
OPERATOR = OperatorRecord(
    cluster_arn=ARN, cluster_name="c", mode=OperatorMode.SERVERLESS, eks_cluster_name="e"
)


def obj(name: str, rv: str, deleting: bool = False) -> dict[str, Any]:
    meta = {"name": name, "namespace": "ml", "uid": f"uid-{name}", "resourceVersion": rv}
    if deleting:
        meta["deletionTimestamp"] = "2026-12-07T12:00:01Z"
    return {"metadata": meta, "status": {"conditions": []}}


@pytest.mark.parametrize(
    ("event_type", "deleting", "change"),
    [
        ("ADDED", False, "added"),
        ("DELETED", False, "deleted"),
        ("MODIFIED", True, "deleting"),
        ("MODIFIED", False, None),  # a status update, every poll: not a change
        ("BOOKMARK", False, None),
    ],
)
def test_which_watch_events_are_changes(event_type, deleting, change):
    found = change_of(ARN, event_type, obj("train", "7", deleting))
    assert (found.change if found else None) == change
    if found:
        assert (found.namespace, found.name, found.uid) == ("ml", "train", "uid-train")


def test_a_change_is_the_event_reconcile_jobs_listens_to():
    entry = change_entry("bus", change_of(ARN, "ADDED", obj("train", "7")))
    assert entry["DetailType"] == DETAIL_TYPE == "HyperPodPyTorchJob Change"
    assert entry["EventBusName"] == "bus" and entry["Resources"] == [ARN]
    assert json.loads(entry["Detail"])["change"] == "added"


def test_one_watcher_per_cluster_until_its_hold_ends():
    mine = claim(None, ARN, "a", NOW, 55)
    assert mine.holder == "a" and mine.held_until == NOW + timedelta(seconds=55)
    assert claim(mine, ARN, "b", NOW + timedelta(seconds=10), 55) is None
    later = claim(mine, ARN, "b", NOW + timedelta(seconds=56), 55)
    assert later.holder == "b"


def watch(store: FakeStore) -> JobWatchRecord | None:
    """The cluster's WATCH item, as the next watcher reads it."""
    return store.get(JobWatchRecord, cluster_pk(ARN), JOB_WATCH_SK)


class Kube:
    def __init__(self, events: list[tuple[str, dict]], expire: bool = False) -> None:
        self.events, self.expire, self.watched_from, self.lists = events, expire, [], 0

    def list_jobs(self):
        self.lists += 1
        return [], "100"

    def watch_jobs(self, version, seconds):
        self.watched_from.append(version)
        if self.expire:
            raise WatchExpiredError("gone")
        yield from self.events


def test_changes_go_on_the_bus_at_once_and_the_next_watcher_resumes_where_this_one_ended():
    store, put = FakeStore(), []
    kube = Kube([("ADDED", obj("a", "101")), ("MODIFIED", obj("a", "102")), ("BOOKMARK", obj("", "105"))])
    report = watch_cluster(
        OPERATOR, store=store, kube=kube, put=put.extend, bus="bus", holder="h1", seconds=5, now=lambda: NOW
    )
    assert [c.change for c in report.changes] == ["added"] and len(put) == 1
    assert kube.watched_from == ["100"], "no version yet: list, then watch from the list's version"
    assert watch(store).resource_version == "105" and watch(store).holder is None
    nxt = Kube([("DELETED", obj("a", "106"))])
    again = watch_cluster(
        OPERATOR, store=store, kube=nxt, put=put.extend, bus="bus", holder="h2", seconds=5, now=lambda: NOW
    )
    assert nxt.watched_from == ["105"] and nxt.lists == 0, "resumed, no gap, no list"
    assert [c.change for c in again.changes] == ["deleted"]


def test_a_watch_too_old_relists_and_asks_reconcile_to_look_at_everything():
    store, put = FakeStore(JobWatchRecord(cluster_arn=ARN, resource_version="3", version=1)), []
    report = watch_cluster(
        OPERATOR,
        store=store,
        kube=Kube([], expire=True),
        put=put.extend,
        bus="bus",
        holder="h",
        seconds=5,
        now=lambda: NOW,
    )
    assert [c.change for c in report.changes] == ["resync"] and watch(store).resource_version == "100"


def test_a_cluster_held_by_another_watcher_is_left_to_it():
    store = FakeStore(
        JobWatchRecord(cluster_arn=ARN, holder="other", held_until=NOW + timedelta(seconds=30), version=3)
    )
    report = watch_cluster(
        OPERATOR,
        store=store,
        kube=Kube([]),
        put=list().extend,
        bus="b",
        holder="me",
        seconds=5,
        now=lambda: NOW,
    )
    assert not report.watched and "other" in report.note
