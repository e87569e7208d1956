"""hyperpodrun's command line: torchrun's parser plus the HyperPod elastic agent's arguments.

Every torchrun argument is accepted unchanged (``torch.distributed.run.get_args_parser()``), each
settable through ``PET_<NAME>`` as with torchrun. On top of it come the arguments of the HyperPod
elastic agent with its documented defaults. ``--shutdown-timeout`` needs care: torch 2.12 and later
define it in torchrun's own parser (default: TORCH_ELASTIC_SHUTDOWN_TIMEOUT, else 30), which is why
the HyperPod elastic agent 1.1.3 dies with "conflicting option string" on those versions. We reuse
torch's definition when it exists and add ours when it does not; either way the value is resolved
as: the flag (or PET_SHUTDOWN_TIMEOUT), then TORCH_ELASTIC_SHUTDOWN_TIMEOUT, then HyperPod's 15.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import uuid
from collections.abc import Mapping
from dataclasses import dataclass

from torch.distributed.argparse_util import check_env, env
from torch.distributed.run import get_args_parser

from .errors import ConfigurationError

logger = logging.getLogger(__name__)

DEFAULT_SHUTDOWN_TIMEOUT = 15  # AWS's agent code; a table in AWS's docs says 30 (docs/hyperpod-contract.md)
SERVER_LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")

DESCRIPTION = """\
Run a training script on this pod's workers, driven by the HyperPod control plane over HTTP.

