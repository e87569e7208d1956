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
import bisect
import copy
import json
import re
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sandbox.kube.resources import Registry, ResourceType, custom_type_from_crd
from sandbox.kube.selectors import FieldRequirement, Requirement, fields_match, labels_match

HISTORY_LIMIT = 20_000
NAMESPACE_FINALIZER = "kubernetes"
ORPHAN = "orphan"
FOREGROUND = "foregroundDeletion"
CRD_CLEANUP = "customresourcecleanup.apiextensions.k8s.io"
DEFAULT_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")

_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_GENERATE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"


def now_rfc3339(offset_s: float = 0) -> str:
    return (datetime.now(UTC) + timedelta(seconds=offset_s)).strftime("%Y-%m-%dT%H:%M:%SZ")


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


def _details(rt: ResourceType, name: str | None, **extra: Any) -> dict:
    details: dict[str, Any] = {"kind": rt.plural}
    if name:
        details["name"] = name
    if rt.group:
        details["group"] = rt.group
    details.update(extra)
    return details


def not_found(rt: ResourceType, name: str) -> ApiError:
    return ApiError(404, "NotFound", f'{rt.qualified} "{name}" not found', _details(rt, name))


def already_exists(rt: ResourceType, name: str) -> ApiError:
    return ApiError(409, "AlreadyExists", f'{rt.qualified} "{name}" already exists', _details(rt, name))


def conflict(rt: ResourceType, name: str, why: str) -> ApiError:
    return ApiError(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {rt.qualified} "{name}": {why}',
        _details(rt, name),
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
        _details(
            rt, name, causes=[{"reason": "FieldValueInvalid", "message": m, "field": f} for f, m in causes]
        ),
    )


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


@dataclass(frozen=True)
class WatchEvent:
    rv: int
    key: tuple[str, str]
    type: str  # ADDED, MODIFIED, DELETED
    obj: dict
    old: dict | None


@dataclass
class ListResult:
    items: list[dict]
    resource_version: str
    continue_token: str | None
    remaining: int | None


