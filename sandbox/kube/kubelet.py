"""The sandbox kubelet: runs the pods bound to one node as local processes.

Each pod gets its own loopback address (127.B.x.y, from ``PodAddresses``), and every listener in
it binds that address (``podnet/sitecustomize.py`` explains how and why), so agents listen on
their real port 8080 and two pods' ports never collide. Each container's command and args run on
the host (no image is pulled; commands come from the sandbox's own PATH, this interpreter's
directory first, so ``python`` is the sandbox's Python) under ``shim.py``, which keeps every
process of the container in reach: see there for process groups, orphans, the lifeline to the
sandbox and memory limits.

What the pod status says follows what happened, as upstream reports it:

- Pending with containers ``waiting: ContainerCreating`` during the start delay (which stands for
  image pull and container start: ``start_delay`` seconds, or the pod's
  ``sandbox.hyperpod.aws/start-delay-seconds`` annotation), then Running with podIP, hostIP,
  startTime and the Ready conditions;
- a container that exits is ``terminated`` with its exit code and reason ``Completed`` (0),
  ``Error``, ``OOMKilled`` (over ``resources.limits.memory``) or ``StartError`` (exit code 128:
  the command is not on PATH); it restarts under ``restartPolicy`` (Always, OnFailure) with
  ``restartCount`` counting, ``lastState`` keeping the previous termination, and upstream's
  crash-loop back-off between restarts (``waiting: CrashLoopBackOff``; the base is
  ``restart_backoff`` seconds, 10 on a real kubelet, doubling to 300);
- the pod ends Succeeded when every container exited 0 and none will restart, Failed otherwise;
- deletion honours the grace period: SIGTERM to each container's main process, SIGKILL to all
  its processes once ``deletionGracePeriodSeconds`` has passed, then the kubelet deletes the pod
  with grace 0 (the store keeps a deleted pod until then, ``Store.graceful_pods``). A pod removed
  at once (force deletion) has its processes killed at once.

A container's environment is built from scratch: the node's base (PATH, HOME, the API server's
address, and the emulated AWS endpoint and Region, which stand for the network and the instance
metadata a real node has) and what the pod declares; nothing of the sandbox process's own (its
AWS credentials least of all) reaches a pod. A pod EKS Pod Identity mutated gets its token file
and the node's Pod Identity Agent (``pod_identity.py``).

Not modelled: init containers, sidecars, probes (a running container is ready), volumes (each pod
gets a fresh working directory; the Pod Identity token aside), ``hostNetwork`` (a pod always gets
its own address), image pull errors, ephemeral containers, and node status heartbeats.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import ipaddress
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sandbox.kube.podspec import SpecError, container_argv, container_env, memory_limit_bytes
from sandbox.kube.store import ApiError, Store, now_rfc3339

log = logging.getLogger("sandbox.kube.kubelet")

HERE = Path(__file__).resolve().parent
SHIM = HERE / "shim.py"
PODNET = HERE / "podnet"
START_DELAY_ANNOTATION = "sandbox.hyperpod.aws/start-delay-seconds"
MAX_BACKOFF_S = 300.0
#: Marks every container process (inherited by its children), so a test can find them in /proc.
RUNTIME_ENV = "SANDBOX_KUBE_RUNTIME"


#: Where sandboxes claim their address blocks: one lock file per block, held while a runtime lives.
ADDRESS_CLAIMS = Path(tempfile.gettempdir()) / "hyperpod-sandbox-addresses"
#: The /16 blocks 127.B.0.0 that runtimes claim (127.0/16 is the host's own: 127.0.0.1, 127.0.1.1;
#: the supervisor bench takes its agents from 127.100 up).
CLAIMABLE_BLOCKS = range(1, 100)


class PodAddresses:
    """Hands out pod addresses from one block of 127.0.0.0/8, never a .0 or .255 address nor
    127.0.0.1 (the host's services) and 127.0.1.1 (Debian's hostname address), cycling so that a
    released address is not reused while others are free (a client holding a dead pod's IP must not
    reach a new pod).

    ``claim()`` takes a /16 no other sandbox on this host holds: two sandboxes on one machine (two
    test workers, a test run beside ``make demo``) would otherwise hand out the same address, and
    one's supervisor would reach the other's agents on port 8080."""

    def __init__(self, first: str = "127.0.0.2", last: str = "127.255.255.254") -> None:
        self._first = int(ipaddress.IPv4Address(first))
        self._last = int(ipaddress.IPv4Address(last))
        self._next = self._first
        self._used: dict[str, str] = {}  # uid -> ip
        self._lock = threading.Lock()
        self._claim: Any = None  # the open lock file of a claimed block

    @classmethod
    def claim(cls) -> PodAddresses:
        """The addresses of the first /16 block that no live process on this host holds. The claim
        is an exclusive ``flock`` on the block's file, so it ends with the process however it
        ends; ``release_claim()`` ends it sooner."""
        ADDRESS_CLAIMS.mkdir(parents=True, exist_ok=True)
        for block in CLAIMABLE_BLOCKS:
            handle = open(ADDRESS_CLAIMS / f"127.{block}.lock", "a+")  # noqa: SIM115 (held open)
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                handle.close()
                continue
            addresses = cls(first=f"127.{block}.0.2", last=f"127.{block}.255.254")
            addresses._claim = handle
            return addresses
        raise RuntimeError(
            f"every sandbox address block (127.{CLAIMABLE_BLOCKS.start}-{CLAIMABLE_BLOCKS.stop - 1}.0.0/16) "
            "is held by another sandbox on this host: stop one of them"
        )

    @property
    def claimed(self) -> bool:
        return self._claim is not None

    def release_claim(self) -> None:
        if self._claim is not None:
            self._claim.close()
            self._claim = None

    def _skip(self, value: int) -> bool:
        return value & 0xFF in (0, 255) or value in (int(ipaddress.IPv4Address("127.0.1.1")),)

    def allocate(self, uid: str) -> str:
        with self._lock:
            if uid in self._used:
                return self._used[uid]
            taken = set(self._used.values())
            for _ in range(self._last - self._first + 1):
                value = self._next
                self._next = self._first if value >= self._last else value + 1
                ip = str(ipaddress.IPv4Address(value))
                if not self._skip(value) and ip not in taken:
                    self._used[uid] = ip
                    return ip
            raise RuntimeError("no pod addresses left in this sandbox's block")

    def release(self, uid: str) -> None:
        with self._lock:
            self._used.pop(uid, None)

    def owner(self, ip: str) -> str | None:
        with self._lock:
            return next((uid for uid, used in self._used.items() if used == ip), None)


@dataclass
class KubeletConfig:
    """What every kubelet of a runtime shares."""

    workdir: Path
    addresses: PodAddresses
    lifeline_fd: int
    runtime_id: str
    start_delay: float = 0.0
    restart_backoff: float = 10.0
    #: image (with or without tag) -> entrypoint, for containers that give no command
    image_entrypoints: dict[str, list[str]] = field(default_factory=dict)
    #: image (with or without tag) -> directories first on its containers' PATH: the executables
    #: the image carries (a container of an image not listed gets the node's PATH)
    image_paths: dict[str, list[str]] = field(default_factory=dict)
    #: base environment of every container (PATH, HOME, KUBERNETES_SERVICE_HOST, ...)
    base_env: dict[str, str] = field(default_factory=dict)
    #: the node's EKS Pod Identity Agent (``pod_identity.PodIdentityAgent``); None: not installed
    pod_identity: Any = None


def default_base_env(api_host: str | None = None, api_port: int | None = None) -> dict[str, str]:
    path = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "/usr/bin:/bin")])
    env = {"PATH": path, "HOME": os.environ.get("HOME", "/tmp")}
    for key in ("LANG", "LC_ALL", "TZ"):
        if key in os.environ:
            env[key] = os.environ[key]
    if api_host and api_port:
        env.update(
            KUBERNETES_SERVICE_HOST=api_host,
            KUBERNETES_SERVICE_PORT=str(api_port),
            KUBERNETES_SERVICE_PORT_HTTPS=str(api_port),
        )
    return env


# --- one container ----------------------------------------------------------------------------


@dataclass
class Termination:
    exit_code: int
    reason: str
    message: str | None
    started_at: str
    finished_at: str
    container_id: str
    signal: int | None = None

    def state(self) -> dict:
        out: dict[str, Any] = {
            "exitCode": self.exit_code,
            "reason": self.reason,
            "startedAt": self.started_at,
            "finishedAt": self.finished_at,
            "containerID": self.container_id,
        }
        if self.signal:
            out["signal"] = self.signal
        if self.message:
            out["message"] = self.message
        return {"terminated": out}


def termination_reason(exit_code: int, shim_reason: str | None) -> tuple[str, str | None]:
    """(reason, message) for a container's exit, worded as the kubelet reports it."""
    if shim_reason == "OOMKilled":
        return "OOMKilled", None
    if shim_reason and shim_reason.startswith("StartError:"):
        return "StartError", shim_reason.removeprefix("StartError:")
    return ("Completed", None) if exit_code == 0 else ("Error", None)


