"""The garbage collector and the namespace controller: the store's one background thread.

As upstream, both are asynchronous: a write queues work (``enqueue``) and returns; the thread
takes the store's lock for each item. A dependent whose every owner is gone is deleted, one with
other live owners loses the dangling reference; ``orphan`` and ``foregroundDeletion`` finalizers
are worked off (dependents orphaned, or deleted first); a deleted CRD's objects are deleted before
the CRD goes; a Terminating namespace is emptied, then its ``kubernetes`` finalizer removed.
``wait_idle()`` lets tests wait for the queue to drain instead of sleeping.

It works on the store's own maps and writes through the store's internal update and delete (it is
the store's part, split out because it has its own queue and thread).
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from typing import TYPE_CHECKING, Any

from sandbox.kube.resources import ResourceType

if TYPE_CHECKING:
    from sandbox.kube.store.objects import Store

log = logging.getLogger("sandbox.kube")

ORPHAN = "orphan"
FOREGROUND = "foregroundDeletion"
CRD_CLEANUP = "customresourcecleanup.apiextensions.k8s.io"


class GarbageCollector:
    def __init__(self, store: Store) -> None:
        self._store = store
        self._work: list[tuple] = []
        self._work_cv = threading.Condition(threading.Lock())
        self._busy = 0
        self._closed = False
        self._worker = threading.Thread(target=self._run, name="kube-gc", daemon=True)
        self._worker.start()

    def enqueue(self, *item: Any) -> None:
        with self._work_cv:
            self._work.append(item)
            self._work_cv.notify_all()

    def close(self) -> None:
        with self._work_cv:
            self._closed = True
            self._work_cv.notify_all()

    def join(self, timeout: float) -> None:
        self._worker.join(timeout=timeout)

    def wait_idle(self, timeout: float = 10.0) -> None:
        """Block until the garbage collector has nothing queued or running."""
        deadline = time.monotonic() + timeout
        with self._work_cv:
            while self._work or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"garbage collector still busy after {timeout}s")
                self._work_cv.wait(left)

    def _run(self) -> None:
        while True:
            with self._work_cv:
                while not self._work and not self._closed:
                    self._work_cv.wait()
                if self._closed:
                    return
                item = self._work.pop(0)
                self._busy += 1
            try:
                with self._store._lock:
                    self._process(item)
            except Exception:  # the collector must survive one bad object
                log.exception("garbage collector failed on %s", item[:2])
            finally:
                with self._work_cv:
                    self._busy -= 1
                    self._work_cv.notify_all()

    def _dependents(self, uid: str) -> list[tuple[ResourceType, dict]]:
        out = []
        for key, bucket in self._store._objects.items():
            rt = self._store.registry.get(*key)
            if rt is None:
                continue
            for obj in bucket.values():
                if any(r.get("uid") == uid for r in obj["metadata"].get("ownerReferences") or []):
                    out.append((rt, obj))
        return out

    def _process(self, item: tuple) -> None:
        kind = item[0]
        if kind == "owner_gone":
            for rt, dep in self._dependents(item[1]):
                self._reconcile_owners(rt, dep)
            return
        if kind == "check_owners":
            _, key, ns, name = item
            rt = self._store.registry.get(*key)
            obj = self._store._objects.get(key, {}).get((ns, name))
            if rt is not None and obj is not None:
                self._reconcile_owners(rt, obj)
            return
        if kind == "finalize":
            found = self._store._locate(item[1])
            if found is not None:
                self._finalize(*found)
            return
        if kind == "namespace":
            self._reconcile_namespace(item[1])
            return

    def _reconcile_owners(self, rt: ResourceType, obj: dict) -> None:
        refs = obj["metadata"].get("ownerReferences") or []
        live = [r for r in refs if r.get("uid") in self._store._uids]
        if len(live) == len(refs):
            return
        if live:
            new = copy.deepcopy(obj)
            new["metadata"]["ownerReferences"] = live
            self._store._store_update(rt, obj, new)
        elif not obj["metadata"].get("deletionTimestamp"):
            self._store._delete(rt, obj, {})

    def _finalize(self, rt: ResourceType, obj: dict) -> None:
        meta = obj["metadata"]
        finalizers = list(meta.get("finalizers") or [])
        if ORPHAN in finalizers:
            for dep_rt, dep in self._dependents(meta["uid"]):
                new = copy.deepcopy(dep)
                new["metadata"]["ownerReferences"] = [
                    r for r in dep["metadata"]["ownerReferences"] if r.get("uid") != meta["uid"]
                ]
                if not new["metadata"]["ownerReferences"]:
                    new["metadata"].pop("ownerReferences")
                self._store._store_update(dep_rt, dep, new)
            finalizers.remove(ORPHAN)
        if FOREGROUND in finalizers:
            dependents = self._dependents(meta["uid"])
            for dep_rt, dep in dependents:
                if not dep["metadata"].get("deletionTimestamp"):
                    self._store._delete(dep_rt, dep, {"propagationPolicy": "Foreground"})
            if not self._dependents(meta["uid"]):
                finalizers.remove(FOREGROUND)
        if CRD_CLEANUP in finalizers and FOREGROUND not in finalizers:
            key = (obj["spec"]["group"], obj["spec"]["names"]["plural"])
            custom = self._store.registry.get(*key)
            for cr in list(self._store._objects.get(key, {}).values()):
                if custom is not None and not cr["metadata"].get("deletionTimestamp"):
                    self._store._delete(custom, cr, {})
            if not self._store._objects.get(key):
                self._store.registry.remove(key)
                finalizers.remove(CRD_CLEANUP)
        if finalizers != list(meta.get("finalizers") or []):
            new = copy.deepcopy(obj)
            new["metadata"]["finalizers"] = finalizers
            if not finalizers:
                new["metadata"].pop("finalizers")
            self._store._store_update(rt, obj, new)

    def _reconcile_namespace(self, name: str) -> None:
        ns_rt = self._store.rt("", "namespaces")
        ns = self._store._bucket(ns_rt).get(("", name))
        if ns is None or not ns["metadata"].get("deletionTimestamp"):
            return
        remaining = 0
        for key, bucket in list(self._store._objects.items()):
            rt = self._store.registry.get(*key)
            if rt is None or not rt.namespaced:
                continue
            for obj in [o for o in bucket.values() if o["metadata"].get("namespace") == name]:
                remaining += 1
                if not obj["metadata"].get("deletionTimestamp"):
                    _, gone = self._store._delete(rt, obj, {"gracePeriodSeconds": 0})
                    remaining -= int(gone)
        if remaining:
            return  # objects with finalizers hold the namespace; their deletion re-queues it
        new = copy.deepcopy(ns)
        new["spec"]["finalizers"] = []
        self._store._store_update(ns_rt, ns, new)
