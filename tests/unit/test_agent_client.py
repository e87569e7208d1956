"""AgentClient: every agent of a job called at once from a bounded pool, API-server hiccups retried,
a pod's own failure reported per pod rather than raised; DirectTransport over real HTTP on
loopback."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from hyperpod_control.adapters import agents as agents_module
from hyperpod_control.adapters.agents import CALL_ATTEMPTS, AgentCall, AgentClient, DirectTransport
from hyperpod_control.deadline import Deadline
from hyperpod_control.exceptions import (
    CallTimedOutError,
    DeadlineExceededError,
    DependencyUnavailableError,
    InvalidInputError,
    ResourceNotFoundError,
    ThrottledError,
)
from hyperpod_control.models.agent import AgentState

pytestmark = pytest.mark.unit

READY = {"status": "ready", "agent_version": "1.4", "transitions": {"ready": "2026-03-04T10:00:00Z"}}


def no_sleep(_seconds: float) -> None:
    pass


class Scripted:
    """A transport answering from a per-pod script: each call takes the next item (an exception is
    raised); the last item repeats. Records every call, thread-safe."""

    def __init__(self, script: dict[str, list[Any]], default: Any = READY) -> None:
        self.script = {pod: list(items) for pod, items in script.items()}
        self.default = default
        self.seen: list[AgentCall] = []
        self._lock = threading.Lock()

    def __call__(self, call: AgentCall) -> Any:
        with self._lock:
            self.seen.append(call)
            items = self.script.get(call.pod)
            item = (items.pop(0) if len(items) > 1 else items[0]) if items else self.default
        if isinstance(item, BaseException):
            raise item
        return item


# ============================================================== parallelism


def test_calls_run_in_parallel():
    active = 0
    peak = 0
    lock = threading.Lock()

    def slow(call: AgentCall) -> Any:
        nonlocal active, peak
        with lock:
            active += 1
            peak = max(peak, active)
        time.sleep(0.2)
        with lock:
            active -= 1
        return READY

    client = AgentClient(slow)
    started = time.monotonic()
    answers = client.statuses("team-a", [(f"llama-{i}", f"10.0.0.{i}") for i in range(16)])
    took = time.monotonic() - started
    assert took < 1.6, f"16 calls of 0.2 s took {took:.2f} s: not parallel"
    assert peak > 1
    assert len(answers) == 16
    assert all(a.ok and a.status.status is AgentState.READY for a in answers.values())
    assert client.calls == 16


def test_pool_size_bounds_the_calls_in_flight():
    active = 0
    peak = 0
    lock = threading.Lock()

    def slow(call: AgentCall) -> Any:
        nonlocal active, peak
        with lock:
            active += 1
            peak = max(peak, active)
        time.sleep(0.02)
        with lock:
            active -= 1
        return None

    client = AgentClient(slow, pool_size=3)
    answers = client.call_all(AgentCall(f"p-{i}", "POST", "/shutdown") for i in range(12))
    assert len(answers) == 12 and all(a.ok for a in answers.values())
    assert 1 < peak <= 3


def test_no_calls_make_no_pool_and_no_answers():
    client = AgentClient(Scripted({}))
    assert client.call_all([]) == {}
    assert client.statuses("ns", iter(())) == {}
    assert client.calls == 0


# ============================================================== retries and per-pod failures


def test_throttling_is_retried_until_the_agent_answers():
    transport = Scripted({"llama-0": [ThrottledError("429"), ThrottledError("429"), READY]})
    sleeps: list[float] = []
    client = AgentClient(transport, sleep=sleeps.append)
    answers = client.statuses("team-a", [("llama-0", None), ("llama-1", None)])
    assert answers["llama-0"].ok
    assert answers["llama-0"].status.status is AgentState.READY
    assert answers["llama-1"].ok
    assert client.calls == 4  # three for llama-0, one for llama-1
    assert sleeps == [0.2, 0.4]  # backoff doubles


def test_retries_give_up_after_the_attempts_with_the_last_error():
    transport = Scripted({"llama-0": [DependencyUnavailableError("API server 503")]})
    client = AgentClient(transport, sleep=no_sleep)
    [answer] = client.statuses("team-a", [("llama-0", None)]).values()
    assert not answer.ok
    assert not answer.pod_gone
    assert "503" in answer.error
    assert client.calls == CALL_ATTEMPTS


def test_a_missing_pod_is_reported_gone_without_retry():
    transport = Scripted({"llama-1": [ResourceNotFoundError("pods llama-1 not found")]})
    client = AgentClient(transport, sleep=no_sleep)
    answers = client.statuses("team-a", [("llama-0", None), ("llama-1", None)])
    assert answers["llama-1"].pod_gone
    assert not answers["llama-1"].ok
    assert "not found" in answers["llama-1"].error
    assert answers["llama-0"].ok  # one pod's failure does not spoil the round
    assert client.calls == 2


def test_a_permanent_refusal_is_not_retried():
    transport = Scripted({"llama-0": [InvalidInputError("422: rank must be < nnodes"), READY]})
    client = AgentClient(transport, sleep=no_sleep)
    answers = client.call_all([AgentCall("llama-0", "POST", "/start", body={"rank": 3})])
    assert not answers["llama-0"].ok
    assert not answers["llama-0"].pod_gone
    assert "rank must be < nnodes" in answers["llama-0"].error
    assert client.calls == 1


def test_an_unreadable_status_is_a_failed_answer():
    client = AgentClient(Scripted({"llama-0": [{"status": "dancing"}]}))
    [answer] = client.statuses("ns", [("llama-0", None)]).values()
    assert not answer.ok
    assert "unreadable /status" in answer.error


def test_calls_carry_pod_namespace_method_path_and_body():
    transport = Scripted({})
    client = AgentClient(transport)
    client.call_all([AgentCall("llama-0", "POST", "/start", body={"rank": 0}, ip="10.0.0.1", namespace="ns")])
    client.statuses("team-a", [("llama-1", "10.0.0.2")])
    start, status = transport.seen
    assert (start.pod, start.method, start.path, start.body, start.namespace) == (
        "llama-0", "POST", "/start", {"rank": 0}, "ns",
    )  # fmt: skip
    assert (status.pod, status.method, status.path, status.ip, status.namespace) == (
        "llama-1", "GET", "/status", "10.0.0.2", "team-a",
    )  # fmt: skip


def test_the_call_counter_adds_up_across_rounds():
    transport = Scripted({"a": [ThrottledError("slow down"), READY]})
    client = AgentClient(transport, sleep=no_sleep)
    client.statuses("ns", [("a", None), ("b", None)])
    client.statuses("ns", [("a", None), ("b", None)])
    assert client.calls == 3 + 2


# ============================================================== DirectTransport, real HTTP


class _AgentHandler(BaseHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:  # keep pytest's output clean
        pass

    def _send(self, code: int, payload: Any) -> None:
        raw = b"" if payload is None else json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def do_GET(self) -> None:
        self.server.requests.append(("GET", self.path, None))
        if self.path == "/status":
            self._send(200, self.server.status)
        else:
            self._send(404, {"detail": "Not Found"})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length)) if length else None
        self.server.requests.append(("POST", self.path, body))
        if self.path == "/start" and body and body.get("rank", 0) >= body.get("nnodes", 1):
            self._send(422, {"detail": [{"loc": ["rank"], "msg": "rank must be < nnodes"}]})
        elif self.path in ("/start", "/shutdown"):
            self._send(200, None)
        else:
            self._send(500, {"detail": "internal error"})


@pytest.fixture
def agent_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _AgentHandler)
    server.status = dict(READY, status="running", assigned_rank="0", progress={"step": 7})
    server.requests = []
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    # The transport always dials the agent's port; point it at this server's ephemeral one.
    monkeypatch.setattr(agents_module, "AGENT_PORT", server.server_address[1])
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_direct_transport_reads_status_over_http(agent_server):
    client = AgentClient(DirectTransport())
    answers = client.statuses("team-a", [("llama-0", "127.0.0.1")])
    answer = answers["llama-0"]
    assert answer.ok, answer.error
    assert answer.status.status is AgentState.RUNNING
    assert answer.status.progress == {"step": 7}
    assert agent_server.requests == [("GET", "/status", None)]


def test_direct_transport_posts_json_and_accepts_an_empty_answer(agent_server):
    client = AgentClient(DirectTransport())
    body = {"rank": 0, "nnodes": 2, "faultCount": 0, "master_addr": "127.0.0.1", "master_port": 23456}
    answers = client.call_all([AgentCall("llama-0", "POST", "/start", body=body, ip="127.0.0.1")])
    assert answers["llama-0"].ok
    assert answers["llama-0"].status is None
    assert agent_server.requests == [("POST", "/start", body)]


def test_direct_transport_without_an_ip_reports_the_pod_not_ready(agent_server):
    client = AgentClient(DirectTransport())
    answer = client.statuses("ns", [("llama-0", None)])["llama-0"]
    assert not answer.ok and answer.pod_gone
    assert agent_server.requests == []


def test_direct_transport_retries_a_server_error(agent_server):
    client = AgentClient(DirectTransport(), sleep=no_sleep)
    answer = client.call_all([AgentCall("llama-0", "POST", "/update", body={}, ip="127.0.0.1")])["llama-0"]
    assert not answer.ok
    assert "HTTP 500" in answer.error
    assert client.calls == CALL_ATTEMPTS


def test_direct_transport_reports_an_unreachable_agent():
    # a port nobody listens on: bind one, then close it
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    transport = DirectTransport()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(agents_module, "AGENT_PORT", port)
        with pytest.raises(DependencyUnavailableError, match="llama-0"):
            transport(AgentCall("llama-0", "GET", "/status", ip="127.0.0.1"))


def test_direct_transport_does_not_retry_an_agents_refusal(agent_server):
    client = AgentClient(DirectTransport(), sleep=no_sleep)
    body = {"rank": 5, "nnodes": 2, "faultCount": 0, "master_addr": "127.0.0.1", "master_port": 23456}
    answer = client.call_all([AgentCall("llama-0", "POST", "/start", body=body, ip="127.0.0.1")])["llama-0"]
    assert not answer.ok
    assert client.calls == 1
    assert "rank must be < nnodes" in answer.error


# ============================================================== silence and the deadline


def test_a_silent_agent_is_reported_at_once_and_not_asked_again():
    transport = Scripted({"llama-1": [CallTimedOutError("no answer in 5 s")]})
    client = AgentClient(transport, sleep=no_sleep)
    answers = client.statuses("team-a", [("llama-0", "10.0.0.1"), ("llama-1", "10.0.0.2")])
    assert answers["llama-0"].ok and not answers["llama-0"].silent
    assert answers["llama-1"].silent and not answers["llama-1"].ok
    assert [c.pod for c in transport.seen].count("llama-1") == 1


def test_each_call_timeout_is_bounded_by_the_invocations_deadline():
    now = [0.0]
    deadline = Deadline(20.0, margin=5.0, clock=lambda: now[0])
    transport = Scripted({})
    client = AgentClient(transport, deadline=deadline)
    client.call_all([AgentCall("a", "GET", "/status", timeout=(3.0, 8.0))])
    assert transport.seen[-1].timeout == (3.0, 8.0)
    now[0] = 13.0  # 2 s left after the margin
    client.call_all([AgentCall("a", "GET", "/status", timeout=(3.0, 8.0))])
    assert transport.seen[-1].timeout == (2.0, 2.0)
    now[0] = 14.9  # nothing worth trying is left: no call made, the answer says why
    (answer,) = client.call_all([AgentCall("a", "GET", "/status")]).values()
    assert not answer.ok and "time is spent" in (answer.error or "")
    assert len(transport.seen) == 2


def test_retries_stop_when_the_deadline_comes():
    now = [0.0]
    deadline = Deadline(10.0, margin=1.0, clock=lambda: now[0])

    def sleep(seconds: float) -> None:
        now[0] += 4.0  # each back-off eats the budget

    transport = Scripted({"a": [ThrottledError("429")]})
    client = AgentClient(transport, sleep=sleep, deadline=deadline)
    (answer,) = client.call_all([AgentCall("a", "GET", "/status")]).values()
    assert not answer.ok and "429" in (answer.error or "")
    assert len(transport.seen) < CALL_ATTEMPTS


def test_deadline_refuses_a_call_with_too_little_left_and_names_it():
    deadline = Deadline(1.0, margin=0.9, clock=lambda: 0.0)
    with pytest.raises(DeadlineExceededError, match="GET /status of llama-0"):
        deadline.timeout(5.0, "GET /status of llama-0")
    assert Deadline().timeout(5.0, "x") == 5.0  # unbounded (hpctl, scripts)


def test_deadline_margin_is_a_share_of_a_short_invocation():
    assert Deadline(100.0).margin == 5.0
    assert Deadline(3.0).margin == pytest.approx(0.6)


# ============================================================== bodies serialised once, the proxy's rate


def test_a_shared_body_is_serialised_once_and_joined_to_each_calls_own_keys():
    from hyperpod_control.adapters.agents import SharedJson

    table = [{"rank": i, "ip": f"10.0.{i // 250}.{i % 250}"} for i in range(4096)]
    shared = SharedJson({"nnodes": 4096, "rankIps": table})
    calls = [
        AgentCall(
            f"llama-{r}", "POST", "/start", body={"rank": r, "nnodes": 4096, "rankIps": table}, shared=shared
        )
        for r in (0, 4095)
    ]
    for call in calls:
        assert json.loads(call.payload()) == call.body
    # the shared keys go as serialised: a call's own copy of them is not read again
    other = AgentCall("x", "POST", "/start", body={"rank": 1, "nnodes": 1, "rankIps": []}, shared=shared)
    assert json.loads(other.payload()) == {"rank": 1, "nnodes": 4096, "rankIps": table}
    assert AgentCall("x", "GET", "/status").payload() is None
    assert json.loads(AgentCall("x", "POST", "/stop", body={"a": [1]}).payload()) == {"a": [1]}
    assert json.loads(SharedJson({}).encode({"rank": 2})) == {"rank": 2}
    assert json.loads(SharedJson({"a": 1}).encode({"a": 1})) == {"a": 1}


def test_the_direct_transport_sends_a_shared_body_whole(agent_server):
    from hyperpod_control.adapters.agents import SharedJson

    body = {"rank": 0, "nnodes": 2, "faultCount": 0, "master_addr": "127.0.0.1", "master_port": 23456}
    shared = SharedJson({k: v for k, v in body.items() if k != "rank"})
    call = AgentCall("llama-0", "POST", "/start", body=body, ip="127.0.0.1", shared=shared)
    assert AgentClient(DirectTransport()).call_all([call])["llama-0"].ok
    assert agent_server.requests == [("POST", "/start", body)]


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_the_rate_limiter_lets_a_burst_through_then_spaces_the_calls():
    from hyperpod_control.adapters.agents import RateLimiter

    clock = FakeClock()
    limiter = RateLimiter(10, burst=5, clock=clock, sleep=clock.sleep)
    for _ in range(5):
        limiter.acquire()
    assert clock.slept == []
    for _ in range(10):
        limiter.acquire()
    # 15 calls at 10 a second after a burst of 5: the last one a second after the first
    assert clock.now == pytest.approx(1.0)
    assert limiter.waited == pytest.approx(sum(clock.slept))
    clock.now += 100  # idle: the bucket refills to its burst, no more
    for _ in range(5):
        limiter.acquire()
    assert clock.now == pytest.approx(101.0)
    limiter.acquire()
    assert clock.now == pytest.approx(101.1)


def test_no_rate_limit_at_zero():
    from hyperpod_control.adapters.agents import RateLimiter

    clock = FakeClock()
    limiter = RateLimiter(0, clock=clock, sleep=clock.sleep)
    for _ in range(1000):
        limiter.acquire()
    assert clock.slept == []


def test_the_proxy_transport_is_rate_limited_and_sends_bytes():
    from hyperpod_control.adapters.agents import DEFAULT_PROXY_QPS, ProxyTransport, RateLimiter, proxy_qps

    class Kube:
        def __init__(self) -> None:
            self.bodies: list[Any] = []

        def pod_proxy(self, namespace, pod, port, method, path, body, *, timeout):
            self.bodies.append(body)
            return READY

    clock = FakeClock()
    kube = Kube()
    transport = ProxyTransport(kube, limiter=RateLimiter(2, burst=1, clock=clock, sleep=clock.sleep))
    client = AgentClient(transport, pool_size=1)
    client.call_all(AgentCall(f"p{i}", "POST", "/stop", body={"i": i}) for i in range(5))
    assert sorted(kube.bodies) == sorted(
        json.dumps({"i": i}, separators=(",", ":")).encode() for i in range(5)
    )
    assert clock.now == pytest.approx(2.0)  # 5 calls at 2 a second, one at once
    assert proxy_qps({}) == DEFAULT_PROXY_QPS
    assert proxy_qps({"AGENT_PROXY_QPS": "0"}) == 0
    with pytest.raises(InvalidInputError, match="AGENT_PROXY_QPS"):
        proxy_qps({"AGENT_PROXY_QPS": "fast"})
