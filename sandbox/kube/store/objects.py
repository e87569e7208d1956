"""The API server's object store: kube-apiserver's registry semantics over an in-memory map.

One lock guards every object; a single counter plays etcd's revision, so each write gets a
``resourceVersion`` greater than every earlier one, lists report the counter, and watches resume
from any version still in the event history (older ones answer 410 Expired, as after compaction).

Modelled (what the real registry does, with its status codes and messages):
- create: ``generateName``, name and label validation (422 Invalid with causes), uid,
  creationTimestamp, resourceVersion, generation (kinds that track it), per-kind defaults (pods,
  namespaces, secrets' ``stringData``, NetworkPolicies' policyTypes and port protocols; a
  NetworkPolicy's ports, peers and CIDRs are validated, its rules not enforced), namespace must
  exist (404) and not be terminating (403),
  409 AlreadyExists;
- update (PUT) and patch: 409 Conflict on a stale ``metadata.resourceVersion``; custom objects
  need one on PUT (422), built-ins may update unconditionally; uid/creationTimestamp/
  deletionTimestamp cannot change; the status subresource is the only writer of ``status`` where a
  kind has one, and writes nothing else; ``generation`` moves on spec changes; a no-op write keeps
  the resourceVersion and emits no event; pod specs are immutable except image, tolerations
  (additions), activeDeadlineSeconds and schedulingGates; ``pods/binding`` sets ``spec.nodeName``;
- delete: preconditions (uid, resourceVersion), finalizers and deletionTimestamp (the object stays
  until its finalizers are gone; new finalizers cannot be added meanwhile), propagationPolicy
  Background (default), Foreground (``foregroundDeletion`` finalizer) and Orphan (``orphan``
  finalizer), graceful pod deletion when a kubelet is attached (``graceful_pods``), namespaces go
  Terminating, are emptied, then removed; deletecollection;
- garbage collection, asynchronous as upstream: a dependent whose every owner is gone is deleted,
  one with other live owners loses the dangling reference; a CRD's deletion removes its objects;
- list with label/field selectors, ``limit``/``continue`` (continue resumes after the last key
  returned; pages read the current state, not a snapshot at the first page's resourceVersion, and
  ``remainingItemCount`` is exact, set only without selectors as upstream), watch from a
  resourceVersion with selector transitions (an object that stops matching is sent as DELETED,
  one that starts matching as ADDED).

Mutating admission: callables in ``Store.admission`` see each object before it is created (what
a mutating webhook does; the sandbox's EKS Pod Identity webhook is one, ``pod_identity.py``).

Not modelled: server-side apply and managedFields, validating webhooks, OpenAPI schema validation
and defaulting of custom objects, CRD conversion webhooks (all served versions share one stored
object, as with ``conversion: None``), ResourceQuota/LimitRange, and controllers other than the
garbage collector and the namespace lifecycle (nothing turns Deployments into pods here).
"""

from __future__ import annotations

import base64
import copy
import json
import secrets
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from sandbox.clock import now_rfc3339
from sandbox.kube.resources import Registry, ResourceType, custom_type_from_crd
from sandbox.kube.selectors import FieldRequirement, Requirement, fields_match, labels_match
from sandbox.kube.store.admission import apply_defaults, check_namespace_field, structural, validate
from sandbox.kube.store.collector import CRD_CLEANUP, FOREGROUND, ORPHAN, GarbageCollector
from sandbox.kube.store.errors import (
    STALE,
    ApiError,
    already_exists,
    bad_request,
    conflict,
    details,
    invalid,
    not_found,
)
from sandbox.kube.store.watch import History, WatchEvent, selector
from sandbox.kube.store.watch import resource_version as _rv

DEFAULT_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
_GENERATE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"


@dataclass
class ListResult:
    items: list[dict]
    resource_version: str
    continue_token: str | None
    remaining: int | None


def _spec_part(obj: dict) -> dict:
    return {k: v for k, v in obj.items() if k not in ("metadata", "status", "apiVersion", "kind")}


