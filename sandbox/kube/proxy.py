"""The pod proxy and pod log subresources of the sandbox API server.

``/api/v1/namespaces/{ns}/pods/{name}[:port]/proxy/{path}`` forwards the request (any method,
its body, query and headers but the hop-by-hop ones and the caller's credentials) to the pod's
address and answers with the pod's response, as kube-apiserver does. ``{name}`` may be
``name``, ``name:port``, ``name:portName`` or ``http:name:port``; without a port, the first
container port is used (80 if none). Errors are ``Status`` objects worded as upstream's:
400 when the pod has no IP yet, 503 "error trying to reach service: dial tcp ...: connect:
connection refused" when nothing listens, 504 when the pod does not answer in time.

``/api/v1/namespaces/{ns}/pods/{name}/log`` (``?container=``, ``?previous=true``,
``?tailLines=``) returns the container's output as text, for ``kubectl logs``.

Both are registered on a ``KubeApiServer`` by ``install(server, runtime)``.
"""

from __future__ import annotations

import http.client
import urllib.parse
from typing import TYPE_CHECKING, Any

from sandbox.kube.store import ApiError, bad_request

if TYPE_CHECKING:
    from sandbox.kube.apiserver import KubeApiServer, Route
    from sandbox.kube.runtime import KubeRuntime

#: hop-by-hop headers (RFC 9110 7.6.1) and what the API server must not pass on
_DROP_REQUEST = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "authorization",
    "content-length",
}
_DROP_RESPONSE = {"connection", "keep-alive", "transfer-encoding", "trailer", "upgrade", "content-length"}
PROXY_TIMEOUT_S = 30.0


def split_proxy_name(name: str) -> tuple[str, str, str]:
    """``[scheme:]name[:port]`` -> (scheme, pod name, port or "") as upstream parses it."""
    parts = name.split(":")
    if len(parts) == 1:
        return "", parts[0], ""
    if len(parts) == 2:
        return "", parts[0], parts[1]
    if len(parts) == 3 and parts[0] in ("http", "https", ""):
        return parts[0], parts[1], parts[2]
    raise bad_request(f"invalid pod proxy name {name!r}")


def resolve_port(pod: dict, port: str) -> int:
    """A port number, a container port's name, or the first container port (80 if none)."""
    ports = [p for c in (pod.get("spec") or {}).get("containers") or [] for p in c.get("ports") or []]
    if port.isdigit():
        return int(port)
    if port:
        for p in ports:
            if p.get("name") == port:
                return int(p["containerPort"])
        raise bad_request(f"no port named {port!r} in pod {pod['metadata']['name']}")
    return int(ports[0]["containerPort"]) if ports else 80


def proxy_target_path(raw_path: str, namespace: str, proxy_name: str) -> str:
    """What follows ``.../pods/{name}/proxy`` in the request (with its query), "/" at least."""
    url = urllib.parse.urlsplit(raw_path)
    prefix = f"/api/v1/namespaces/{namespace}/pods/{proxy_name}/proxy"
    path = url.path
    # the client may have percent-encoded the name (":" as %3A)
    decoded = urllib.parse.unquote(path)
    rest = decoded[len(prefix) :] if decoded.startswith(prefix) else ""
    rest = urllib.parse.quote(rest, safe="/:@!$&'()*+,;=-._~%") if rest else "/"
    return rest + (f"?{url.query}" if url.query else "")


def _service_unavailable(message: str) -> ApiError:
    return ApiError(503, "ServiceUnavailable", message)


def handle_proxy(api: KubeApiServer, handler: Any, route: Route, method: str, body: bytes | None) -> None:
    if route.name is None or route.namespace is None:
        raise ApiError(404, "NotFound", "the server could not find the requested resource")
    scheme, name, port_text = split_proxy_name(route.name)
    if scheme == "https":
        raise bad_request("the sandbox pod proxy speaks http to pods only")
    store = api.store
    pod = store.get(store.rt("", "pods"), route.namespace, name)
    ip = (pod.get("status") or {}).get("podIP")
    if not ip:
        raise bad_request(f'pod "{name}" does not have an IP address yet')
    port = resolve_port(pod, port_text)
    target = proxy_target_path(handler.path, route.namespace, route.name)
    headers = {k: v for k, v in handler.headers.items() if k.lower() not in _DROP_REQUEST}
    headers["X-Forwarded-For"] = handler.client_address[0]
    conn = http.client.HTTPConnection(ip, port, timeout=PROXY_TIMEOUT_S)
    try:
        conn.request(method, target, body=body or None, headers=headers)
        response = conn.getresponse()
        data = response.read()
    except ConnectionRefusedError as exc:
        raise _service_unavailable(
            f"error trying to reach service: dial tcp {ip}:{port}: connect: connection refused"
        ) from exc
    except TimeoutError as exc:
        raise ApiError(
            504, "Timeout", f"error trying to reach service: dial tcp {ip}:{port}: i/o timeout"
        ) from exc
    except (OSError, http.client.HTTPException) as exc:
        raise _service_unavailable(f"error trying to reach service: {exc}") from exc
    finally:
        conn.close()
    handler.send_response(response.status, response.reason)
    for key, value in response.getheaders():
        if key.lower() not in _DROP_RESPONSE:
            handler.send_header(key, value)
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    if method != "HEAD":
        handler.wfile.write(data)


def handle_log(runtime: KubeRuntime, api: KubeApiServer, handler: Any, route: Route, method: str) -> None:
    if method != "GET" or route.name is None or route.namespace is None:
        raise ApiError(
            405, "MethodNotAllowed", "the server does not allow this method on the requested resource"
        )
    query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(handler.path).query))
    pod = api.store.get(api.store.rt("", "pods"), route.namespace, route.name)
    containers = [c["name"] for c in pod["spec"]["containers"]]
    container = query.get("container") or (containers[0] if len(containers) == 1 else "")
    if container not in containers:
        raise bad_request(
            f"a container name must be specified for pod {route.name}, choose one of: {containers}"
            if not container
            else f"container {container} is not valid for pod {route.name}"
        )
    text = runtime.container_log(route.namespace, route.name, container, query.get("previous") == "true")
    if text is None:
        raise bad_request(
            f'container "{container}" in pod "{route.name}" is waiting to start: ContainerCreating'
        )
    if query.get("tailLines", "").isdigit():
        lines = text.splitlines(keepends=True)
        text = "".join(lines[-int(query["tailLines"]) :]) if int(query["tailLines"]) else ""
    data = text.encode()
    handler.send_response(200)
    handler.send_header("Content-Type", "text/plain")
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)


def install(server: KubeApiServer, runtime: KubeRuntime) -> None:
    server.subresource_handlers[("pods", "proxy")] = handle_proxy
    server.subresource_handlers[("pods", "log")] = lambda api, h, route, method, _body: handle_log(
        runtime, api, h, route, method
    )


def uninstall(server: KubeApiServer) -> None:
    for key in (("pods", "proxy"), ("pods", "log")):
        server.subresource_handlers.pop(key, None)
