"""The sandbox scheduler: binds pending pods to nodes that fit, as kube-scheduler's default
profile would, or leaves them Pending with a ``FailedScheduling`` event saying why.

The decisions are pure functions of (pod, node, the pods already placed), one per upstream filter
plugin, run in upstream's order; a node's first failing filter gives its reason, and the
event's message aggregates them the way kube-scheduler words it::

    0/4 nodes are available: 1 Insufficient nvidia.com/gpu, 3 node(s) didn't match Pod's node
    affinity/selector. preemption: 0/4 nodes are available: 4 Preemption is not helpful for scheduling.

Filters modelled: NodeUnschedulable (``spec.unschedulable`` unless tolerated), TaintToleration
(NoSchedule and NoExecute taints), NodeAffinity (``nodeSelector`` and required node affinity,
operators In/NotIn/Exists/DoesNotExist/Gt/Lt, ``matchFields`` on ``metadata.name``),
NodeResourcesFit (allocatable pods, cpu, memory, ``nvidia.com/gpu`` and any other resource the
node advertises; requests as upstream computes them), InterPodAffinity (required pod affinity
and anti-affinity on any topology key, and existing pods' anti-affinity against the new pod).
Scoring is simplified to "fewest pods, then name" (spreading). Not modelled: preemption,
preferred (soft) terms, topology spread constraints, node ports, volumes, scheduling gates,
other schedulers' pods (``schedulerName`` other than default-scheduler are left alone).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import uuid
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any

from sandbox.kube.podspec import SpecError, pod_requests, quantity
from sandbox.kube.store import ApiError, Store, now_rfc3339

log = logging.getLogger("sandbox.kube.scheduler")

SCHEDULER_NAME = "default-scheduler"
UNSCHEDULABLE_TAINT = "node.kubernetes.io/unschedulable"
TERMINAL = ("Succeeded", "Failed")

NOT_MATCH_AFFINITY = "node(s) didn't match Pod's node affinity/selector"
UNSCHEDULABLE = "node(s) were unschedulable"
ANTI_AFFINITY = "node(s) didn't match pod anti-affinity rules"
EXISTING_ANTI_AFFINITY = "node(s) didn't satisfy existing pods anti-affinity rules"
POD_AFFINITY = "node(s) didn't match pod affinity rules"
TOO_MANY_PODS = "Too many pods"


# --- pure predicates ---------------------------------------------------------------------------


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    return obj.get("metadata") or {}


def _labels(obj: Mapping[str, Any]) -> Mapping[str, str]:
    return _meta(obj).get("labels") or {}


def tolerates(toleration: Mapping[str, Any], taint: Mapping[str, Any]) -> bool:
    """Upstream's ``Toleration.ToleratesTaint``."""
    effect = toleration.get("effect") or ""
    if effect and effect != taint.get("effect"):
        return False
    key = toleration.get("key") or ""
    operator = toleration.get("operator") or "Equal"
    if not key:
        # an empty key with Exists tolerates every taint
        return operator == "Exists"
    if key != taint.get("key"):
        return False
    if operator == "Exists":
        return True
    return (toleration.get("value") or "") == (taint.get("value") or "")


