"""What a write passes before the store keeps it: defaulting, validation, and the built-in
admission plugins, as kube-apiserver's registry strategies and admission chain do.

- ``apply_defaults``: per-kind defaults (pods, namespaces, secrets' ``stringData``, Deployments,
  CRDs' accepted names and conditions), with the DefaultTolerationSeconds plugin's tolerations;
- ``validate``: names (RFC 1123, RBAC path segments), labels, required fields, NetworkPolicies'
  ports, peers and CIDRs (defaulted first, as upstream decodes), CRD names, pod spec immutability
  and no new finalizers on an object being deleted, answered 422 Invalid with one cause each;
- ``structural``: a custom object pruned to its CRD's schema (``schema.py``).

Mutating webhooks (``Store.admission``) run before these, outside the store's lock.
"""

from __future__ import annotations

import base64
import copy
import re
from typing import Any

from sandbox.clock import now_rfc3339
from sandbox.kube.resources import ResourceType
from sandbox.kube.store.errors import bad_request, invalid

NAMESPACE_FINALIZER = "kubernetes"

_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def structural(rt: ResourceType, name: str, obj: dict) -> None:
    """A custom object pruned to its CRD's schema, refused (422) with every invalid field."""
    if rt.custom and rt.schema:
        from sandbox.kube.schema import prune_and_validate

        causes = prune_and_validate(rt.schema, obj)
        if causes:
            raise invalid(rt, name, causes)


def check_namespace_field(rt: ResourceType, namespace: str | None, meta: dict) -> None:
    body_ns = meta.get("namespace")
    if rt.namespaced and body_ns and namespace and body_ns != namespace:
        raise bad_request(
            "the namespace of the provided object does not match the namespace sent on the request"
        )


def validate(rt: ResourceType, name: str, obj: dict, old: dict | None) -> None:
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


def apply_defaults(rt: ResourceType, obj: dict) -> None:
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
