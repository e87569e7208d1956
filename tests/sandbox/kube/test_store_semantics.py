"""The registry semantics of the in-memory store, without HTTP."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from sandbox.kube.cluster import hyperpod_pytorch_job_crd
from sandbox.kube.store import ApiError, Store, watch
from sandbox.testing import eventually as wait_for

pytestmark = pytest.mark.unit


@pytest.fixture
def store() -> Iterator[Store]:
    s = Store()
    yield s
    s.close()


def cm(name: str, **meta: object) -> dict:
    return {"metadata": {"name": name, **meta}, "data": {"k": "v"}}


def test_create_sets_identity_and_refuses_duplicates(store: Store) -> None:
    rt = store.rt("", "configmaps")
    a = store.create(rt, "default", cm("a"))
    assert (
        a["metadata"]["uid"]
        and a["metadata"]["creationTimestamp"]
        and a["metadata"]["namespace"] == "default"
    )
    b = store.create(rt, "default", {"metadata": {"generateName": "job-"}})
    assert b["metadata"]["name"].startswith("job-") and len(b["metadata"]["name"]) == 9
    assert int(b["metadata"]["resourceVersion"]) > int(a["metadata"]["resourceVersion"])
    with pytest.raises(ApiError) as exc:
        store.create(rt, "default", cm("a"))
    assert (exc.value.code, exc.value.reason) == (409, "AlreadyExists")
    with pytest.raises(ApiError) as exc:
        store.create(rt, "nope", cm("a"))
    assert exc.value.code == 404 and exc.value.message == 'namespaces "nope" not found'
    with pytest.raises(ApiError) as exc:
        store.create(rt, "default", cm("Bad_Name"))
    assert exc.value.code == 422 and exc.value.status()["details"]["causes"][0]["field"] == "metadata.name"


def test_stale_update_conflicts_and_noop_keeps_version(store: Store) -> None:
    rt = store.rt("", "configmaps")
    obj = store.create(rt, "default", cm("a"))
    fresh = store.update(rt, "default", "a", {**obj, "data": {"k": "w"}})
    with pytest.raises(ApiError) as exc:
        store.update(rt, "default", "a", {**obj, "data": {"k": "x"}})
    assert exc.value.code == 409 and exc.value.reason == "Conflict"
    assert (
        store.update(rt, "default", "a", fresh)["metadata"]["resourceVersion"]
        == fresh["metadata"]["resourceVersion"]
    )


def test_status_subresource_and_generation_for_custom_objects(store: Store) -> None:
    store.create(
        store.rt("apiextensions.k8s.io", "customresourcedefinitions"), None, hyperpod_pytorch_job_crd()
    )
    rt = store.rt("sagemaker.amazonaws.com", "hyperpodpytorchjobs")
    job = store.create(
        rt,
        "default",
        {
            "apiVersion": "sagemaker.amazonaws.com/v1",
            "kind": "HyperPodPyTorchJob",
            "metadata": {"name": "j"},
            "spec": {"nprocPerNode": "1"},
            "status": {"x": 1},
        },
    )
    assert job["metadata"]["generation"] == 1
    with pytest.raises(ApiError) as exc:  # custom objects need a resourceVersion on PUT
        store.update(rt, "default", "j", {**job, "metadata": {"name": "j"}})
    assert exc.value.code == 422
    # the main resource ignores status; the status subresource writes only status
    job2 = store.update(
        rt, "default", "j", {**job, "spec": {"nprocPerNode": "2"}, "status": {"phase": "ignored"}}
    )
    assert job2["metadata"]["generation"] == 2 and job2["status"] == {"x": 1}
    job3 = store.update(
        rt, "default", "j", {**job2, "spec": {"nprocPerNode": "9"}, "status": {"y": 2}}, "status"
    )
    assert (
        job3["status"] == {"y": 2}
        and job3["spec"] == {"nprocPerNode": "2"}
        and job3["metadata"]["generation"] == 2
    )


def test_finalizers_hold_deletion_until_removed(store: Store) -> None:
    rt = store.rt("", "configmaps")
    store.create(rt, "default", cm("f", finalizers=["example.com/hold"]))
    obj, gone = store.delete(rt, "default", "f")
    assert not gone and obj["metadata"]["deletionTimestamp"]
    with pytest.raises(ApiError) as exc:  # no new finalizers while being deleted
        store.update(rt, "default", "f", {**obj, "metadata": {**obj["metadata"], "finalizers": ["a", "b"]}})
    assert exc.value.code == 422
    store.patch(rt, "default", "f", lambda o: {**o, "metadata": {**o["metadata"], "finalizers": []}})
    assert store.find(rt, "default", "f") is None


def test_garbage_collection_background_orphan_and_foreground(store: Store) -> None:
    cms = store.rt("", "configmaps")
    owner = store.create(cms, "default", cm("owner"))
    ref = {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner["metadata"]["uid"]}
    other = store.create(cms, "default", cm("other"))
    ref2 = {"apiVersion": "v1", "kind": "ConfigMap", "name": "other", "uid": other["metadata"]["uid"]}
    store.create(cms, "default", cm("dep", ownerReferences=[ref]))
    store.create(cms, "default", cm("shared", ownerReferences=[ref, ref2]))
    store.delete(cms, "default", "owner")
    wait_for(lambda: store.find(cms, "default", "dep") is None, what="dependent collected")
    store.wait_idle()
    shared = store.get(cms, "default", "shared")  # another owner lives: only the dangling reference goes
    assert [r["name"] for r in shared["metadata"]["ownerReferences"]] == ["other"]

    store.create(cms, "default", cm("kept", ownerReferences=[ref2]))
    store.delete(cms, "default", "other", {"propagationPolicy": "Orphan"})
    wait_for(lambda: store.find(cms, "default", "other") is None, what="orphaning owner gone")
    assert "ownerReferences" not in store.get(cms, "default", "kept")["metadata"]

    boss = store.create(cms, "default", cm("boss"))
    bref = {"apiVersion": "v1", "kind": "ConfigMap", "name": "boss", "uid": boss["metadata"]["uid"]}
    store.create(cms, "default", cm("worker", ownerReferences=[bref], finalizers=["example.com/slow"]))
    obj, gone = store.delete(cms, "default", "boss", {"propagationPolicy": "Foreground"})
    assert not gone and "foregroundDeletion" in obj["metadata"]["finalizers"]
    wait_for(
        lambda: store.get(cms, "default", "worker")["metadata"].get("deletionTimestamp"), what="worker marked"
    )
    assert store.find(cms, "default", "boss") is not None  # waits for its dependent
    store.patch(cms, "default", "worker", lambda o: {**o, "metadata": {**o["metadata"], "finalizers": []}})
    wait_for(lambda: store.find(cms, "default", "boss") is None, what="foreground owner gone")


def test_namespace_deletion_terminates_then_empties(store: Store) -> None:
    ns_rt, cms = store.rt("", "namespaces"), store.rt("", "configmaps")
    store.create(ns_rt, None, {"metadata": {"name": "doomed"}})
    store.create(cms, "doomed", cm("c"))
    ns, gone = store.delete(ns_rt, None, "doomed")
    assert not gone and ns["status"]["phase"] == "Terminating"
    wait_for(lambda: store.find(ns_rt, None, "doomed") is None, what="namespace removed")
    assert store.list(cms, "doomed").items == []


def test_watch_resumes_from_a_version_and_reports_expiry(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    rt = store.rt("", "configmaps")
    start = store.resource_version
    store.create(rt, "default", cm("w1"))
    store.delete(rt, "default", "w1")
    stop = threading.Event()
    events = store.watch(rt, "default", (), (), start, stop, deadline=None)
    assert [next(events)[0], next(events)[0]] == ["ADDED", "DELETED"]
    stop.set()
    monkeypatch.setattr(watch, "HISTORY_LIMIT", 2)
    for i in range(8):
        store.create(rt, "default", cm(f"x{i}"))
    with pytest.raises(ApiError) as exc:
        store.watch(rt, "default", (), (), start, threading.Event())
    assert exc.value.code == 410 and exc.value.reason == "Expired"


def test_graceful_pod_deletion_waits_for_the_kubelet() -> None:
    s = Store(graceful_pods=True)
    try:
        pods = s.rt("", "pods")
        pod = {
            "metadata": {"name": "p"},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "i"}]},
        }
        s.create(pods, "default", pod)
        marked, gone = s.delete(pods, "default", "p")
        assert not gone and marked["metadata"]["deletionGracePeriodSeconds"] == 30
        _, gone = s.delete(pods, "default", "p", {"gracePeriodSeconds": 0})  # what the kubelet sends
        assert gone and s.find(pods, "default", "p") is None
    finally:
        s.close()
