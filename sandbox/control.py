"""The running sandbox's control endpoint: how `hpctl sandbox fail-node` and friends reach it.

`hpctl sandbox up` owns the pods and the fault injector, so other processes ask it over a small
JSON HTTP API on 127.0.0.1 (its URL is HPCTL_SANDBOX_CONTROL in the env file):
``POST /faults/<operation>`` with the operation's arguments as a JSON object. Only the
operations in ``OPERATIONS`` are served; a bad argument is a 400 naming it.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

#: operation -> (Faults method, the arguments it takes)
OPERATIONS: dict[str, tuple[str, frozenset[str]]] = {
    "fail-node": (
        "fail_node",
        frozenset({"node", "mode", "event", "fault_type", "fault_reason", "repair_action", "times"}),
    ),
    "heal-node": ("heal_node", frozenset({"node", "times"})),
    "repeat-event": ("repeat_event", frozenset({"node", "times"})),
    "crash-pod": ("crash_pod", frozenset({"namespace", "name", "container", "sig"})),
    "hang-pod": ("hang_pod", frozenset({"namespace", "name"})),
    "hang-agent": ("hang_agent", frozenset({"namespace", "name", "container"})),
    "resume-pod": ("resume_pod", frozenset({"namespace", "name"})),
}


class ControlServer:
    def __init__(self, faults: Any, host: str = "127.0.0.1", port: int = 0) -> None:
        self.faults = faults
        handler = type("Handler", (_Handler,), {"control": self})
        self._server = ThreadingHTTPServer((host, port), handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="sandbox-control", daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> ControlServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def call(self, operation: str, arguments: dict[str, Any]) -> Any:
        if operation not in OPERATIONS:
            raise LookupError(f"unknown operation {operation}; known: {', '.join(sorted(OPERATIONS))}")
        method, allowed = OPERATIONS[operation]
        unknown = set(arguments) - allowed
        if unknown:
            raise ValueError(
                f"{operation} takes {', '.join(sorted(allowed))}; not {', '.join(sorted(unknown))}"
            )
        args = dict(arguments)
        positional = [args.pop(k) for k in ("node", "namespace", "name") if k in args]
        return getattr(self.faults, method)(*positional, **args)


class _Handler(BaseHTTPRequestHandler):
    control: ControlServer

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the CLI prints the outcome; a request log would only repeat it

    def do_POST(self) -> None:
        prefix = "/faults/"
        if not self.path.startswith(prefix):
            return self._reply(404, {"error": f"no such path {self.path}"})
        try:
            length = int(self.headers.get("Content-Length") or 0)
            arguments = json.loads(self.rfile.read(length) or b"{}")
            if not isinstance(arguments, dict):
                raise ValueError("the body must be a JSON object of arguments")
            result = self.control.call(self.path[len(prefix) :], arguments)
        except LookupError as exc:
            return self._reply(404, {"error": str(exc).strip("'\"")})
        except (ValueError, TypeError) as exc:
            return self._reply(400, {"error": str(exc)})
        except Exception as exc:
            return self._reply(500, {"error": f"{type(exc).__name__}: {exc}"})
        return self._reply(200, {"result": result})

    def _reply(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def request(url: str, operation: str, arguments: dict[str, Any], timeout: float = 120.0) -> Any:
    """Client side: call ``operation`` on the sandbox at ``url``; raises RuntimeError with its error."""
    import urllib.error
    import urllib.request

    req = urllib.request.Request(
        f"{url}/faults/{operation}",
        data=json.dumps(arguments).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return json.loads(resp.read())["result"]
    except urllib.error.HTTPError as exc:
        raise RuntimeError(json.loads(exc.read() or b"{}").get("error", str(exc))) from None
    except urllib.error.URLError as exc:
        raise RuntimeError(
            f"the sandbox at {url} does not answer ({exc.reason}); is `hpctl sandbox up` running?"
        ) from None
