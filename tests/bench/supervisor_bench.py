"""Supervisor round benchmark: the time, the calls and the bytes of a poll round, a start round
and a restart, for jobs of 512, 2,048 and 4,096 agents (``make bench``).

Rounds: ``start`` is a job's first start (``supervisor.start_agents``: every agent is new and gets
the whole IP table), ``poll`` a monitoring round (``supervisor.poll``), ``restart`` a remediation
of one agent's fault by a process-level restart of every rank (``supervisor.remediate``: a poll,
``/stop`` to every agent, a poll until all are READY, ``/start`` to every agent), and ``restart's
/start`` the last part of it alone (its time and the bodies' bytes): the agents hold the job's
table there, so with ``AGENT_RANK_IPS=changed`` (``--rank-ips``) they get only the ranks whose IP
changed.

A round is the real step function (``supervisor.poll``, ``start_agents``, ``remediate``) run as one
Lambda invocation runs it: one invocation per round whatever the job's size (no Map state), the
agents reached from ``AgentClient``'s bounded thread pool. The supervisor is the only thing this
process runs; what it talks to runs in other processes, so the times are the supervisor's own:

- the sandbox's Kubernetes API server (HTTPS on loopback, ``sandbox.kube.KubeApiServer``), in a
  process of its own, holding the HyperPodPyTorchJob and its pods (from ``build_pod``, status
  Running with a podIP), with the pod proxy installed; every HTTP request it receives is counted
  as one Kubernetes call, with its bytes;
- lightweight fake agents speaking the agent's protocol, in ``--agent-procs`` processes:
  ``GET /status`` answers the agent's JSON (``ipversion``: the version of the IP table it holds),
  ``POST /start`` parses the whole body, merges its ``rankIps`` into the table the agent holds (as
  the HyperPod agent does: the first call whole, later ones the changed ranks), checks the
  required fields, a table with an IP for every rank and a master_addr among them, and answers 200
  empty, or 422 as the agent does; ``POST /stop`` makes it READY. Each agent has its own loopback
  address 127.X.Y.Z and port 8080, as in the sandbox (the pod proxy and the direct transport both
  dial ``<podIP>:8080``); a process serves its agents from one asyncio loop, not a thread per
  agent;
- the JOB item and the history go to an in-memory record store (DynamoDB is not measured: the JOB
  item's size at 4,096 ranks is tests/unit/test_scale_limits.py's).

Transports: ``proxy`` (the default in production: every agent call is a request to the API server,
``AGENT_PROXY_QPS`` of them a second at most; ``--proxy-qps`` sets the limit here, 0 measures the
transport unthrottled) and ``direct`` (``AGENT_TRANSPORT=direct``: agent calls go to the pod IPs,
the API server only sees the step's own reads and writes). The machine's CPUs are shared by all
the processes: the agents' parsing of a start round's bodies (a 4,096-rank table is 143 KB, parsed
by every agent) competes with the supervisor for them, which production agents, one per node, do
not.

    python tests/bench/supervisor_bench.py [--agents 512,2048,4096] [--rounds 3] [--pool 32]
                                           [--transport proxy|direct|both] [--proxy-qps 0]
                                           [--agent-procs 2]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import json
import multiprocessing
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

from hyperpod_control.adapters.agents import (  # noqa: E402
    DEFAULT_PROXY_QPS,
    AgentClient,
    DirectTransport,
    ProxyTransport,
    RateLimiter,
)
from hyperpod_control.adapters.kube import KubeAdapter  # noqa: E402
from hyperpod_control.adapters.kube import adapter as kube_module  # noqa: E402
from hyperpod_control.models.agent import AGENT_PORT  # noqa: E402
from hyperpod_control.models.records import JobPhase, JobRecord, PodSlot  # noqa: E402
from hyperpod_control.models.supervisor import StepInput, SupervisedJob  # noqa: E402
from hyperpod_control.services import supervisor  # noqa: E402
from hyperpod_control.services.supervision import pod_name  # noqa: E402
from hyperpod_control.services.supervisor import Supervisor, SupervisorConfig  # noqa: E402

NAMESPACE = "bench"
CLUSTER_ARN = "arn:aws:sagemaker:us-west-2:123456789012:cluster/bench"
START_REQUIRED = ("rank", "nnodes", "faultCount", "master_addr", "master_port")


# ============================================================== fake agents (their processes)


@dataclass
class AgentState:
    started: bool = False
    rank: int | None = None
    faulted: bool = False
    #: The IP table the agent holds (pod_resourceconfig.json's ``ips``) and its version
    #: (``ipversion`` in /status): a /start's ``rankIps`` is merged into it.
    table: tuple[str | None, ...] | None = None
    version: str | None = None


@dataclass
class FakeAgents:
    """The agents at ``ips``, all served by one asyncio loop in one thread (of an agent process)."""

    ips: list[str]
    agents: dict[str, AgentState] = field(default_factory=dict)
    rejected: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=lambda: {"status": 0, "start": 0, "bytes": 0})
    #: One table object per version, shared by the agents that hold it (4,096 agents each holding
    #: its own copy of a 4,096-rank table would be 16 million strings).
    tables: dict[str, tuple[str | None, ...]] = field(default_factory=dict)
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None
    _servers: list[asyncio.base_events.Server] = field(default_factory=list)

    def start(self) -> FakeAgents:
        """Listen on every address, or raise OSError (EADDRINUSE: another bench has the block)."""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fake-agents", daemon=True)
        self._thread.start()
        try:
            self._call(self._listen(self.ips))
        except OSError:
            self.stop()
            raise
        self.agents = {ip: AgentState() for ip in self.ips}
        return self

    def reset(self) -> None:
        """New pods: no agent started, none holding a table."""
        self.agents = {ip: AgentState() for ip in self.ips}
        self.tables.clear()

    def fault(self, ip: str) -> None:
        self.agents[ip].faulted = True

    def stats(self) -> dict[str, Any]:
        return {
            **self.counts,
            "cpu": time.process_time(),
            "rejected": list(self.rejected[:3]),
            "rejections": len(self.rejected),
        }

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
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=120)

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
        """HTTP/1.1, keep-alive honoured (urllib closes after one request; the pod proxy may not)."""
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
                self.counts["bytes"] += len(head) + len(body)
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
            self.counts["status"] += 1
            state = "faulted" if agent.faulted else "running" if agent.started else "ready"
            status: dict[str, Any] = {
                "status": state,
                "reason": {"faulted": "WorkerCrash", "running": "Running", "ready": "Ready"}[state],
                "restartMode": "process_level_restart",
                "transitions": {state.upper(): "2026-01-01T00:00:00Z"},
                "agent_version": "bench",
                "spare": "False",
            }
            if agent.rank is not None:
                status["assigned_rank"] = str(agent.rank)
            if agent.version is not None:
                status["ipversion"] = agent.version
            return 200, status
        if method == "POST" and path == "/start":
            self.counts["start"] += 1
            request, table, refusal = read_start(body, agent.table)
            if refusal:
                self.rejected.append(f"{ip}: {refusal}")
                return 422, {"detail": [{"loc": ["body"], "msg": refusal}]}
            if "rankIps" in request and request.get("ipVersion") is not None:
                version = request["ipVersion"]
                known = self.tables.get(version)
                if known == table:
                    table = known
                else:
                    self.tables[version] = table
                agent.table, agent.version = table, version
            agent.started, agent.rank = True, int(request["rank"])
            return 200, None
        if method == "POST" and path == "/stop":
            agent.started = agent.faulted = False
            return 200, None
        return 404, {"detail": "Not Found"}


def read_start(
    body: bytes, held: tuple[str | None, ...] | None = None
) -> tuple[dict[str, Any], tuple[str | None, ...] | None, str | None]:
    """The /start body, the IP table the agent holds after it (``held`` with the body's
    ``rankIps`` merged in, sized to nnodes, as HyperPod's agent merges them), and why the agent
    would refuse it (None: it takes it): the required fields, a table without a hole (the
    in-process-restart agent asserts it before releasing its workers) and a master among it."""
    try:
        request = json.loads(body or b"null")
    except ValueError as exc:
        return {}, held, f"unreadable JSON: {exc}"
    if not isinstance(request, dict):
        return {}, held, "not a JSON object"
    missing = [k for k in START_REQUIRED if k not in request]
    if missing:
        return request, held, f"missing {missing}"
    nnodes = request["nnodes"]
    if not 0 <= request["rank"] < nnodes:
        return request, held, f"rank {request['rank']} outside 0..{nnodes - 1}"
    table = held
    if request.get("rankIps") is not None:
        ips = list(held or ())[:nnodes]
        ips.extend([None] * (nnodes - len(ips)))
        for entry in request["rankIps"]:
            if not 0 <= entry["rank"] < nnodes:
                return request, held, f"rankIps names rank {entry['rank']} outside 0..{nnodes - 1}"
            ips[entry["rank"]] = entry["ip"]
        table = tuple(ips)
    if table is None or len(table) != nnodes or None in table:
        holes = nnodes if table is None else sum(ip is None for ip in table)
        return request, held, f"the IP table held has no IP for {holes} of {nnodes} ranks"
    if not request["master_addr"] or request["master_addr"] not in table:
        return request, held, f"master_addr {request['master_addr']!r} is not in the IP table"
    return request, table, None


def _addresses(second: int, count: int) -> list[str]:
    """``count`` addresses 127.<second>.Y.Z, Z never 0 or 255."""
    out = []
    for n in range(count):
        third, fourth = divmod(n, 254)
        out.append(f"127.{second}.{third}.{fourth + 1}")
    return out


def _agents_process(conn: Any, ips: list[str]) -> None:
    """An agent process: listen on ``ips`` (answer "ok" or the errno), then serve commands."""
    try:
        fakes = FakeAgents(ips).start()
    except OSError as exc:
        conn.send(("error", exc.errno))
        return
    conn.send(("ok", None))
    while True:
        command, *args = conn.recv()
        if command == "stop":
            fakes.stop()
            conn.send(("ok", None))
            return
        if command == "reset":
            conn.send(("ok", fakes._call(_run(fakes.reset))))
        elif command == "fault":
            conn.send(("ok", fakes._call(_run(fakes.fault, *args))))
        else:
            conn.send(("ok", fakes.stats()))


async def _run(function: Callable[..., Any], *args: Any) -> Any:
    """``function`` on the agents' loop: their state is the loop's alone."""
    return function(*args)


# ============================================================== Kubernetes API server (its process)


def _kube_process(conn: Any) -> None:
    """The sandbox API server with the pod proxy, every request and its bytes counted."""
    from sandbox.kube import KubeApiServer
    from sandbox.kube.cluster import hyperpod_pytorch_job_crd
    from sandbox.kube.proxy import handle_proxy

    counts = {"requests": 0, "connections": 0, "bytes": 0}
    lock = threading.Lock()
    server = KubeApiServer().start()
    server.subresource_handlers[("pods", "proxy")] = handle_proxy
    base = server._httpd.RequestHandlerClass

    class Counting(base):  # type: ignore[misc, valid-type]
        def setup(self) -> None:
            with lock:
                counts["connections"] += 1
            super().setup()

        def _dispatch(self, method: str) -> None:
            size = len(self.requestline) + 2 + len(str(self.headers))
            size += int(self.headers.get("Content-Length") or 0)
            with lock:
                counts["requests"] += 1
                counts["bytes"] += size
            super()._dispatch(method)

    server._httpd.RequestHandlerClass = Counting
    store = server.store
    store.create(
        store.rt("apiextensions.k8s.io", "customresourcedefinitions"), None, hyperpod_pytorch_job_crd()
    )
    store.create(store.rt("", "namespaces"), None, {"metadata": {"name": NAMESPACE}})
    conn.send(("ok", {"url": server.url, "ca": server.ca_pem, "token": server.admin_token}))
    while True:
        command, *args = conn.recv()
        if command == "stop":
            server.stop()
            conn.send(("ok", None))
            return
        if command == "create":
            conn.send(("ok", _create_job(server, *args)))
        elif command == "delete":
            conn.send(("ok", _delete_job(server, *args)))
        else:
            with lock:
                conn.send(("ok", dict(counts)))


def _create_job(server: Any, name: str, ips: list[str]) -> str:
    """The job object, its pods (Running, podIP = an agent's address) and their nodes (Ready,
    Schedulable, as HyperPod registers them; the poll reads them every round): the job's uid."""
    from hyperpod_control.models.job import parse_job
    from hyperpod_control.services.supervision import build_pod
    from sandbox.kube.cluster import add_node, hyperpod_node

    kstore = server.store
    nodes_rt = kstore.rt("", "nodes")
    for i in range(len(ips)):
        if kstore.find(nodes_rt, None, node_name(i)) is None:
            add_node(kstore, hyperpod_node(node_name(i).removeprefix("hyperpod-")))
    obj = kstore.create(
        kstore.rt("sagemaker.amazonaws.com", "hyperpodpytorchjobs"), NAMESPACE, job_body(name, len(ips))
    )
    job = parse_job(obj)
    pods_rt = kstore.rt("", "pods")
    for i, ip in enumerate(ips):
        pod = build_pod(job, i)
        pod.setdefault("spec", {})["nodeName"] = node_name(i)
        kstore.create(pods_rt, NAMESPACE, pod)
        status = {
            "phase": "Running",
            "podIP": ip,
            "podIPs": [{"ip": ip}],
            "hostIP": "127.0.0.1",
            "conditions": [{"type": "Ready", "status": "True"}],
        }
        kstore.patch(
            pods_rt, NAMESPACE, pod_name(name, i), lambda cur, s=status: {**cur, "status": s}, "status"
        )
    return obj["metadata"]["uid"]


def _delete_job(server: Any, name: str, n: int) -> None:
    kstore = server.store
    kstore.delete(kstore.rt("sagemaker.amazonaws.com", "hyperpodpytorchjobs"), NAMESPACE, name)
    for i in range(n):
        with contextlib.suppress(Exception):
            kstore.delete(kstore.rt("", "pods"), NAMESPACE, pod_name(name, i))


def node_name(i: int) -> str:
    return f"hyperpod-i-{i:017x}"


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
            # every round's restart counts against the budget: enough for any bench
            "runPolicy": {"cleanPodPolicy": "None", "jobMaxRetryCount": 1000},
        },
    }


