"""Supervisor round benchmark: the time and the Kubernetes calls of one poll round and one start
round, for jobs of 8, 64 and 512 agents (issue acceptance: ``make bench``).

A round is the real step function (``supervisor.poll`` and ``supervisor.start_agents``) run as one
Lambda invocation runs it: one invocation per round whatever the job's size (no Map state), the
agents reached in parallel from ``AgentClient``'s thread pool. What it talks to:

- the sandbox's Kubernetes API server (HTTPS on loopback, ``sandbox.kube.KubeApiServer``) holding
  the HyperPodPyTorchJob and its pods (from ``build_pod``, status Running with a podIP), with the
  pod proxy installed; every HTTP request it receives is counted as one Kubernetes call;
- lightweight fake agents speaking the agent's protocol (hyperpod-facts 1.4): ``GET /status``
  answers the agent's JSON, ``POST /start`` checks the required fields of the body (rank, nnodes,
  faultCount, a non-empty master_addr, master_port) and answers 200 empty, or 422 as the agent
  does. Each agent has its own loopback address 127.X.Y.Z and port 8080, as in the sandbox (the
  pod proxy and the direct transport both dial ``<podIP>:8080``); all of them are listening
  sockets of ONE asyncio event loop in one thread, not a server thread per agent;
- the JOB item and the history go to an in-memory record store (DynamoDB is not measured).

Transports: ``proxy`` (the default in production: every agent call is a request to the API server)
and ``direct`` (``AGENT_TRANSPORT=direct``: agent calls go to the pod IPs, the API server only
sees the step's own reads and writes).

    python tests/bench/supervisor_bench.py [--agents 8,64,512] [--rounds 3] [--pool 32]
                                           [--transport proxy|direct|both]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import json
import os
import random
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
for _path in (ROOT, ROOT / "layers" / "common"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from hyperpod_control.adapters import kube as kube_module  # noqa: E402
from hyperpod_control.adapters.agents import AgentClient, DirectTransport, ProxyTransport  # noqa: E402
from hyperpod_control.adapters.kube import KubeAdapter  # noqa: E402
from hyperpod_control.models.agent import AGENT_PORT  # noqa: E402
from hyperpod_control.models.job import parse_job  # noqa: E402
from hyperpod_control.models.records import JobPhase, JobRecord, PodSlot  # noqa: E402
from hyperpod_control.services import supervisor  # noqa: E402
from hyperpod_control.services.supervision import build_pod, pod_name  # noqa: E402
from hyperpod_control.services.supervisor import (  # noqa: E402
    JobRef,
    StepInput,
    Supervisor,
    SupervisorConfig,
)

NAMESPACE = "bench"
CLUSTER_ARN = "arn:aws:sagemaker:us-west-2:123456789012:cluster/bench"
START_REQUIRED = ("rank", "nnodes", "faultCount", "master_addr", "master_port")


# ============================================================== fake agents


@dataclass
class AgentState:
    started: bool = False
    rank: int | None = None
    statuses: int = 0
    starts: int = 0


@dataclass
class FakeAgents:
    """``count`` agents, one per loopback address, all served by one asyncio loop in one thread."""

    count: int
    ips: list[str] = field(default_factory=list)
    agents: dict[str, AgentState] = field(default_factory=dict)
    rejected: list[str] = field(default_factory=list)
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None
    _servers: list[asyncio.base_events.Server] = field(default_factory=list)

    def start(self) -> FakeAgents:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fake-agents", daemon=True)
        self._thread.start()
        # 127.0.0.0/16 is where the sandbox kubelet hands out pod addresses; a /16 far above it,
        # chosen at random, keeps clear of other sandboxes on this host (port 8080 is fixed).
        octets = random.sample(range(100, 250), 20)
        for second in octets:
            ips = _addresses(second, self.count)
            try:
                self._call(self._listen(ips))
            except OSError as exc:
                if exc.errno not in (errno.EADDRINUSE, errno.EADDRNOTAVAIL):
                    raise
                self._call(self._close())
                continue
            self.ips = ips
            self.agents = {ip: AgentState() for ip in ips}
            return self
        raise RuntimeError(f"no free block of {self.count} loopback addresses for port {AGENT_PORT}")

    def stop(self) -> None:
        if self._loop is None:
            return
        self._call(self._close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._loop.close()
        self._loop = None

    def _call(self, coro: Any) -> Any:
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=60)

    async def _listen(self, ips: list[str]) -> None:
        for ip in ips:
            server = await asyncio.start_server(
                lambda r, w, ip=ip: self._serve(ip, r, w), ip, AGENT_PORT, reuse_address=True, backlog=128
            )
            self._servers.append(server)

    async def _close(self) -> None:
        for server in self._servers:
            server.close()
        for server in self._servers:
            with contextlib.suppress(Exception):
                await server.wait_closed()
        self._servers.clear()

    async def _serve(self, ip: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """HTTP/1.1, keep-alive honoured (the pod proxy and urllib close after one request)."""
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                method, target, version = [*lines[0].split(" ", 2), "", ""][:3]
                headers = {}
                for line in lines[1:]:
                    if ":" in line:
                        key, value = line.split(":", 1)
                        headers[key.strip().lower()] = value.strip()
                length = int(headers.get("content-length") or 0)
                body = await reader.readexactly(length) if length else b""
                code, payload = self._answer(ip, method, target.split("?", 1)[0], body)
                close = headers.get("connection", "").lower() == "close" or version == "HTTP/1.0"
                data = json.dumps(payload).encode() if payload is not None else b""
                writer.write(
                    (
                        f"HTTP/1.1 {code} {'OK' if code == 200 else 'Error'}\r\n"
                        "Content-Type: application/json\r\n"
                        f"Content-Length: {len(data)}\r\n"
                        f"Connection: {'close' if close else 'keep-alive'}\r\n\r\n"
                    ).encode()
                    + data
                )
                await writer.drain()
                if close:
                    return
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    def _answer(self, ip: str, method: str, path: str, body: bytes) -> tuple[int, Any]:
        agent = self.agents[ip]
        if method == "GET" and path == "/status":
            agent.statuses += 1
            status: dict[str, Any] = {
                "status": "running" if agent.started else "ready",
                "reason": "Running" if agent.started else "Ready",
                "restartMode": "process_level_restart",
                "transitions": {"RUNNING" if agent.started else "READY": "2026-01-01T00:00:00Z"},
                "agent_version": "bench",
                "spare": "False",
            }
            if agent.rank is not None:
                status["assigned_rank"] = str(agent.rank)
            return 200, status
        if method == "POST" and path == "/start":
            agent.starts += 1
            try:
                request = json.loads(body or b"null")
            except ValueError:
                request = None
            missing = [k for k in START_REQUIRED if not isinstance(request, dict) or k not in request]
            if not missing and not request["master_addr"]:
                missing = ["master_addr (empty)"]
            if missing:
                self.rejected.append(f"{ip}: missing {missing}")
                return 422, {"detail": [{"loc": ["body", k], "msg": "Field required"} for k in missing]}
            agent.started, agent.rank = True, int(request["rank"])
            return 200, None
        return 404, {"detail": "Not Found"}


def _addresses(second: int, count: int) -> list[str]:
    """``count`` addresses 127.<second>.Y.Z, Z never 0 or 255."""
    out = []
    for n in range(count):
        third, fourth = divmod(n, 254)
        out.append(f"127.{second}.{third}.{fourth + 1}")
    return out


# ============================================================== Kubernetes API server, counted


class KubeCounter:
    """Counts the HTTP requests the sandbox API server handles (one request = one Kubernetes call)
    and the TLS connections it accepts."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests = 0
        self.connections = 0

    def snapshot(self) -> tuple[int, int]:
        with self.lock:
            return self.requests, self.connections


