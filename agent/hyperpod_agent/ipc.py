"""The Unix-socket channel between the agent and its worker processes.

Messages are JSON objects framed by a 4-byte big-endian length, as in the HyperPod elastic agent;
each carries a ``type``. Every client first sends ``init {local_rank, client_id}``.

worker -> agent: ``at_rcb_barrier``, ``past_rcb_barrier``, ``job_fault {rank, restart_mode, reason,
message}``, ``job_data {rank, data}``, ``rank_labels {labels}``, ``ckpt_init {prefix,
checkpoint_types}``, ``ckpt_info_update {prefix, step, path, checkpoint_type}``, ``ckpt_info_get
{prefix}``.
agent -> worker: ``job_start {worker_envs, aggregate_worker_data}``, ``job_rank_info {...}``,
``job_fault {restart_count}``, ``ckpt_info {prefix, path, step}``.

This module is imported by training processes too (hyperpod_agent.worker), so it needs only the
standard library.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import struct
import threading
from collections.abc import Callable

logger = logging.getLogger(__name__)

SOCKET_ENV = "HYPERPOD_ELASTICAGENT_SOCKET_SERVER_PATH"
_HEADER = struct.Struct(">I")
MAX_MESSAGE = 16 * 1024 * 1024


def send_message(sock: socket.socket, message: dict) -> None:
    data = json.dumps(message).encode()
    sock.sendall(_HEADER.pack(len(data)) + data)


def _recv_exact(sock: socket.socket, n: int) -> bytes | None:
    chunks = []
    while n:
        chunk = sock.recv(n)
        if not chunk:
            return None
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def recv_message(sock: socket.socket) -> dict | None:
    """One message, or None when the peer closed the connection."""
    header = _recv_exact(sock, _HEADER.size)
    if header is None:
        return None
    (length,) = _HEADER.unpack(header)
    if length > MAX_MESSAGE:
        raise ValueError(f"IPC message of {length} bytes exceeds the {MAX_MESSAGE}-byte limit")
    body = _recv_exact(sock, length)
    if body is None:
        return None
    message = json.loads(body)
    if not isinstance(message, dict) or "type" not in message:
        raise ValueError("IPC message must be a JSON object with a 'type'")
    return message


def default_socket_path() -> str:
    tmp = os.environ.get("TMPDIR", "/tmp")
    return os.path.join(tmp, f"hyperpod_elastic_agent_{os.getpid()}.sock")


class IpcServer:
    """Accepts worker connections; one thread per connection. The server owns no agent state: it
    hands every message to ``on_message(local_rank, client_id, message)`` and reports a closed
    connection with ``on_disconnect(local_rank, client_id)``."""

    def __init__(
        self,
        path: str,
        on_message: Callable[[int, str, dict], None],
        on_disconnect: Callable[[int, str], None],
    ):
        self.path = path
        self._on_message = on_message
        self._on_disconnect = on_disconnect
        self._sock: socket.socket | None = None
        self._conns: dict[int, tuple[str, socket.socket]] = {}
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(self.path)
        sock.listen(64)
        self._sock = sock
        self._thread = threading.Thread(target=self._accept_loop, name="hyperpod-ipc", daemon=True)
        self._thread.start()

    def _accept_loop(self) -> None:
        assert self._sock is not None
        while not self._closing.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), name="hyperpod-ipc-conn", daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        local_rank, client_id = -1, ""
        try:
            first = recv_message(conn)
            if first is None or first.get("type") != "init" or not isinstance(first.get("local_rank"), int):
                logger.warning("IPC client did not start with init{local_rank, client_id}; closing it")
                return
            local_rank, client_id = first["local_rank"], str(first.get("client_id", ""))
            with self._lock:
                old = self._conns.get(local_rank)
                self._conns[local_rank] = (client_id, conn)
            if old is not None:
                with contextlib.suppress(OSError):
                    old[1].close()
            while True:
                message = recv_message(conn)
                if message is None:
                    return
                self._on_message(local_rank, client_id, message)
        except (OSError, ValueError) as exc:
            if not self._closing.is_set():
                logger.warning("IPC connection of local rank %s dropped: %s", local_rank, exc)
        finally:
            with self._lock:
                if self._conns.get(local_rank, (None, None))[1] is conn:
                    del self._conns[local_rank]
                    gone = True
                else:
                    gone = False
            with contextlib.suppress(OSError):
                conn.close()
            if gone and not self._closing.is_set():
                self._on_disconnect(local_rank, client_id)

    def send(self, local_rank: int, message: dict) -> bool:
        with self._lock:
            entry = self._conns.get(local_rank)
        if entry is None:
            return False
        try:
            send_message(entry[1], message)
            return True
        except OSError as exc:
            logger.warning("cannot send %s to local rank %s: %s", message.get("type"), local_rank, exc)
            return False

    def connected(self) -> dict[int, str]:
        with self._lock:
            return {rank: cid for rank, (cid, _) in self._conns.items()}

    def stop(self) -> None:
        self._closing.set()
        if self._sock is not None:
            # shutdown() wakes the thread blocked in accept(); close() alone does not on Linux.
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                self._sock.close()
        with self._lock:
            conns = list(self._conns.values())
            self._conns.clear()
        for _, conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
                conn.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
