"""``KubeApiServer``: the sandbox's Kubernetes API server over HTTPS on loopback.

    server = KubeApiServer()            # 127.0.0.1, any free port, fresh CA, random admin token
    server.start()
    server.kubeconfig(path)             # for kubectl and kubernetes.config.load_kube_config
    server.stop()

It speaks the REST protocol the real ``kubernetes`` client and kubectl 1.33 use: legacy discovery
(``/api``, ``/apis``, group/version resource lists; the aggregated-discovery Accept types are
answered with the legacy documents, which clients fall back to), minimal OpenAPI v3 (so kubectl
leaves field validation to the server and does not need OpenAPI v2 protobuf), JSON bodies,
``Table`` output for ``kubectl get``, chunked watch streams, and ``Status`` objects for errors.
Storage semantics are in ``store/``, authentication in ``auth.py``.

Not served: protobuf (clients are sent JSON), server-side apply (415), ``dryRun`` (400),
``/scale``, ``/exec``, ``/attach``, ``/portforward``. The pod proxy (``pods/{name}[:port]/proxy/...``)
and ``pods/{name}/log`` come with the kubelet (``sandbox/kube/proxy.py``, registered through
``subresource_handlers`` by ``KubeRuntime``).
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import secrets
import select
import socket
import ssl
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml

from sandbox.kube import patch as patches
from sandbox.kube.auth import (
    TOKEN_PREFIX,
    Authorizer,
    CallerIdentity,
    EksTokenVerifier,
    Principal,
    RequestAttributes,
    rbac_allows,
)
from sandbox.kube.resources import ResourceType
from sandbox.kube.selectors import SelectorError, dig, parse_field_selector, parse_label_selector
from sandbox.kube.store import ApiError, Store, bad_request

log = logging.getLogger("sandbox.kube")

KUBE_VERSION = {
    "major": "1",
    "minor": "33",
    "gitVersion": "v1.33.0-eks-sandbox",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2026-01-01T00:00:00Z",
    "goVersion": "go1.24",
    "compiler": "gc",
    "platform": "linux/amd64",
}
PUBLIC_PATHS = {"/version", "/healthz", "/livez", "/readyz"}
ADMIN_USER = Principal("kubernetes-admin", ("system:masters", "system:authenticated"))


# --- fault injection ------------------------------------------------------------------------------


@dataclass
class _Fault:
    verb: str
    resource: str
    remaining: int
    status: int
    retry_after: int


class FaultInjector:
    """The next N requests for a verb and resource answer 500 or 429 (with Retry-After), or are
    answered only after a delay (``slow``: an overloaded API server, a slow etcd)."""

    def __init__(self) -> None:
        self._faults: list[_Fault] = []
        self._slow: list[list[Any]] = []  # [verb, resource, remaining, seconds]
        self._lock = threading.Lock()

    def slow(self, verb: str, resource: str, count: int = 1, seconds: float = 5.0) -> None:
        """The next ``count`` matching requests wait ``seconds`` (wall) before they are served."""
        with self._lock:
            self._slow.append([verb, resource, count, seconds])

    def delay(self, attrs: RequestAttributes) -> float:
        resource = f"{attrs.resource}/{attrs.subresource}" if attrs.subresource else attrs.resource
        with self._lock:
            for rule in self._slow:
                if rule[2] > 0 and rule[0] in ("*", attrs.verb) and rule[1] in ("*", resource):
                    rule[2] -= 1
                    return float(rule[3])
        return 0.0

    def inject(
        self, verb: str, resource: str, count: int = 1, status: int = 500, retry_after: int = 1
    ) -> None:
        """``verb``: get/list/watch/create/update/patch/delete/deletecollection or "*";
        ``resource``: plural, ``plural/subresource`` or "*"."""
        if status not in (429, 500):
            raise ValueError("status must be 429 or 500")
        with self._lock:
            self._faults.append(_Fault(verb, resource, count, status, retry_after))

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()
            self._slow.clear()

    def take(self, attrs: RequestAttributes) -> ApiError | None:
        resource = f"{attrs.resource}/{attrs.subresource}" if attrs.subresource else attrs.resource
        with self._lock:
            for fault in self._faults:
                if (
                    fault.remaining > 0
                    and fault.verb in ("*", attrs.verb)
                    and fault.resource in ("*", resource)
                ):
                    fault.remaining -= 1
                    if fault.status == 429:
                        return ApiError(
                            429,
                            "TooManyRequests",
                            "Too many requests, please try again later.",
                            {"retryAfterSeconds": fault.retry_after},
                            headers={"Retry-After": str(fault.retry_after)},
                        )
                    return ApiError(
                        500,
                        "InternalError",
                        "Internal error occurred: injected fault",
                        {"causes": [{"message": "injected fault"}]},
                    )
        return None


# --- routing --------------------------------------------------------------------------------------


@dataclass
class Route:
    rt: ResourceType
    version: str
    namespace: str | None
    name: str | None
    subresource: str


def _parse_resource_path(store: Store, parts: list[str]) -> Route | None:
    """``parts`` after ``/api/v1`` or ``/apis/<g>/<v>``, with group/version prepended."""
    group, version, rest = parts[0], parts[1], parts[2:]
    namespace = None
    if (
        len(rest) >= 3
        and rest[0] == "namespaces"
        and not (len(rest) == 3 and rest[2] in ("status", "finalize"))
    ):
        namespace, rest = rest[1], rest[2:]
    if len(rest) > 3 and rest[2] == "proxy":
        # pods/{name}/proxy/{path...}: the rest of the path belongs to the proxied request
        rest = rest[:3]
    if not rest or len(rest) > 3:
        return None
    rt = store.registry.lookup(group, version, rest[0])
    if rt is None:
        return None
    name = rest[1] if len(rest) > 1 else None
    sub = rest[2] if len(rest) > 2 else ""
    if namespace is not None and not rt.namespaced:
        return None
    return Route(rt, version, namespace, name, sub)


def _age(timestamp: str | None) -> str:
    if not timestamp:
        return "<unknown>"
    seconds = int(
        time.time() - datetime.strptime(timestamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()
    )
    seconds = max(seconds, 0)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= 2 * size or (unit == "m" and seconds >= 120):
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _jsonpath(obj: dict, path: str) -> Any:
    return dig(obj, *[p for p in path.strip().lstrip(".").split(".") if p])


def table(rt: ResourceType, items: list[dict], list_meta: dict) -> dict:
    """Server-side printing for ``kubectl get`` (meta.k8s.io/v1 Table)."""
    columns = [{"name": "Name", "type": "string", "format": "name", "description": "Name", "priority": 0}]
    extra: list[Callable[[dict], Any]] = []

    def col(name: str, fn: Callable[[dict], Any], type_: str = "string") -> None:
        columns.append({"name": name, "type": type_, "format": "", "description": name, "priority": 0})
        extra.append(fn)

    if rt.plural == "pods":
        col(
            "Ready",
            lambda o: "{}/{}".format(
                sum(1 for s in dig(o, "status", "containerStatuses") or [] if s.get("ready")),
                len(dig(o, "spec", "containers") or []),
            ),
        )
        col(
            "Status",
            lambda o: "Terminating" if dig(o, "metadata", "deletionTimestamp") else dig(o, "status", "phase"),
        )
        col(
            "Restarts",
            lambda o: sum(s.get("restartCount", 0) for s in dig(o, "status", "containerStatuses") or []),
            "integer",
        )
    elif rt.plural == "nodes":

        def node_status(o: dict) -> str:
            ready = next((c for c in dig(o, "status", "conditions") or [] if c.get("type") == "Ready"), None)
            text = "Ready" if ready and ready.get("status") == "True" else "NotReady"
            return text + (",SchedulingDisabled" if dig(o, "spec", "unschedulable") else "")

        col("Status", node_status)
        col("Roles", lambda o: "<none>")
        col("Age", lambda o: _age(dig(o, "metadata", "creationTimestamp")))
        col("Version", lambda o: dig(o, "status", "nodeInfo", "kubeletVersion") or "")
    elif rt.plural == "namespaces":
        col("Status", lambda o: dig(o, "status", "phase"))
    elif rt.plural == "deployments":
        col("Ready", lambda o: f"{dig(o, 'status', 'readyReplicas') or 0}/{dig(o, 'spec', 'replicas') or 0}")
        col("Up-to-date", lambda o: dig(o, "status", "updatedReplicas") or 0, "integer")
        col("Available", lambda o: dig(o, "status", "availableReplicas") or 0, "integer")
    for pc in rt.printer_columns:
        col(pc["name"], lambda o, p=pc["jsonPath"]: _jsonpath(o, p), pc.get("type", "string"))
    if rt.plural != "nodes":
        col("Age", lambda o: _age(dig(o, "metadata", "creationTimestamp")))
    rows = []
    for obj in items:
        cells = [obj["metadata"]["name"]] + [fn(obj) for fn in extra]
        partial = {
            "kind": "PartialObjectMetadata",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": obj["metadata"],
        }
        rows.append({"cells": ["" if c is None else c for c in cells], "object": partial})
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": list_meta,
        "columnDefinitions": columns,
        "rows": rows,
    }


# --- the HTTP server ------------------------------------------------------------------------------


class _HttpsServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], handler: type, api: KubeApiServer) -> None:
        self.api = api
        super().__init__(address, handler)


class KubeApiServer:
    """The sandbox Kubernetes API server. See the module docstring."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        admin_token: str | None = None,
        verifier: EksTokenVerifier | None = None,
        authorizer: Authorizer | None = None,
        graceful_pods: bool = False,
        store: Store | None = None,
    ) -> None:
        self.host, self.port = host, port
        self.admin_token = admin_token or secrets.token_urlsafe(32)
        self.verifier = verifier
        self.authorizer = authorizer
        if authorizer is not None and getattr(authorizer, "rbac", "absent") is None:
            authorizer.rbac = self.rbac_allows  # type: ignore[attr-defined]
        self.store = store or Store(graceful_pods=graceful_pods)
        self.faults = FaultInjector()
        #: (plural, subresource) -> handler(server, handler, route, method, body) for the
        #: pod proxy and similar; it writes the whole response itself. ``body`` is the raw request
        #: body (bytes, empty when none); the request path is ``handler.path``, unnormalised.
        self.subresource_handlers: dict[tuple[str, str], Callable[..., None]] = {}
        self.ca_pem = b""
        self._dir: tempfile.TemporaryDirectory | None = None
        self._httpd: _HttpsServer | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._ssl: ssl.SSLContext | None = None

    # -- lifecycle --------------------------------------------------------------------------------

    def start(self) -> KubeApiServer:
        from sandbox.kube.tls import make_serving_certs

        certs = make_serving_certs(sorted({self.host, "127.0.0.1", "localhost"}))
        self.ca_pem = certs.ca_pem
        self._dir = tempfile.TemporaryDirectory(prefix="sandbox-kube-")
        d = Path(self._dir.name)
        (d / "ca.crt").write_bytes(certs.ca_pem)
        (d / "tls.crt").write_bytes(certs.cert_pem)
        (d / "tls.key").write_bytes(certs.key_pem)
        os.chmod(d / "tls.key", 0o600)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(d / "tls.crt", d / "tls.key")
        ctx.set_alpn_protocols(["http/1.1"])
        self._ssl = ctx
        self._httpd = _HttpsServer((self.host, self.port), _Handler, self)
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.2},
            name="kube-apiserver",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        self.store.close()
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None

    def __enter__(self) -> KubeApiServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"https://{self.host}:{self.port}"

    @property
    def ca_file(self) -> Path:
        assert self._dir is not None, "server not started"
        return Path(self._dir.name) / "ca.crt"

    @property
    def ca_data(self) -> str:
        """base64 of the CA PEM, as EKS ``describe_cluster`` returns certificateAuthority.data."""
        return base64.b64encode(self.ca_pem).decode()

    def kubeconfig(
        self, path: str | os.PathLike[str] | None = None, token: str | None = None, context: str = "sandbox"
    ) -> dict:
        """A kubeconfig for this server (admin token unless ``token``); written to ``path`` if given."""
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {"name": context, "cluster": {"server": self.url, "certificate-authority-data": self.ca_data}}
            ],
            "users": [{"name": context, "user": {"token": token or self.admin_token}}],
            "contexts": [
                {"name": context, "context": {"cluster": context, "user": context, "namespace": "default"}}
            ],
            "current-context": context,
        }
        if path is not None:
            p = Path(path)
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(yaml.safe_dump(config, sort_keys=False))
            os.chmod(p, 0o600)
        return config

    def client_configuration(self, token: str | None = None) -> Any:
        """A ``kubernetes.client.Configuration`` for this server, TLS verified against its CA."""
        from kubernetes import client

        cfg = client.Configuration()
        cfg.host = self.url
        cfg.ssl_ca_cert = str(self.ca_file)
        cfg.verify_ssl = True
        cfg.api_key = {"authorization": token or self.admin_token}
        cfg.api_key_prefix = {"authorization": "Bearer"}
        return cfg

    # -- authorisation helpers ----------------------------------------------------------------------

    def rbac_allows(self, principal: Principal, attrs: RequestAttributes) -> bool:
        s = self.store
        group = "rbac.authorization.k8s.io"
        roles = {
            (r["metadata"]["namespace"], r["metadata"]["name"]): r
            for r in s.list(s.rt(group, "roles"), None).items
        }
        cluster_roles = {r["metadata"]["name"]: r for r in s.list(s.rt(group, "clusterroles"), None).items}
        return rbac_allows(
            principal,
            attrs,
            roles,
            cluster_roles,
            s.list(s.rt(group, "rolebindings"), None).items,
            s.list(s.rt(group, "clusterrolebindings"), None).items,
        )

    def authenticate(self, header: str | None, attrs: RequestAttributes) -> Principal:
        token = header[7:].strip() if header and header.lower().startswith("bearer ") else None
        if token is None:
            if attrs.path in PUBLIC_PATHS:
                return Principal("system:anonymous", ("system:unauthenticated",))
            raise ApiError(401, "Unauthorized", "Unauthorized")
        if secrets.compare_digest(token, self.admin_token):
            return ADMIN_USER
        if token.startswith(TOKEN_PREFIX) and self.verifier is not None:
            identity: CallerIdentity = self.verifier.verify(token)
            if self.authorizer is None:
                raise ApiError(401, "Unauthorized", "Unauthorized")
            decision = self.authorizer.decide(identity, attrs)
            if decision.allowed and decision.principal is not None:
                return decision.principal
            if decision.status == 401:
                log.info("refused %s: %s", identity.arn, decision.reason)
                raise ApiError(401, "Unauthorized", "Unauthorized")
            user = decision.principal.username if decision.principal else identity.arn
            raise _forbidden(user, attrs)
        raise ApiError(401, "Unauthorized", "Unauthorized")

    def check_access(self, principal: Principal, attrs: RequestAttributes) -> None:
        """Authorise a request already authenticated with the admin token or an EKS decision."""
        # EKS decisions are made in authenticate(); the admin is system:masters; the anonymous user
        # only reaches the public paths.
        if principal.username == "system:anonymous" and attrs.path not in PUBLIC_PATHS:
            raise _forbidden(principal.username, attrs)