def _rv(obj: dict) -> str:
    return obj.get("metadata", {}).get("resourceVersion", "")


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
        self._history: list[WatchEvent] = []
        self._history_rvs: list[int] = []
        self._compacted_rv = 1  # history holds every event with rv > this
        self._work: list[tuple] = []
        self._work_cv = threading.Condition(threading.Lock())
        self._busy = 0
        self._closed = False
        self._worker = threading.Thread(target=self._run_worker, name="kube-gc", daemon=True)
        self._worker.start()
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
        with self._work_cv:
            self._closed = True
            self._work_cv.notify_all()
        with self._changed:
            self._changed.notify_all()
        self._worker.join(timeout=5)

    def _bucket(self, rt: ResourceType) -> dict[tuple[str, str], dict]:
        return self._objects.setdefault(rt.key, {})

    def _next_rv(self) -> int:
        self._rv_counter += 1
        return self._rv_counter

    def _emit(self, rt: ResourceType, type_: str, obj: dict, old: dict | None) -> None:
        rv = int(obj["metadata"]["resourceVersion"])
        self._history.append(WatchEvent(rv, rt.key, type_, obj, old))
        self._history_rvs.append(rv)
        if len(self._history) > 2 * HISTORY_LIMIT:
            drop = len(self._history) - HISTORY_LIMIT
            self._compacted_rv = self._history_rvs[drop - 1]
            del self._history[:drop]
            del self._history_rvs[:drop]
        self._changed.notify_all()

    def _enqueue(self, *item: Any) -> None:
        with self._work_cv:
            self._work.append(item)
            self._work_cv.notify_all()

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

        def selected(obj: dict | None) -> bool:
            if obj is None:
                return False
            if namespace is not None and obj["metadata"].get("namespace", "") != namespace:
                return False
            return labels_match(labels, obj["metadata"].get("labels")) and fields_match(
                fields, obj, rt.field_getters
            )

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
                if last < self._compacted_rv:
                    raise ApiError(410, "Expired", f"too old resource version: {last} ({self._compacted_rv})")
        return self._stream(rt, selected, initial, last, stop, deadline, bool(send_initial))

    def _stream(
        self,
        rt: ResourceType,
        selected: Callable[[dict | None], bool],
        initial: list[dict],
        last: int,
        stop: threading.Event,
        deadline: float | None,
        send_initial: bool,
    ) -> Iterator[tuple[str, dict]]:
        for obj in sorted(initial, key=lambda o: int(_rv(o))):
            yield "ADDED", obj
        if send_initial:
            yield (
                "BOOKMARK",
                {
                    "kind": rt.kind,
                    "apiVersion": rt.api_version(),
                    "metadata": {
                        "resourceVersion": str(last),
                        "annotations": {"k8s.io/initial-events-end": "true"},
                    },
                },
            )
        while not stop.is_set():
            with self._lock:
                idx = bisect.bisect_right(self._history_rvs, last)
                while idx >= len(self._history) and not stop.is_set() and not self._closed:
                    wait = 0.5 if deadline is None else min(0.5, deadline - time.monotonic())
                    if wait <= 0:
                        return
                    self._changed.wait(wait)
                    idx = bisect.bisect_right(self._history_rvs, last)
                if self._closed:
                    return
                if last < self._compacted_rv:
                    raise ApiError(410, "Expired", f"too old resource version: {last} ({self._compacted_rv})")
                batch = self._history[idx:]
            for ev in batch:
                last = ev.rv
                if ev.key != rt.key:
                    continue
                now_in, was_in = selected(ev.obj), selected(ev.old)
                if ev.type == "MODIFIED":
                    if now_in and was_in:
                        yield "MODIFIED", ev.obj
                    elif now_in:
                        yield "ADDED", ev.obj
                    elif was_in:
                        yield "DELETED", ev.obj
                elif now_in:
                    yield ev.type, ev.obj
            if deadline is not None and time.monotonic() >= deadline:
                return

    # -- create -----------------------------------------------------------------------------------

    def create(self, rt: ResourceType, namespace: str | None, body: dict) -> dict:
        if not isinstance(body, dict):
            raise bad_request("the body of the request was not a JSON object")
        obj = copy.deepcopy(body)
        meta = obj.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise bad_request("metadata must be an object")
        self._check_namespace_field(rt, namespace, meta)
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
            self._validate(rt, name, obj, None)
            self._structural(rt, name, obj)
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
                        _details(rt, name),
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
            self._defaults(rt, obj)
            meta["resourceVersion"] = str(self._next_rv())
            self._bucket(rt)[(namespace or "", name)] = obj
            self._uids[meta["uid"]] = (rt.key, namespace or "", name)
            self._emit(rt, "ADDED", copy.deepcopy(obj), None)
            self._after_write(rt, None, obj)
            return copy.deepcopy(obj)

    def _structural(self, rt: ResourceType, name: str, obj: dict) -> None:
        """A custom object pruned to its CRD's schema, refused (422) with every invalid field."""
        if rt.custom and rt.schema:
            from sandbox.kube.schema import prune_and_validate

            causes = prune_and_validate(rt.schema, obj)
            if causes:
                raise invalid(rt, name, causes)

    def _check_namespace_field(self, rt: ResourceType, namespace: str | None, meta: dict) -> None:
        body_ns = meta.get("namespace")
        if rt.namespaced and body_ns and namespace and body_ns != namespace:
            raise bad_request(
                "the namespace of the provided object does not match the namespace sent on the request"
            )

    def _validate(self, rt: ResourceType, name: str, obj: dict, old: dict | None) -> None:
        causes: list[tuple[str, str]] = []
        pattern, limit = (_DNS_LABEL, 63) if rt.plural == "namespaces" else (_DNS_SUBDOMAIN, 253)
        if rt.group == "rbac.authorization.k8s.io":
            # RBAC objects take path segment names (ValidateRBACName): "system:controller:x" is one.
            if name in (".", "..") or any(c in name for c in "/%"):
                causes.append(("metadata.name", f"Invalid value: \"{name}\": may not contain '/' or '%'"))
        elif len(name) > limit or not pattern.match(name):
            causes.append(
                (
                    "metadata.name",
                    f'Invalid value: "{name}": a lowercase RFC 1123 '
                    f"{'label' if limit == 63 else 'subdomain'} must consist of lower case alphanumeric "
                    "characters, '-' or '.', and must start and end with an alphanumeric character",
                )
            )
        from sandbox.kube.selectors import SelectorError, _check_key, _check_value

        for key, value in (obj["metadata"].get("labels") or {}).items():
            try:
                _check_key(key)
                _check_value(str(value))
            except SelectorError:
                causes.append(("metadata.labels", f'Invalid value: "{key}={value}"'))
        api_version = obj.get("apiVersion")
        if rt.custom and api_version and api_version.rpartition("/")[0] != rt.group:
            causes.append(("apiVersion", f'Invalid value: "{api_version}": must be {rt.api_version()}'))
        if rt.plural == "pods":
            containers = (obj.get("spec") or {}).get("containers") or []
            if not containers:
                causes.append(("spec.containers", "Required value"))
            for i, c in enumerate(containers):
                if not c.get("name"):
                    causes.append((f"spec.containers[{i}].name", "Required value"))
                if not c.get("image"):
                    causes.append((f"spec.containers[{i}].image", "Required value"))
            if old is not None:
                causes += _pod_update_causes(old, obj)
        if rt.plural == "deployments":
            spec = obj.get("spec") or {}
            match = (spec.get("selector") or {}).get("matchLabels") or {}
            labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
            if not spec.get("selector"):
                causes.append(("spec.selector", "Required value"))
            elif any(labels.get(k) != v for k, v in match.items()):
                causes.append(
                    (
                        "spec.template.metadata.labels",
                        f"Invalid value: {labels}: `selector` does not match template `labels`",
                    )
                )
        if rt.plural == "networkpolicies":
            # Upstream defaults while decoding, before validation, on create and update alike.
            _network_policy_defaults(obj.setdefault("spec", {}))
            causes += _network_policy_causes(obj["spec"])
        if rt.plural == "customresourcedefinitions":
            spec = obj.get("spec") or {}
            names = spec.get("names") or {}
            expected = f"{names.get('plural')}.{spec.get('group')}"
            if name != expected:
                causes.append(
                    ("metadata.name", f'Invalid value: "{name}": must be spec.names.plural+"."+spec.group')
                )
            if not names.get("kind"):
                causes.append(("spec.names.kind", "Required value"))
            if not any(v.get("storage") for v in spec.get("versions") or []):
                causes.append(
                    (
                        "spec.versions",
                        "Invalid value: must have exactly one version marked as storage version",
                    )
                )
        if old is not None and old["metadata"].get("deletionTimestamp"):
            new_f = set(obj["metadata"].get("finalizers") or [])
            if new_f - set(old["metadata"].get("finalizers") or []):
                causes.append(
                    (
                        "metadata.finalizers",
                        "Forbidden: no new finalizers can be added if the object is being deleted",
                    )
                )
        if causes:
            raise invalid(rt, name, causes)

    def _defaults(self, rt: ResourceType, obj: dict) -> None:
        if rt.plural == "pods":
            spec = obj.setdefault("spec", {})
            spec.setdefault("restartPolicy", "Always")
            spec.setdefault("schedulerName", "default-scheduler")
            spec.setdefault("serviceAccountName", spec.get("serviceAccount") or "default")
            spec.setdefault("terminationGracePeriodSeconds", 30)
            spec.setdefault("dnsPolicy", "ClusterFirst")
            spec.setdefault("enableServiceLinks", True)
            _default_toleration_seconds(spec)
            spec.setdefault("priority", 0)
            for c in spec.get("containers", []) + spec.get("initContainers", []):
                image = c.get("image", "")
                c.setdefault(
                    "imagePullPolicy",
                    "Always"
                    if ":" not in image.rsplit("/", 1)[-1] or image.endswith(":latest")
                    else "IfNotPresent",
                )
                c.setdefault("terminationMessagePath", "/dev/termination-log")
                c.setdefault("terminationMessagePolicy", "File")
                c.setdefault("resources", {})
            status = obj.setdefault("status", {})
            status.setdefault("phase", "Pending")
            status.setdefault("qosClass", "BestEffort")
        elif rt.plural == "namespaces":
            obj.setdefault("spec", {}).setdefault("finalizers", [NAMESPACE_FINALIZER])
            obj["status"] = {"phase": "Active"}
            labels = obj["metadata"].setdefault("labels", {})
            labels["kubernetes.io/metadata.name"] = obj["metadata"]["name"]
        elif rt.plural == "secrets":
            obj.setdefault("type", "Opaque")
            string_data = obj.pop("stringData", None) or {}
            if string_data:
                data = obj.setdefault("data", {})
                for k, v in string_data.items():
                    data[k] = base64.b64encode(str(v).encode()).decode()
        elif rt.plural == "deployments":
            spec = obj.setdefault("spec", {})
            spec.setdefault("replicas", 1)
            spec.setdefault("revisionHistoryLimit", 10)
            spec.setdefault("progressDeadlineSeconds", 600)
            spec.setdefault(
                "strategy",
                {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}},
            )
            obj.setdefault("status", {})
        elif rt.plural == "customresourcedefinitions":
            names = obj["spec"]["names"]
            names.setdefault("singular", names["kind"].lower())
            names.setdefault("listKind", names["kind"] + "List")
            obj["status"] = {
                "acceptedNames": copy.deepcopy(names),
                "storedVersions": [v["name"] for v in obj["spec"]["versions"] if v.get("storage")],
                "conditions": [
                    {
                        "type": t,
                        "status": "True",
                        "reason": r,
                        "message": m,
                        "lastTransitionTime": now_rfc3339(),
                    }
                    for t, r, m in (
                        ("NamesAccepted", "NoConflicts", "no conflicts found"),
                        ("Established", "InitialNamesAccepted", "the initial names have been accepted"),
                    )
                ],
            }

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
        self._check_namespace_field(rt, current["metadata"].get("namespace"), meta)
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
                self._defaults(rt, new)
        new["apiVersion"], new["kind"] = rt.api_version(), rt.kind
        new["metadata"]["resourceVersion"] = _rv(current)
        self._structural(rt, name, new)
        self._validate(rt, name, new, current)
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

    # -- the garbage collector and namespace controller (one background thread) -------------------

    def wait_idle(self, timeout: float = 10.0) -> None:
        """Block until the garbage collector has nothing queued or running."""
        deadline = time.monotonic() + timeout
        with self._work_cv:
            while self._work or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"garbage collector still busy after {timeout}s")
                self._work_cv.wait(left)

    def _run_worker(self) -> None:
        while True:
            with self._work_cv:
                while not self._work and not self._closed:
                    self._work_cv.wait()
                if self._closed:
                    return
                item = self._work.pop(0)
                self._busy += 1
            try:
                with self._lock:
                    self._process(item)
            except Exception:  # the collector must survive one bad object
                import logging

                logging.getLogger("sandbox.kube").exception("garbage collector failed on %s", item[:2])
            finally:
                with self._work_cv:
                    self._busy -= 1
                    self._work_cv.notify_all()

    def _locate(self, uid: str) -> tuple[ResourceType, dict] | None:
        where = self._uids.get(uid)
        if where is None:
            return None
        key, ns, name = where
        rt = self.registry.get(*key)
        obj = self._objects.get(key, {}).get((ns, name))
        return (rt, obj) if rt is not None and obj is not None else None

    def _dependents(self, uid: str) -> list[tuple[ResourceType, dict]]:
        out = []
        for key, bucket in self._objects.items():
            rt = self.registry.get(*key)
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
            rt = self.registry.get(*key)
            obj = self._objects.get(key, {}).get((ns, name))
            if rt is not None and obj is not None:
                self._reconcile_owners(rt, obj)
            return
        if kind == "finalize":
            found = self._locate(item[1])
            if found is not None:
                self._finalize(*found)
            return
        if kind == "namespace":
            self._reconcile_namespace(item[1])
            return

    def _reconcile_owners(self, rt: ResourceType, obj: dict) -> None:
        refs = obj["metadata"].get("ownerReferences") or []
        live = [r for r in refs if r.get("uid") in self._uids]
        if len(live) == len(refs):
            return
        if live:
            new = copy.deepcopy(obj)
            new["metadata"]["ownerReferences"] = live
            self._store_update(rt, obj, new)
        elif not obj["metadata"].get("deletionTimestamp"):
            self._delete(rt, obj, {})

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
                self._store_update(dep_rt, dep, new)
            finalizers.remove(ORPHAN)
        if FOREGROUND in finalizers:
            dependents = self._dependents(meta["uid"])
            for dep_rt, dep in dependents:
                if not dep["metadata"].get("deletionTimestamp"):
                    self._delete(dep_rt, dep, {"propagationPolicy": "Foreground"})
            if not self._dependents(meta["uid"]):
                finalizers.remove(FOREGROUND)
        if CRD_CLEANUP in finalizers and FOREGROUND not in finalizers:
            key = (obj["spec"]["group"], obj["spec"]["names"]["plural"])
            custom = self.registry.get(*key)
            for cr in list(self._objects.get(key, {}).values()):
                if custom is not None and not cr["metadata"].get("deletionTimestamp"):
                    self._delete(custom, cr, {})
            if not self._objects.get(key):
                self.registry.remove(key)
                finalizers.remove(CRD_CLEANUP)
        if finalizers != list(meta.get("finalizers") or []):
            new = copy.deepcopy(obj)
            new["metadata"]["finalizers"] = finalizers
            if not finalizers:
                new["metadata"].pop("finalizers")
            self._store_update(rt, obj, new)

    def _reconcile_namespace(self, name: str) -> None:
        ns_rt = self.rt("", "namespaces")
        ns = self._bucket(ns_rt).get(("", name))
        if ns is None or not ns["metadata"].get("deletionTimestamp"):
            return
        remaining = 0
        for key, bucket in list(self._objects.items()):
            rt = self.registry.get(*key)
            if rt is None or not rt.namespaced:
                continue
            for obj in [o for o in bucket.values() if o["metadata"].get("namespace") == name]:
                remaining += 1
                if not obj["metadata"].get("deletionTimestamp"):
                    _, gone = self._delete(rt, obj, {"gracePeriodSeconds": 0})
                    remaining -= int(gone)
        if remaining:
            return  # objects with finalizers hold the namespace; their deletion re-queues it
        new = copy.deepcopy(ns)
        new["spec"]["finalizers"] = []
        self._store_update(ns_rt, ns, new)