hyperpodrun takes every torchrun argument. The rendezvous is always 'hyperpod': this pod's group
rank, the node count, the master address and port, and the fault count arrive in POST /start from
the control plane, so the agent starts READY and launches nothing until told to (GET /status,
POST /start, /update, /stop, /shutdown on --server-host:--server-port).
"""

EPILOG = """\
Worker environment: RANK, LOCAL_RANK, WORLD_SIZE, GROUP_RANK, MASTER_ADDR, MASTER_PORT,
TORCHELASTIC_RESTART_COUNT and JOB_RESTART_COUNT (= the control plane's faultCount), and
HYPERPOD_ELASTICAGENT_SOCKET_SERVER_PATH for the worker API (hyperpod_agent.worker).
Log monitoring rules read every local rank's stdout; no --tee is needed for them.
Run hyperpodrun as PID 1 with an exec-form ENTRYPOINT so SIGTERM reaches it.
"""


def _nonneg_int(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number of seconds, got {value!r}") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"expected seconds >= 0, got {n}")
    return n


def _nonneg_float(value: str) -> float:
    try:
        n = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {value!r}") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"expected seconds >= 0, got {n}")
    return n


def build_parser() -> argparse.ArgumentParser:
    parser = get_args_parser()
    parser.prog = "hyperpodrun"
    parser.description = DESCRIPTION
    parser.epilog = EPILOG
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    existing = {opt for action in parser._actions for opt in action.option_strings}

    hp = parser.add_argument_group("HyperPod agent")
    hp.add_argument(
        "--shutdown-signal",
        "--shutdown_signal",
        action=env,
        default="SIGKILL",
        choices=["SIGTERM", "SIGKILL"],
        help="Signal sent to workers when they are stopped. With SIGTERM the agent waits "
        "--shutdown-timeout seconds, then sends SIGKILL. Default: SIGKILL.",
    )
    timeout_help = (
        "Seconds between the shutdown signal and SIGKILL (also the default of /stop's 'timeout'). "
        "Resolved as: this flag or PET_SHUTDOWN_TIMEOUT, then TORCH_ELASTIC_SHUTDOWN_TIMEOUT, then "
        f"{DEFAULT_SHUTDOWN_TIMEOUT}."
    )
    if "--shutdown-timeout" in existing:
        # torch >= 2.12 defines it; redefining it would be the 1.1.3 "conflicting option string".
        for action in parser._actions:
            if "--shutdown-timeout" in action.option_strings:
                action.help = timeout_help
                action.type = _nonneg_int
    else:
        hp.add_argument(
            "--shutdown-timeout",
            "--shutdown_timeout",
            action=env,
            type=_nonneg_int,
            default=None,
            help=timeout_help,
        )
    hp.add_argument(
        "--server-host",
        "--server_host",
        action=env,
        default="0.0.0.0",
        help="Address the control server binds ('::' for IPv6). Default: 0.0.0.0.",
    )
    hp.add_argument(
        "--server-port",
        "--server_port",
        action=env,
        type=int,
        default=8080,
        help="Port of the control server; 0 picks a free one. Default: 8080.",
    )
    hp.add_argument(
        "--server-log-level",
        "--server_log_level",
        action=env,
        default="info",
        choices=SERVER_LOG_LEVELS,
        help="Log level of the control server's request log. Default: info.",
    )
    hp.add_argument(
        "--server-shutdown-timeout",
        "--server_shutdown_timeout",
        action=env,
        type=_nonneg_int,
        default=300,
        help="Seconds the control server waits for requests in flight when the agent exits. Default: 300.",
    )
    hp.add_argument(
        "--pre-train-script",
        "--pre_train_script",
        action=env,
        default=None,
        help="Script run as a one-process stage before training, on every (re)start; a failure is a "
        "fault. A .py file runs with this Python, anything else is executed directly.",
    )
    hp.add_argument(
        "--pre-train-args",
        "--pre_train_args",
        action=env,
        default=None,
        help="Arguments of the pre-train script, passed as ONE argument string (as HyperPod does).",
    )
    hp.add_argument(
        "--post-train-script",
        "--post_train_script",
        action=env,
        default=None,
        help="Script run as a one-process stage after training succeeds.",
    )
    hp.add_argument(
        "--post-train-args",
        "--post_train_args",
        action=env,
        default=None,
        help="Arguments of the post-train script, passed as ONE argument string.",
    )
    hp.add_argument(
        "--inprocess-restart",
        "--inprocess_restart",
        action=check_env,
        help="In-process restart: workers survive a fault and wait at a barrier "
        "(hyperpod_agent.worker.InProcessRestart) instead of being killed and respawned.",
    )
    hp.add_argument(
        "--inprocess-timeout",
        "--inprocess_timeout",
        action=env,
        type=_nonneg_float,
        default=None,
        help="Seconds the agent waits for every local worker to reach the barrier after a fault "
        "before it falls back to a process restart. Default: wait forever.",
    )
    hp.add_argument(
        "--process-standby",
        "--process_standby",
        action=check_env,
        help="Process restart: keep one interpreter per local rank started, with torch (and "
        "HYPERPOD_STANDBY_IMPORTS) imported, to run the next generation of workers; falls back to "
        "new processes when one is missing. For .py training scripts.",
    )
    return parser


def resolve_shutdown_timeout(flag_value: int | None, environ: Mapping[str, str]) -> int:
    """The flag (or PET_SHUTDOWN_TIMEOUT, which torch's env action reads as the flag), then
    TORCH_ELASTIC_SHUTDOWN_TIMEOUT, then HyperPod's 15."""
    if flag_value is not None:
        return int(flag_value)
    raw = environ.get("TORCH_ELASTIC_SHUTDOWN_TIMEOUT")
    if raw is not None and raw.strip():
        try:
            value = int(raw)
        except ValueError:
            raise ConfigurationError(
                f"TORCH_ELASTIC_SHUTDOWN_TIMEOUT={raw!r} is not a whole number of seconds; "
                "set it to e.g. 30, or pass --shutdown-timeout"
            ) from None
        if value < 0:
            raise ConfigurationError(f"TORCH_ELASTIC_SHUTDOWN_TIMEOUT={value} must be >= 0")
        return value
    return DEFAULT_SHUTDOWN_TIMEOUT


@dataclass(frozen=True)
class HyperPodOptions:
    """The HyperPod-specific settings, resolved and checked."""

    shutdown_signal: signal.Signals
    shutdown_timeout: int
    server_host: str
    server_port: int
    server_log_level: str
    server_shutdown_timeout: int
    pre_train_script: str | None
    pre_train_args: str | None
    post_train_script: str | None
    post_train_args: str | None
    inprocess_restart: bool
    inprocess_timeout: float | None
    nnodes: int
    process_standby: bool = False


def normalize_args(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> HyperPodOptions:
    """Check the parsed arguments and force the hyperpod rendezvous; returns the HyperPod options.

    Mutates ``args`` the way torchrun's own ``run()`` does before ``config_from_args``."""
    environ = os.environ if environ is None else environ
    if args.rdzv_backend not in ("static", "hyperpod"):
        logger.warning(
            "--rdzv-backend=%s ignored: hyperpodrun always uses the 'hyperpod' rendezvous, "
            "whose ranks come from the control plane",
            args.rdzv_backend,
        )
    if args.standalone:
        logger.warning("--standalone ignored: ranks and the master address come from POST /start")
        args.standalone = False
    args.rdzv_backend = "hyperpod"
    if args.rdzv_id == "none":
        args.rdzv_id = environ.get("HYPERPOD_JOB_UID") or str(uuid.uuid4())
    if args.master_port is None:
        args.master_port = 29500

    nnodes_arg = args.nnodes
    if nnodes_arg == "1:1" and environ.get("NNODES"):
        # HyperPod injects NNODES into the pod; the checkpointless examples omit --nnodes.
        nnodes_arg = environ["NNODES"]
    parts = str(nnodes_arg).split(":")
    try:
        numbers = [int(p) for p in parts]
    except ValueError:
        raise ConfigurationError(f"--nnodes={nnodes_arg!r} must be a number, e.g. --nnodes 4") from None
    if (len(numbers) == 2 and numbers[0] != numbers[1]) or len(numbers) > 2:
        raise ConfigurationError(
            f"--nnodes={nnodes_arg}: elastic cluster size is not supported by hyperpodrun; pass one "
            "number (the control plane re-ranks pods instead of torchelastic resizing the group)"
        )
    if numbers[0] < 1:
        raise ConfigurationError(f"--nnodes={nnodes_arg} must be >= 1")
    args.nnodes = str(numbers[0])

    for flag, path in (
        ("--pre-train-script", args.pre_train_script),
        ("--post-train-script", args.post_train_script),
    ):
        if path and not os.path.isfile(path):
            raise ConfigurationError(
                f"{flag} {path!r}: no such file; give the script's path inside the image"
            )

    return HyperPodOptions(
        shutdown_signal=signal.Signals[args.shutdown_signal],
        shutdown_timeout=resolve_shutdown_timeout(args.shutdown_timeout, environ),
        server_host=args.server_host,
        server_port=int(args.server_port),
        server_log_level=args.server_log_level,
        server_shutdown_timeout=int(args.server_shutdown_timeout),
        pre_train_script=args.pre_train_script,
        pre_train_args=args.pre_train_args,
        post_train_script=args.post_train_script,
        post_train_args=args.post_train_args,
        inprocess_restart=bool(args.inprocess_restart),
        inprocess_timeout=args.inprocess_timeout,
        nnodes=numbers[0],
        process_standby=bool(args.process_standby),
    )