def _forbidden(user: str, attrs: RequestAttributes) -> ApiError:
    if not attrs.resource:
        message = f'forbidden: User "{user}" cannot {attrs.verb} path "{attrs.path}"'
        return ApiError(403, "Forbidden", message, {})
    what = f"{attrs.resource}/{attrs.subresource}" if attrs.subresource else attrs.resource
    group = f' in API group "{attrs.group}"'
    scope = f' in the namespace "{attrs.namespace}"' if attrs.namespace else " at the cluster scope"
    name = f'"{attrs.name}" ' if attrs.name else ""
    message = (
        f'{attrs.resource} {name}is forbidden: User "{user}" cannot {attrs.verb} resource '
        f'"{what}"{group}{scope}'
    )
    details: dict[str, Any] = {"kind": attrs.resource}
    if attrs.name:
        details["name"] = attrs.name
    if attrs.group:
        details["group"] = attrs.group
    return ApiError(403, "Forbidden", message, details)


class _SocketWatchStop:
    """``is_set()`` for a watch: the server is stopping, or the client hung up."""

    def __init__(self, server: KubeApiServer, sock: socket.socket) -> None:
        self.server, self.sock = server, sock

    def is_set(self) -> bool:
        if self.server._stopping.is_set():
            return True
        try:
            readable, _, _ = select.select([self.sock], [], [], 0)
        except (OSError, ValueError):
            return True
        # a watch client sends nothing after its request: readable means EOF or close_notify
        return bool(readable)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _HttpsServer
    server_version = "sandbox-kube-apiserver"

    def setup(self) -> None:
        # TLS handshake here, in the connection's own thread, so one slow client cannot stall accept()
        # headers and body go out as separate writes: without NODELAY, Nagle and delayed ACKs
        # add ~40 ms to every request
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.request.settimeout(30)
        ctx = self.server.api._ssl
        assert ctx is not None
        self.request = ctx.wrap_socket(self.request, server_side=True)
        self.request.settimeout(None)
        super().setup()

    def handle(self) -> None:
        # a client that went away needs no answer
        with contextlib.suppress(ssl.SSLError, ConnectionError, TimeoutError, OSError):
            super().handle()

    def log_message(self, fmt: str, *args: Any) -> None:
        log.debug("%s " + fmt, self.client_address[0], *args)

    @property
    def api(self) -> KubeApiServer:
        return self.server.api

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    # -- responses ------------------------------------------------------------------------------

    def _send_json(self, code: int, body: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body, separators=(",", ":")).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-cache, private")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _send_error(self, err: ApiError) -> None:
        self._send_json(err.code, err.status(), err.headers)

    def _read_raw_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _read_body(self) -> Any:
        raw = self._read_raw_body()
        if not raw:
            return None
        ctype = (self.headers.get("Content-Type") or "application/json").split(";")[0].strip()
        try:
            if ctype in ("application/yaml", "application/apply-patch+yaml"):
                return yaml.safe_load(raw)
            return json.loads(raw)
        except (ValueError, yaml.YAMLError) as exc:
            raise bad_request(f"the body of the request could not be decoded: {exc}") from exc

    # -- dispatch -------------------------------------------------------------------------------

    def _dispatch(self, method: str) -> None:
        url = urllib.parse.urlsplit(self.path)
        path = url.path.rstrip("/") or "/"
        query = {k: v[-1] for k, v in urllib.parse.parse_qs(url.query, keep_blank_values=True).items()}
        try:
            route, attrs = self._route(method, path, query)
            raw = route is not None and (route.rt.plural, route.subresource) in self.api.subresource_handlers
            if method not in ("POST", "PUT", "PATCH", "DELETE"):
                body = None
            else:
                # a registered subresource handler (the pod proxy) gets the body as sent
                body = self._read_raw_body() if raw else self._read_body()
            principal = self.api.authenticate(self.headers.get("Authorization"), attrs)
            self.api.check_access(principal, attrs)
            wait = self.api.faults.delay(attrs)
            if wait:
                time.sleep(wait)
            fault = self.api.faults.take(attrs)
            if fault is not None:
                raise fault
            if route is None:
                self._non_resource(path)
                return
            self._resource(method, route, attrs, query, body)
        except ApiError as err:
            self._send_error(err)
        except (BrokenPipeError, ConnectionResetError):
            raise
        except Exception as exc:  # an unexpected server bug answers 500, as upstream
            log.exception("internal error on %s %s", method, self.path)
            self._send_error(ApiError(500, "InternalError", f"Internal error occurred: {exc}"))

    def _route(self, method: str, path: str, query: dict[str, str]) -> tuple[Route | None, RequestAttributes]:
        parts = [urllib.parse.unquote(p) for p in path.split("/") if p]
        route = None
        if len(parts) >= 3 and parts[0] == "api" and parts[1] == "v1":
            route = _parse_resource_path(self.api.store, ["", "v1", *parts[2:]])
        elif len(parts) >= 4 and parts[0] == "apis":
            route = _parse_resource_path(self.api.store, parts[1:])
        if route is None:
            if (len(parts) >= 3 and parts[0] == "api") or (len(parts) >= 4 and parts[0] == "apis"):
                raise ApiError(
                    404,
                    "NotFound",
                    "the server could not find the requested resource",
                    {"causes": [{"reason": "UnexpectedServerResponse", "message": "404 page not found"}]},
                )
            verb = {"GET": "get", "POST": "post", "PUT": "put", "PATCH": "patch", "DELETE": "delete"}[method]
            return None, RequestAttributes(verb=verb, path=path)
        watch = query.get("watch", "").lower() in ("1", "true")
        if method == "GET":
            verb = "get" if route.name else ("watch" if watch else "list")
        elif method == "POST":
            verb = "create"
        elif method == "PUT":
            verb = "update"
        elif method == "PATCH":
            verb = "patch"
        else:
            verb = "delete" if route.name else "deletecollection"
        attrs = RequestAttributes(
            verb, route.rt.group, route.rt.plural, route.subresource, route.namespace, route.name, path
        )
        return route, attrs

    def _non_resource(self, path: str) -> None:
        reg = self.api.store.registry
        if path == "/version":
            return self._send_json(200, KUBE_VERSION)
        if path in ("/healthz", "/livez", "/readyz"):
            data = b"ok"
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return None
        doc: dict | None = None
        if path == "/api":
            doc = reg.api_versions()
        elif path == "/apis":
            doc = reg.api_group_list()
        elif path == "/api/v1":
            doc = reg.resource_list("", "v1")
        elif path.startswith("/apis/"):
            parts = path.split("/")[2:]
            doc = (
                reg.api_group(parts[0])
                if len(parts) == 1
                else reg.resource_list(parts[0], parts[1])
                if len(parts) == 2
                else None
            )
        elif path == "/openapi/v3":
            doc = reg.openapi_index()
        elif path == "/openapi/v3/api/v1":
            doc = reg.openapi_group_version("", "v1")
        elif path.startswith("/openapi/v3/apis/"):
            parts = path.split("/")[4:]
            doc = reg.openapi_group_version(parts[0], parts[1]) if len(parts) == 2 else None
        if doc is None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        self._send_json(200, doc)
        return None

    # -- resources ------------------------------------------------------------------------------

    def _present(self, route: Route, obj: dict) -> dict:
        if route.rt.custom and len(route.rt.versions) > 1:
            obj["apiVersion"] = route.rt.api_version(route.version)
        return obj

    def _wants_table(self) -> bool:
        return "as=Table" in (self.headers.get("Accept") or "")

    def _resource(
        self, method: str, route: Route, attrs: RequestAttributes, query: dict[str, str], body: Any
    ) -> None:
        api, store, rt = self.api, self.api.store, route.rt
        if attrs.verb not in rt.verbs and not route.subresource:
            raise ApiError(
                405, "MethodNotAllowed", "the server does not allow this method on the requested resource"
            )
        if query.get("dryRun"):
            raise bad_request("dryRun is not supported by the sandbox API server")
        handler = api.subresource_handlers.get((rt.plural, route.subresource))
        if handler is not None:
            handler(api, self, route, method, body)
            return
        if route.subresource and route.subresource not in rt.subresources:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        ns = route.namespace
        try:
            labels = parse_label_selector(query.get("labelSelector"))
            fields = parse_field_selector(query.get("fieldSelector"), rt.field_getters)
        except SelectorError as exc:
            raise bad_request(str(exc)) from exc
        if route.name is None and rt.namespaced and ns is None and method not in ("GET",):
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if method == "GET" and route.name is None:
            if attrs.verb == "watch":
                return self._watch(route, query, labels, fields)
            limit = (
                int(query["limit"]) if query.get("limit", "").isdigit() and int(query["limit"]) > 0 else None
            )
            result = store.list(rt, ns, labels, fields, limit, query.get("continue") or None)
            meta: dict[str, Any] = {"resourceVersion": result.resource_version}
            if result.continue_token:
                meta["continue"] = result.continue_token
                meta["remainingItemCount"] = result.remaining
            items = [self._present(route, o) for o in result.items]
            if self._wants_table():
                return self._send_json(200, table(rt, items, meta))
            return self._send_json(
                200,
                {
                    "kind": f"{rt.kind}List",
                    "apiVersion": rt.api_version(route.version),
                    "metadata": meta,
                    "items": items,
                },
            )
        if method == "GET":
            obj = self._present(route, store.get(rt, ns, route.name))
            if self._wants_table():
                return self._send_json(
                    200, table(rt, [obj], {"resourceVersion": obj["metadata"]["resourceVersion"]})
                )
            return self._send_json(200, obj)
        if method == "POST":
            if route.name is not None:
                if rt.plural == "pods" and route.subresource == "binding":
                    store.bind(ns or "", route.name, body or {})
                    return self._send_json(
                        201,
                        {
                            "kind": "Status",
                            "apiVersion": "v1",
                            "metadata": {},
                            "status": "Success",
                            "code": 201,
                        },
                    )
                raise ApiError(
                    405, "MethodNotAllowed", "the server does not allow this method on the requested resource"
                )
            if rt.plural == "namespaces" or not rt.namespaced:
                ns = None
            elif ns is None:
                raise ApiError(404, "NotFound", "the server could not find the requested resource")
            self._check_kind(route, body)
            return self._send_json(201, self._present(route, store.create(rt, ns, body)))
        if route.name is None:
            if method == "DELETE":
                deleted = store.delete_collection(rt, ns, labels, fields, body or self._delete_options(query))
                return self._send_json(
                    200,
                    {
                        "kind": f"{rt.kind}List",
                        "apiVersion": rt.api_version(route.version),
                        "metadata": {"resourceVersion": store.resource_version},
                        "items": [self._present(route, o) for o in deleted],
                    },
                )
            raise ApiError(
                405, "MethodNotAllowed", "the server does not allow this method on the requested resource"
            )
        sub = route.subresource or None
        if rt.plural == "namespaces" and sub == "finalize":
            sub = None  # modelled as an update of spec.finalizers
        if method == "PUT":
            self._check_kind(route, body)
            return self._send_json(200, self._present(route, store.update(rt, ns, route.name, body, sub)))
        if method == "PATCH":
            apply = self._patch_function(rt, body)
            return self._send_json(200, self._present(route, store.patch(rt, ns, route.name, apply, sub)))
        if method == "DELETE":
            options = body if isinstance(body, dict) else self._delete_options(query)
            obj, gone = store.delete(rt, ns, route.name, options)
            if rt.returns_deleted_object:
                return self._send_json(200 if gone else 202, self._present(route, obj))
            if not gone:
                return self._send_json(202, self._present(route, obj))
            status = {
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Success",
                "details": {
                    "name": route.name,
                    "group": rt.group,
                    "kind": rt.plural,
                    "uid": obj["metadata"]["uid"],
                },
            }
            return self._send_json(200, status)
        raise ApiError(
            405, "MethodNotAllowed", "the server does not allow this method on the requested resource"
        )

    def _delete_options(self, query: dict[str, str]) -> dict:
        options: dict[str, Any] = {}
        if "propagationPolicy" in query:
            options["propagationPolicy"] = query["propagationPolicy"]
        if query.get("gracePeriodSeconds", "").lstrip("-").isdigit():
            options["gracePeriodSeconds"] = int(query["gracePeriodSeconds"])
        return options

    def _check_kind(self, route: Route, body: Any) -> None:
        if not isinstance(body, dict):
            raise bad_request("the body of the request was not a JSON object")
        kind, api_version = body.get("kind"), body.get("apiVersion")
        if kind and kind != route.rt.kind:
            raise bad_request(
                f"the API version in the data ({api_version}) does not match the expected API version "
                f"({route.rt.api_version(route.version)})"
                if api_version and api_version != route.rt.api_version(route.version)
                else f"the kind in the data ({kind}) does not match the expected kind ({route.rt.kind})"
            )

    def _patch_function(self, rt: ResourceType, body: Any) -> Callable[[dict], dict]:
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip()
        if ctype == "application/json-patch+json":
            return lambda current: _patched(patches.json_patch, current, body)
        if ctype == "application/merge-patch+json":
            if not isinstance(body, dict):
                raise bad_request("a merge patch must be a JSON object")
            return lambda current: patches.merge_patch(current, body)
        if ctype == "application/strategic-merge-patch+json":
            if rt.custom:
                raise ApiError(
                    415,
                    "UnsupportedMediaType",
                    "strategic merge patch is not supported for custom resources; use a JSON merge patch",
                )
            if not isinstance(body, dict):
                raise bad_request("a strategic merge patch must be a JSON object")
            return lambda current: _patched(patches.strategic_merge_patch, current, body)
        if ctype == "application/apply-patch+yaml":
            raise ApiError(
                415, "UnsupportedMediaType", "server-side apply is not supported by the sandbox API server"
            )
        raise ApiError(
            415,
            "UnsupportedMediaType",
            "the body of the request was in an unknown format - accepted media "
            "types include: application/json-patch+json, application/merge-patch+json, "
            "application/strategic-merge-patch+json",
        )

    # -- watch ----------------------------------------------------------------------------------

    def _watch(self, route: Route, query: dict[str, str], labels: Any, fields: Any) -> None:
        timeout = query.get("timeoutSeconds")
        deadline = time.monotonic() + int(timeout) if timeout and timeout.isdigit() else None
        stop = _SocketWatchStop(self.api, self.connection)
        initial = query.get("sendInitialEvents", "").lower() == "true"
        try:
            events = self.api.store.watch(
                route.rt,
                route.namespace,
                labels,
                fields,
                query.get("resourceVersion"),
                stop,
                deadline,
                initial,
            )  # type: ignore[arg-type]
        except ApiError as err:
            if err.code != 410:
                raise
            # upstream answers an expired version inside a 200 stream, as an ERROR event
            self._start_stream()
            self._chunk({"type": "ERROR", "object": err.status()})
            self._end_stream()
            return
        self._start_stream()
        try:
            for type_, obj in events:
                self._chunk({"type": type_, "object": self._present(route, obj)})
        except ApiError as err:
            self._chunk({"type": "ERROR", "object": err.status()})
        self._end_stream()

    def _start_stream(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Cache-Control", "no-cache, private")
        self.end_headers()
        self.wfile.flush()

    def _chunk(self, event: dict) -> None:
        data = json.dumps(event, separators=(",", ":")).encode() + b"\n"
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _end_stream(self) -> None:
        try:
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except OSError:
            pass
        self.close_connection = True


def _patched(fn: Callable[[Any, Any], Any], current: dict, body: Any) -> dict:
    try:
        return fn(current, body)
    except patches.PatchError as exc:
        raise ApiError(422, "Invalid", str(exc)) from exc
