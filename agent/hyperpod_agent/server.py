"""The control server: the HTTP face the control plane drives (GET /status, POST /start, /update,
/stop, /shutdown), on the standard library's ThreadingHTTPServer.

The server owns nothing of the agent: it parses the body, calls the callback it was given, and
maps the agent's exceptions to status codes (422 for a malformed body, with FastAPI's
``{"detail": [...]}`` shape, 409 for a request the current state cannot take). A slow request never
stalls the agent's control loop, which runs in the main thread.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from .errors import RequestError, RequestValidationError

logger = logging.getLogger(__name__)
access_logger = logging.getLogger("hyperpod_agent.server.access")

_LEVELS = {"critical": 50, "error": 40, "warning": 30, "info": 20, "debug": 10, "trace": 5}


@dataclass(frozen=True)
class ControlCallbacks:
    status: Callable[[], dict]
    start: Callable[[Any], None]
    update: Callable[[Any], dict]
    stop: Callable[[Any], None]
    shutdown: Callable[[], None]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address, handler, callbacks: ControlCallbacks, family: int):
        self.address_family = family
        self.callbacks = callbacks
        self.in_flight = 0
        self.idle = threading.Condition()
        super().__init__(address, handler)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    server_version = "hyperpodrun"

    def log_message(self, format: str, *args: Any) -> None:
        access_logger.info("%s %s", self.address_string(), format % args)

    def _send(self, status: int, payload: Any) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if not raw.strip():
            return None
        try:
            return json.loads(raw)
        except json.JSONDecodeError as exc:
            raise RequestValidationError(
                [{"loc": ["body", exc.pos], "msg": f"JSON decode error: {exc.msg}", "type": "json_invalid"}]
            ) from None

    def _dispatch(self, method: str) -> None:
        with self.server.idle:
            self.server.in_flight += 1
        try:
            self._route(method)
        finally:
            with self.server.idle:
                self.server.in_flight -= 1
                self.server.idle.notify_all()

    def _route(self, method: str) -> None:
        cb = self.server.callbacks
        path = self.path.split("?", 1)[0].rstrip("/") or "/"
        routes: dict[str, tuple[str, Callable[[], Any]]] = {
            "/status": ("GET", cb.status),
            "/start": ("POST", lambda: cb.start(self._body())),
            "/update": ("POST", lambda: cb.update(self._body())),
            "/stop": ("POST", lambda: cb.stop(self._body())),
            "/shutdown": ("POST", cb.shutdown),
        }
        if path not in routes:
            self._send(404, {"detail": "Not Found"})
            return
        allowed, handler = routes[path]
        if method != allowed:
            self._send(405, {"detail": "Method Not Allowed"})
            return
        try:
            result = handler()
        except RequestValidationError as exc:
            logger.warning("%s %s refused (422): %s", method, path, exc)
            self._send(exc.status, {"detail": exc.errors})
            return
        except RequestError as exc:
            logger.warning("%s %s refused (%s): %s", method, path, exc.status, exc)
            self._send(exc.status, {"detail": str(exc)})
            return
        except Exception:
            logger.exception("%s %s failed", method, path)
            self._send(500, {"detail": "internal error in the agent; see its log"})
            return
        # /start, /stop and /shutdown answer an empty (null) body, as the HyperPod agent does.
        self._send(200, result)

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")


class ControlServer:
    def __init__(
        self,
        host: str,
        port: int,
        callbacks: ControlCallbacks,
        log_level: str = "info",
        shutdown_timeout: float = 300,
    ):
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        access_logger.setLevel(_LEVELS.get(log_level, 20))
        self._httpd = _Server((host, port), _Handler, callbacks, family)
        self._shutdown_timeout = shutdown_timeout
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="hyperpod-http", daemon=True)

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    def start(self) -> None:
        self._thread.start()
        logger.info("control server listening on %s:%s", self._httpd.server_address[0], self.port)

    def stop(self) -> None:
        """Stop accepting, then give requests in flight (the /shutdown that ended the agent among
        them) up to --server-shutdown-timeout to finish."""
        self._httpd.shutdown()
        with self._httpd.idle:
            if not self._httpd.idle.wait_for(lambda: self._httpd.in_flight == 0, self._shutdown_timeout):
                logger.warning("control server stopped with %s requests in flight", self._httpd.in_flight)
        self._httpd.server_close()