class Store:
    def __init__(self, registry: Registry | None = None, *, graceful_pods: bool = False) -> None:
        self.registry = registry or Registry()
        #: When a kubelet runs, deleting a bound pod only marks it (deletionTimestamp and
        #: grace period); the kubelet stops the containers and deletes it with gracePeriodSeconds=0.
        self.graceful_pods = graceful_pods
        #: Mutating admission (``fn(rt, namespace, obj)``, changes ``obj`` in place), called before
        #: the store's lock is taken: a webhook may be slow, as an AWS call is.
        self.admission: list[Callable[[ResourceType, str | None, dict], None]] = []
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._objects: dict[tuple[str, str], dict[tuple[str, str], dict]] = {}
        self._uids: dict[str, tuple[tuple[str, str], str, str]] = {}
        self._rv_counter = 1
        self._history = History(self._changed)
        self._collector = GarbageCollector(self)
        for ns in DEFAULT_NAMESPACES:
            self.create(self.rt("", "namespaces"), None, {"metadata": {"name": ns}})

    # -- plumbing ---------------------------------------------------------------------------------

    def rt(self, group: str, plural: str) -> ResourceType:
        rt = self.registry.get(group, plural)
        if rt is None:
            raise KeyError(f"no resource {plural}.{group}")
        return rt

    @property
    def resource_version(self) -> str:
        with self._lock:
            return str(self._rv_counter)

    def close(self) -> None:
        self._collector.close()
        self._history.close()
        self._collector.join(timeout=5)

    def wait_idle(self, timeout: float = 10.0) -> None:
        """Block until the garbage collector has nothing queued or running."""
        self._collector.wait_idle(timeout)

    def _bucket(self, rt: ResourceType) -> dict[tuple[str, str], dict]:
        return self._objects.setdefault(rt.key, {})

    def _next_rv(self) -> int:
        self._rv_counter += 1
        return self._rv_counter

    def _emit(self, rt: ResourceType, type_: str, obj: dict, old: dict | None) -> None:
        rv = int(obj["metadata"]["resourceVersion"])
        self._history.append(WatchEvent(rv, rt.key, type_, obj, old))

    def _enqueue(self, *item: Any) -> None:
        self._collector.enqueue(*item)

    def _locate(self, uid: str) -> tuple[ResourceType, dict] | None:
        where = self._uids.get(uid)
        if where is None:
            return None
        key, ns, name = where
        rt = self.registry.get(*key)
        obj = self._objects.get(key, {}).get((ns, name))
        return (rt, obj) if rt is not None and obj is not None else None

    # -- reads ------------------------------------------------------------------------------------

    def get(self, rt: ResourceType, namespace: str | None, name: str) -> dict:
        with self._lock:
            obj = self._bucket(rt).get((namespace or "", name))
            if obj is None:
                raise not_found(rt, name)
            return copy.deepcopy(obj)

    def find(self, rt: ResourceType, namespace: str | None, name: str) -> dict | None:
        try:
            return self.get(rt, namespace, name)
        except ApiError:
            return None

    def list(
        self,
        rt: ResourceType,
        namespace: str | None,
        labels: tuple[Requirement, ...] = (),
        fields: tuple[FieldRequirement, ...] = (),
        limit: int | None = None,
        continue_token: str | None = None,
    ) -> ListResult:
        start_after: tuple = ()
        if continue_token:
            try:
                token = json.loads(base64.urlsafe_b64decode(continue_token.encode() + b"=="))
                start_after = tuple(token["start"])
            except (ValueError, KeyError, TypeError) as exc:
                raise bad_request(f"continue key is not valid: {exc}") from exc
        with self._lock:
            rv = str(self._rv_counter)
            keys = sorted(k for k in self._bucket(rt) if namespace is None or k[0] == namespace)
            # As Kubernetes: remainingItemCount only for a list without selectors (with them the
            # count is unknown and left unset), so a selected page stops at its limit instead of
            # matching every object after it (a 4,096-pod job's pods paged 500 at a time).
            counted = not labels and not fields
            matched = []
            for k in keys:
                if start_after and k <= start_after:
                    continue
                obj = self._bucket(rt)[k]
                if labels_match(labels, obj["metadata"].get("labels")) and fields_match(
                    fields, obj, rt.field_getters
                ):
                    matched.append(obj)
                    if limit and not counted and len(matched) > limit:
                        break
            items = matched[:limit] if limit else matched
            remaining = len(matched) - len(items)
            next_token = None
            if remaining > 0:
                last = items[-1]["metadata"]
                start = [last.get("namespace", "") or "", last["name"]]
                raw = json.dumps({"rv": rv, "start": start}).encode()
                next_token = base64.urlsafe_b64encode(raw).decode().rstrip("=")
            return ListResult(
                copy.deepcopy(items), rv, next_token, remaining if next_token and counted else None
            )

    def watch(
        self,
        rt: ResourceType,
        namespace: str | None,
        labels: tuple[Requirement, ...],
        fields: tuple[FieldRequirement, ...],
        resource_version: str | None,
        stop: threading.Event,
        deadline: float | None = None,
        send_initial: bool | None = None,
    ) -> Iterator[tuple[str, dict]]:
        """Events ("ADDED"|"MODIFIED"|"DELETED", object) until ``stop`` is set or ``deadline`` passes.

        Raises ApiError 410 (Expired) at once if ``resource_version`` is older than the history
        (the stream may also end with one if it falls behind a compaction). An empty or "0"
        resourceVersion starts with an ADDED event per existing object.
        """
        selected = selector(rt, namespace, labels, fields)
        initial: list[dict] = []
        with self._lock:
            if resource_version in (None, "", "0") or send_initial:
                initial = [o for o in self._bucket(rt).values() if selected(o)]
                last = self._rv_counter
            else:
                try:
                    last = int(resource_version)
                except ValueError as exc:
                    raise bad_request(f"invalid resourceVersion {resource_version!r}") from exc
                self._history.check(last)
        return self._history.stream(rt, selected, initial, last, stop, deadline, bool(send_initial))

    # -- create -----------------------------------------------------------------------------------

    def create(self, rt: ResourceType, namespace: str | None, body: dict) -> dict:
        if not isinstance(body, dict):
            raise bad_request("the body of the request was not a JSON object")
        obj = copy.deepcopy(body)
        meta = obj.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise bad_request("metadata must be an object")
        check_namespace_field(rt, namespace, meta)
        for mutate in list(self.admission):
            mutate(rt, namespace, obj)
        with self._lock:
            if not meta.get("name"):
                prefix = meta.get("generateName")
                if not prefix:
                    raise invalid(
                        rt, "", [("metadata.name", "Required value: name or generateName is required")]
                    )
                for _ in range(20):
                    candidate = prefix + "".join(secrets.choice(_GENERATE_ALPHABET) for _ in range(5))
                    if (namespace or "", candidate) not in self._bucket(rt):
                        meta["name"] = candidate
                        break
            name = meta["name"]
            validate(rt, name, obj, None)
            structural(rt, name, obj)
            if rt.namespaced:
                ns = self._bucket(self.rt("", "namespaces")).get(("", namespace or ""))
                if ns is None:
                    raise ApiError(
                        404,
                        "NotFound",
                        f'namespaces "{namespace}" not found',
                        {"name": namespace, "kind": "namespaces"},
                    )
                if ns["metadata"].get("deletionTimestamp"):
                    raise ApiError(
                        403,
                        "Forbidden",
                        f'{rt.qualified} "{name}" is forbidden: unable to create new content in namespace '
                        f"{namespace} because it is being terminated",
                        details(rt, name),
                    )
            if (namespace or "", name) in self._bucket(rt):
                raise already_exists(rt, name)
            obj["apiVersion"] = rt.api_version()
            obj["kind"] = rt.kind
            for k in ("resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds", "selfLink"):
                meta.pop(k, None)
            if rt.namespaced:
                meta["namespace"] = namespace
            else:
                meta.pop("namespace", None)
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = now_rfc3339()
            if rt.tracks_generation:
                meta["generation"] = 1
            apply_defaults(rt, obj)
            meta["resourceVersion"] = str(self._next_rv())
            self._bucket(rt)[(namespace or "", name)] = obj
            self._uids[meta["uid"]] = (rt.key, namespace or "", name)
            self._emit(rt, "ADDED", copy.deepcopy(obj), None)
            self._after_write(rt, None, obj)
            return copy.deepcopy(obj)

    # -- update / patch ---------------------------------------------------------------------------

    def update(
        self, rt: ResourceType, namespace: str | None, name: str, body: dict, subresource: str | None = None
    ) -> dict:
        """PUT: replace the object (or its status) if ``metadata.resourceVersion`` is current."""
        if not isinstance(body, dict):
            raise bad_request("the body of the request was not a JSON object")
        with self._lock:
            current = self._bucket(rt).get((namespace or "", name))
            if current is None:
                raise not_found(rt, name)
            rv = (body.get("metadata") or {}).get("resourceVersion")
            if not rv and rt.custom and subresource is None:
                raise invalid(
                    rt,
                    name,
                    [("metadata.resourceVersion", "Invalid value: 0x0: must be specified for an update")],
                )
            return self._replace(rt, current, body, subresource)

    def patch(
        self,
        rt: ResourceType,
        namespace: str | None,
        name: str,
        apply: Callable[[dict], dict],
        subresource: str | None = None,
    ) -> dict:
        """PATCH: ``apply`` maps the current object to the patched one (see ``patch.py``)."""
        with self._lock:
            current = self._bucket(rt).get((namespace or "", name))
            if current is None:
                raise not_found(rt, name)
            patched = apply(copy.deepcopy(current))
            if not isinstance(patched, dict):
                raise bad_request("the patch did not produce an object")
            return self._replace(rt, current, patched, subresource)

    def _replace(self, rt: ResourceType, current: dict, body: dict, subresource: str | None) -> dict:
        name = current["metadata"]["name"]
        meta = body.get("metadata") or {}
        if meta.get("name") and meta["name"] != name:
            raise bad_request(
                f"the name of the object ({meta['name']}) does not match the name on the URL ({name})"
            )
        check_namespace_field(rt, current["metadata"].get("namespace"), meta)
        rv = meta.get("resourceVersion")
        if rv and rv != _rv(current):
            raise conflict(rt, name, STALE)
        if subresource == "status":
            new = copy.deepcopy(current)
            if "status" in body:
                new["status"] = copy.deepcopy(body["status"])
            else:
                new.pop("status", None)
        elif subresource is not None:
            raise ApiError(
                404, "NotFound", f"the server could not find the requested resource ({subresource})"
            )
        else:
            new = copy.deepcopy(body)
            new_meta = new.setdefault("metadata", {})
            for k in (
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "generation",
                "namespace",
                "name",
            ):
                if k in current["metadata"]:
                    new_meta[k] = current["metadata"][k]
                else:
                    new_meta.pop(k, None)
            if rt.status_subresource:
                if "status" in current:
                    new["status"] = copy.deepcopy(current["status"])
                else:
                    new.pop("status", None)
            if rt.plural == "secrets":
                apply_defaults(rt, new)
        new["apiVersion"], new["kind"] = rt.api_version(), rt.kind
        new["metadata"]["resourceVersion"] = _rv(current)
        structural(rt, name, new)
        validate(rt, name, new, current)
        if new == current:
            return copy.deepcopy(current)  # no-op: same resourceVersion, no event, as upstream
        if rt.tracks_generation and _spec_part(new) != _spec_part(current):
            new["metadata"]["generation"] = current["metadata"].get("generation", 1) + 1
        return self._store_update(rt, current, new)

    def _store_update(self, rt: ResourceType, current: dict, new: dict) -> dict:
        meta = new["metadata"]
        meta["resourceVersion"] = str(self._next_rv())
        key = (meta.get("namespace", "") or "", meta["name"])
        self._bucket(rt)[key] = new
        self._emit(rt, "MODIFIED", copy.deepcopy(new), copy.deepcopy(current))
        if meta.get("deletionTimestamp") and not self._pending(rt, new):
            self._remove(rt, new)
        else:
            self._after_write(rt, current, new)
        return copy.deepcopy(new)

    def bind(self, namespace: str, name: str, binding: dict) -> None:
        """``pods/<name>/binding``: what a scheduler posts to place a pod on a node."""
        rt = self.rt("", "pods")
        target = (binding.get("target") or {}).get("name")
        if not target:
            raise invalid(rt, name, [("target.name", "Required value")])
        with self._lock:
            current = self._bucket(rt).get((namespace, name))
            if current is None:
                raise not_found(rt, name)
            if current["metadata"].get("deletionTimestamp"):
                raise conflict(rt, name, "pod is being deleted, cannot be assigned to a host")
            node = (current.get("spec") or {}).get("nodeName")
            if node:
                raise conflict(rt, name, f'pod {name} is already assigned to node "{node}"')
            new = copy.deepcopy(current)
            new["spec"]["nodeName"] = target
            conditions = new.setdefault("status", {}).setdefault("conditions", [])
            conditions[:] = [c for c in conditions if c.get("type") != "PodScheduled"]
            conditions.append({"type": "PodScheduled", "status": "True", "lastTransitionTime": now_rfc3339()})
            self._store_update(rt, current, new)

    # -- delete -----------------------------------------------------------------------------------

    def delete(
        self, rt: ResourceType, namespace: str | None, name: str, options: dict | None = None
    ) -> tuple[dict, bool]:
        """Delete or mark for deletion; returns (object, deleted_now)."""
        options = options or {}
        with self._lock:
            current = self._bucket(rt).get((namespace or "", name))
            if current is None:
                raise not_found(rt, name)
            pre = options.get("preconditions") or {}
            if pre.get("uid") and pre["uid"] != current["metadata"]["uid"]:
                raise conflict(
                    rt,
                    name,
                    f"Precondition failed: UID in precondition: {pre['uid']}, "
                    f"UID in object meta: {current['metadata']['uid']}",
                )
            if pre.get("resourceVersion") and pre["resourceVersion"] != _rv(current):
                raise conflict(
                    rt,
                    name,
                    f"Precondition failed: ResourceVersion in precondition: "
                    f"{pre['resourceVersion']}, ResourceVersion in object meta: {_rv(current)}",
                )
            return self._delete(rt, current, options)

    def _delete(self, rt: ResourceType, current: dict, options: dict) -> tuple[dict, bool]:
        policy = options.get("propagationPolicy")
        if policy is None and options.get("orphanDependents") is not None:
            policy = "Orphan" if options["orphanDependents"] else "Background"
        if policy not in (None, "Background", "Foreground", "Orphan"):
            raise bad_request(f"propagationPolicy {policy!r} is not one of Background, Foreground, Orphan")
        new = copy.deepcopy(current)
        meta = new["metadata"]
        finalizers = list(meta.get("finalizers") or [])
        if policy == "Orphan" and ORPHAN not in finalizers:
            finalizers.append(ORPHAN)
        if policy == "Foreground" and FOREGROUND not in finalizers:
            finalizers.append(FOREGROUND)
        if rt.plural == "customresourcedefinitions" and CRD_CLEANUP not in finalizers:
            # upstream keeps a CRD, Terminating, until every object of its type is gone
            finalizers.append(CRD_CLEANUP)
        grace = options.get("gracePeriodSeconds")
        if rt.plural == "pods" and self._is_graceful_pod(current):
            if grace is None:
                grace = (current.get("spec") or {}).get("terminationGracePeriodSeconds", 30)
            if grace > 0:
                # the kubelet stops the containers, then deletes with gracePeriodSeconds=0
                if meta.get("deletionTimestamp") and meta.get("deletionGracePeriodSeconds", 0) <= grace:
                    return copy.deepcopy(current), False
                meta["deletionTimestamp"] = now_rfc3339(grace)
                meta["deletionGracePeriodSeconds"] = grace
                if finalizers:
                    meta["finalizers"] = finalizers
                return self._store_update(rt, current, new), False
        if rt.plural == "namespaces":
            if meta.get("deletionTimestamp"):
                return copy.deepcopy(current), False
            meta["deletionTimestamp"] = now_rfc3339()
            meta["deletionGracePeriodSeconds"] = 0
            new["status"] = {"phase": "Terminating"}
            if finalizers:
                meta["finalizers"] = finalizers
            stored = self._store_update(rt, current, new)
            self._enqueue("namespace", meta["name"])
            return stored, False
        if finalizers:
            if (
                meta.get("deletionTimestamp")
                and finalizers == list(meta.get("finalizers") or [])
                and meta.get("deletionGracePeriodSeconds", 0) == 0
            ):
                return copy.deepcopy(current), False
            meta["finalizers"] = finalizers
            meta.setdefault("deletionTimestamp", now_rfc3339())
            meta["deletionGracePeriodSeconds"] = 0
            if rt.tracks_generation:
                meta["generation"] = meta.get("generation", 1) + 1
            stored = self._store_update(rt, current, new)
            return stored, False
        return self._remove(rt, current), True

    def _is_graceful_pod(self, pod: dict) -> bool:
        return self.graceful_pods and bool((pod.get("spec") or {}).get("nodeName"))

    def _pending(self, rt: ResourceType, obj: dict) -> bool:
        """Whether a marked object must stay: finalizers, a namespace's spec.finalizers, or a pod
        on a node that the kubelet has not yet stopped (it deletes with gracePeriodSeconds=0)."""
        if obj["metadata"].get("finalizers"):
            return True
        if rt.plural == "namespaces":
            return bool((obj.get("spec") or {}).get("finalizers"))
        return (
            rt.plural == "pods"
            and self._is_graceful_pod(obj)
            and obj["metadata"].get("deletionGracePeriodSeconds", 0) > 0
        )

    def _remove(self, rt: ResourceType, current: dict) -> dict:
        meta = current["metadata"]
        key = (meta.get("namespace", "") or "", meta["name"])
        self._bucket(rt).pop(key, None)
        self._uids.pop(meta["uid"], None)
        gone = copy.deepcopy(current)
        gone["metadata"]["resourceVersion"] = str(self._next_rv())
        self._emit(rt, "DELETED", gone, None)
        self._enqueue("owner_gone", meta["uid"])
        for ref in meta.get("ownerReferences") or []:
            owner = self._locate(ref.get("uid", ""))
            if owner and FOREGROUND in (owner[1]["metadata"].get("finalizers") or []):
                self._enqueue("finalize", ref["uid"])
        if rt.custom:
            crd = self._bucket(self.rt("apiextensions.k8s.io", "customresourcedefinitions")).get(
                ("", f"{rt.plural}.{rt.group}")
            )
            if crd is not None and crd["metadata"].get("deletionTimestamp"):
                self._enqueue("finalize", crd["metadata"]["uid"])
        if meta.get("namespace"):
            self._enqueue("namespace", meta["namespace"])
        return copy.deepcopy(gone)

    def delete_collection(
        self,
        rt: ResourceType,
        namespace: str | None,
        labels: tuple[Requirement, ...] = (),
        fields: tuple[FieldRequirement, ...] = (),
        options: dict | None = None,
    ) -> list[dict]:
        with self._lock:
            result = self.list(rt, namespace, labels, fields)
            out = []
            for item in result.items:
                m = item["metadata"]
                try:
                    out.append(self.delete(rt, m.get("namespace"), m["name"], options)[0])
                except ApiError as exc:
                    if exc.code != 404:
                        raise
            return out

    # -- after a write: CRDs become types, owners are checked, finalizers are worked on -----------

    def _after_write(self, rt: ResourceType, old: dict | None, new: dict) -> None:
        meta = new["metadata"]
        if rt.plural == "namespaces" and old is None:
            # upstream's service-account controller gives every namespace a "default" account
            self.create(self.rt("", "serviceaccounts"), meta["name"], {"metadata": {"name": "default"}})
        if rt.plural == "customresourcedefinitions" and not meta.get("deletionTimestamp"):
            self.registry.add(custom_type_from_crd(new))
        if meta.get("ownerReferences"):
            self._enqueue("check_owners", rt.key, meta.get("namespace", "") or "", meta["name"])
        if meta.get("deletionTimestamp") and set(meta.get("finalizers") or []) & {
            ORPHAN,
            FOREGROUND,
            CRD_CLEANUP,
        }:
            self._enqueue("finalize", meta["uid"])
