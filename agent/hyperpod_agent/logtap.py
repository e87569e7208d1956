"""Every local rank's stdout, read by the agent: echoed to the container log and fed to the log rules.

torch sends a worker's stdout straight to the console (the default) or into a file
(``--redirects``; ``--tee`` adds a thread that copies the file to the console with a rank prefix).
Log rules must read every rank's output in each case without changing what the user sees, so:

- a rank whose stdout would go to the console gets a named pipe instead; the agent reads it and
  writes every byte to its own stdout unchanged, a whole line at a time (ranks do not interleave
  inside a line, as they would not with one write per line to a shared pipe);
- a rank whose stdout torch writes to a file (redirect or tee) is tailed from that file, and torch
  goes on doing what the flags say.

Nothing lands on disk that the user did not ask for, and stderr is not touched (the rules read
stdout, as AWS's agent does).
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import shutil
import tempfile
import threading
from collections.abc import Callable

from torch.distributed.elastic.multiprocessing.api import LogsDest, LogsSpecs

logger = logging.getLogger(__name__)

CONSOLE = ""  # torch's LogsDest value for "the agent's own stream"


class _Source:
    """One local rank's stdout: a pipe this tap owns (echoed) or a file torch writes (tailed)."""

    def __init__(self, local_rank: int, path: str, fd: int | None):
        self.local_rank = local_rank
        self.path = path
        self.fd = fd  # the pipe's fd, opened read-write so it never reports end-of-file
        self.offset = 0
        self.partial = b""
        self.echoed = 0  # bytes of ``partial`` already echoed (a line that has no end yet)
        self.idle = False

    @property
    def echo(self) -> bool:
        return self.fd is not None

    def read(self) -> bytes:
        if self.fd is not None:
            try:
                return os.read(self.fd, 65536)
            except BlockingIOError:
                return b""
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return b""
        self.offset += len(data)
        return data


class OutputTap:
    """Reads the training stage's stdout of every local rank; ``on_line(local_rank, line)`` gets
    each complete line. Wrap the training stage's LogsSpecs with ``wrap``; call ``close`` once its
    processes are gone (it reads what they left first)."""

    def __init__(self, on_line: Callable[[int, str], None], echo_fd: int = 1, interval: float = 0.1):
        self._on_line = on_line
        self._echo_fd = echo_fd
        self._interval = interval
        self._lock = threading.Lock()
        self._sources: list[_Source] = []
        self._dir: str | None = None
        self._launches = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def wrap(self, inner: LogsSpecs) -> LogsSpecs:
        return _TappedLogsSpecs(inner, self)

    # -- called from reify, before torch opens the destinations ----------------------------------
    def _tap(self, dest: LogsDest) -> LogsDest:
        self.close()
        sources = []
        with self._lock:
            if self._dir is None:
                self._dir = tempfile.mkdtemp(prefix="hyperpodrun-out-")
            self._launches += 1
            for local_rank, path in sorted(dest.stdouts.items()):
                if path == CONSOLE:
                    fifo = os.path.join(self._dir, f"{self._launches}_{local_rank}.stdout")
                    os.mkfifo(fifo, 0o600)
                    # Read-write: opening never blocks, torch's open for writing finds a reader,
                    # and a worker's exit is not an end-of-file that would need a reopen.
                    fd = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)
                    dest.stdouts[local_rank] = fifo
                    sources.append(_Source(local_rank, fifo, fd))
                elif path != os.devnull:
                    sources.append(_Source(local_rank, path, None))
            self._sources = sources
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="hyperpod-output", daemon=True)
            self._thread.start()
        return dest

    def close(self) -> None:
        """Read what is left, then forget the sources (their processes are gone)."""
        with self._lock:
            sources, self._sources = self._sources, []
            for src in sources:
                self._drain(src, final=True)
                if src.fd is not None:
                    os.close(src.fd)
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(src.path)

    def stop(self) -> None:
        self.close()
        self._stop.set()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)

    # -- the reader thread -----------------------------------------------------------------------
    def _loop(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                fds = [s.fd for s in self._sources if s.fd is not None]
            try:
                if fds:
                    select.select(fds, [], [], self._interval)
                else:
                    self._stop.wait(self._interval)
            except (OSError, ValueError):
                pass  # a pipe closed under us by close(); the next round has the new sources
            try:
                with self._lock:
                    for src in self._sources:
                        self._drain(src, final=False)
            except Exception:
                logger.exception("reading the workers' output failed")

    def _drain(self, src: _Source, final: bool) -> None:
        got = False
        while True:
            data = src.read()
            if not data:
                break
            got = True
            src.partial += data
            *lines, src.partial = src.partial.split(b"\n")
            if lines:
                if src.echo:
                    self._write(b"\n".join(lines)[src.echoed :] + b"\n")
                src.echoed = 0
                for line in lines:
                    self._on_line(src.local_rank, line.decode(errors="replace"))
            if src.fd is None:
                break  # a file is read to its end at once
        # A line with no end yet (a progress bar, a prompt) is echoed once the rank is quiet.
        if src.echo and src.partial and (final or (not got and src.idle)):
            self._write(src.partial[src.echoed :])
            src.echoed = len(src.partial)
        if final and src.partial:
            self._on_line(src.local_rank, src.partial.decode(errors="replace"))
            src.partial, src.echoed = b"", 0
        src.idle = not got

    def _write(self, data: bytes) -> None:
        while data:
            try:
                n = os.write(self._echo_fd, data)
            except OSError as exc:
                logger.warning("cannot write the workers' output to the container log: %s", exc)
                return
            data = data[n:]


class _TappedLogsSpecs(LogsSpecs):
    """The user's LogsSpecs (``--tee``, ``--redirects``, ``--log-dir``, ``--local-ranks-filter``),
    with console-bound stdouts sent through the tap's pipes."""

    def __init__(self, inner: LogsSpecs, tap: OutputTap):
        super().__init__()
        self._inner = inner
        self._tap_owner = tap

    def reify(self, envs: dict[int, dict[str, str]]) -> LogsDest:
        return self._tap_owner._tap(self._inner.reify(envs))

    @property
    def root_log_dir(self) -> str:
        return self._inner.root_log_dir