_POD_MUTABLE = {"activeDeadlineSeconds", "tolerations", "schedulingGates", "terminationGracePeriodSeconds"}


_PROTOCOLS = ("TCP", "UDP", "SCTP")
_PORT_NAME = re.compile(r"^(?=.*[a-z])[a-z0-9]([a-z0-9]|-(?=[a-z0-9]))*$")


def _network_policy_defaults(spec: dict) -> None:
    """SetDefaults_NetworkPolicy: policyTypes from the rules present, TCP where a port names no
    protocol."""
    if not spec.get("policyTypes"):
        spec["policyTypes"] = ["Ingress"] + (["Egress"] if spec.get("egress") else [])
    for direction in ("ingress", "egress"):
        for rule in spec.get(direction) or []:
            for port in rule.get("ports") or []:
                port.setdefault("protocol", "TCP")


def _network_policy_causes(spec: dict) -> list[tuple[str, str]]:
    """ValidateNetworkPolicySpec, the parts a client can get wrong: policy types, ports, peers
    (one kind each, ipBlock alone) and ipBlock CIDRs. Checked after defaulting, as upstream."""
    causes: list[tuple[str, str]] = []
    if "podSelector" not in spec:
        causes.append(("spec.podSelector", "Required value"))
    for i, kind in enumerate(spec.get("policyTypes") or []):
        if kind not in ("Ingress", "Egress"):
            supported = 'supported values: "Egress", "Ingress"'
            causes.append((f"spec.policyTypes[{i}]", f'Unsupported value: "{kind}": {supported}'))
    for direction, peers_key in (("ingress", "from"), ("egress", "to")):
        for r, rule in enumerate(spec.get(direction) or []):
            base = f"spec.{direction}[{r}]"
            for n, port in enumerate(rule.get("ports") or []):
                causes += _network_policy_port_causes(f"{base}.ports[{n}]", port)
            for n, peer in enumerate(rule.get(peers_key) or []):
                causes += _network_policy_peer_causes(f"{base}.{peers_key}[{n}]", peer)
    return causes