def start_kube(counter: KubeCounter) -> Any:
    from sandbox.kube import KubeApiServer
    from sandbox.kube.cluster import hyperpod_pytorch_job_crd
    from sandbox.kube.proxy import handle_proxy

    server = KubeApiServer().start()
    server.subresource_handlers[("pods", "proxy")] = handle_proxy
    base = server._httpd.RequestHandlerClass

    class Counting(base):  # type: ignore[misc, valid-type]
        def setup(self) -> None:
            with counter.lock:
                counter.connections += 1
            super().setup()

        def _dispatch(self, method: str) -> None:
            with counter.lock:
                counter.requests += 1
            super()._dispatch(method)

    server._httpd.RequestHandlerClass = Counting
    store = server.store
    store.create(
        store.rt("apiextensions.k8s.io", "customresourcedefinitions"), None, hyperpod_pytorch_job_crd()
    )
    store.create(store.rt("", "namespaces"), None, {"metadata": {"name": NAMESPACE}})
    return server


# ============================================================== the JOB item store


class MemoryStore:
    """What the supervisor's steps use of ``adapters.store.Store``, in memory."""

    def __init__(self) -> None:
        self.jobs: dict[str, JobRecord] = {}
        self.events: list[Any] = []

    def get_job(self, cluster_arn: str, uid: str) -> JobRecord | None:
        return self.jobs.get(uid)

    def put(self, record: Any, *, expected_version: int | None) -> Any:
        if isinstance(record, JobRecord):
            current = self.jobs.get(record.uid)
            if (current.version if current else None) != expected_version:
                raise RuntimeError(f"version conflict on {record.uid}")
            record = record.model_copy(update={"version": (expected_version or 0) + 1})
            self.jobs[record.uid] = record
        return record

    def add_job_event(self, event: Any) -> Any:
        self.events.append(event)
        return event