class ContainerProcess:
    """One run of a container: its shim process and what it reports when it ends."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        env: dict[str, str],
        pod_dir: Path,
        workdir: Path,
        config: KubeletConfig,
        memory_limit: int,
        on_exit: threading.Event,
    ) -> None:
        self.name = name
        self.container_id = "containerd://" + uuid.uuid4().hex + uuid.uuid4().hex
        self.status_file = pod_dir / f"{name}.{self.container_id[-12:]}.exit"
        self.log_file = pod_dir / f"{name}.log"
        self.started_at = now_rfc3339()
        self.termination: Termination | None = None
        self._on_exit = on_exit
        ready_r, ready_w = os.pipe()
        with open(self.log_file, "ab") as out:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-I",
                    "-S",
                    str(SHIM),
                    str(self.status_file),
                    str(memory_limit),
                    str(config.lifeline_fd),
                    str(ready_w),
                    "--",
                    *argv,
                ],
                env=env,
                cwd=workdir,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # the pod's processes never share the sandbox's group
                pass_fds=(config.lifeline_fd, ready_w),
            )
        os.close(ready_w)
        # the shim writes the command's pid once it runs (nothing if it could not start), so a
        # container is reported running only when its process exists
        with os.fdopen(ready_r, "rb") as ready:
            pid = ready.read()
        self.main_pid = int(pid) if pid else None
        self._waiter = threading.Thread(target=self._wait, name=f"container-{name}", daemon=True)
        self._waiter.start()

    def _wait(self) -> None:
        code = self.proc.wait()
        shim_status: dict[str, Any] = {}
        with contextlib.suppress(OSError, ValueError):
            shim_status = json.loads(self.status_file.read_text())
        if not shim_status:
            # the shim itself was killed (a hardware fault takes everything down at once)
            shim_status = {
                "exitCode": 128 - code if code < 0 else code,
                "signal": -code if code < 0 else None,
            }
        exit_code = int(shim_status.get("exitCode", code))
        reason, message = termination_reason(exit_code, shim_status.get("reason"))
        self.termination = Termination(
            exit_code,
            reason,
            message,
            self.started_at,
            now_rfc3339(),
            self.container_id,
            shim_status.get("signal"),
        )
        with contextlib.suppress(OSError):
            self.status_file.unlink()
        self._on_exit.set()

    @property
    def running(self) -> bool:
        return self.termination is None

    def signal_main(self, sig: int) -> None:
        """SIGTERM goes to the container's main process (the shim forwards it)."""
        if self.running:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)

    def kill(self) -> None:
        """SIGKILL every process of the container (the shim does it and reports the exit)."""
        if self.running:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGUSR1)

    def kill_hard(self) -> None:
        """A hardware fault: the shim dies with its container, nothing is reported."""
        self.kill()
        try:
            self.proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()

    def pids(self) -> list[int]:
        """The container's processes (the shim excluded), for hang and crash faults."""
        from sandbox.kube.shim import descendants

        return descendants(self.proc.pid) if self.running else []

    def wait(self, timeout: float) -> bool:
        self._waiter.join(timeout)
        return not self._waiter.is_alive()