# ============================================================== the processes, from the supervisor's side


class Child:
    """A process answering commands over a pipe: ``call(...)`` sends one and waits for its answer."""

    def __init__(self, target: Callable[..., None], *args: Any) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.conn, theirs = ctx.Pipe()
        self.process = ctx.Process(target=target, args=(theirs, *args), daemon=True)
        self.process.start()
        theirs.close()

    def answer(self, timeout: float = 300) -> Any:
        if not self.conn.poll(timeout):
            raise RuntimeError(f"{self.process.name} did not answer in {timeout:.0f} s")
        status, value = self.conn.recv()
        if status != "ok":
            raise OSError(value, os.strerror(value or 0))
        return value

    def call(self, *command: Any) -> Any:
        self.conn.send(command)
        return self.answer()

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.call("stop")
        self.process.join(timeout=10)
        if self.process.is_alive():
            self.process.kill()


class AgentProcesses:
    """``count`` agents spread over ``procs`` processes, on a free block of loopback addresses."""

    def __init__(self, count: int, procs: int) -> None:
        # 127.0.0.0/16 is where the sandbox kubelet hands out pod addresses; a /16 far above it,
        # chosen at random, keeps clear of other sandboxes on this host (port 8080 is fixed).
        for second in random.sample(range(100, 250), 20):
            ips = _addresses(second, count)
            # interleaved: the pool calls the agents in order, so every process gets its share
            # of any stretch of them (in blocks, one process would work while the other waits)
            children = [Child(_agents_process, ips[i::procs]) for i in range(min(procs, count))]
            failed = None
            for child in children:
                try:
                    child.answer()
                except OSError as exc:
                    failed = exc
            if failed is None:
                self.ips, self.children = ips, children
                return
            for child in children:
                child.stop()
            if failed.errno not in (errno.EADDRINUSE, errno.EADDRNOTAVAIL):
                raise failed
        raise RuntimeError(f"no free block of {count} loopback addresses for port {AGENT_PORT}")

    def reset(self) -> None:
        for child in self.children:
            child.call("reset")

    def fault(self, index: int) -> None:
        """The agent at ``ips[index]`` reports FAULTED (a worker crashed) until its next /stop."""
        self.children[index % len(self.children)].call("fault", self.ips[index])

    def stats(self) -> dict[str, int]:
        total: dict[str, Any] = {
            "status": 0,
            "start": 0,
            "bytes": 0,
            "cpu": 0.0,
            "rejections": 0,
            "rejected": [],
        }
        for child in self.children:
            for key, value in child.call("stats").items():
                total[key] += value
        return total

    def stop(self) -> None:
        for child in self.children:
            child.stop()