# ============================================================== one job of N agents


def job_body(name: str, replicas: int) -> dict:
    container = {
        "name": "train",
        "image": "123456789012.dkr.ecr.us-west-2.amazonaws.com/train:latest",
        "command": ["hyperpodrun", f"--nnodes={replicas}", "--nproc-per-node=1", "train.py"],
    }
    return {
        "apiVersion": "sagemaker.amazonaws.com/v1",
        "kind": "HyperPodPyTorchJob",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "nprocPerNode": "1",
            "replicaSpecs": [
                {"name": "workers", "replicas": replicas, "template": {"spec": {"containers": [container]}}}
            ],
            "runPolicy": {"cleanPodPolicy": "None"},
        },
    }


def create_job(server: Any, store: MemoryStore, name: str, n: int, ips: list[str]) -> JobRef:
    """The job object, its N pods (Running, podIP = an agent's address) and its JOB item."""
    kstore = server.store
    obj = kstore.create(
        kstore.rt("sagemaker.amazonaws.com", "hyperpodpytorchjobs"), NAMESPACE, job_body(name, n)
    )
    job = parse_job(obj)
    pods_rt = kstore.rt("", "pods")
    slots = []
    for i in range(n):
        node = f"hyperpod-i-{i:017x}"
        pod = build_pod(job, i)
        pod.setdefault("spec", {})["nodeName"] = node
        kstore.create(pods_rt, NAMESPACE, pod)
        status = {
            "phase": "Running",
            "podIP": ips[i],
            "podIPs": [{"ip": ips[i]}],
            "hostIP": "127.0.0.1",
            "conditions": [{"type": "Ready", "status": "True"}],
        }
        kstore.patch(
            pods_rt, NAMESPACE, pod_name(name, i), lambda cur, s=status: {**cur, "status": s}, "status"
        )
        slots.append(PodSlot(pod=pod_name(name, i), node=node, ip=ips[i]))
    record = JobRecord(
        cluster_arn=CLUSTER_ARN,
        uid=obj["metadata"]["uid"],
        namespace=NAMESPACE,
        name=name,
        phase=JobPhase.CREATING,
        nnodes=n,
        spares=0,
        pods=slots,
    )
    store.put(record, expected_version=None)
    return JobRef(cluster_arn=CLUSTER_ARN, namespace=NAMESPACE, name=name, uid=record.uid)