def untolerated_taint(pod: Mapping[str, Any], node: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The first NoSchedule/NoExecute taint of the node that the pod does not tolerate."""
    tolerations = (pod.get("spec") or {}).get("tolerations") or []
    for taint in (node.get("spec") or {}).get("taints") or []:
        if taint.get("effect") not in ("NoSchedule", "NoExecute"):
            continue
        if not any(tolerates(t, taint) for t in tolerations):
            return taint
    return None


def unschedulable(pod: Mapping[str, Any], node: Mapping[str, Any]) -> bool:
    if not (node.get("spec") or {}).get("unschedulable"):
        return False
    taint = {"key": UNSCHEDULABLE_TAINT, "effect": "NoSchedule"}
    return not any(tolerates(t, taint) for t in (pod.get("spec") or {}).get("tolerations") or [])


def requirement_matches(req: Mapping[str, Any], value: str | None) -> bool:
    """One NodeSelectorRequirement / LabelSelectorRequirement against a label's value (None: absent)."""
    op, values = req.get("operator"), [str(v) for v in req.get("values") or []]
    if op == "In":
        return value is not None and value in values
    if op == "NotIn":
        return value is None or value not in values
    if op == "Exists":
        return value is not None
    if op == "DoesNotExist":
        return value is None
    if op in ("Gt", "Lt"):
        try:
            have, want = int(value or ""), int(values[0])
        except (ValueError, IndexError):
            return False
        return have > want if op == "Gt" else have < want
    raise SpecError("InvalidSelector", f"unknown selector operator {op!r}")


def node_selector_term_matches(term: Mapping[str, Any], node: Mapping[str, Any]) -> bool:
    """Every requirement of a NodeSelectorTerm holds (an empty term matches nothing, as upstream)."""
    exprs, fields = term.get("matchExpressions") or [], term.get("matchFields") or []
    if not exprs and not fields:
        return False
    labels = _labels(node)
    for req in exprs:
        if not requirement_matches(req, labels.get(req.get("key", ""))):
            return False
    for req in fields:
        value = _meta(node).get("name") if req.get("key") == "metadata.name" else None
        if not requirement_matches(req, value):
            return False
    return True


def matches_node_affinity(pod: Mapping[str, Any], node: Mapping[str, Any]) -> bool:
    """``nodeSelector`` and the required node affinity (its terms are ORed)."""
    spec = pod.get("spec") or {}
    labels = _labels(node)
    for key, value in (spec.get("nodeSelector") or {}).items():
        if labels.get(key) != value:
            return False
    required = (
        ((spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
            "requiredDuringSchedulingIgnoredDuringExecution"
        )
        or {}
    ).get("nodeSelectorTerms")
    if required is None:
        return True
    return any(node_selector_term_matches(term, node) for term in required)


def label_selector_matches(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """A LabelSelector (matchLabels, matchExpressions); None matches nothing, {} everything."""
    if selector is None:
        return False
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    return all(
        requirement_matches(r, labels.get(r.get("key", ""))) for r in selector.get("matchExpressions") or []
    )


def pod_is_active(pod: Mapping[str, Any]) -> bool:
    return (pod.get("status") or {}).get("phase") not in TERMINAL


def insufficient_resources(
    pod: Mapping[str, Any], node: Mapping[str, Any], pods_on_node: Iterable[Mapping[str, Any]]
) -> list[str]:
    """Upstream's NodeResourcesFit reasons: "Too many pods", "Insufficient <resource>"."""
    allocatable = (node.get("status") or {}).get("allocatable") or {}
    active = [p for p in pods_on_node if pod_is_active(p)]
    reasons = []
    if len(active) + 1 > int(quantity(allocatable.get("pods", "110"))):
        reasons.append(TOO_MANY_PODS)
    used: dict[str, Decimal] = {}
    for other in active:
        for name, v in pod_requests(other).items():
            used[name] = used.get(name, Decimal(0)) + v
    for name, want in sorted(pod_requests(pod).items()):
        if want <= 0 or name == "ephemeral-storage":
            continue
        have = quantity(allocatable.get(name, "0"))
        if used.get(name, Decimal(0)) + want > have:
            reasons.append(f"Insufficient {name}")
    return reasons


def _affinity_terms(pod: Mapping[str, Any], kind: str) -> list[Mapping[str, Any]]:
    affinity = ((pod.get("spec") or {}).get("affinity") or {}).get(kind) or {}
    return affinity.get("requiredDuringSchedulingIgnoredDuringExecution") or []


def _term_selects(
    term: Mapping[str, Any],
    owner: Mapping[str, Any],
    other: Mapping[str, Any],
    namespaces: Mapping[str, dict],
) -> bool:
    """Whether a pod (anti-)affinity term of ``owner`` selects ``other``."""
    ns = _meta(other).get("namespace", "")
    listed = term.get("namespaces") or []
    ns_selector = term.get("namespaceSelector")
    if listed or ns_selector is not None:
        in_ns = ns in listed or (
            ns_selector is not None and label_selector_matches(ns_selector, _labels(namespaces.get(ns, {})))
        )
    else:
        in_ns = ns == _meta(owner).get("namespace", "")
    return in_ns and label_selector_matches(term.get("labelSelector"), _labels(other))


def inter_pod_affinity_reason(
    pod: Mapping[str, Any],
    node: Mapping[str, Any],
    nodes: Mapping[str, Mapping[str, Any]],
    placed: Iterable[Mapping[str, Any]],
    namespaces: Mapping[str, dict] | None = None,
) -> str | None:
    """Upstream's InterPodAffinity filter: None when the node is allowed, else the reason (checked
    in upstream's order: pod affinity, pod anti-affinity, existing pods' anti-affinity)."""
    namespaces = namespaces or {}
    placed = [p for p in placed if pod_is_active(p) and (p.get("spec") or {}).get("nodeName") in nodes]
    node_labels = _labels(node)

    def same_domain(other: Mapping[str, Any], key: str) -> bool:
        if key not in node_labels:
            return False
        other_node = nodes[(other.get("spec") or {})["nodeName"]]
        return _labels(other_node).get(key) == node_labels[key]

    for term in _affinity_terms(pod, "podAffinity"):
        key = term.get("topologyKey", "")
        if key not in node_labels:
            return POD_AFFINITY
        matching = [o for o in placed if _term_selects(term, pod, o, namespaces)]
        if any(same_domain(o, key) for o in matching):
            continue
        # upstream lets the first pod of a group in when it matches its own term
        if not matching and _term_selects(term, pod, pod, namespaces):
            continue
        return POD_AFFINITY
    for term in _affinity_terms(pod, "podAntiAffinity"):
        key = term.get("topologyKey", "")
        if any(_term_selects(term, pod, other, namespaces) and same_domain(other, key) for other in placed):
            return ANTI_AFFINITY
    for other in placed:
        for term in _affinity_terms(other, "podAntiAffinity"):
            key = term.get("topologyKey", "")
            if _term_selects(term, other, pod, namespaces) and same_domain(other, key):
                return EXISTING_ANTI_AFFINITY
    return None


def filter_reasons(
    pod: Mapping[str, Any],
    node: Mapping[str, Any],
    nodes: Mapping[str, Mapping[str, Any]],
    placed: list[Mapping[str, Any]],
    namespaces: Mapping[str, dict] | None = None,
) -> list[str]:
    """Why ``node`` cannot take ``pod`` (empty: it can), from the first filter that fails."""
    if unschedulable(pod, node):
        return [UNSCHEDULABLE]
    taint = untolerated_taint(pod, node)
    if taint is not None:
        return [f"node(s) had untolerated taint {{{taint.get('key')}: {taint.get('value', '')}}}"]
    if not matches_node_affinity(pod, node):
        return [NOT_MATCH_AFFINITY]
    name = _meta(node).get("name")
    reasons = insufficient_resources(
        pod, node, [p for p in placed if (p.get("spec") or {}).get("nodeName") == name]
    )
    if reasons:
        return reasons
    reason = inter_pod_affinity_reason(pod, node, nodes, placed, namespaces)
    return [reason] if reason else []


def failed_scheduling_message(node_count: int, reasons_by_node: Mapping[str, list[str]]) -> str:
    """kube-scheduler's FitError text."""
    counts: dict[str, int] = {}
    for reasons in reasons_by_node.values():
        for reason in reasons:
            counts[reason] = counts.get(reason, 0) + 1
    parts = sorted(f"{n} {reason}" for reason, n in counts.items())
    head = f"0/{node_count} nodes are available"
    text = f"{head}: {', '.join(parts)}." if parts else f"{head}."
    return (
        f"{text} preemption: 0/{node_count} nodes are available: "
        f"{node_count} Preemption is not helpful for scheduling."
    )


def choose_node(
    pod: Mapping[str, Any],
    nodes: list[Mapping[str, Any]],
    placed: list[Mapping[str, Any]],
    namespaces: Mapping[str, dict] | None = None,
) -> tuple[str | None, dict[str, list[str]]]:
    """(the node to bind to, or None; each rejected node's reasons). Spreads: fewest pods wins."""
    by_name = {_meta(n)["name"]: n for n in nodes}
    rejected: dict[str, list[str]] = {}
    fitting: list[tuple[int, str]] = []
    for node in nodes:
        name = _meta(node)["name"]
        reasons = filter_reasons(pod, node, by_name, placed, namespaces)
        if reasons:
            rejected[name] = reasons
        else:
            load = sum(
                1 for p in placed if (p.get("spec") or {}).get("nodeName") == name and pod_is_active(p)
            )
            fitting.append((load, name))
    return (min(fitting)[1] if fitting else None), rejected


# --- the scheduler loop ------------------------------------------------------------------------


def _needs_scheduling(pod: Mapping[str, Any]) -> bool:
    spec = pod.get("spec") or {}
    return (
        not spec.get("nodeName")
        and (spec.get("schedulerName") or SCHEDULER_NAME) == SCHEDULER_NAME
        and not _meta(pod).get("deletionTimestamp")
        and (pod.get("status") or {}).get("phase", "Pending") == "Pending"
        and not spec.get("schedulingGates")
    )


def record_event(
    store: Store,
    obj: Mapping[str, Any],
    reason: str,
    message: str,
    type_: str = "Normal",
    component: str = SCHEDULER_NAME,
    host: str | None = None,
) -> dict:
    """A core/v1 Event about ``obj`` (in its namespace, "default" for cluster-scoped objects)."""
    meta = _meta(obj)
    namespace = meta.get("namespace") or "default"
    now = now_rfc3339()
    source = {"component": component, **({"host": host} if host else {})}
    body = {
        "metadata": {"name": f"{meta.get('name')}.{uuid.uuid4().hex[:16]}", "namespace": namespace},
        "involvedObject": {
            "kind": obj.get("kind", "Pod"),
            "apiVersion": obj.get("apiVersion", "v1"),
            "namespace": meta.get("namespace", ""),
            "name": meta.get("name"),
            "uid": meta.get("uid"),
            "resourceVersion": meta.get("resourceVersion"),
        },
        "reason": reason,
        "message": message,
        "type": type_,
        "source": source,
        "reportingComponent": component,
        "reportingInstance": host or component,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "eventTime": None,
        "count": 1,
    }
    return store.create(store.rt("", "events"), namespace, body)


class PodScheduler:
    """Watches pods and nodes in a Store and binds pending pods; ``start()``/``stop()``."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._threads: list[threading.Thread] = []
        self._last_failure: dict[str, str] = {}  # pod uid -> last FailedScheduling message

    def start(self) -> PodScheduler:
        for plural in ("pods", "nodes"):
            t = threading.Thread(
                target=self._watch, args=(plural,), name=f"scheduler-watch-{plural}", daemon=True
            )
            t.start()
            self._threads.append(t)
        loop = threading.Thread(target=self._loop, name="scheduler", daemon=True)
        loop.start()
        self._threads.append(loop)
        self._wake.set()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        for t in self._threads:
            t.join(timeout=5)
        self._threads.clear()

    def _watch(self, plural: str) -> None:
        rt = self.store.rt("", plural)
        rv = self.store.resource_version
        while not self._stop.is_set():
            try:
                for _type, obj in self.store.watch(rt, None, (), (), rv, self._stop):
                    rv = obj["metadata"]["resourceVersion"]
                    self._wake.set()
            except ApiError:  # fell behind the history: start again from now
                rv = self.store.resource_version
                self._wake.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait()
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self.schedule_pending()
            except Exception:  # the scheduler must survive one bad pod
                log.exception("scheduling pass failed")

    def schedule_pending(self) -> None:
        """One pass over every pending pod, oldest first within a priority (upstream's queue order)."""
        store = self.store
        pods = store.list(store.rt("", "pods"), None).items
        nodes = store.list(store.rt("", "nodes"), None).items
        namespaces = {n["metadata"]["name"]: n for n in store.list(store.rt("", "namespaces"), None).items}
        pending = sorted(
            (p for p in pods if _needs_scheduling(p)),
            key=lambda p: (
                -(p["spec"].get("priority") or 0),
                p["metadata"]["creationTimestamp"],
                p["metadata"]["name"],
            ),
        )
        placed = [p for p in pods if (p.get("spec") or {}).get("nodeName")]
        live_uids = {p["metadata"]["uid"] for p in pods}
        for uid in list(self._last_failure):
            if uid not in live_uids:
                del self._last_failure[uid]
        for pod in pending:
            try:
                node, rejected = choose_node(pod, nodes, placed, namespaces)
            except SpecError as exc:
                node, rejected = None, {}
                self._unschedulable(pod, f"0/{len(nodes)} nodes are available: {exc}.")
                continue
            if node is None:
                self._unschedulable(pod, failed_scheduling_message(len(nodes), rejected))
                continue
            meta = pod["metadata"]
            try:
                store.bind(meta["namespace"], meta["name"], {"target": {"kind": "Node", "name": node}})
            except ApiError as exc:  # deleted or bound meanwhile: the watch brings it back if needed
                log.debug("bind of %s/%s failed: %s", meta["namespace"], meta["name"], exc.message)
                continue
            self._last_failure.pop(meta["uid"], None)
            bound = {**pod, "spec": {**pod["spec"], "nodeName": node}}
            placed.append(bound)
            with contextlib.suppress(ApiError):
                record_event(
                    store,
                    pod,
                    "Scheduled",
                    f"Successfully assigned {meta['namespace']}/{meta['name']} to {node}",
                )

    def _unschedulable(self, pod: dict, message: str) -> None:
        meta = pod["metadata"]
        if self._last_failure.get(meta["uid"]) == message:
            return  # nothing changed for this pod since the last event
        self._last_failure[meta["uid"]] = message
        rt = self.store.rt("", "pods")

        def condition(current: dict) -> dict:
            status = current.setdefault("status", {})
            conditions = [c for c in status.get("conditions") or [] if c.get("type") != "PodScheduled"]
            conditions.append(
                {
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": "Unschedulable",
                    "message": message,
                    "lastTransitionTime": now_rfc3339(),
                    "lastProbeTime": None,
                }
            )
            status["conditions"] = conditions
            return current

        try:
            self.store.patch(rt, meta["namespace"], meta["name"], condition, "status")
            record_event(self.store, pod, "FailedScheduling", message, "Warning")
        except ApiError as exc:
            log.debug(
                "could not report %s/%s unschedulable: %s", meta["namespace"], meta["name"], exc.message
            )