class KubeProcess(Child):
    def __init__(self) -> None:
        super().__init__(_kube_process)
        self.info = self.answer()
        self._ca = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench-kube-ca-{os.getpid()}.crt"
        self._ca.write_bytes(self.info["ca"])

    def client_configuration(self) -> Any:
        from kubernetes import client

        cfg = client.Configuration()
        cfg.host = self.info["url"]
        cfg.ssl_ca_cert = str(self._ca)
        cfg.verify_ssl = True
        cfg.api_key = {"authorization": self.info["token"]}
        cfg.api_key_prefix = {"authorization": "Bearer"}
        cfg.connection_pool_maxsize = kube_module.CONNECTION_POOL_SIZE
        return cfg

    def stop(self) -> None:
        super().stop()
        self._ca.unlink(missing_ok=True)


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


def create_job(kube: KubeProcess, store: MemoryStore, name: str, ips: list[str]) -> SupervisedJob:
    """The job and its pods in the API server's process, its JOB item here."""
    uid = kube.call("create", name, ips)
    record = JobRecord(
        cluster_arn=CLUSTER_ARN,
        uid=uid,
        namespace=NAMESPACE,
        name=name,
        phase=JobPhase.CREATING,
        nnodes=len(ips),
        spares=0,
        pods=[PodSlot(pod=pod_name(name, i), node=node_name(i), ip=ip) for i, ip in enumerate(ips)],
    )
    store.put(record, expected_version=None)
    return SupervisedJob(cluster_arn=CLUSTER_ARN, namespace=NAMESPACE, name=name, uid=uid)


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
    #: bytes the supervisor sent: to the API server, and (direct) to the agents
    sent: list[int] = field(default_factory=list)
    throttled_ms: list[float] = field(default_factory=list)
    #: CPU seconds of this process (the supervisor, all its threads) in the round
    cpu_s: list[float] = field(default_factory=list)
    #: CPU seconds of the fake agents' processes in the round
    agents_cpu_s: list[float] = field(default_factory=list)


