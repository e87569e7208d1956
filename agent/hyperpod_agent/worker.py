"""The worker-side API: what a training script calls to survive faults in process.

Use it like this (the same script also runs under a process-restart agent, where ``barrier()``
returns at once and a fault ends the process)::

    from hyperpod_agent.worker import InProcessRestart, CheckpointClient

    ipr = InProcessRestart()
    ckpt = CheckpointClient("model")

    def train(info):                      # info: RankInfo (rank, world_size, restart_count, ...)
        ipr.init_process_group("gloo")    # fresh process group for this attempt
        start = load(ckpt.latest())       # the step every rank of the job finished
        for step in range(start, steps):
            ipr.check()                   # raises RestartRequested when the agent pauses us
            ...                           # forward, backward, all-reduce
            ckpt.update(step, path)       # after a checkpoint is written

    ipr.run(train)                        # barrier -> train -> on a fault: report, tear down, loop

How a fault is contained: gloo cannot abort a collective in progress, so a survivor blocked in an
all-reduce waits until a peer's connection closes. ``run`` therefore tears the process group down
as soon as an attempt fails; the closed connections make every peer's pending collective fail at
once, they tear down in turn, and all ranks are back at the barrier without waiting for the
process-group timeout. A rank stuck outside collectives is the agent's to handle: after
``--inprocess-timeout`` it falls back to a process restart.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import queue
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .ipc import SOCKET_ENV, recv_message, send_message

logger = logging.getLogger(__name__)

INPROCESS_ENV = "HYPERPOD_INPROCESS_RESTART"


class RestartRequested(Exception):
    """The agent asked this worker to leave its training step and go back to the barrier."""


class AgentUnavailable(RuntimeError):
    """The worker is not running under hyperpodrun (no socket path) or the agent went away."""


@dataclass
class RankInfo:
    rank: int
    local_rank: int
    world_size: int
    local_world_size: int
    group_rank: int
    master_addr: str
    master_port: int
    restart_count: int
    spare: bool = False
    envs: dict[str, str] = field(default_factory=dict)
    aggregate_worker_data: Any = None

    @classmethod
    def from_env(cls, env: dict[str, str] | os._Environ) -> RankInfo:
        return cls(
            rank=int(env.get("RANK", 0)),
            local_rank=int(env.get("LOCAL_RANK", 0)),
            world_size=int(env.get("WORLD_SIZE", 1)),
            local_world_size=int(env.get("LOCAL_WORLD_SIZE", 1)),
            group_rank=int(env.get("GROUP_RANK", 0)),
            master_addr=env.get("MASTER_ADDR", "127.0.0.1"),
            master_port=int(env.get("MASTER_PORT", 29500) or 29500),
            restart_count=int(env.get("TORCHELASTIC_RESTART_COUNT", 0)),
            spare=env.get("SPARE", "False") == "True",
            envs={k: v for k, v in env.items()},
        )


class _Connection:
    """One connection per process to the agent, shared by InProcessRestart and CheckpointClient.
    A reader thread sorts what the agent sends: control messages to ``control``, replies to
    ``replies``."""

    _instance: _Connection | None = None
    _instance_lock = threading.Lock()

    def __init__(self, path: str, local_rank: int):
        self.local_rank = local_rank
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)
        self._send_lock = threading.Lock()
        self.control: queue.Queue[dict | None] = queue.Queue()
        self.replies: queue.Queue[dict] = queue.Queue()
        self.fault_requested = threading.Event()
        self.closed = threading.Event()
        self.send({"type": "init", "local_rank": local_rank, "client_id": str(os.getpid())})
        threading.Thread(target=self._read, name="hyperpod-agent-client", daemon=True).start()

    @classmethod
    def get(cls) -> _Connection | None:
        path = os.environ.get(SOCKET_ENV)
        if not path:
            return None
        with cls._instance_lock:
            if cls._instance is None or cls._instance.closed.is_set():
                cls._instance = cls(path, int(os.environ.get("LOCAL_RANK", 0)))
            return cls._instance

    def send(self, message: dict) -> None:
        with self._send_lock:
            send_message(self.sock, message)

    def _read(self) -> None:
        try:
            while True:
                message = recv_message(self.sock)
                if message is None:
                    break
                kind = message["type"]
                if kind == "job_fault":
                    # Set here, not in the main thread: the main thread may be inside a collective.
                    self.fault_requested.set()
                    self.control.put(message)
                elif kind in ("job_start", "job_rank_info"):
                    self.control.put(message)
                else:
                    self.replies.put(message)
        except (OSError, ValueError):
            pass
        finally:
            self.closed.set()
            self.control.put(None)


class InProcessRestart:
    """The re-executable block's client: barrier, fault reporting, process-group lifecycle."""

    def __init__(self) -> None:
        self.enabled = os.environ.get(INPROCESS_ENV) == "1"
        self._conn = _Connection.get()
        if self.enabled and self._conn is None:
            raise AgentUnavailable(
                f"{INPROCESS_ENV}=1 but {SOCKET_ENV} is not set: start the script with hyperpodrun"
            )
        self.info: RankInfo | None = None
        self._entered_once = False
        self._store = None
        self._store_key: tuple | None = None

    # -- barrier -------------------------------------------------------------------------------
    def barrier(self, timeout: float | None = None) -> RankInfo:
        """Wait until the agent releases this worker with its rank (``POST /start``), apply the
        rank environment to ``os.environ`` and return it. Without in-process restart, return the
        environment the agent started the process with, once."""
        if not self.enabled:
            if self._entered_once:
                raise RuntimeError(
                    "barrier() re-entered without --inprocess-restart: the process should exit"
                )
            self._entered_once = True
            self.info = RankInfo.from_env(os.environ)
            return self.info
        conn = self._require_conn()
        # Forget control messages of the attempt that just ended (a job_fault sent while we were
        # already on our way back must not abort the next attempt).
        with contextlib.suppress(queue.Empty):
            while True:
                if conn.control.get_nowait() is None:
                    raise AgentUnavailable("the agent closed the connection")
        conn.fault_requested.clear()
        conn.send({"type": "at_rcb_barrier", "local_rank": conn.local_rank})
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            wait = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                message = conn.control.get(timeout=wait)
            except queue.Empty:
                raise TimeoutError(f"not released from the barrier within {timeout}s") from None
            if message is None:
                raise AgentUnavailable(
                    "the agent closed the connection while this worker waited at the barrier"
                )
            if message["type"] == "job_start":
                break
            # job_fault while waiting: we are already where the agent wants us.
        conn.fault_requested.clear()
        envs = {str(k): str(v) for k, v in (message.get("worker_envs") or {}).items()}
        os.environ.update(envs)
        self.info = RankInfo.from_env(os.environ)
        self.info.aggregate_worker_data = message.get("aggregate_worker_data")
        conn.send({"type": "past_rcb_barrier", "local_rank": conn.local_rank})
        return self.info

    # -- faults ----------------------------------------------------------------------------------
    @property
    def fault_requested(self) -> bool:
        return self._conn is not None and self._conn.fault_requested.is_set()

    def check(self) -> None:
        """Raise RestartRequested if the agent asked this worker to go back to the barrier. Call it
        between steps; it costs an Event lookup."""
        if self.fault_requested:
            raise RestartRequested("the agent requested an in-process restart")

    def report_fault(
        self,
        reason: str = "WorkerReportedFault",
        message: str = "",
        restart_mode: str = "in_process_restart",
    ) -> None:
        """Tell the agent this worker hit a fault. ``restart_mode`` asks for escalation:
        ``process_level_restart`` or ``job_level_restart`` (reported in /status restartMode)."""
        if self._conn is None:
            logger.error("fault not reported (no agent): %s %s", reason, message)
            return
        rank = self.info.rank if self.info else int(os.environ.get("RANK", 0))
        payload = {"type": "job_fault", "rank": rank, "restart_mode": restart_mode, "reason": reason}
        payload["message"] = message[:4000]
        with contextlib.suppress(OSError):
            self._conn.send(payload)

    def send_data(self, data: str) -> None:
        """Opaque per-rank data the control plane aggregates and returns in the next job_start."""
        conn = self._require_conn()
        conn.send({"type": "job_data", "rank": self.info.rank if self.info else 0, "data": data})

    def notify_labels(self, labels: dict[str, str]) -> None:
        self._require_conn().send(
            {"type": "rank_labels", "labels": {str(k): str(v) for k, v in labels.items()}}
        )

    # -- process group -------------------------------------------------------------------------
    def init_process_group(self, backend: str = "gloo", timeout: dt.timedelta | None = None):
        """Create this attempt's default process group from the released rank info.

        The TCPStore that rank 0 hosts on MASTER_PORT is kept across attempts while this process
        stays rank 0 at the same address (its port cannot be bound twice), and each attempt uses
        its own key prefix, so keys of a failed attempt never leak into the next."""
        import torch.distributed as dist

        info = self.info or RankInfo.from_env(os.environ)
        timeout = timeout or dt.timedelta(seconds=int(os.environ.get("HYPERPOD_PG_TIMEOUT", 300)))
        # Under plain torchrun (c10d rendezvous) the launcher already hosts the store on MASTER_PORT.
        agent_store = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
        is_master = info.rank == 0 and not agent_store
        key = (info.master_addr, info.master_port, is_master)
        if self._store is None or self._store_key != key or not is_master:
            # Clients reconnect every attempt: the server they knew may have been restarted.
            self._store = dist.TCPStore(
                info.master_addr,
                info.master_port,
                is_master=is_master,
                timeout=timeout,
                wait_for_workers=False,
            )
            self._store_key = key
        # The control plane raises faultCount on every restart, so it names the attempt job-wide.
        store = dist.PrefixStore(f"hyperpod/attempt/{info.restart_count}", self._store)
        dist.init_process_group(
            backend, store=store, rank=info.rank, world_size=info.world_size, timeout=timeout
        )

    @staticmethod
    def destroy_process_group() -> None:
        """Tear the default process group down; closing its connections is what unblocks peers
        waiting in a collective (gloo has no abort)."""
        try:
            import torch.distributed as dist
        except ImportError:
            return
        if dist.is_available() and dist.is_initialized():
            with contextlib.suppress(Exception):
                dist.destroy_process_group()

    # -- the loop ------------------------------------------------------------------------------
    def run(self, train: Callable[[RankInfo], Any]) -> Any:
        """barrier -> ``train(info)`` -> return its result; on an exception report it (unless the
        agent asked for the restart), tear the process group down and go back to the barrier.
        Without in-process restart the exception is reported and re-raised, ending the process."""
        while True:
            info = self.barrier()
            try:
                return train(info)
            except RestartRequested:
                logger.info("rank %s: restart requested by the agent", info.rank)
            except Exception as exc:
                if not self.fault_requested:
                    self.report_fault("WorkerReportedFault", f"rank {info.rank}: {type(exc).__name__}: {exc}")
                if not self.enabled:
                    raise
                logger.warning("rank %s: attempt failed (%s); back to the barrier", info.rank, exc)
            finally:
                self.destroy_process_group()

    def _require_conn(self) -> _Connection:
        if self._conn is None:
            raise AgentUnavailable(f"{SOCKET_ENV} is not set: start the script with hyperpodrun")
        return self._conn


