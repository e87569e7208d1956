"""Pre-started worker interpreters, so a process restart does not wait for Python and torch.

Most of a process restart is spent starting new interpreters and importing torch. With
``--process-standby`` the agent keeps, for every local rank, one interpreter that has already
imported torch (and the modules named in ``HYPERPOD_STANDBY_IMPORTS``, comma-separated) and waits
on a pipe. When the next generation of workers is launched, each standby gets the environment,
arguments and output destinations the launch would have given a new process, takes them over
(the environment replaced as a whole, stdout/stderr re-pointed with dup2, ``sys.argv`` and
``sys.path[0]`` as ``python -u script.py`` sets them) and runs the script as ``__main__``. A
standby is only used for the training stage of a process-restart agent started as ``python -u
<script>.py`` (torchrun's way of running a .py file); whenever one is missing (it died, none was
started yet) or was made for another command line, the launch starts new processes as before.

Run as ``python -u -m hyperpod_agent.standby``: the read end of the pipe is the fd named by
``HYPERPOD_STANDBY_FD``; end-of-file without a message means "not needed", and it exits 0.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import os
import runpy
import subprocess
import sys

from torch.distributed.elastic.multiprocessing.api import SubprocessContext
from torch.distributed.elastic.multiprocessing.subprocess_handler import SubprocessHandler

logger = logging.getLogger(__name__)

STANDBY_FD_ENV = "HYPERPOD_STANDBY_FD"
IMPORTS_ENV = "HYPERPOD_STANDBY_IMPORTS"


class Standby:
    """One waiting interpreter for one local rank, made for one command line."""

    def __init__(self, local_rank: int, command: tuple, env: dict[str, str]):
        self.local_rank = local_rank
        self.command = command
        read_fd, self._write_fd = os.pipe()
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-u", "-m", __name__],
                env={**env, STANDBY_FD_ENV: str(read_fd)},
                pass_fds=(read_fd,),
                start_new_session=True,  # as torch starts workers: the agent signals them itself
            )
        finally:
            os.close(read_fd)

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def release(self, env: dict[str, str], args: tuple, stdout: str, stderr: str) -> None:
        message = {"env": env, "argv": [str(a) for a in args], "stdout": stdout, "stderr": stderr}
        with os.fdopen(self._write_fd, "wb") as pipe:
            pipe.write(json.dumps(message).encode())

    def discard(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self._write_fd)  # end-of-file: the standby exits by itself
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)
            return
        self.proc.kill()
        self.proc.wait()


class _StandbyHandler(SubprocessHandler):
    """torch's handle of a worker process, for a process that already exists."""

    def __init__(self, proc: subprocess.Popen, local_rank: int):  # no super(): nothing to start
        self._stdout = None
        self._stderr = None
        self.local_rank_id = local_rank
        self.proc = proc


class StandbyContext(SubprocessContext):
    """torch's context of subprocess workers whose processes are the standbys."""

    def __init__(self, standbys: dict[int, Standby], **kwargs):
        super().__init__(**kwargs)
        self._standbys = standbys

    def _start(self) -> None:
        handlers = {}
        for local_rank in range(self.nprocs):
            standby = self._standbys[local_rank]
            # What SubprocessHandler would have given a new process: the agent's environment
            # with the worker's on top.
            env = {**os.environ, **self.envs[local_rank]}
            standby.release(env, self.args[local_rank], self.stdouts[local_rank], self.stderrs[local_rank])
            handlers[local_rank] = _StandbyHandler(standby.proc, local_rank)
        self.subprocess_handlers = handlers


class StandbyPool:
    """The agent's standbys: ``take`` the ones ready for a launch, ``prepare`` the next ones."""

    def __init__(self) -> None:
        self._standbys: dict[int, Standby] = {}

    @staticmethod
    def usable(entrypoint: str, args: dict[int, tuple]) -> bool:
        return entrypoint == sys.executable and all(
            len(a) >= 2 and a[0] == "-u" and str(a[1]).endswith(".py") for a in args.values()
        )

    def take(self, entrypoint: str, args: dict[int, tuple]) -> dict[int, Standby] | None:
        """The standbys for this launch, or None (then the caller starts new processes)."""
        standbys, self._standbys = self._standbys, {}
        ready = (
            self.usable(entrypoint, args)
            and sorted(standbys) == sorted(args)
            and all(s.alive and s.command == (entrypoint, *args[r][:2]) for r, s in standbys.items())
        )
        if ready:
            return {r: s for r, s in standbys.items()}
        for s in standbys.values():
            s.discard()
        if standbys:
            logger.info("standby workers missing or stale; starting new processes")
        return None

    def prepare(self, entrypoint: str, args: dict[int, tuple], envs: dict[int, dict[str, str]]) -> None:
        """Start the next generation's standbys, with the environment of this one (so imports
        that read it, OMP_NUM_THREADS and the like, see what the worker will see)."""
        self.discard()
        if not self.usable(entrypoint, args):
            return
        for r in sorted(args):
            self._standbys[r] = Standby(r, (entrypoint, *args[r][:2]), {**os.environ, **envs[r]})

    def discard(self) -> None:
        standbys, self._standbys = self._standbys, {}
        for s in standbys.values():
            s.discard()


def _redirect(path: str, fd: int) -> None:
    if not path:
        return  # the console: the standby's own stream, inherited from the agent
    target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(target, fd)
    os.close(target)


def main() -> None:
    read_fd = int(os.environ.pop(STANDBY_FD_ENV))
    import torch
    import torch.distributed  # noqa: F401

    for name in filter(None, (n.strip() for n in os.environ.get(IMPORTS_ENV, "").split(","))):
        try:
            importlib.import_module(name)
        except Exception as exc:  # the script imports it again and gets the real error
            print(f"hyperpodrun standby: cannot import {name}: {exc}", file=sys.stderr, flush=True)
    with os.fdopen(read_fd, "rb") as pipe:
        data = pipe.read()
    if not data:
        return
    message = json.loads(data)
    _redirect(message["stdout"], 1)
    _redirect(message["stderr"], 2)
    os.environ.clear()
    os.environ.update(message["env"])
    script, *rest = message["argv"][1:]  # drop "-u": this interpreter runs unbuffered already
    sys.argv = [script, *rest]
    sys.path[0] = os.path.dirname(os.path.abspath(script))
    runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    main()
