"""The HyperPod elastic agent: torchelastic's LocalElasticAgent driven by a control plane.

torchelastic's agent restarts workers on its own and finds its peers through a rendezvous. This one
does neither: the control plane decides, over HTTP, when workers start (``/start``), with which
rank, and when they stop (``/stop``); the agent reports what happened (``/status``). The control
loop runs in the main thread and reacts to (agent state x worker state) every
``--monitor-interval`` or as soon as an HTTP or worker message wakes it. The HTTP server and the
worker socket only call the agent's callbacks and never block on the control loop.

Two restart modes:
- process restart (default): a stop kills the workers; the next /start spawns new ones, after the
  pre-train stage again;
- in-process restart (``--inprocess-restart``): workers are spawned at once and wait at a barrier
  (hyperpod_agent.worker); a stop sends them back to the barrier and the next /start releases them
  with their new rank. A dead worker, a worker that does not reach the barrier within
  ``--inprocess-timeout``, or a /stop asking for ``process_level_restart`` falls back to a local
  process restart.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from enum import StrEnum
from string import Template
from typing import Any

from torch.distributed.elastic.agent.server.api import RunResult, Worker, WorkerGroup, WorkerSpec, WorkerState
from torch.distributed.elastic.agent.server.local_elastic_agent import LocalElasticAgent
from torch.distributed.elastic.multiprocessing import DefaultLogsSpecs, LogsSpecs, start_processes
from torch.distributed.elastic.multiprocessing.api import SignalException, _terminate_process_handler
from torch.distributed.elastic.utils import macros

from . import __version__
from .config import HyperPodOptions
from .errors import InvalidStateError
from .events import EventPublisher
from .ipc import SOCKET_ENV, IpcServer, default_socket_path
from .logmon import LogMonitor
from .logtap import OutputTap
from .models import StopRequest, master_outside, parse_start, parse_stop
from .rendezvous import HyperPodRendezvousHandler, RankAssignment
from .server import ControlCallbacks
from .standby import StandbyContext, StandbyPool
from .state import IPR_TRANSITIONS, PLR_TRANSITIONS, AgentState, StateMachine

logger = logging.getLogger(__name__)

S = AgentState
HANDLED_SIGNALS = ("SIGTERM", "SIGINT", "SIGHUP", "SIGQUIT")
REPORT_GRACE_S = 0.1  # how long a worker-reported fault waits for a process death that caused it


class Stage(StrEnum):
    PRE_TRAIN = "pre_train"
    TRAIN = "train"
    POST_TRAIN = "post_train"


class RestartMode(StrEnum):
    IN_PROCESS = "in_process_restart"
    PROCESS = "process_level_restart"
    JOB = "job_level_restart"


class _StageLogsSpecs(DefaultLogsSpecs):
    """Pre- and post-train logs in their own run directory (``pre_train_<run_id>_*``), so the
    training stage's attempt directory (which torch clears on reuse) never swallows them."""

    def __init__(self, stage: Stage, **kwargs):
        super().__init__(**kwargs)
        self._stage = stage

    def _make_log_dir(self, log_dir: str | None, rdzv_run_id: str):
        return super()._make_log_dir(log_dir, f"{self._stage.value}_{rdzv_run_id}")


@dataclass
class _Channel:
    """What the agent knows of one local rank's worker-API connection."""

    client_id: str
    at_barrier: bool = False


@dataclass
class _Progress:
    """Checkpoint progress per prefix: which steps each local rank completed (1.10)."""

    types: dict[str, int] = field(default_factory=dict)
    reports: dict[int, dict[int, dict[str, int]]] = field(default_factory=dict)  # rank -> step -> type -> n
    paths: dict[int, str] = field(default_factory=dict)  # step -> path (local rank 0's, else first seen)

    def complete_step(self, local_world_size: int) -> int | None:
        need = self.types or {"model_checkpoint": 1}
        done: set[int] | None = None
        for rank in range(local_world_size):
            steps = {
                s
                for s, counts in self.reports.get(rank, {}).items()
                if all(counts.get(t, 0) >= n for t, n in need.items())
            }
            done = steps if done is None else done & steps
        return max(done) if done else None