class CheckpointClient:
    """Checkpoint progress: report each checkpoint written, ask for the one to resume from.

    ``checkpoint_types`` says how many reports of each type make a step complete for this rank
    (e.g. {"model_checkpoint": 1, "data_checkpoint": 1}); the agent reports in /status the highest
    step every local rank completed, the control plane aggregates it over pods and returns it in
    the next /start, and ``latest()`` gives it back after a restart."""

    def __init__(self, prefix: str, model_checkpoints: int = 1, data_checkpoints: int = 0):
        self.prefix = prefix
        self._conn = _Connection.get()
        if self._conn is not None:
            types = {"model_checkpoint": model_checkpoints}
            if data_checkpoints:
                types["data_checkpoint"] = data_checkpoints
            self._conn.send({"type": "ckpt_init", "prefix": prefix, "checkpoint_types": types})

    def update(self, step: int, path: str, checkpoint_type: str = "model_checkpoint") -> None:
        if self._conn is None:
            return
        self._conn.send(
            {
                "type": "ckpt_info_update",
                "prefix": self.prefix,
                "step": int(step),
                "path": str(path),
                "checkpoint_type": checkpoint_type,
            }
        )

    def latest(self, timeout: float = 30.0) -> tuple[str, int] | None:
        """(path, step) of the latest checkpoint the whole job finished, or None."""
        if self._conn is None:
            return None
        self._conn.send({"type": "ckpt_info_get", "prefix": self.prefix})
        deadline = time.monotonic() + timeout
        while True:
            try:
                reply = self._conn.replies.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise TimeoutError(f"no checkpoint info from the agent within {timeout}s") from None
            if reply.get("type") == "ckpt_info" and reply.get("prefix") == self.prefix:
                break
        if reply.get("path") is None:
            return None
        return str(reply["path"]), int(reply["step"])


_elastic_event = threading.Event()


def install_elastic_event_handler() -> None:
    """Turn SIGUSR1 (a graceful /stop) into a flag that ``elastic_event_detected()`` reads, so the
    training loop can checkpoint and exit cleanly within the stop timeout."""
    signal.signal(signal.SIGUSR1, lambda *_: _elastic_event.set())


def elastic_event_detected() -> bool:
    """Whether the agent asked for a graceful stop. With HYPERPOD_SIGNAL_COORDINATION=distributed
    the flag is all-reduced (MAX) over the default process group, so every rank stops at the same
    step."""
    flag = _elastic_event.is_set()
    if os.environ.get("HYPERPOD_SIGNAL_COORDINATION", "disabled") == "distributed":
        import torch
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            t = torch.tensor([int(flag)])
            dist.all_reduce(t, op=dist.ReduceOp.MAX)
            flag = bool(t.item())
    return flag