# --- one pod ----------------------------------------------------------------------------------


def _backoff(restart_count: int, base: float) -> float:
    """Upstream's crash-loop back-off: the first restart at once, then base, 2*base, ... <= 300 s."""
    if restart_count <= 0 or base <= 0:
        return 0.0
    return min(base * 2 ** (restart_count - 1), MAX_BACKOFF_S)


def should_restart(policy: str, exit_code: int) -> bool:
    return policy == "Always" or (policy == "OnFailure" and exit_code != 0)


def pod_phase(policy: str, terminations: list[Termination | None], running: list[bool]) -> str:
    """Running while any container runs or will restart; Succeeded if all exited 0; else Failed."""
    if any(running):
        return "Running"
    if any(t is None or should_restart(policy, t.exit_code) for t in terminations):
        return "Running"
    return "Succeeded" if all(t is not None and t.exit_code == 0 for t in terminations) else "Failed"


@dataclass
class _Slot:
    """A container of the pod across its restarts."""

    spec: dict
    process: ContainerProcess | None = None
    restart_count: int = 0
    last: Termination | None = None  # the previous run's termination (lastState)
    current: Termination | None = None  # this run's termination, once it ended
    restart_at: float | None = None
    waiting: tuple[str, str | None] | None = ("ContainerCreating", None)