def _network_policy_port_causes(path: str, port: dict) -> list[tuple[str, str]]:
    causes = []
    protocol = port.get("protocol")
    if protocol not in _PROTOCOLS:
        supported = ", ".join(f'"{p}"' for p in sorted(_PROTOCOLS))
        causes.append((f"{path}.protocol", f'Unsupported value: "{protocol}": supported values: {supported}'))
    number = port.get("port")
    if isinstance(number, int) and not 1 <= number <= 65535:
        causes.append((f"{path}.port", f"Invalid value: {number}: must be between 1 and 65535, inclusive"))
    elif isinstance(number, str) and (len(number) > 15 or not _PORT_NAME.match(number)):
        causes.append((f"{path}.port", f'Invalid value: "{number}": must be an IANA_SVC_NAME'))
    return causes


def _network_policy_peer_causes(path: str, peer: dict) -> list[tuple[str, str]]:
    causes = []
    kinds = [k for k in ("podSelector", "namespaceSelector", "ipBlock") if peer.get(k) is not None]
    if not kinds:
        causes.append((path, "Required value: must specify a peer"))
    elif "ipBlock" in kinds and len(kinds) > 1:
        causes.append((path, "Forbidden: may not specify more than 1 peer"))
    block = peer.get("ipBlock")
    if block is None:
        return causes
    if not block.get("cidr"):
        causes.append((f"{path}.ipBlock.cidr", "Required value"))
    cidrs = [(f"{path}.ipBlock.cidr", block.get("cidr"))] if block.get("cidr") else []
    cidrs += [(f"{path}.ipBlock.except[{e}]", c) for e, c in enumerate(block.get("except") or [])]
    for field_path, value in cidrs:
        if not _is_cidr(value):
            example = "(e.g. 10.9.8.0/24 or 2001:db8::/64)"
            causes.append((field_path, f'Invalid value: "{value}": must be a valid CIDR value, {example}'))
    return causes