# ============================================================== measuring


@dataclass
class Row:
    agents: int
    transport: str
    round: str
    times_ms: list[float] = field(default_factory=list)
    kube_calls: list[int] = field(default_factory=list)
    kube_conns: list[int] = field(default_factory=list)
    agent_calls: list[int] = field(default_factory=list)
    agent_ms: list[float] = field(default_factory=list)


class TimedAgentClient(AgentClient):
    """``AgentClient`` that adds up the time spent in ``call_all`` (the agents' part of a round)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.seconds = 0.0

    def call_all(self, calls: Any) -> Any:
        began = time.perf_counter()
        try:
            return super().call_all(calls)
        finally:
            self.seconds += time.perf_counter() - began


def measure(
    row: Row, step: Callable[[], Any], counter: KubeCounter, agents: TimedAgentClient, expect: str
) -> None:
    calls0, seconds0 = agents.calls, agents.seconds
    requests0, conns0 = counter.snapshot()
    started = time.perf_counter()
    result = step()
    elapsed = (time.perf_counter() - started) * 1000
    requests1, conns1 = counter.snapshot()
    if result.next != expect:
        raise SystemExit(
            f"{row.round} of {row.agents} agents ({row.transport}): {result.next}: {result.reason}"
        )
    row.times_ms.append(elapsed)
    row.kube_calls.append(requests1 - requests0)
    row.kube_conns.append(conns1 - conns0)
    row.agent_calls.append(agents.calls - calls0)
    row.agent_ms.append((agents.seconds - seconds0) * 1000)


def run_size(
    server: Any,
    counter: KubeCounter,
    fakes: FakeAgents,
    n: int,
    transport: str,
    rounds: int,
    pool: int,
    name: str | None = None,
) -> list[Row]:
    store = MemoryStore()
    ref = create_job(server, store, name or f"bench-{n}-{transport}", n, fakes.ips)
    # one ApiClient per job size and transport, as a cold Lambda: the first round opens the
    # connections (TLS), later rounds reuse them (a warm Lambda)
    cfg = server.client_configuration()
    cfg.connection_pool_maxsize = kube_module.CONNECTION_POOL_SIZE
    from kubernetes import client

    api_client = client.ApiClient(cfg)
    kube = KubeAdapter("bench", api_client=api_client)
    agents = TimedAgentClient(
        ProxyTransport(kube) if transport == "proxy" else DirectTransport(), pool_size=pool
    )
    sup = Supervisor(store=store, kube=kube, agents=agents, config=SupervisorConfig())
    request = StepInput(job=ref)
    start, poll = Row(n, transport, "start"), Row(n, transport, "poll")
    for state in fakes.agents.values():
        state.started, state.rank = False, None
    try:
        for _ in range(rounds):
            measure(start, lambda: supervisor.start_agents(request, sup), counter, agents, "monitor")
            measure(poll, lambda: supervisor.poll(request, sup), counter, agents, "running")
    finally:
        api_client.close()
        kstore = server.store
        kstore.delete(kstore.rt("sagemaker.amazonaws.com", "hyperpodpytorchjobs"), NAMESPACE, ref.name)
        for i in range(n):
            with contextlib.suppress(Exception):
                kstore.delete(kstore.rt("", "pods"), NAMESPACE, pod_name(ref.name, i))
    if fakes.rejected:
        raise SystemExit(f"agents refused /start: {fakes.rejected[:3]}")
    return [poll, start]


def _spread(values: list[int]) -> str:
    low, high = min(values), max(values)
    return str(low) if low == high else f"{low}-{high}"


def print_table(rows: list[Row]) -> None:
    head = (
        "agents",
        "transport",
        "round",
        "median ms",
        "max ms",
        "kubernetes calls",
        "agent calls",
        "agent-call ms",
        "new TLS conns",
    )
    table = [
        (
            str(r.agents),
            r.transport,
            r.round,
            f"{statistics.median(r.times_ms):.1f}",
            f"{max(r.times_ms):.1f}",
            _spread(r.kube_calls),
            _spread(r.agent_calls),
            f"{statistics.median(r.agent_ms):.1f}",
            _spread(r.kube_conns),
        )
        for r in rows
    ]
    widths = [max(len(h), *(len(t[i]) for t in table)) for i, h in enumerate(head)]

    def line(cells: tuple[str, ...]) -> str:
        return (
            "| "
            + " | ".join(
                c.rjust(w) if i >= 3 else c.ljust(w)
                for i, (c, w) in enumerate(zip(cells, widths, strict=True))
            )
            + " |"
        )

    print(line(head))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for t in table:
        print(line(t))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", default="8,64,512", help="job sizes, comma-separated (default 8,64,512)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of each kind per size (default 3)")
    parser.add_argument("--pool", type=int, default=32, help="AgentClient thread pool size (default 32)")
    parser.add_argument("--transport", choices=("proxy", "direct", "both"), default="both")
    args = parser.parse_args(argv)
    args.sizes = [int(s) for s in args.agents.split(",") if s.strip()]
    if not args.sizes or min(args.sizes) < 1 or args.rounds < 1 or args.pool < 1:
        parser.error("--agents, --rounds and --pool must be positive")
    return args


@contextlib.contextmanager
def bench_env(sizes: list[int]) -> Iterator[tuple[Any, KubeCounter, FakeAgents]]:
    counter = KubeCounter()
    fakes = FakeAgents(max(sizes)).start()
    server = None
    try:
        server = start_kube(counter)
        yield server, counter, fakes
    finally:
        if server is not None:
            server.stop()
        fakes.stop()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    transports = ["proxy", "direct"] if args.transport == "both" else [args.transport]
    began = time.perf_counter()
    rows: list[Row] = []
    with bench_env(args.sizes) as (server, counter, fakes):
        # not measured: the process's first use of each Kubernetes API builds the client's models
        # (about a second, once per Lambda container, not per round)
        for transport in transports:
            run_size(server, counter, fakes, 1, transport, 1, args.pool, name=f"warmup-{transport}")
        for n in args.sizes:
            for transport in transports:
                rows.extend(run_size(server, counter, fakes, n, transport, args.rounds, args.pool))
    print(
        f"Supervisor rounds: {args.rounds} of each per job size; agent pool {args.pool} threads "
        f"(AGENT_POOL_SIZE), Kubernetes connection pool {kube_module.CONNECTION_POOL_SIZE}; "
        f"{os.cpu_count()} CPUs."
    )
    print(
        "One Lambda invocation does one round (supervisor.poll / supervisor.start_agents) whatever "
        "the job's size: no Step Functions Map state, so 1 invocation and the same state "
        "transitions per round for 8 or 512 agents."
    )
    print(
        "kubernetes calls = HTTP requests the API server handled in the round (proxy: one per agent "
        "call, plus the step's own: poll reads the job and lists the pods; start reads the job and "
        "patches its status); agent calls = AgentClient.calls; new TLS conns = connections the API "
        "server accepted in the round (each size starts with a fresh ApiClient, so its first round "
        "opens them, as a Lambda's first round does; the client's one-time model set-up is warmed up, "
        "not measured); agent-call ms = the part of the round spent in AgentClient.call_all. The fake "
        "agents and the API server run in this process, so they share its CPUs and GIL with the client."
    )
    print()
    print_table(rows)
    print()
    print(f"total {time.perf_counter() - began:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
