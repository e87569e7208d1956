"""Reaching the agents of a job: one call per pod, all pods at once from a bounded thread pool.

Two transports (docs/architecture.md): through the Kubernetes API server's pod proxy (the default:
the Lambdas need no VPC, only the cluster endpoint and RBAC ``pods/proxy``), or straight to the
pod IP when the Lambdas run in the cluster's VPC (``AGENT_TRANSPORT=direct``). A Step Functions
Map state per pod would cost a state transition per agent per poll; a thread pool inside one
Lambda costs one invocation per round, whatever the job's size.

Each call's failure is returned, not raised: one unreachable agent is a fact the decision uses
(the pod's node may have died), not a reason to fail the round. Failures of the API server itself
(429, 5xx) are retried a few times with backoff here, since a round must see every agent; what
still fails is reported per pod. This is the only retry of an agent call: the transports make one
attempt each (the supervisor's KubeAdapter has the client's own retries off).

Every call is short (``AGENT_TIMEOUT``) and bounded by the invocation's ``Deadline``: a dead
instance's connections hang rather than refuse, so an agent that does not answer in time is
reported ``silent`` at once and not asked again in this round; whether silence is a fault is the
supervisor's decision over several rounds, not this client's.

A round is linear in the job's size. A ``/start`` carries the job's ``rankIps`` table (every agent
writes it for its workers): whole to an agent that holds none yet, only the changed ranks to one
that holds the job's last table (``supervision.start_calls``), the same for every agent of each
kind; its keys are serialised once per round (``SharedJson``) and each call encodes only its own
fields (``rank``, ``spare``) beside them, so the supervisor's CPU per round grows with the agents,
and so do the bytes of every round but a job's first start (each new agent needs the whole
table once: README, "Operations"). The pool
bounds the calls in flight (``AGENT_POOL_SIZE`` threads, never one per agent); the proxy transport
reuses the Kubernetes client's kept-alive TLS connections (one per thread) and is rate-limited
(``AGENT_PROXY_QPS``): each of its calls is an API server request, and the API server is shared
with every other client of the cluster (README, "Operations").
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

from hyperpod_control.deadline import Deadline
from hyperpod_control.exceptions import (
    CallTimedOutError,
    ControlPlaneError,
    DeadlineExceededError,
    DependencyUnavailableError,
    InvalidInputError,
    ResourceNotFoundError,
    RetryableError,
)
from hyperpod_control.models.agent import AGENT_PORT, AgentAnswer, AgentStatus
from hyperpod_control.settings import agent_proxy_qps

DEFAULT_POOL_SIZE = 32
#: Pod-proxy calls a second (AGENT_PROXY_QPS): a poll round of N agents through the API server
#: takes at least N / this seconds (README, "Operations").
DEFAULT_PROXY_QPS = 200.0
CALL_ATTEMPTS = 4
BACKOFF_S = 0.2
#: (connect, read) of one agent call: an agent answers /status, /start and /stop at once (the work
#: they start runs in the background), so more than this is silence, not slowness.
AGENT_TIMEOUT = (3.0, 8.0)


class SharedJson:
    """Keys of a request body that many calls share, serialised once (a ``/start``'s ``rankIps``
    is 35 bytes a rank: encoding it again for each of 4,096 agents made a start round quadratic)."""

    def __init__(self, shared: dict[str, Any]) -> None:
        self.keys = frozenset(shared)
        #: ``"key":value,...`` without the braces: joined to each call's own keys.
        self.data = _compact(shared)[1:-1]

    def encode(self, body: dict[str, Any]) -> bytes:
        """``body`` as JSON: its keys outside the shared ones encoded now, the rest reused. The
        shared keys' values are taken as serialised, not from ``body``."""
        own = _compact({k: v for k, v in body.items() if k not in self.keys})[1:-1]
        return b"{" + b",".join(part for part in (own, self.data) if part) + b"}"


