"""The control server: the HTTP face the control plane drives (GET /status, POST /start, /update,
/stop, /shutdown), on the standard library's ThreadingHTTPServer.

The server owns nothing of the agent: it parses the body, calls the callback it was given, and
maps the agent's exceptions to status codes (422 for a malformed body, with FastAPI's
``{"detail": [...]}`` shape, 409 for a request the current state cannot take). A slow request never
stalls the agent's control loop, which runs in the main thread.

Like AWS's agent, the port has no authentication: who may reach it is the cluster's business (the
supervisor puts a NetworkPolicy on every job; see agent/README.md). What the server does itself is
not let a client it cannot trust exhaust it: a body over ``MAX_BODY_BYTES`` is refused unread
(413), a POST must say its length (411) and JSON that cannot be read is a 422; at most
``MAX_HANDLERS`` connections are served at once (the next is answered 503 at once); and a client
that stalls or trickles is cut off after ``READ_TIMEOUT_S``, so neither holds a thread for long.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from .errors import RequestError, RequestValidationError

logger = logging.getLogger(__name__)
access_logger = logging.getLogger("hyperpod_agent.server.access")

_LEVELS = {"critical": 50, "error": 40, "warning": 30, "info": 20, "debug": 10, "trace": 5}

#: The largest body read. The largest is a /start's rank table (``rankIps``): about 40 bytes a rank
#: over IPv4 and 65 over IPv6, so a 4,096-rank job's is under 300 KB; 1 MiB leaves room for the log
#: rules and progress and still refuses a body meant to fill the pod's memory.
MAX_BODY_BYTES = 1 << 20
#: Connections served at once. The control plane sends a pod one request at a time (a /status per
#: poll round, a /start or /stop between), so a full house is a client misbehaving; the one after is
#: answered 503, which the control plane retries.
MAX_HANDLERS = 16
#: Seconds a connection has to deliver a whole request (line, headers, body), waiting on a
#: keep-alive connection included, and the socket timeout of each read and write. The control plane
#: sends a request at once; a client that stalls or trickles a byte at a time is cut off.
READ_TIMEOUT_S = 10.0


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

    def __init__(
        self,
        address,
        handler,
        callbacks: ControlCallbacks,
        family: int,
        max_handlers: int = MAX_HANDLERS,
        read_timeout: float = READ_TIMEOUT_S,
    ):
        self.address_family = family
        self.callbacks = callbacks
        self.in_flight = 0
        self.idle = threading.Condition()
        self.read_timeout = read_timeout
        self.max_handlers = max_handlers
        self._slots = threading.BoundedSemaphore(max_handlers)
        # Connections reading a request -> when they must have read it (see service_actions).
        self._reading: dict[socket.socket, float] = {}
        self._reading_lock = threading.Lock()
        super().__init__(address, handler)

    def process_request(self, request, client_address) -> None:
        # In the accepting thread: refuse before a thread is spent on the connection.
        if not self._slots.acquire(blocking=False):
            logger.warning(
                "%s refused (503): %s connections already served", client_address[0], self.max_handlers
            )
            self._refuse(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def _refuse(self, request: socket.socket) -> None:
        body = json.dumps({"detail": "the agent is serving too many connections; retry shortly"}).encode()
        head = (
            "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nRetry-After: 1\r\nConnection: close\r\n\r\n"
        )
        # Read what the client already sent: closing a socket with unread bytes resets the connection,
        # and a reset can overtake the answer. Bounded, and never waiting: this is the accept loop.
        request.setblocking(False)
        with contextlib.suppress(OSError):
            for _ in range(16):
                if not request.recv(65536):
                    break
        # A few hundred bytes fit any socket's send buffer; the timeout only guards the accept loop.
        request.settimeout(1.0)
        with contextlib.suppress(OSError):
            request.sendall(head.encode() + body)
        self.shutdown_request(request)

    def reading(self, conn: socket.socket, reading: bool) -> None:
        with self._reading_lock:
            if reading:
                self._reading[conn] = time.monotonic() + self.read_timeout
            else:
                self._reading.pop(conn, None)

    def service_actions(self) -> None:
        """Between polls of serve_forever: cut off connections past their request deadline. The
        socket timeout alone bounds each read, not a client that sends a byte every few seconds;
        shutting the socket down wakes the handler's read with end-of-file."""
        now = time.monotonic()
        with self._reading_lock:
            late = [conn for conn, deadline in self._reading.items() if deadline <= now]
            for conn in late:
                del self._reading[conn]
        for conn in late:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