class PodWorker:
    """Runs one pod on a kubelet, from its start to its deletion (one thread)."""

    def __init__(self, kubelet: Kubelet, pod: dict) -> None:
        self.kubelet = kubelet
        self.store = kubelet.store
        meta = pod["metadata"]
        self.namespace, self.name, self.uid = meta["namespace"], meta["name"], meta["uid"]
        self.pod = pod
        self.policy = pod["spec"].get("restartPolicy", "Always")
        self.slots = [_Slot(dict(c)) for c in pod["spec"]["containers"]]
        self.ip: str | None = None
        self.dir = kubelet.config.workdir / f"{self.namespace}_{self.name}_{self.uid[:8]}"
        self._changed = threading.Event()
        self._grace: float | None = None  # set when the pod is to stop
        self._deleted = False  # removed from the store (force deletion)
        self._lost = False  # the node failed: stop without a word
        self._thread = threading.Thread(
            target=self._run, name=f"pod-{self.namespace}/{self.name}", daemon=True
        )

    # -- signals from the kubelet -----------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def update(self, pod: dict) -> None:
        self.pod = pod
        meta = pod["metadata"]
        if meta.get("deletionTimestamp") and self._grace is None:
            self._grace = float(meta.get("deletionGracePeriodSeconds", 0))
            self._changed.set()

    def removed(self) -> None:
        self._deleted = True
        if self._grace is None:
            self._grace = 0.0
        self._changed.set()

    def freeze(self) -> list[int]:
        """A dead instance, as the network sees it: every process of the pod stops where it is
        (SIGSTOP), so connections to the pod's address are accepted by nobody and answered by
        nothing, and the API hears nothing more from this pod. Returns the pids stopped."""
        pids = self.all_pids()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)
        self._lost = True  # the worker thread ends without a word, as the node's kubelet did
        self._changed.set()
        return pids

    def thaw_and_kill(self) -> None:
        """What a dead instance's processes become once it reboots or is replaced: nothing."""
        for slot in self.slots:
            if slot.process is not None:
                for pid in slot.process.pids():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                slot.process.kill_hard()

    def lose(self) -> None:
        """A hardware fault: every process dies now; the API hears nothing more from this node."""
        self._lost = True
        for slot in self.slots:
            if slot.process is not None:
                slot.process.kill_hard()
        self._changed.set()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def container(self, name: str | None) -> ContainerProcess | None:
        for slot in self.slots:
            if name in (None, slot.spec["name"]) and slot.process is not None and slot.process.running:
                return slot.process
        return None

    def all_pids(self) -> list[int]:
        return [pid for s in self.slots if s.process is not None for pid in s.process.pids()]

    # -- the pod's life -----------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._life()
        except Exception:
            log.exception("pod %s/%s: kubelet worker failed", self.namespace, self.name)
            self._kill_all()
        finally:
            # a dead node reports nothing and frees nothing: Kubelet.fail() cleans up after it
            if self.kubelet.config.pod_identity is not None:
                self.kubelet.config.pod_identity.revoke_pod(self.uid)
            if not self._lost:
                self.kubelet.addresses.release(self.uid)
                shutil.rmtree(self.dir, ignore_errors=True)
                self.kubelet.forget(self.uid)

    def _life(self) -> None:
        self.ip = self.kubelet.addresses.allocate(self.uid)
        (self.dir / "root").mkdir(parents=True, exist_ok=True)
        self._write_status(started=False)
        delay = self._start_delay()
        if delay > 0 and self._wait_for_stop(delay):
            return self._terminate()
        if self._lost or self._grace is not None:
            return self._terminate()
        for slot in self.slots:
            self._start(slot)
        self._write_status(started=True)
        while True:
            if self._lost:
                return None
            if self._grace is not None:
                return self._terminate()
            self._changed.clear()
            changed = self._reconcile()
            if changed:
                self._write_status(started=True)
            wait = self._next_restart_in()
            self._changed.wait(wait if wait is not None else None)

    def _start_delay(self) -> float:
        annotations = self.pod["metadata"].get("annotations") or {}
        raw = annotations.get(START_DELAY_ANNOTATION)
        if raw is not None:
            try:
                return max(float(raw), 0.0)
            except ValueError:
                log.warning(
                    "pod %s/%s: ignoring %s=%r", self.namespace, self.name, START_DELAY_ANNOTATION, raw
                )
        return self.kubelet.config.start_delay

    def _wait_for_stop(self, seconds: float) -> bool:
        """Wait ``seconds`` (the modelled image pull); True if the pod is to stop meanwhile."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            if self._grace is not None or self._lost:
                return True
            self._changed.wait(left)
            self._changed.clear()
        return self._grace is not None or self._lost

    def _env(self, slot: _Slot) -> tuple[list[str], dict[str, str]]:
        pod = {
            **self.pod,
            "status": {
                **(self.pod.get("status") or {}),
                "podIP": self.ip,
                "podIPs": [{"ip": self.ip}],
                "hostIP": self.kubelet.host_ip,
            },
        }
        declared = container_env(pod, slot.spec, self.kubelet.lookup, self.kubelet.allocatable)
        config = self.kubelet.config
        env = {**config.base_env, "HOSTNAME": self.name, **declared}
        if config.pod_identity is not None:
            config.pod_identity.container_env(self.pod, slot.spec, env, self.dir)
        image = str(slot.spec.get("image") or "")
        image_path = config.image_paths.get(image) or config.image_paths.get(image.rsplit(":", 1)[0])
        if image_path:
            missing = [d for d in image_path if not os.path.isdir(d)]
            if missing:
                raise SpecError("ErrImagePull", f'image "{image}" is not on this host: {", ".join(missing)}')
            env["PATH"] = os.pathsep.join([*image_path, env.get("PATH", "")])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PODNET), declared.get("PYTHONPATH", "")) if p)
        env["SANDBOX_POD_IP"] = self.ip or ""
        env["SANDBOX_POD_UID"] = self.uid
        env[RUNTIME_ENV] = config.runtime_id
        argv = container_argv(slot.spec, env, config.image_entrypoints)
        return argv, env

    def _start(self, slot: _Slot) -> None:
        name = slot.spec["name"]
        try:
            argv, env = self._env(slot)
        except SpecError as exc:
            slot.waiting = (exc.reason, str(exc))
            slot.process = None
            return
        log_file = self.dir / f"{name}.log"
        if log_file.exists():
            log_file.replace(self.dir / f"{name}.previous.log")
        slot.waiting = None
        slot.current = None
        workdir = Path(slot.spec.get("workingDir") or self.dir / "root")
        if not workdir.is_dir():
            slot.waiting = (
                "CreateContainerError",
                f"workingDir {workdir} does not exist on the sandbox host",
            )
            slot.process = None
            return
        slot.process = ContainerProcess(
            name,
            argv,
            env,
            self.dir,
            workdir,
            self.kubelet.config,
            memory_limit_bytes(slot.spec),
            self._changed,
        )

    def _reconcile(self) -> bool:
        """Notice exits, start due restarts; True if the status must be written."""
        changed = False
        now = time.monotonic()
        for slot in self.slots:
            proc = slot.process
            if proc is not None and proc.termination is not None and slot.current is None:
                slot.current = proc.termination
                changed = True
                if should_restart(self.policy, proc.termination.exit_code):
                    delay = _backoff(slot.restart_count, self.kubelet.config.restart_backoff)
                    slot.restart_at = now + delay
                    if delay > 0:
                        slot.waiting = (
                            "CrashLoopBackOff",
                            f"back-off {int(delay)}s restarting failed container={slot.spec['name']} "
                            f"pod={self.name}_{self.namespace}({self.uid})",
                        )
            if slot.restart_at is not None and slot.restart_at <= now:
                slot.restart_at = None
                slot.last = slot.current
                slot.restart_count += 1
                self._start(slot)
                changed = True
        return changed

    def _next_restart_in(self) -> float | None:
        due = [s.restart_at for s in self.slots if s.restart_at is not None]
        return max(min(due) - time.monotonic(), 0.0) if due else None

    def _terminate(self) -> None:
        grace = self._grace or 0.0
        running = [s.process for s in self.slots if s.process is not None and s.process.running]
        if grace > 0:
            for proc in running:
                proc.signal_main(signal.SIGTERM)
            deadline = time.monotonic() + grace
            for proc in running:
                proc.wait(max(deadline - time.monotonic(), 0))
        self._kill_all()
        for slot in self.slots:
            if slot.process is not None and slot.process.termination is not None:
                slot.current = slot.process.termination
            slot.restart_at = None
        if self._lost:
            return
        if not self._deleted:
            self._write_status(started=True, stopping=True)
            with contextlib.suppress(ApiError):
                # the kubelet's final word: the store removes the pod now
                self.store.delete(
                    self.store.rt("", "pods"),
                    self.namespace,
                    self.name,
                    {"gracePeriodSeconds": 0, "preconditions": {"uid": self.uid}},
                )

    def _kill_all(self) -> None:
        procs = [s.process for s in self.slots if s.process is not None]
        for proc in procs:
            proc.kill()
        for proc in procs:
            if not proc.wait(5):
                log.warning(
                    "pod %s/%s: container %s did not stop; killing its shim",
                    self.namespace,
                    self.name,
                    proc.name,
                )
                proc.kill_hard()
                proc.wait(5)

    # -- status ---------------------------------------------------------------------------------

    def _container_status(self, slot: _Slot, started: bool) -> dict:
        spec = slot.spec
        image = spec.get("image", "")
        proc = slot.process
        status: dict[str, Any] = {
            "name": spec["name"],
            "image": image,
            "imageID": f"{image.split(':')[0]}@sha256:{hashlib.sha256(image.encode()).hexdigest()}",
            "restartCount": slot.restart_count,
            "ready": False,
            "started": False,
        }
        if slot.waiting is not None and (proc is None or not proc.running):
            reason, message = slot.waiting
            status["state"] = {"waiting": {"reason": reason, **({"message": message} if message else {})}}
        elif proc is not None and proc.running:
            status["state"] = {"running": {"startedAt": proc.started_at}}
            status["ready"] = status["started"] = True
            status["containerID"] = proc.container_id
        elif slot.current is not None:
            status["state"] = slot.current.state()
            status["containerID"] = slot.current.container_id
        else:
            status["state"] = {"waiting": {"reason": "ContainerCreating"}}
        status["lastState"] = slot.last.state() if slot.last is not None else {}
        if not started:
            status["state"] = {"waiting": {"reason": "ContainerCreating"}}
        return status

    def _write_status(self, started: bool, stopping: bool = False) -> None:
        if self._lost:
            return
        statuses = [self._container_status(s, started) for s in self.slots]
        running = [bool(s.process and s.process.running) for s in self.slots]
        terminations = [s.current if not (s.process and s.process.running) else None for s in self.slots]
        if not started or all(s.process is None for s in self.slots):
            phase = "Pending"  # no container ever started (still creating, or a config error)
        elif stopping:
            # a pod stopped by deletion ends in a terminal phase from its containers' exits
            phase = "Succeeded" if all(t is not None and t.exit_code == 0 for t in terminations) else "Failed"
        else:
            phase = pod_phase(self.policy, terminations, running)
        ready = started and all(running) and not stopping
        now = now_rfc3339()

        def condition(type_: str, ok: bool, reason: str | None = None) -> dict:
            c = {
                "type": type_,
                "status": "True" if ok else "False",
                "lastProbeTime": None,
                "lastTransitionTime": now,
            }
            if reason and not ok:
                c["reason"] = reason
            return c

        def apply(current: dict) -> dict:
            status = current.setdefault("status", {})
            old = {c.get("type"): c for c in status.get("conditions") or []}
            conditions = [
                condition("PodReadyToStartContainers", started),
                condition("Initialized", True),
                condition("Ready", ready, "ContainersNotReady"),
                condition("ContainersReady", ready, "ContainersNotReady"),
            ]
            for c in conditions:
                prev = old.get(c["type"])
                if prev is not None and prev.get("status") == c["status"]:
                    c["lastTransitionTime"] = prev.get("lastTransitionTime", now)
            keep = [c for t, c in old.items() if t not in {c["type"] for c in conditions}]
            status.update(
                phase=phase,
                conditions=keep + conditions,
                hostIP=self.kubelet.host_ip,
                hostIPs=[{"ip": self.kubelet.host_ip}],
                podIP=self.ip,
                podIPs=[{"ip": self.ip}],
                startTime=status.get("startTime") or now,
                containerStatuses=statuses,
                qosClass=status.get("qosClass", "BestEffort"),
            )
            return current

        try:
            self.pod = self.store.patch(self.store.rt("", "pods"), self.namespace, self.name, apply, "status")
        except ApiError as exc:
            if exc.code != 404:
                raise


# --- the kubelet --------------------------------------------------------------------------------


class Kubelet:
    """Runs the pods bound to ``node_name``; ``fail()`` and ``recover()`` model the node's faults."""

    def __init__(self, store: Store, node_name: str, config: KubeletConfig) -> None:
        self.store = store
        self.node_name = node_name
        self.config = config
        self.addresses = config.addresses
        self._workers: dict[str, PodWorker] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.failed = False
        self._frozen: list[PodWorker] = []  # the pods of a dirty failure, stopped, not yet gone
        node = store.find(store.rt("", "nodes"), None, node_name) or {}
        addresses = (node.get("status") or {}).get("addresses") or []
        self.host_ip = next((a["address"] for a in addresses if a.get("type") == "InternalIP"), "127.0.0.1")
        self.allocatable = dict((node.get("status") or {}).get("allocatable") or {})

    def lookup(self, kind: str, namespace: str, name: str) -> dict | None:
        return self.store.find(self.store.rt("", kind), namespace, name)

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> Kubelet:
        self._stop.clear()
        self._thread = threading.Thread(target=self._watch, name=f"kubelet-{self.node_name}", daemon=True)
        self._thread.start()
        return self

    def stop(self, grace: float | None = 0.0) -> None:
        """Stop watching and stop every pod (``grace``: seconds before SIGKILL; None: each pod's own)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        with self._lock:
            workers = list(self._workers.values())
        for w in workers:
            w._grace = (
                grace if grace is not None else float(w.pod["spec"].get("terminationGracePeriodSeconds", 30))
            )
            w._deleted = True  # the sandbox is going: leave the API objects as they are
            w._changed.set()
        for w in workers:
            w.join(timeout=(grace or 0) + 15)
        self._clear_frozen()

    def fail(self) -> list[dict]:
        """A hardware fault: every process of every pod dies now, the kubelet goes silent.
        Returns the pods (as last seen) that were running here."""
        workers = self._go_silent()
        for w in workers:
            w.lose()
        for w in workers:
            w.join(timeout=10)
            self.addresses.release(w.uid)
            shutil.rmtree(w.dir, ignore_errors=True)
        return [w.pod for w in workers]

    def freeze(self) -> list[dict]:
        """A dirty hardware fault (``Faults.fail_node``'s default): the instance is dark. Every
        process of every pod stops where it is, the kubelet posts nothing and acts on nothing
        (a deleted pod stays Terminating), and connections to the pods hang. The processes stay
        stopped until ``recover()`` or ``stop()``. Returns the pods (as last seen) that ran here."""
        workers = self._go_silent()
        for w in workers:
            w.freeze()
        self._frozen.extend(workers)
        return [w.pod for w in workers]

    def _go_silent(self) -> list[PodWorker]:
        """The node's kubelet stops watching and reporting; its pod workers are handed over."""
        self.failed = True
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        with self._lock:
            workers = list(self._workers.values())
            self._workers.clear()
        return workers

    def _clear_frozen(self) -> None:
        frozen, self._frozen = self._frozen, []
        for w in frozen:
            w.thaw_and_kill()
            w.join(timeout=10)
            self.addresses.release(w.uid)
            shutil.rmtree(w.dir, ignore_errors=True)

    def recover(self) -> None:
        """The node is back (rebooted or repaired): what froze with it is gone, the kubelet runs
        again and picks up its pods (a Terminating one is let go)."""
        self._clear_frozen()
        self.failed = False
        self.start()

    # -- pods -------------------------------------------------------------------------------------

    def forget(self, uid: str) -> None:
        with self._lock:
            self._workers.pop(uid, None)

    def worker(self, namespace: str, name: str) -> PodWorker:
        with self._lock:
            for w in self._workers.values():
                if (w.namespace, w.name) == (namespace, name):
                    return w
        raise LookupError(f"pod {namespace}/{name} is not running on {self.node_name}")

    def workers(self) -> list[PodWorker]:
        with self._lock:
            return list(self._workers.values())

    def _watch(self) -> None:
        rt = self.store.rt("", "pods")
        # a fresh watch from "0" sends every existing pod first: the kubelet picks up its pods
        rv: str | None = None
        while not self._stop.is_set():
            try:
                for type_, pod in self.store.watch(rt, None, (), (), rv, self._stop):
                    rv = pod["metadata"]["resourceVersion"]
                    if (pod.get("spec") or {}).get("nodeName") == self.node_name:
                        self._handle(type_, pod)
            except ApiError:
                rv = None  # fell behind: list again

    def _handle(self, type_: str, pod: dict) -> None:
        uid = pod["metadata"]["uid"]
        with self._lock:
            worker = self._workers.get(uid)
            if type_ == "DELETED":
                if worker is not None:
                    worker.removed()
                return
            if worker is not None:
                worker.update(pod)
                return
            phase = (pod.get("status") or {}).get("phase")
            if pod["metadata"].get("deletionTimestamp"):
                # nothing runs for it here (never started, or the node restarted): let it go
                with contextlib.suppress(ApiError):
                    self.store.delete(
                        self.store.rt("", "pods"),
                        pod["metadata"]["namespace"],
                        pod["metadata"]["name"],
                        {"gracePeriodSeconds": 0, "preconditions": {"uid": uid}},
                    )
                return
            if phase in ("Succeeded", "Failed"):
                return
            worker = PodWorker(self, pod)
            self._workers[uid] = worker
        worker.start()


def running_processes(runtime_id: str) -> list[int]:
    """Every process on this host whose environment carries ``runtime_id`` (for tests)."""
    marker = f"{RUNTIME_ENV}={runtime_id}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                environ = f.read()
        except OSError:
            continue
        if marker in environ.split(b"\0"):
            found.append(int(entry))
    return found