class HyperPodElasticAgent(LocalElasticAgent):
    def __init__(
        self,
        spec: WorkerSpec,
        logs_specs: LogsSpecs,
        options: HyperPodOptions,
        rdzv: HyperPodRendezvousHandler,
        *,
        start_method: str = "spawn",
        log_line_prefix_template: str | None = None,
        stage_logs: dict[str, Any] | None = None,
        events: EventPublisher | None = None,
        socket_path: str | None = None,
    ):
        # Every local rank's stdout passes through the agent: the log rules read all of it, with or
        # without --tee, and what would have gone to the console still does, unchanged.
        log_monitor = LogMonitor()
        self._tap = OutputTap(log_monitor.feed)
        logs_specs = self._tap.wrap(logs_specs)
        super().__init__(
            spec,
            logs_specs,
            start_method=start_method,
            log_line_prefix_template=log_line_prefix_template,
            shutdown_timeout=options.shutdown_timeout,
        )
        self._opts = options
        self._rdzv = rdzv
        self._ipr = options.inprocess_restart
        self._train_spec = spec
        self._train_logs = logs_specs
        self._stage_logs_kwargs = stage_logs or {}
        self._events = events
        self._sm = StateMachine(
            S.INIT if self._ipr else S.READY, IPR_TRANSITIONS if self._ipr else PLR_TRANSITIONS
        )
        self._sm.on_change = self._on_state_change
        self._lock = self._sm.lock
        self._wake = False
        self._stages = [
            s
            for s, on in (
                (Stage.PRE_TRAIN, options.pre_train_script),
                (Stage.TRAIN, True),
                (Stage.POST_TRAIN, options.post_train_script),
            )
            if on
        ]
        self._stage_index = 0
        self._stage: Stage | None = None  # the stage whose processes are alive (or just ended)
        self._workers_failed = False
        self._spare = False
        self._started_once = False
        self._priority = not self._ipr
        self._stop_request: StopRequest | None = None
        self._stop_deadline: float | None = None
        self._stop_paused_sent = False
        self._escalation: RestartMode | None = None
        self._operator_progress: dict = {}
        self._progress: dict[str, _Progress] = {}
        self._worker_data: dict[int, dict] = {}
        self._rank_labels: dict[str, str] = {}
        self._channels: dict[int, _Channel] = {}
        self._reported_ranks: set[int] = set()  # local ranks that reported a fault this attempt
        self._pending_reports: list[tuple[float, str, str]] = []
        self._released: set[int] = set()  # IPR: local ranks released from the barrier since /start
        self._log_monitor = log_monitor
        self._standby = StandbyPool() if options.process_standby and not self._ipr else None
        self._ipc = IpcServer(
            socket_path or default_socket_path(), self._on_ipc_message, self._on_ipc_disconnect
        )
        self._exit_code = 0

    # ======================================================================================
    # Callbacks for the control server (HTTP threads). They change state and wake the loop.
    # ======================================================================================
    def callbacks(self) -> ControlCallbacks:
        return ControlCallbacks(
            status=self.status, start=self.start, update=self.update, stop=self.stop, shutdown=self.shutdown
        )

    def status(self) -> dict:
        with self._lock:
            out: dict[str, Any] = {
                "status": self._sm.state.value.lower(),
                "transitions": dict(self._sm.transitions),
                "agent_version": __version__,
                "restartMode": (
                    self._escalation or (RestartMode.IN_PROCESS if self._ipr else RestartMode.PROCESS)
                ).value,
                "spare": str(self._spare),
                # Not in the HyperPod agent: a spare /started with spare: true runs no worker until
                # promoted, in either restart mode (AWS's process-restart agent ignores spare), so
                # the control plane may /start our spares ahead of their promotion.
                "holds_spares": "True",
            }
            if self._sm.reason is not None:
                out["reason"] = self._sm.reason
            if self._sm.message is not None:
                out["message"] = self._sm.message
            if self._rdzv.ip_version is not None:
                out["ipversion"] = self._rdzv.ip_version
            if self._rdzv.assigned:
                out["assigned_rank"] = str(self._rdzv.assignment.group_rank)
            progress = self._current_progress()
            if progress:
                out["progress"] = progress
            if self._priority and not self._spare:
                out["priority"] = "True"
            if self._worker_data:
                out["worker_data"] = [self._worker_data[r] for r in sorted(self._worker_data)]
            if self._rank_labels:
                out["rank_labels"] = dict(self._rank_labels)
            # Not in the HyperPod agent: the live worker processes, for people and tests inspecting a pod.
            if self._pcontext is not None and self._stage is not None:
                out["workers"] = {
                    "stage": self._stage.value,
                    "pids": {str(k): v for k, v in self._pcontext.pids().items()},
                }
            return out

    def start(self, body: Any) -> None:
        req = parse_start(body)  # 422 before anything changes
        with self._lock:
            state = self._sm.state
            if state is not S.READY:
                raise InvalidStateError(
                    f"/start needs the agent READY, it is {state.value.lower()}"
                    + (
                        "; send /stop and wait for ready"
                        if state in (S.RUNNING, S.FAULTED, S.COMPLETED)
                        else ""
                    )
                    + ("; the workers have not all reached the barrier yet" if state is S.INIT else "")
                )
            self._apply_assignment(req)
            if req.progress is not None:
                self._operator_progress = req.progress
            self._started_once = True
            self._released.clear()
            self._priority = False
            self._escalation = None
            # RUNNING at once, before any process exists, so a poll right after /start never sees
            # READY and sends a second /start (the HyperPod agent does the same).
            self._sm.transition(S.RUNNING, "RunningStarted", None, only_from={S.READY})
            self._poke()

    def update(self, body: Any) -> dict:
        req = parse_start(body, with_progress=False)
        with self._lock:
            self._apply_assignment(req)
            self._poke()
        return self.status()

    def _apply_assignment(self, req) -> None:
        if req.rank_ips and len({r.rank for r in req.rank_ips}) < req.nnodes:
            # Only the changed ranks: the master must be among the table they make (422 if not).
            master_outside(req.master_addr, [ip for ip in self._rdzv.merged_ips(req.rank_ips) if ip])
        self._rdzv.assign(
            RankAssignment(req.rank, req.nnodes, req.fault_count, req.master_addr, req.master_port),
            req.rank_ips,
            req.ip_version,
            req.rank_ips_sent,
        )
        self._spare = req.spare
        if req.log_rules is not None:
            self._log_monitor.set_rules(req.log_rules)
        if req.worker_data is not None:
            self._aggregate_worker_data = req.worker_data

    def stop(self, body: Any) -> None:
        req = parse_stop(body)
        with self._lock:
            if self._sm.state in (S.RUNNING, S.FAULTED, S.COMPLETED):
                self._stop_request = req
                self._pending_reports.clear()  # the stop answers them
                self._stop_deadline = None
                self._stop_paused_sent = False
                self._sm.transition(S.STOPPING, "Stopping", None)
                self._poke()
            else:
                # Idempotent: the control plane stops every agent, ready ones included.
                logger.info("/stop in state %s: nothing to stop", self._sm.state.value)

    def shutdown(self) -> None:
        with self._lock:
            self._sm.transition(S.SHUTDOWN, "Shutdown", "shutdown requested by the control plane")
            self._poke()

    def _poke(self) -> None:
        with self._lock:
            self._wake = True
            self._sm.changed.notify_all()

    # ======================================================================================
    # Callbacks for the worker socket (IPC threads).
    # ======================================================================================
    def _on_ipc_message(self, local_rank: int, client_id: str, msg: dict) -> None:
        kind = msg["type"]
        with self._lock:
            ch = self._channels.get(local_rank)
            if ch is None or ch.client_id != client_id:
                ch = self._channels[local_rank] = _Channel(client_id)
            if kind == "at_rcb_barrier":
                ch.at_barrier = True
            elif kind == "past_rcb_barrier":
                ch.at_barrier = False
            elif kind == "job_fault":
                self._on_worker_fault(local_rank, msg)
            elif kind == "job_data":
                self._worker_data[local_rank] = {
                    "rank": msg.get("rank"),
                    "group_rank": self._rdzv.assignment.group_rank,
                    "local_rank": local_rank,
                    "failed": False,
                    "data": msg.get("data"),
                }
            elif kind == "rank_labels":
                self._rank_labels.update(msg.get("labels") or {})
            elif kind == "ckpt_init":
                prog = self._progress.setdefault(str(msg.get("prefix")), _Progress())
                prog.types = {str(k): int(v) for k, v in (msg.get("checkpoint_types") or {}).items()}
            elif kind == "ckpt_info_update":
                prog = self._progress.setdefault(str(msg.get("prefix")), _Progress())
                step = int(msg["step"])
                counts = prog.reports.setdefault(local_rank, {}).setdefault(step, {})
                ctype = str(msg.get("checkpoint_type", "model_checkpoint"))
                counts[ctype] = counts.get(ctype, 0) + 1
                if local_rank == 0 or step not in prog.paths:
                    prog.paths[step] = str(msg.get("path"))
            elif kind == "ckpt_info_get":
                prefix = str(msg.get("prefix"))
                entry = self._operator_progress.get(prefix) or {}
                reply = {
                    "type": "ckpt_info",
                    "prefix": prefix,
                    "path": entry.get("progressData"),
                    "step": entry.get("progressCount"),
                }
                threading.Thread(target=self._ipc.send, args=(local_rank, reply), daemon=True).start()
            else:
                logger.warning("unknown worker message %r from local rank %s", kind, local_rank)
            self._poke()

    def _on_worker_fault(self, local_rank: int, msg: dict) -> None:
        mode = str(msg.get("restart_mode") or "").lower()
        # Escalation only rises (job > process); local_prl is treated as a process restart request.
        if mode == RestartMode.JOB.value:
            self._escalation = RestartMode.JOB
        elif mode in (RestartMode.PROCESS.value, "local_prl") and self._escalation is not RestartMode.JOB:
            self._escalation = RestartMode.PROCESS
        if local_rank in self._worker_data:
            self._worker_data[local_rank]["failed"] = True
        self._reported_ranks.add(local_rank)
        reason = str(msg.get("reason") or "WorkerReportedFault")
        message = (
            f"local rank {local_rank} (rank {msg.get('rank')}): {msg.get('message') or 'fault reported'}"
        )
        if self._sm.state is not S.RUNNING:
            logger.info("fault from local rank %s while %s: %s", local_rank, self._sm.state.value, message)
            return
        # Not FAULTED yet: the control loop decides within REPORT_GRACE_S, after it has looked at
        # the processes. When a peer is killed, the survivors' reports (their collective lost the
        # peer) can arrive before the kernel lets us reap the dead process, and the death is the
        # cause the control plane must see.
        self._pending_reports.append((time.monotonic(), reason, message))

    def _on_ipc_disconnect(self, local_rank: int, client_id: str) -> None:
        with self._lock:
            ch = self._channels.get(local_rank)
            if ch is not None and ch.client_id == client_id:
                del self._channels[local_rank]
            self._poke()

    def _current_progress(self) -> dict:
        out = {}
        for prefix, prog in self._progress.items():
            step = prog.complete_step(self._train_spec.local_world_size)
            if step is not None:
                out[prefix] = {"progressData": prog.paths.get(step), "progressCount": step}
        return out

    # ======================================================================================
    # The run template: set up, loop, always shut down in finally.
    # ======================================================================================
    def run(self, role: str = "default") -> RunResult:  # type: ignore[override]
        shutdown_sig = self._opts.shutdown_signal
        try:
            self._install_signal_handlers()
            self._ipc.start()
            self._invoke_run(role)
            return RunResult(state=WorkerState.SUCCEEDED)
        except SignalException as e:
            logger.warning(
                "received %s: stopping workers (%s, %ss) and exiting",
                e.sigval.name,
                shutdown_sig.name,
                self._opts.shutdown_timeout,
            )
            self._exit_code = 128 + int(e.sigval)
            raise
        finally:
            self._stop_stage(shutdown_sig, self._opts.shutdown_timeout)
            self._log_monitor.stop()
            self._tap.stop()
            if self._standby is not None:
                self._standby.discard()
            self._ipc.stop()
            if self._events is not None:
                self._events.close()

    @property
    def exit_code(self) -> int:
        return self._exit_code

    def _install_signal_handlers(self) -> None:
        # torch's own handler (what torchrun uses): the signal becomes a SignalException in the main
        # thread, which unwinds into run()'s finally and stops the workers.
        names = [
            s.strip()
            for s in os.environ.get("TORCHELASTIC_SIGNALS_TO_HANDLE", ",".join(HANDLED_SIGNALS)).split(",")
        ]
        for name in names:
            if name and hasattr(signal, name):
                signal.signal(getattr(signal, name), _terminate_process_handler)

    def _on_state_change(self, state: AgentState, reason: str | None, message: str | None) -> None:
        if self._events is not None and state in (S.FAULTED, S.COMPLETED):
            a = self._rdzv.assignment
            self._events.publish(
                state.value, reason, message, a.group_rank if self._rdzv.assigned else None, a.fault_count
            )

    def _invoke_run(self, role: str = "default") -> None:
        interval = self._train_spec.monitor_interval
        while True:
            with self._lock:
                self._sm.changed.wait_for(lambda: self._wake, timeout=interval)
                self._wake = False
                state = self._sm.state
            if state is S.SHUTDOWN:
                logger.info("shutdown: stopping workers and exiting")
                return
            if state is S.STOPPING:
                if self._ipr:
                    self._stopping_ipr()
                else:
                    self._stopping_plr()
                continue
            self._step(state)

    # ----------------------------------------------------------------------------------------
    def _step(self, state: AgentState) -> None:
        """One reaction to (agent state x worker state), outside STOPPING and SHUTDOWN."""
        if self._pcontext is None:
            if self._may_launch(state):
                self._launch(self._stages[self._stage_index])
            return
        if self._workers_failed:
            return  # reported; waiting for /stop
        result = self._monitor_workers(self._worker_group)
        with self._lock:
            reports = list(self._pending_reports)
        if result.state is WorkerState.FAILED:
            self._workers_failed = True
            self._log_monitor.detach()
            description = self._describe_failure(result)
            if reports:
                description += f" (then: {reports[0][2]})"
            with self._lock:
                self._pending_reports.clear()
                crashed = {f.local_rank for f in result.failures.values()} - self._reported_ranks
                changed = self._sm.transition(
                    S.FAULTED, "WorkerCrash", description, only_from={S.RUNNING, S.INIT, S.READY}
                )
                # Already FAULTED by a report that came before the death was visible: a rank that
                # died without reporting is the root cause, so say so.
                if not changed and crashed and self._sm.reason == "WorkerReportedFault":
                    self._sm.amend(S.FAULTED, "WorkerCrash", f"{description} (then: {self._sm.message})")
            return
        if reports and time.monotonic() - reports[0][0] >= REPORT_GRACE_S:
            with self._lock:
                self._pending_reports.clear()
            _, reason, message = reports[0]
            self._sm.transition(S.FAULTED, reason, message, only_from={S.RUNNING})
            return
        if result.state is WorkerState.SUCCEEDED:
            finished = self._stage
            self._stop_stage(signal.SIGKILL, 0)
            self._stage_index += 1
            if self._stage_index >= len(self._stages):
                self._sm.transition(
                    S.COMPLETED,
                    "AllStagesSucceeded",
                    f"{finished.value} stage succeeded",
                    only_from={S.RUNNING},
                )
            elif state is S.RUNNING or (self._ipr and finished is Stage.PRE_TRAIN):
                self._launch(self._stages[self._stage_index])
            return
        if self._stage is Stage.TRAIN:
            if self._ipr:
                self._step_barrier(state)
            if state is S.RUNNING:
                verdict = self._log_monitor.verdict()
                if verdict is not None:
                    self._sm.transition(S.FAULTED, verdict.reason, verdict.message, only_from={S.RUNNING})

    def _may_launch(self, state: AgentState) -> bool:
        if self._stage_index >= len(self._stages):
            return False
        stage = self._stages[self._stage_index]
        if self._ipr and stage is not Stage.POST_TRAIN:
            return state in (S.INIT, S.READY, S.RUNNING)  # IPR spawns before /start
        return state is S.RUNNING and not self._spare  # a spare holds its workers until promoted

    def _step_barrier(self, state: AgentState) -> None:
        with self._lock:
            n = self._worker_group.spec.local_world_size
            all_waiting = len(self._channels) == n and all(c.at_barrier for c in self._channels.values())
            if state is S.INIT and all_waiting:
                self._log_monitor.pause()
                self._sm.transition(S.READY, "WorkersAtBarrier", None, only_from={S.INIT})
                return
            if state is S.RUNNING and not self._spare and self._rdzv.assigned:
                # Each rank is released once per /start: a rank back at the barrier while RUNNING
                # has failed its attempt and waits for the control plane's next /start.
                waiting = [r for r, c in self._channels.items() if c.at_barrier and r not in self._released]
                if not waiting:
                    return
                envs = self._released_envs()
                payload_data = {
                    "rank_ips": self._rdzv.rank_ips,
                    "aggregate_worker_data": getattr(self, "_aggregate_worker_data", None),
                }
                for r in waiting:
                    self._channels[r].at_barrier = False
                self._released.update(waiting)
                self._reported_ranks.clear()
        # Sends happen outside the lock: a slow worker socket must not stall /status.
        if state is S.RUNNING and not self._spare and self._rdzv.assigned and waiting:
            for r in waiting:
                self._ipc.send(
                    r, {"type": "job_start", "worker_envs": envs[r], "aggregate_worker_data": payload_data}
                )
            self._log_monitor.resume()
            with self._lock:
                if self._sm.reason == "RunningStarted":
                    self._sm.reason = "Running"

    # ----------------------------------------------------------------------------------------
    def _stopping_plr(self) -> None:
        req = self._stop_request or StopRequest()
        sig = signal.SIGUSR1 if req.is_graceful else self._opts.shutdown_signal
        timeout = req.timeout if req.timeout is not None else self._opts.shutdown_timeout
        self._stop_stage(sig, timeout)
        self._reset_stages()
        self._sm.transition(S.READY, "Stopped", None, only_from={S.STOPPING})

    def _stopping_ipr(self) -> None:
        req = self._stop_request or StopRequest()
        mode = req.restart_mode.lower()
        known = {m.value for m in RestartMode} | {"ipr", "local_prl"}
        if mode not in known:
            logger.error(
                "/stop restart_mode=%r not understood; doing an in-process restart", req.restart_mode
            )
        process_restart = (
            mode in (RestartMode.PROCESS.value, RestartMode.JOB.value)
            or self._escalation in (RestartMode.PROCESS, RestartMode.JOB)
            or self._workers_failed
            or self._pcontext is None
            or self._stage is not Stage.TRAIN
        )
        if not process_restart and self._monitor_workers(self._worker_group).state is not WorkerState.HEALTHY:
            process_restart = True  # a worker died after the stop was asked
        if process_restart:
            self._local_process_restart(req, "process restart requested" if mode != "ipr" else "workers lost")
            return
        with self._lock:
            if not self._stop_paused_sent:
                self._stop_paused_sent = True
                if self._opts.inprocess_timeout is not None:
                    self._stop_deadline = time.monotonic() + self._opts.inprocess_timeout
                restart_count = self._rdzv.assignment.fault_count
                targets = [r for r, c in self._channels.items() if not c.at_barrier]
            else:
                targets = []
            n = self._worker_group.spec.local_world_size
            all_waiting = len(self._channels) == n and all(c.at_barrier for c in self._channels.values())
        for r in targets:
            self._ipc.send(r, {"type": "job_fault", "restart_count": restart_count})
        if all_waiting:
            self._log_monitor.pause()
            self._priority = True
            self._sm.transition(
                S.READY,
                "WorkersAtBarrier",
                "in-process restart: all local ranks at the barrier",
                only_from={S.STOPPING},
            )
        elif self._stop_deadline is not None and time.monotonic() > self._stop_deadline:
            logger.warning(
                "local ranks not at the barrier %.1fs after the stop; process restart",
                self._opts.inprocess_timeout,
            )
            self._local_process_restart(
                req, f"in-process restart timed out after {self._opts.inprocess_timeout:g}s"
            )

    def _local_process_restart(self, req: StopRequest, why: str) -> None:
        sig = signal.SIGUSR1 if req.is_graceful else self._opts.shutdown_signal
        timeout = req.timeout if req.timeout is not None else self._opts.shutdown_timeout
        logger.info("local process restart (%s)", why)
        self._stop_stage(sig, timeout)
        self._reset_stages()
        with self._lock:
            self._escalation = None
            self._priority = True
            self._sm.transition(S.INIT, "ProcessRestart", why, only_from={S.STOPPING})

    def _reset_stages(self) -> None:
        with self._lock:
            self._stage_index = 0
            self._stop_request = None
            self._stop_deadline = None
            self._worker_data.clear()
        self._log_monitor.detach()
        if not self._ipr:
            # A process-restart agent forgets the rules on stop; the next /start pushes them again.
            self._log_monitor.set_rules([])

    # ----------------------------------------------------------------------------------------
    def _launch(self, stage: Stage) -> None:
        spec = self._stage_spec(stage)
        self._worker_group = WorkerGroup(spec)
        self._logs_specs = (
            self._train_logs if stage is Stage.TRAIN else _StageLogsSpecs(stage, **self._stage_logs_kwargs)
        )
        self._workers_failed = False
        with self._lock:
            self._channels.clear()
            self._reported_ranks.clear()
        logger.info("starting the %s stage (%s workers)", stage.value, spec.local_world_size)
        try:
            self._initialize_workers(self._worker_group)
        except SignalException:
            # SIGTERM during the rendezvous or the workers' start: torch raises it wherever the main
            # thread is. It is the pod being stopped, not the stage failing to start: run() stops
            # what started and exits (caught as a start failure, the agent idled until SIGKILL).
            raise
        except Exception as exc:
            logger.exception("cannot start the %s stage", stage.value)
            self._stop_stage(signal.SIGKILL, 0)
            self._stage = stage
            self._workers_failed = True
            self._sm.transition(
                S.FAULTED,
                "WorkerCrash",
                f"{stage.value} stage did not start: {exc}",
                only_from={S.RUNNING, S.INIT, S.READY},
            )
            return
        self._stage = stage
        if stage is Stage.TRAIN:
            self._log_monitor.attach(range(spec.local_world_size))
            if self._ipr:
                self._log_monitor.pause()  # timers run only while released from the barrier
        with self._lock:
            if self._sm.state is S.RUNNING and self._sm.reason == "RunningStarted" and not self._ipr:
                self._sm.reason = "Running"

    def _stage_spec(self, stage: Stage) -> WorkerSpec:
        base = self._train_spec
        if stage is Stage.TRAIN:
            return base
        script = self._opts.pre_train_script if stage is Stage.PRE_TRAIN else self._opts.post_train_script
        arg = self._opts.pre_train_args if stage is Stage.PRE_TRAIN else self._opts.post_train_args
        # One opaque argument string, as the HyperPod agent passes it.
        extra = (arg,) if arg else ()
        if script.endswith(".py"):
            entrypoint, args = sys.executable, ("-u", script, *extra)
        elif os.access(script, os.X_OK):
            entrypoint, args = os.path.abspath(script), extra
        else:
            entrypoint, args = "/bin/sh", (script, *extra)
        return WorkerSpec(
            role=f"{base.role}_{stage.value}",
            local_world_size=1,
            rdzv_handler=base.rdzv_handler,
            entrypoint=entrypoint,
            args=args,
            max_restarts=base.max_restarts,
            monitor_interval=base.monitor_interval,
            master_addr=None,
            master_port=None,
            local_addr=base.local_addr,
        )

    def _stop_stage(self, sig: signal.Signals, timeout: float) -> None:
        if self._pcontext is not None:
            self._pcontext.close(sig, int(timeout))
            self._pcontext = None
        self._tap.close()  # the workers are gone: what they printed last still reaches the log
        self._stage = None
        with self._lock:
            self._channels.clear()
            self._released.clear()

    @staticmethod
    def _describe_failure(result: RunResult) -> str:
        parts = []
        for global_rank, failure in sorted(result.failures.items()):
            how = _exit_text(failure.exitcode)
            parts.append(f"rank {global_rank} (local rank {failure.local_rank}, pid {failure.pid}): {how}")
        return "; ".join(parts) or "worker failed"

    # ----------------------------------------------------------------------------------------
    # torchelastic hooks
    # ----------------------------------------------------------------------------------------
    def _assign_worker_ranks(
        self, store, group_rank: int, group_world_size: int, spec: WorkerSpec
    ) -> list[Worker]:
        # Every pod runs the same number of workers (HyperPod's contract), so ranks follow from the
        # group rank alone: no store round trip (torchelastic's fast path).
        world = group_world_size * spec.local_world_size
        base = group_rank * spec.local_world_size
        return [
            Worker(
                local_rank=i,
                global_rank=base + i,
                role_rank=base + i,
                world_size=world,
                role_world_size=world,
            )
            for i in range(spec.local_world_size)
        ]

    def _worker_envs(
        self,
        spec: WorkerSpec,
        workers: list[Worker],
        group_rank: int,
        group_world: int,
        master_addr: str,
        master_port: int,
        inprocess: bool,
    ) -> dict[int, dict[str, str]]:
        a = self._rdzv.assignment
        envs = {}
        for worker in workers:
            env = {
                "RANK": str(worker.global_rank),
                "GROUP_RANK": str(group_rank),
                "ROLE_RANK": str(worker.role_rank),
                "ROLE_NAME": spec.role,
                "LOCAL_WORLD_SIZE": str(spec.local_world_size),
                "WORLD_SIZE": str(worker.world_size),
                "GROUP_WORLD_SIZE": str(group_world),
                "ROLE_WORLD_SIZE": str(worker.role_world_size),
                "MASTER_ADDR": str(master_addr),
                "MASTER_PORT": str(master_port),
                # The control plane's job-wide fault count replaces torchelastic's own restart count.
                "TORCHELASTIC_RESTART_COUNT": str(a.fault_count),
                "JOB_RESTART_COUNT": str(a.fault_count),
                "TORCHELASTIC_MAX_RESTARTS": str(spec.max_restarts),
                "TORCHELASTIC_RUN_ID": spec.rdzv_handler.get_run_id(),
                "TORCHELASTIC_USE_AGENT_STORE": "False",
                "TORCH_NCCL_ASYNC_ERROR_HANDLING": os.getenv("TORCH_NCCL_ASYNC_ERROR_HANDLING", "1"),
                SOCKET_ENV: self._ipc.path,
                "HYPERPOD_SIGNAL_COORDINATION": os.getenv("HYPERPOD_SIGNAL_COORDINATION", "disabled"),
                "HYPERPOD_INPROCESS_RESTART": "1" if inprocess else "0",
                "SPARE": str(self._spare),
            }
            self._set_local_rank_env(env, worker.local_rank, spec)
            if "OMP_NUM_THREADS" in os.environ:
                env["OMP_NUM_THREADS"] = os.environ["OMP_NUM_THREADS"]
            envs[worker.local_rank] = env
        return envs

    def _released_envs(self) -> dict[int, dict[str, str]]:
        """The environment an in-process worker gets at the barrier: the rank assigned now."""
        a = self._rdzv.assignment
        spec = self._train_spec
        workers = self._assign_worker_ranks(None, a.group_rank, a.nnodes, spec)
        return self._worker_envs(spec, workers, a.group_rank, a.nnodes, a.master_addr, a.master_port, True)

    def _start_workers(self, worker_group: WorkerGroup) -> dict[int, Any]:
        spec = worker_group.spec
        wg = worker_group
        # In-process workers are spawned before /start with the spawn-time view; the barrier hands
        # them their real rank (_released_envs).
        inprocess = self._ipr and spec is self._train_spec
        envs = self._worker_envs(
            spec, wg.workers, wg.group_rank, wg.group_world_size, wg.master_addr, wg.master_port, inprocess
        )
        args = {
            w.local_rank: tuple(macros.substitute(list(spec.args), str(w.local_rank)))
            for w in worker_group.workers
        }
        prefixes = None
        if self._log_line_prefix_template:
            prefixes = {
                w.local_rank: Template(self._log_line_prefix_template).safe_substitute(
                    role_name=spec.role, rank=w.global_rank, local_rank=w.local_rank
                )
                for w in worker_group.workers
            }
        self._setup_local_watchdog(envs=envs)
        self._setup_healthcheck()
        standby = self._standby if spec is self._train_spec else None
        ready = standby.take(spec.entrypoint, args) if standby is not None else None
        if ready:
            self._pcontext = StandbyContext(
                ready,
                name=spec.role,
                entrypoint=spec.entrypoint,
                args=args,
                envs=envs,
                logs_specs=self._logs_specs,
                log_line_prefixes=prefixes,
            )
            self._pcontext.start()
        else:
            self._pcontext = start_processes(
                name=spec.role,
                entrypoint=spec.entrypoint,
                args=args,
                envs=envs,
                logs_specs=self._logs_specs,
                log_line_prefixes=prefixes,
                start_method=self._start_method,
            )
        if standby is not None:
            standby.prepare(spec.entrypoint, args, envs)  # the next generation's, started now
        return self._pcontext.pids()


def _exit_text(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"