class _Refused(Exception):
    """A request refused before its body is read; the connection is closed after the answer, since
    what follows on it cannot be framed."""

    def __init__(self, status: int, detail: str):
        self.status = status
        self.detail = detail
        super().__init__(detail)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    server_version = "hyperpodrun"

    def setup(self) -> None:
        self.timeout = self.server.read_timeout  # StreamRequestHandler.setup sets it on the socket
        super().setup()

    def handle_one_request(self) -> None:
        # From waiting for the request line until the body is read: see _Server.service_actions.
        self.server.reading(self.connection, True)
        try:
            super().handle_one_request()
        finally:
            self.server.reading(self.connection, False)

    def handle_expect_100(self) -> bool:
        # A client that asks before sending its body is refused before it sends it.
        try:
            self._length(self.command)
        except _Refused as exc:
            self.close_connection = True
            self._send(exc.status, {"detail": exc.detail})
            return False
        return super().handle_expect_100()

    def log_message(self, format: str, *args: Any) -> None:
        access_logger.info("%s %s", self.address_string(), format % args)

    def _send(self, status: int, payload: Any) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def _length(self, method: str) -> int:
        """The body's length from Content-Length: required of a POST (411), an integer (400), at
        most MAX_BODY_BYTES (413). Chunked bodies are not read (AWS's agent's clients never send
        one; the control plane's both say the length)."""
        if self.headers.get("Transfer-Encoding"):
            raise _Refused(411, "send the body with a Content-Length, not a Transfer-Encoding")
        values = self.headers.get_all("Content-Length") or []
        if not values:
            if method == "POST":
                raise _Refused(411, "a POST needs a Content-Length header (0 for no body)")
            return 0
        text = values[0].strip()
        if len(set(values)) > 1 or not (text.isascii() and text.isdigit()):
            raise _Refused(400, f"Content-Length must be one non-negative integer, got {', '.join(values)}")
        length = int(text)
        if length > MAX_BODY_BYTES:
            raise _Refused(413, f"request body of {length} bytes is over the agent's {MAX_BODY_BYTES} bytes")
        return length

    def _read_body(self, method: str) -> bytes | None:
        """The body's bytes, or None when the client went away or was cut off before sending it all
        (nothing to answer then)."""
        length = self._length(method)
        try:
            raw = self.rfile.read(length) if length else b""
        except OSError:  # the socket timed out or the client reset it
            raw = b""
        if len(raw) < length:
            logger.warning(
                "%s %s: body cut short (%s of %s bytes in %.0f s); connection closed",
                method,
                self.path,
                len(raw),
                length,
                self.server.read_timeout,
            )
            self.close_connection = True
            return None
        return raw

    def _linger(self) -> None:
        """After refusing a request whose body may still be coming: half-close, then discard what
        the client sends until it closes, so it reads the answer rather than the reset that closing
        on unread bytes causes. Bounded by the request deadline (_Server.service_actions)."""
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_WR)
            while self.rfile.read1(65536):
                pass

    @staticmethod
    def _json(raw: bytes) -> Any:
        if not raw.strip():
            return None
        try:
            return json.loads(raw)
        except json.JSONDecodeError as exc:
            raise RequestValidationError(
                [{"loc": ["body", exc.pos], "msg": f"JSON decode error: {exc.msg}", "type": "json_invalid"}]
            ) from None
        except UnicodeDecodeError as exc:
            raise RequestValidationError(
                [{"loc": ["body", exc.start], "msg": "body is not UTF-8 JSON", "type": "json_invalid"}]
            ) from None
        except RecursionError:
            raise RequestValidationError(
                [{"loc": ["body"], "msg": "JSON nested too deeply", "type": "json_invalid"}]
            ) from None

    def _dispatch(self, method: str) -> None:
        with self.server.idle:
            self.server.in_flight += 1
        try:
            try:
                raw = self._read_body(method)
            except _Refused as exc:
                logger.warning("%s %s refused (%s): %s", method, self.path, exc.status, exc.detail)
                self.close_connection = True
                self._send(exc.status, {"detail": exc.detail})
                self._linger()
                return
            if raw is None:
                return
            self.server.reading(self.connection, False)
            self._route(method, raw)
        finally:
            with self.server.idle:
                self.server.in_flight -= 1
                self.server.idle.notify_all()

    def _route(self, method: str, raw: bytes) -> None:
        cb = self.server.callbacks
        path = self.path.split("?", 1)[0].rstrip("/") or "/"
        routes: dict[str, tuple[str, Callable[[], Any]]] = {
            "/status": ("GET", cb.status),
            "/start": ("POST", lambda: cb.start(self._json(raw))),
            "/update": ("POST", lambda: cb.update(self._json(raw))),
            "/stop": ("POST", lambda: cb.stop(self._json(raw))),
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
        max_handlers: int = MAX_HANDLERS,
        read_timeout: float = READ_TIMEOUT_S,
    ):
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        access_logger.setLevel(_LEVELS.get(log_level, 20))
        self._httpd = _Server((host, port), _Handler, callbacks, family, max_handlers, read_timeout)
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