class TimedAgentClient(AgentClient):
    """``AgentClient`` that adds up the time spent in ``call_all`` (the agents' part of a round),
    and keeps the time and the bodies' bytes of the last fan-out of ``/start``s."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.seconds = 0.0
        self.last_start: tuple[float, int] = (0.0, 0)

    def call_all(self, calls: Any) -> Any:
        calls = list(calls)
        began = time.perf_counter()
        try:
            return super().call_all(calls)
        finally:
            took = time.perf_counter() - began
            self.seconds += took
            if calls and calls[0].path == "/start":
                self.last_start = (took, sum(len(c.payload() or b"") for c in calls))


@dataclass
class Env:
    kube: KubeProcess
    agents: AgentProcesses


def measure(
    row: Row,
    step: Callable[[], Any],
    env: Env,
    agents: TimedAgentClient,
    limiter: RateLimiter | None,
    expect: str,
) -> None:
    calls0, seconds0 = agents.calls, agents.seconds
    waited0 = limiter.waited if limiter else 0.0
    kube0, agents0 = env.kube.call("stats"), env.agents.stats()
    started, cpu = time.perf_counter(), time.process_time()
    result = step()
    elapsed = (time.perf_counter() - started) * 1000
    row.cpu_s.append(time.process_time() - cpu)
    kube1, agents1 = env.kube.call("stats"), env.agents.stats()
    if result.next != expect:
        raise SystemExit(
            f"{row.round} of {row.agents} agents ({row.transport}): {result.next}: {result.reason}"
        )
    row.times_ms.append(elapsed)
    row.kube_calls.append(kube1["requests"] - kube0["requests"])
    row.kube_conns.append(kube1["connections"] - kube0["connections"])
    row.agent_calls.append(agents.calls - calls0)
    row.agent_ms.append((agents.seconds - seconds0) * 1000)
    sent = kube1["bytes"] - kube0["bytes"]
    if row.transport == "direct":
        sent += agents1["bytes"] - agents0["bytes"]
    row.sent.append(sent)
    row.agents_cpu_s.append(agents1["cpu"] - agents0["cpu"])
    row.throttled_ms.append(((limiter.waited if limiter else 0.0) - waited0) * 1000)


def run_size(
    env: Env,
    n: int,
    transport: str,
    rounds: int,
    pool: int,
    qps: float,
    name: str | None = None,
    rank_ips: str = "changed",
) -> list[Row]:
    store = MemoryStore()
    name = name or f"bench-{n}-{transport}"
    ref = create_job(env.kube, store, name, env.agents.ips[:n])
    # one ApiClient per job size and transport, as a cold Lambda: the first round opens the
    # connections (TLS), later rounds reuse them (a warm Lambda)
    from kubernetes import client

    api_client = client.ApiClient(env.kube.client_configuration())
    kube = KubeAdapter("bench", api_client=api_client)
    limiter = RateLimiter(qps) if transport == "proxy" else None
    agents = TimedAgentClient(
        ProxyTransport(kube, limiter=limiter) if limiter else DirectTransport(), pool_size=pool
    )
    sup = Supervisor(store=store, kube=kube, agents=agents, config=SupervisorConfig(rank_ips=rank_ips))
    request = StepInput(job=ref)
    start, poll = Row(n, transport, "start"), Row(n, transport, "poll")
    restart, restart_start = Row(n, transport, "restart"), Row(n, transport, "restart's /start")
    rejected0 = env.agents.stats()["rejections"]
    try:
        for i in range(rounds):
            env.agents.reset()  # new pods: agents holding no table, as at a job's start
            measure(start, lambda: supervisor.start_agents(request, sup), env, agents, limiter, "monitor")
            measure(poll, lambda: supervisor.poll(request, sup), env, agents, limiter, "running")
            env.agents.fault((i * 7919) % n)
            measure(restart, lambda: supervisor.remediate(request, sup), env, agents, limiter, "monitor")
            seconds, sent = agents.last_start
            restart_start.times_ms.append(seconds * 1000)
            restart_start.sent.append(sent)
    finally:
        api_client.close()
        env.kube.call("delete", name, n)
    after = env.agents.stats()
    if after["rejections"] != rejected0:
        raise SystemExit(f"agents refused /start: {after['rejected']}")
    return [poll, start, restart, restart_start]


def _spread(values: list[int]) -> str:
    if not values:
        return "-"
    low, high = min(values), max(values)
    return str(low) if low == high else f"{low}-{high}"


def _size(count: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if count < 1000 or unit == "GB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    return str(count)


def print_table(rows: list[Row]) -> None:
    head = (
        "agents",
        "transport",
        "round",
        "median s",
        "max s",
        "supervisor CPU s",
        "agents CPU s",
        "kubernetes calls",
        "agent calls",
        "agent-call s",
        "throttled s",
        "new TLS conns",
        "bytes sent",
        "bytes/agent",
    )

    def median(values: list[float], scale: float = 1.0) -> str:
        return f"{statistics.median(values) / scale:.2f}" if values else "-"

    table = [
        (
            str(r.agents),
            r.transport,
            r.round,
            median(r.times_ms, 1000),
            f"{max(r.times_ms) / 1000:.2f}",
            median(r.cpu_s),
            median(r.agents_cpu_s),
            _spread(r.kube_calls),
            _spread(r.agent_calls),
            median(r.agent_ms, 1000),
            median(r.throttled_ms, 1000),
            _spread(r.kube_conns),
            _size(statistics.median(r.sent)),
            _size(statistics.median(r.sent) / r.agents),
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
    parser.add_argument(
        "--agents", default="512,2048,4096", help="job sizes, comma-separated (default 512,2048,4096)"
    )
    parser.add_argument("--rounds", type=int, default=3, help="rounds of each kind per size (default 3)")
    parser.add_argument("--pool", type=int, default=32, help="AgentClient thread pool size (default 32)")
    parser.add_argument("--transport", choices=("proxy", "direct", "both"), default="both")
    parser.add_argument(
        "--proxy-qps",
        type=float,
        default=0.0,
        help="the proxy transport's rate limit (AGENT_PROXY_QPS; default 0: unthrottled, to measure "
        "the transport itself)",
    )
    parser.add_argument("--agent-procs", type=int, default=2, help="processes serving the fake agents")
    parser.add_argument(
        "--rank-ips",
        choices=("changed", "full"),
        default="changed",
        help="what a restart's /start carries (AGENT_RANK_IPS; default changed)",
    )
    args = parser.parse_args(argv)
    args.sizes = [int(s) for s in args.agents.split(",") if s.strip()]
    if not args.sizes or min(args.sizes) < 1 or args.rounds < 1 or args.pool < 1 or args.agent_procs < 1:
        parser.error("--agents, --rounds, --pool and --agent-procs must be positive")
    return args


@contextlib.contextmanager
def bench_env(sizes: list[int], procs: int) -> Iterator[Env]:
    agents = AgentProcesses(max(sizes), procs)
    kube = None
    try:
        kube = KubeProcess()
        yield Env(kube=kube, agents=agents)
    finally:
        if kube is not None:
            kube.stop()
        agents.stop()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    transports = ["proxy", "direct"] if args.transport == "both" else [args.transport]
    began = time.perf_counter()
    rows: list[Row] = []
    with bench_env(args.sizes, args.agent_procs) as env:
        # not measured: the process's first use of each Kubernetes API builds the client's models
        # (about a second, once per Lambda container, not per round)
        for transport in transports:
            run_size(env, 1, transport, 1, args.pool, args.proxy_qps, name=f"warmup-{transport}")
        for n in args.sizes:
            for transport in transports:
                rows.extend(
                    run_size(
                        env, n, transport, args.rounds, args.pool, args.proxy_qps, rank_ips=args.rank_ips
                    )
                )
    qps = f"{args.proxy_qps:g}/s" if args.proxy_qps > 0 else "off"
    print(
        f"Supervisor rounds: median of {args.rounds} of each per job size; agent pool {args.pool} "
        f"threads (AGENT_POOL_SIZE), Kubernetes connection pool {kube_module.CONNECTION_POOL_SIZE}, "
        f"proxy rate limit {qps} (AGENT_PROXY_QPS); {os.cpu_count()} CPUs shared by this process "
        f"(the supervisor), the API server's and {args.agent_procs} agent processes."
    )
    print(
        "One Lambda invocation does one round (supervisor.poll / supervisor.start_agents) whatever "
        "the job's size: no Step Functions Map state, so 1 invocation and the same state "
        "transitions per round for 8 or 4,096 agents."
    )
    print(
        "supervisor CPU s = CPU time of the supervisor's process in the round (all its threads): "
        "its own cost, whatever the other processes took; agents CPU s = the fake agents' processes' "
        "CPU time in the round (on production nodes, each agent's own); "
        "kubernetes calls = HTTP requests the API server handled in the round (proxy: one per agent "
        "call, plus the step's own: poll reads the job and lists the pods; start reads the job and "
        "patches its status); agent calls = AgentClient.calls; agent-call s = the part of the round "
        "in AgentClient.call_all; throttled s = time the pool's threads waited on the proxy's rate "
        "limit, summed; new TLS conns = connections the API server accepted in the round (each size "
        "starts with a fresh ApiClient, as a Lambda's first round does); bytes sent = what the "
        "supervisor sent in the round (request lines, headers, bodies): to the API server, and for "
        "direct to the agents too (restart's /start: the /start bodies alone). A first start's bytes "
        "are the rank table (about 35 bytes a rank) times the agents: each new agent needs the whole "
        "table once. A restart's /start sends agents holding the job's table only the changed ranks "
        f"(--rank-ips {args.rank_ips}); poll and restart rounds are linear in the agents."
    )
    print()
    print_table(rows)
    print()
    if "proxy" in transports:
        floor = ", ".join(f"{n:,} agents {n / DEFAULT_PROXY_QPS:.1f} s" for n in args.sizes)
        print(
            f"With the production rate limit (AGENT_PROXY_QPS={DEFAULT_PROXY_QPS:g}, one invocation), a "
            f"proxied round lasts at least agents / {DEFAULT_PROXY_QPS:g} s whatever the API server's "
            f"speed: {floor}."
        )
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"total {time.perf_counter() - began:.1f} s; load average at the end {load} (1, 5, 15 min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
