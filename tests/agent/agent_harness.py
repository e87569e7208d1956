"""Helpers for the agent tests: run hyperpodrun as a real process on loopback and drive it over
HTTP the way the control plane does. Every wait polls a condition with a deadline. (Imported as
agent_harness, a name no other test directory uses.)"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

from sandbox.testing import eventually

HERE = Path(__file__).parent
TRAIN = str(HERE / "train_allreduce.py")
GRACEFUL = str(HERE / "train_graceful.py")
HYPERPODRUN = str(Path(sys.executable).parent / "hyperpodrun")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# One way to wait on a condition in tests: the sandbox's.
wait_for = eventually


class Agent:
    def __init__(
        self,
        name: str,
        ctl: Path,
        agent_args: list[str],
        script_args: list[str],
        env=None,
        script: str = TRAIN,
    ):
        self.name = name
        self.port = free_port()
        self.log = open(ctl / f"agent_{name}.log", "w")  # noqa: SIM115 - closed in close()
        cmd = [
            HYPERPODRUN,
            "--server-host",
            "127.0.0.1",
            "--server-port",
            str(self.port),
            "--monitor-interval",
            "0.05",
            *agent_args,
            script,
            "--ctl",
            str(ctl),
            *script_args,
        ]
        full_env = {
            **os.environ,
            "HYPERPOD_RESOURCE_CONFIG_PATH": str(ctl / f"ipt_{name}.json"),
            "HYPERPOD_LOG_MONITOR_INTERVAL": "0.1",
            **(env or {}),
        }
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, env=full_env)
        wait_for(self._up, 60, f"agent {name} to serve /status")

    def _up(self):
        if self.proc.poll() is not None:
            raise AssertionError(
                f"agent {self.name} exited with {self.proc.returncode}: {self.logtext()[-3000:]}"
            )
        try:
            return self.status()
        except OSError:
            return None

    def logtext(self) -> str:
        self.log.flush()
        return Path(self.log.name).read_text()

    def request(self, method: str, path: str, body=None, raw: bytes | None = None) -> tuple[int, object]:
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}",
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")

    def status(self) -> dict:
        code, body = self.request("GET", "/status")
        assert code == 200, body
        return body

    def post(self, path: str, body=None, expect: int = 200):
        code, resp = self.request("POST", path, body)
        assert code == expect, f"{path} -> {code} {resp}\n{self.logtext()[-2000:]}"
        return resp

    def wait_state(self, state: str, timeout: float = 60) -> dict:
        def check():
            s = self.status()
            return s if s["status"] == state else None

        try:
            return wait_for(check, timeout, f"agent {self.name} {state}")
        except AssertionError:
            raise AssertionError(
                f"agent {self.name} not {state}: {self.status()}\n{self.logtext()[-4000:]}"
            ) from None

    def pids(self) -> dict[int, int]:
        workers = self.status().get("workers") or {}
        return {int(k): v for k, v in workers.get("pids", {}).items()}

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def start_body(rank: int, nnodes: int, master_port: int, fault_count: int = 0, **extra) -> dict:
    return {
        "rank": rank,
        "nnodes": nnodes,
        "faultCount": fault_count,
        "master_addr": "127.0.0.1",
        "master_port": master_port,
        **extra,
    }


def read_events(ctl: Path) -> list[dict]:
    path = ctl / "events.jsonl"
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        with contextlib.suppress(json.JSONDecodeError):
            out.append(json.loads(line))
    return out


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purpose; its parent has not reaped it yet.
    with contextlib.suppress(FileNotFoundError):
        if Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z":
            return False
    return True


def inject_fault(ctl: Path, rank: int, mode: str) -> None:
    """Ask train_allreduce.py's ``rank`` to fail (raise, exit, hang). Written with a rename so the
    worker never reads a half-written file."""
    tmp = ctl / f"fault_rank{rank}.tmp"
    tmp.write_text(mode)
    os.replace(tmp, ctl / f"fault_rank{rank}")
