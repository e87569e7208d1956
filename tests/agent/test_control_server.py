"""The control server's defences against a client it cannot trust (the port has no authentication):
body size and framing (413, 411, 400), unreadable JSON (422), a bounded number of handler threads
(503 when full) and clients that stall or trickle (cut off after the read timeout). In process, on
loopback, with the agent's real request parsing behind fake callbacks and a short read timeout."""

from __future__ import annotations

import http.client
import json
import socket
import time

import pytest
from agent_harness import wait_for

from hyperpod_agent.models import parse_start
from hyperpod_agent.server import MAX_BODY_BYTES, ControlCallbacks, ControlServer

pytestmark = pytest.mark.integration

READ_TIMEOUT = 1.0
MAX_HANDLERS = 2


@pytest.fixture
def server():
    started: list = []
    callbacks = ControlCallbacks(
        status=lambda: {"status": "ready", "starts": len(started)},
        start=lambda body: started.append(parse_start(body)),
        update=lambda body: {"status": "ready"},
        stop=lambda body: None,
        shutdown=lambda: None,
    )
    srv = ControlServer(
        "127.0.0.1", 0, callbacks, shutdown_timeout=5, max_handlers=MAX_HANDLERS, read_timeout=READ_TIMEOUT
    )
    srv.start()
    srv.started = started
    yield srv
    srv.stop()


def request(port: int, method: str, path: str, body: bytes | None = None, headers=None, timeout=5.0):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read() or b"null"), resp.getheader("Connection")
    finally:
        conn.close()


def raw_exchange(port: int, data: bytes, timeout: float = 5.0) -> bytes:
    """Send ``data`` as is and read until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)


def wait_for_free_slots(server, timeout: float = 5.0) -> None:
    """The server frees a connection's slot after the client saw its answer (a 413 drains what the
    client still sends): wait for that, or the next request may be refused 503 for a moment."""
    deadline = time.monotonic() + timeout
    while server._httpd._slots._value < MAX_HANDLERS:
        assert time.monotonic() < deadline, "the server still holds a finished connection"
        time.sleep(0.01)


def start_body(**extra) -> dict:
    return {"rank": 0, "nnodes": 1, "faultCount": 0, "master_addr": "10.0.0.1", "master_port": 1, **extra}


def test_oversized_body_is_413_read_no_further_and_the_server_answers_next(server):
    # A 4,096-rank table over IPv6 fits with room to spare.
    table = [{"rank": r, "ip": f"fd00:1234:5678:9abc:def0:1234:5678:{r:04x}"} for r in range(4096)]
    big_job = json.dumps(start_body(nnodes=4096, master_addr=table[0]["ip"], rankIps=table)).encode()
    assert len(big_job) < MAX_BODY_BYTES // 3
    assert request(server.port, "POST", "/start", big_job)[0] == 200

    huge = b'{"rank": 0, "pad": "' + b"x" * MAX_BODY_BYTES + b'"}'
    code, body, connection = request(server.port, "POST", "/start", huge)
    assert (code, connection) == (413, "close")
    assert str(MAX_BODY_BYTES) in body["detail"]
    # Only the header is needed to refuse: a client announcing a huge body and sending none is
    # answered at once, not after the read timeout.
    wait_for_free_slots(server)
    t0 = time.monotonic()
    announce = b"POST /stop HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999\r\n\r\n"
    reply = raw_exchange(server.port, announce)
    assert reply.startswith(b"HTTP/1.1 413 ") and time.monotonic() - t0 < READ_TIMEOUT
    assert request(server.port, "GET", "/status")[:2] == (200, {"status": "ready", "starts": 1})


@pytest.mark.parametrize(
    ("head", "status"),
    [
        (b"POST /stop HTTP/1.1\r\nHost: a\r\n\r\n", 411),
        (b"POST /stop HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 411),
        (b"POST /stop HTTP/1.1\r\nHost: a\r\nContent-Length: ten\r\n\r\n", 400),
        (b"POST /stop HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", 400),
        (b"POST /stop HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}", 400),
    ],
)
def test_a_post_must_say_its_length(server, head, status):
    reply = raw_exchange(server.port, head)
    assert reply.startswith(f"HTTP/1.1 {status} ".encode()), reply
    assert b"Content-Length" in reply.split(b"\r\n\r\n", 1)[1]  # the detail says what to send


@pytest.mark.parametrize(
    "body",
    [b"{not json", b'{"rank": "\xff"}', b"[" * 100_000, json.dumps(start_body(rank="zero")).encode()],
)
def test_unreadable_or_mistyped_body_is_422_and_nothing_starts(server, body):
    code, answer, _ = request(server.port, "POST", "/start", body)
    assert code == 422
    assert answer["detail"][0]["loc"][0] == "body"
    assert server.started == []


def test_foreign_master_addr_is_refused_when_the_rank_table_is_given(server):
    table = [{"rank": 0, "ip": "10.0.0.1"}, {"rank": 1, "ip": "10.0.0.2"}]
    code, answer, _ = request(
        server.port,
        "POST",
        "/start",
        json.dumps(start_body(nnodes=2, master_addr="203.0.113.9", rankIps=table)).encode(),
    )
    assert code == 422
    assert answer["detail"][0]["loc"] == ["body", "master_addr"]
    assert "not one of the job's pod IPs" in answer["detail"][0]["msg"]
    assert server.started == []


def test_a_silent_client_stops_no_one_and_is_cut_off(server):
    with socket.create_connection(("127.0.0.1", server.port)) as silent:
        t0 = time.monotonic()
        assert request(server.port, "GET", "/status", timeout=READ_TIMEOUT / 2)[0] == 200
        assert time.monotonic() - t0 < READ_TIMEOUT / 2
        silent.settimeout(5 * READ_TIMEOUT)
        assert silent.recv(1) == b""  # closed by the server after the read timeout
        assert time.monotonic() - t0 < 3 * READ_TIMEOUT


def test_a_trickling_client_is_cut_off_at_the_request_deadline(server):
    # A byte every READ_TIMEOUT / 4 never trips the socket timeout; the request deadline ends it.
    request_line = b"GET /status HTTP/1.1\r\nHost: a\r\nX-Pad: " + b"x" * 1000
    with socket.create_connection(("127.0.0.1", server.port), timeout=READ_TIMEOUT) as s:
        t0 = time.monotonic()
        with pytest.raises(OSError):
            for byte in request_line:
                s.sendall(bytes([byte]))
                time.sleep(READ_TIMEOUT / 4)  # the pace of the attack, not a wait on the server
                if time.monotonic() - t0 > 5 * READ_TIMEOUT:
                    pytest.fail("the server kept reading a trickled request past its deadline")
        assert time.monotonic() - t0 < 3 * READ_TIMEOUT


def test_handler_threads_are_bounded_and_the_next_client_gets_503(server):
    held = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(MAX_HANDLERS)]
    try:
        for s in held:
            s.sendall(b"GET /status HTTP/1.1\r\n")  # a request begun and never finished
        code, answer, connection = request(server.port, "GET", "/status")
        assert (code, connection) == (503, "close")
        assert "retry" in answer["detail"]
    finally:
        for s in held:
            s.close()
    # The slots come back when those connections end.
    wait_for(lambda: request(server.port, "GET", "/status")[0] == 200, 5, "a free handler slot")
