"""``hpctl sandbox up``: the sandbox as a foreground service for other processes.

It starts moto on 127.0.0.1 with the stack deployed, writes the environment a client needs
(``NAME=value`` lines), and serves until Ctrl-C or SIGTERM; everything runs in this one process,
so stopping it leaves nothing behind.
"""

from __future__ import annotations

import shlex
import signal
import sys
import threading
import time
from pathlib import Path
from typing import TextIO

from sandbox.core import Sandbox, SandboxConfig
from sandbox.world import WorldOptions


def write_env_file(path: str | Path, env: dict[str, str]) -> None:
    lines = [f"{key}={shlex.quote(value)}" for key, value in sorted(env.items())]
    Path(path).write_text("\n".join(lines) + "\n")


def serve(
    *,
    env_file: str | None = None,
    port: int = 0,
    nodes: int = 4,
    time_scale: float = 0.05,
    kubeconfig: str | None = None,
    pod_start_delay: float = 0.0,
    out: TextIO = sys.stdout,
    stop: threading.Event | None = None,
) -> int:
    stop = stop or threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    started = time.monotonic()
    sandbox = Sandbox(
        SandboxConfig(
            server=True,
            port=port,
            time_scale=time_scale,
            world=WorldOptions(nodes=nodes),
            kube=True,
            kubeconfig=Path(kubeconfig) if kubeconfig else None,
            pod_start_delay=pod_start_delay,
            control=True,
        )
    )
    try:
        print("hpctl sandbox: starting moto and deploying template.yaml ...", file=out, flush=True)
        sandbox.start()
        env = sandbox.env
        if env_file:
            write_env_file(env_file, env)
        print(
            f"hpctl sandbox: AWS endpoint {sandbox.endpoint_url}"
            f" (ready in {time.monotonic() - started:.1f}s)\n"
            f"  stack {sandbox.config.stack_name}: {len(sandbox.stack.resources)} resources, "
            f"{len(sandbox.stack.skipped)} not emulated (IAM, permissions)\n"
            f"  HyperPod cluster {env['HYPERPOD_CLUSTER_NAME']} ({nodes} nodes), orchestrated by EKS cluster "
            f"{env['EKS_CLUSTER_NAME']}\n"
            f"  Kubernetes API {sandbox.kube.url} (KUBECONFIG={sandbox.kubeconfig}); pods run as local "
            f"processes\n"
            f"  faults: hpctl sandbox fail-node|heal-node|crash-pod|hang-pod|repeat-event "
            f"(control {sandbox.control.url})\n"
            + (f"  environment written to {env_file} (set -a; . {env_file}; set +a)\n" if env_file else "")
            + "  Ctrl-C or SIGTERM stops it.",
            file=out,
            flush=True,
        )
        stop.wait()
        print("hpctl sandbox: stopping ...", file=out, flush=True)
        return 0
    finally:
        sandbox.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        print("hpctl sandbox: stopped", file=out, flush=True)
