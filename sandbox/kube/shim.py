"""The per-container supervisor the sandbox kubelet starts (its containerd-shim).

    python -I -S shim.py STATUS_FILE MEMORY_LIMIT_BYTES LIFELINE_FD READY_FD -- COMMAND [ARGS...]

Why a process between the kubelet and the container's command: a container's processes must not
outlive it, and a command may fork children that ``setsid()`` away from its process group. The
shim makes itself a child subreaper (``PR_SET_CHILD_SUBREAPER``), so every orphan of the
container is re-parented to it rather than to init, and it can find and kill all of them:

- the command runs in its own process group; SIGTERM to the shim is forwarded to the command's
  main process only (as the kubelet signals PID 1 of a container); SIGUSR1 makes the shim
  SIGKILL every process of the container (the kubelet's "grace period over");
- when the main process exits, the rest of the container is SIGKILLed, as when PID 1 of a
  container's PID namespace exits;
- ``LIFELINE_FD`` is the read end of a pipe whose write end only the kubelet's process holds:
  end of file means the sandbox is gone (even by SIGKILL), and the container is killed;
- with a memory limit, the resident memory of the container's processes is sampled every
  100 ms; over the limit, they are SIGKILLed and the status says OOMKilled, as a cgroup OOM kill
  does (a fast allocation can overshoot between samples).

Once the command runs, the shim writes its pid to ``READY_FD`` and closes it (closed empty: the
command could not start), so the kubelet reports a container running only when it is.
The shim writes ``{"exitCode": n, "signal": s, "reason": r}`` to STATUS_FILE and exits with the
container's exit code (128 + signal number when the main process was killed by a signal).
Stdlib only, run with ``-I -S``: it must not import the sandbox package or site-packages.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import select
import signal
import subprocess
import sys
import time

PR_SET_CHILD_SUBREAPER = 36
SAMPLE_S = 0.1


def descendants(root: int) -> list[int]:
    """Every live process below ``root``, from /proc's parent links (children first seen first)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # the command name may hold spaces and parentheses: fields follow the last ')'
        fields = stat[stat.rfind(b")") + 2 :].split()
        children.setdefault(int(fields[1]), []).append(int(entry))
    out: list[int] = []
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def resident_bytes(pids: list[int]) -> int:
    page = os.sysconf("SC_PAGE_SIZE")
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/statm") as f:
                total += int(f.read().split()[1]) * page
        except (OSError, IndexError, ValueError):
            continue
    return total


class Reaper:
    """Reaps every child (orphans included) and keeps the main process's wait status."""

    def __init__(self, main_pid: int) -> None:
        self.main_pid = main_pid
        self.main_status: int | None = None

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid == self.main_pid:
                self.main_status = status

    def kill_all(self, me: int) -> None:
        # repeat: a process may fork between the scan and the kill
        for _ in range(50):
            pids = descendants(me)
            if not pids:
                break
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.005)
            self.reap()
        self.reap()

    def wait_main(self) -> int:
        while self.main_status is None:
            try:
                pid, status = os.waitpid(-1, 0)
            except ChildProcessError:
                return 0
            if pid == self.main_pid:
                self.main_status = status
        return self.main_status


def main(argv: list[str]) -> int:
    status_file, limit, lifeline, ready = argv[1], int(argv[2]), int(argv[3]), int(argv[4])
    command = argv[6:]
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER) failed")
    me = os.getpid()
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    pending: list[int] = []
    for sig in (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda s, _f: pending.append(s))
    signal.signal(signal.SIGCHLD, lambda _s, _f: None)  # only to wake the select below

    reaper = Reaper(-1)

    def finish(code: int, sig: int | None, reason: str | None) -> int:
        reaper.kill_all(me)
        with open(status_file + ".tmp", "w") as f:
            json.dump({"exitCode": code, "signal": sig, "reason": reason}, f)
        os.replace(status_file + ".tmp", status_file)
        return code

    try:
        main_proc = subprocess.Popen(command, process_group=0, close_fds=True, restore_signals=True)
    except OSError as exc:
        # what runc reports for a missing or non-executable command
        message = f"exec: {command[0]!r}: {exc.strerror}"
        if exc.errno == errno.ENOENT:
            message = f'exec: "{command[0]}": executable file not found in $PATH'
        sys.stderr.write(message + "\n")
        os.close(ready)
        return finish(128, None, "StartError:" + message)
    os.write(ready, str(main_proc.pid).encode())
    os.close(ready)
    # Popen only starts the command (it reports exec errors well); every wait goes through the
    # reaper, since waitpid(-1) for the orphans would otherwise steal the main process's status
    reaper.main_pid = main_proc.pid
    next_sample = time.monotonic()
    while True:
        for sig in pending:
            if sig == signal.SIGUSR1:
                reaper.kill_all(me)
            else:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(main_proc.pid, signal.SIGTERM if sig != signal.SIGINT else sig)
        pending.clear()
        reaper.reap()
        if reaper.main_status is not None:
            if os.WIFSIGNALED(reaper.main_status):
                sig = os.WTERMSIG(reaper.main_status)
                return finish(128 + sig, sig, None)
            return finish(os.waitstatus_to_exitcode(reaper.main_status), None, None)
        if limit and time.monotonic() >= next_sample:
            next_sample = time.monotonic() + SAMPLE_S
            if resident_bytes(descendants(me)) > limit:
                reaper.kill_all(me)
                reaper.wait_main()
                return finish(137, signal.SIGKILL, "OOMKilled")
        try:
            ready, _, _ = select.select([lifeline, wake_r], [], [], SAMPLE_S)
        except InterruptedError:
            continue
        if wake_r in ready:
            with contextlib.suppress(BlockingIOError):
                os.read(wake_r, 512)
        if lifeline in ready and not os.read(lifeline, 1):
            reaper.kill_all(me)  # the sandbox is gone: nothing of this container may stay
            reaper.wait_main()
            return finish(137, signal.SIGKILL, "SandboxGone")


if __name__ == "__main__":
    if len(sys.argv) < 7 or sys.argv[5] != "--":
        sys.stderr.write(__doc__ or "")
        sys.exit(2)
    sys.exit(main(sys.argv))
