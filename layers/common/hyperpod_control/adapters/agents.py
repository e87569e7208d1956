"""Reaching the agents of a job: one call per pod, all pods at once from a bounded thread pool.

Two transports, as DESIGN.md says: through the Kubernetes API server's pod proxy (the default:
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
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
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

DEFAULT_POOL_SIZE = 32
CALL_ATTEMPTS = 4
BACKOFF_S = 0.2
#: (connect, read) of one agent call: an agent answers /status, /start and /stop at once (the work
#: they start runs in the background), so more than this is silence, not slowness.
AGENT_TIMEOUT = (3.0, 8.0)


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


class ProxyTransport:
    """Through ``/api/v1/namespaces/<ns>/pods/<pod>:8080/proxy/<path>`` (KubeAdapter.pod_proxy)."""

    name = "proxy"

    def __init__(self, kube: Any) -> None:
        self.kube = kube

    def __call__(self, call: AgentCall) -> Any:
        return self.kube.pod_proxy(
            call.namespace, call.pod, AGENT_PORT, call.method, call.path, call.body, timeout=call.timeout
        )


class DirectTransport:
    """``http://<pod IP>:8080/<path>``: for Lambdas inside the cluster's VPC."""

    name = "direct"

    def __call__(self, call: AgentCall) -> Any:
        # Imported here: only the direct transport needs urllib (its import is 10 ms of the
        # supervise_job/job_events cold start, README "Performance"); proxy calls go through kube.
        import urllib.error
        import urllib.request

        if not call.ip:
            raise ResourceNotFoundError(f"pod {call.pod} has no IP yet.")
        data = None if call.body is None else json.dumps(call.body).encode()
        request = urllib.request.Request(
            f"http://{call.ip}:{AGENT_PORT}{call.path}",
            data=data,
            method=call.method,
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=call.timeout[1]) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read()[:500].decode(errors="replace")
            if exc.code == 429 or exc.code >= 500:
                raise DependencyUnavailableError(f"agent {call.pod}: HTTP {exc.code} {detail}") from exc
            if exc.code == 404:
                raise ResourceNotFoundError(f"agent {call.pod}: {call.path} not found (404)") from exc
            # The agent refused the request (422 names the field): retrying sends it again unchanged.
            raise InvalidInputError(
                f"agent {call.pod} refused {call.method} {call.path} ({exc.code}): {detail}"
            ) from exc
        except TimeoutError as exc:
            raise CallTimedOutError(f"agent {call.pod}: no answer in {call.timeout[1]:.0f} s") from exc
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, TimeoutError):
                raise CallTimedOutError(f"agent {call.pod}: no answer in {call.timeout[1]:.0f} s") from exc
            raise DependencyUnavailableError(f"agent {call.pod}: {exc}") from exc
        except OSError as exc:
            raise DependencyUnavailableError(f"agent {call.pod}: {exc}") from exc
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