def _is_cidr(value: Any) -> bool:
    """As Go's net.ParseCIDR: an address and a prefix length (host bits may be set)."""
    import ipaddress

    text = str(value)
    try:
        ipaddress.ip_network(text, strict=False)
    except ValueError:
        return False
    return "/" in text


def _pod_update_causes(old: dict, new: dict) -> list[tuple[str, str]]:
    """Upstream forbids pod spec changes except these (images, tolerations added, deadlines)."""
    a, b = copy.deepcopy(old.get("spec") or {}), copy.deepcopy(new.get("spec") or {})
    for spec in (a, b):
        for key in _POD_MUTABLE:
            spec.pop(key, None)
        for c in spec.get("containers", []) + spec.get("initContainers", []):
            c.pop("image", None)
    if a != b:
        return [
            (
                "spec",
                "Forbidden: pod updates may not change fields other than "
                "`spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,"
                "`spec.tolerations` (only additions to existing tolerations),"
                "`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was "
                "previously negative)",
            )
        ]
    return []


#: The taints of a node whose kubelet went silent or reports NotReady (node lifecycle controller).
NOT_READY_TAINT = "node.kubernetes.io/not-ready"
UNREACHABLE_TAINT = "node.kubernetes.io/unreachable"
#: kube-apiserver's DefaultTolerationSeconds admission plugin (--default-not-ready-toleration-seconds,
#: --default-unreachable-toleration-seconds).
DEFAULT_TOLERATION_SECONDS = 300


def _default_toleration_seconds(spec: dict) -> None:
    """As the DefaultTolerationSeconds admission plugin: a pod that does not already tolerate the
    not-ready or unreachable NoExecute taint tolerates it for 300 s (then the taint manager evicts
    it from a dead node)."""
    tolerations = spec.setdefault("tolerations", [])
    for key in (NOT_READY_TAINT, UNREACHABLE_TAINT):
        if any(
            t.get("effect") in (None, "", "NoExecute")
            and (t.get("key") == key or (t.get("operator") == "Exists" and not t.get("key")))
            for t in tolerations
        ):
            continue
        tolerations.append(
            {
                "key": key,
                "operator": "Exists",
                "effect": "NoExecute",
                "tolerationSeconds": DEFAULT_TOLERATION_SECONDS,
            }
        )