def _compact(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


@dataclass(frozen=True)
class AgentCall:
    pod: str
    method: str
    path: str
    body: dict[str, Any] | None = None
    ip: str | None = None
    namespace: str = "default"
    #: (connect, read) seconds; the client bounds it by the invocation's deadline.
    timeout: tuple[float, float] = AGENT_TIMEOUT
    #: The part of ``body`` serialised once for every call of a round (``start_calls``).
    shared: SharedJson | None = field(default=None, compare=False, repr=False)

    def payload(self) -> bytes | None:
        """The body as sent: JSON, its shared keys not encoded again."""
        if self.body is None:
            return None
        return self.shared.encode(self.body) if self.shared is not None else _compact(self.body)


class RateLimiter:
    """A token bucket shared by the pool's threads: at most ``rate`` calls a second on average,
    ``burst`` at once. ``rate`` 0 or less: no limit."""

    def __init__(
        self,
        rate: float,
        burst: int | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.rate = rate
        self.burst = max(1, burst if burst is not None else int(rate) or 1)
        self._clock, self._sleep = clock, sleep
        self._tokens = float(self.burst)
        self._at = clock()
        self._lock = threading.Lock()
        #: Seconds callers waited in all (benchmarks and logs read it).
        self.waited = 0.0

    def acquire(self) -> None:
        if self.rate <= 0:
            return
        with self._lock:
            now = self._clock()
            self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
            self._at = now
            self._tokens -= 1
            wait = -self._tokens / self.rate if self._tokens < 0 else 0.0
            self.waited += wait
        if wait > 0:
            self._sleep(wait)


def proxy_qps(env: dict[str, str] | None = None) -> float:
    """``AGENT_PROXY_QPS`` (default ``DEFAULT_PROXY_QPS``; 0: no limit)."""
    text = agent_proxy_qps(env)
    try:
        return float(text) if text.strip() else DEFAULT_PROXY_QPS
    except ValueError:
        raise InvalidInputError(
            f"AGENT_PROXY_QPS: {text!r} is not a number.",
            remedy="set it to the pod-proxy calls a second the supervisor may make (0: no limit).",
        ) from None


class ProxyTransport:
    """Through ``/api/v1/namespaces/<ns>/pods/<pod>:8080/proxy/<path>`` (KubeAdapter.pod_proxy):
    one API server request per call, at most ``qps`` a second (``AGENT_PROXY_QPS``)."""

    name = "proxy"

    def __init__(self, kube: Any, *, qps: float | None = None, limiter: RateLimiter | None = None) -> None:
        self.kube = kube
        self.limiter = limiter or RateLimiter(proxy_qps() if qps is None else qps)

    def __call__(self, call: AgentCall) -> Any:
        self.limiter.acquire()
        return self.kube.pod_proxy(
            call.namespace,
            call.pod,
            AGENT_PORT,
            call.method,
            call.path,
            call.payload(),
            timeout=call.timeout,
        )


class DirectTransport:
    """``http://<pod IP>:8080/<path>``: for Lambdas inside the cluster's VPC."""

    name = "direct"

    def __call__(self, call: AgentCall) -> Any:
        # Imported here: only the direct transport needs http.client (proxy calls go through kube;
        # cold start: README "Performance"). http.client, not urllib.request: a round makes one
        # request per agent, and urllib's opener, handlers and Request objects doubled each one's
        # CPU for nothing this call needs (no redirects, proxies or cookies).
        import http.client
        import socket

        if not call.ip:
            raise ResourceNotFoundError(f"pod {call.pod} has no IP yet.")
        data = call.payload()
        connection = http.client.HTTPConnection(call.ip, AGENT_PORT, timeout=call.timeout[1])
        try:
            connection.connect()
            # The head and the body go out as separate writes: without this, Nagle's algorithm
            # holds the body's first segment until the agent ACKs the head (a delayed ACK, 40 ms).
            connection.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            headers = {"Content-Type": "application/json"} if data is not None else {}
            connection.request(call.method, call.path, body=data, headers=headers)
            response = connection.getresponse()
            status, raw = response.status, response.read()
        except TimeoutError as exc:
            raise CallTimedOutError(f"agent {call.pod}: no answer in {call.timeout[1]:.0f} s") from exc
        except (OSError, http.client.HTTPException) as exc:
            raise DependencyUnavailableError(f"agent {call.pod}: {exc!r}") from exc
        finally:
            connection.close()
        if status >= 400:
            detail = raw[:500].decode(errors="replace")
            if status == 429 or status >= 500:
                raise DependencyUnavailableError(f"agent {call.pod}: HTTP {status} {detail}")
            if status == 404:
                raise ResourceNotFoundError(f"agent {call.pod}: {call.path} not found (404)")
            # The agent refused the request (422 names the field): retrying sends it again unchanged.
            raise InvalidInputError(
                f"agent {call.pod} refused {call.method} {call.path} ({status}): {detail}"
            )
        return json.loads(raw) if raw else None


class AgentClient:
    """Calls every agent of a job in parallel; counts the calls it makes (benchmarks read it)."""

    def __init__(
        self,
        transport: Callable[[AgentCall], Any],
        *,
        pool_size: int = DEFAULT_POOL_SIZE,
        sleep: Callable[[float], None] = time.sleep,
        deadline: Deadline | None = None,
    ) -> None:
        self.transport = transport
        self.pool_size = pool_size
        self.deadline = deadline or Deadline()
        self._sleep = sleep
        self._lock = threading.Lock()
        self.calls = 0

    def _one(self, call: AgentCall) -> AgentAnswer:
        last: Exception | None = None
        for attempt in range(CALL_ATTEMPTS):
            try:
                timeout = self.deadline.bounded(call.timeout, f"{call.method} {call.path} of {call.pod}")
            except DeadlineExceededError as exc:
                return AgentAnswer(pod=call.pod, ok=False, error=str(last or exc))
            with self._lock:
                self.calls += 1
            try:
                answer = self.transport(replace(call, timeout=timeout))
            except ResourceNotFoundError as exc:
                return AgentAnswer(pod=call.pod, ok=False, error=str(exc), pod_gone=True)
            except CallTimedOutError as exc:
                # Silence: asking again would only wait again (and a dead node's pod never answers).
                return AgentAnswer(pod=call.pod, ok=False, error=str(exc), silent=True)
            except RetryableError as exc:
                last = exc
                if attempt + 1 < CALL_ATTEMPTS:
                    self._sleep(BACKOFF_S * 2**attempt)
                continue
            except ControlPlaneError as exc:
                return AgentAnswer(pod=call.pod, ok=False, error=str(exc))
            status = None
            if call.path == "/status" or (isinstance(answer, dict) and "status" in answer):
                try:
                    status = AgentStatus.model_validate(answer)
                except ValueError as exc:
                    return AgentAnswer(pod=call.pod, ok=False, error=f"unreadable /status: {exc}")
            return AgentAnswer(pod=call.pod, ok=True, status=status)
        return AgentAnswer(pod=call.pod, ok=False, error=str(last))

    def call_all(self, calls: Iterable[AgentCall]) -> dict[str, AgentAnswer]:
        calls = list(calls)
        if not calls:
            return {}
        workers = max(1, min(self.pool_size, len(calls)))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="agent") as pool:
            answers = list(pool.map(self._one, calls))
        return {answer.pod: answer for answer in answers}

    def statuses(self, namespace: str, pods: Iterable[tuple[str, str | None]]) -> dict[str, AgentAnswer]:
        """``GET /status`` of each (pod, ip) of ``namespace``."""
        return self.call_all(AgentCall(pod, "GET", "/status", ip=ip, namespace=namespace) for pod, ip in pods)
