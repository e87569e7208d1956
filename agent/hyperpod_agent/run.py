"""``hyperpodrun``: parse the command line, wire the agent to its control server, run, exit.

The wiring is deliberately here and not in the agent: the control server gets the agent's
callbacks and never owns it, and the agent never knows it is served over HTTP.
"""

from __future__ import annotations

import logging
import os
import signal
import sys

from torch.distributed.elastic.agent.server.api import WorkerSpec
from torch.distributed.elastic.multiprocessing import Std
from torch.distributed.elastic.multiprocessing.api import SignalException
from torch.distributed.run import config_from_args

from . import rendezvous
from .agent import HANDLED_SIGNALS, HyperPodElasticAgent
from .config import build_parser, normalize_args
from .errors import ConfigurationError
from .events import EventPublisher
from .server import ControlServer

logger = logging.getLogger("hyperpod_agent")


def _setup_logging() -> None:
    level = os.environ.get("LOGLEVEL", "INFO").upper()
    logging.basicConfig(
        level=getattr(logging, level, logging.INFO),
        format="[hyperpodrun %(asctime)s %(levelname)s %(name)s] %(message)s",
        stream=sys.stderr,
    )


def main(argv: list[str] | None = None) -> None:
    _setup_logging()
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        options = normalize_args(args)
        rendezvous.register()
        config, cmd, cmd_args = config_from_args(args)
    except (ConfigurationError, ValueError, AssertionError) as exc:
        parser.error(str(exc))  # exits 2 with the usage line

    rdzv = rendezvous.HyperPodRendezvousHandler(
        run_id=config.run_id,
        nnodes=options.nnodes,
        master_addr=args.master_addr,
        master_port=int(args.master_port),
    )
    spec = WorkerSpec(
        role=config.role,
        local_world_size=config.nproc_per_node,
        entrypoint=cmd,
        args=tuple(cmd_args),
        rdzv_handler=rdzv,
        max_restarts=config.max_restarts,
        monitor_interval=config.monitor_interval,
        local_addr=config.local_addr,
    )
    stage_logs = {
        "log_dir": args.log_dir,
        "redirects": Std.from_str(args.redirects),
        "tee": Std.from_str(args.tee),
    }
    agent = HyperPodElasticAgent(
        spec,
        config.logs_specs,
        options,
        rdzv,
        start_method=config.start_method,
        log_line_prefix_template=config.log_line_prefix_template,
        stage_logs=stage_logs,
        events=EventPublisher.from_env(),
    )
    try:
        server = ControlServer(
            options.server_host,
            options.server_port,
            agent.callbacks(),
            log_level=options.server_log_level,
            shutdown_timeout=options.server_shutdown_timeout,
        )
    except OSError as exc:
        parser.error(
            f"cannot listen on {options.server_host}:{options.server_port} ({exc}); "
            "choose another --server-port"
        )
    server.start()
    try:
        agent.run()
    except SignalException:
        pass  # workers are down (run()'s finally); exit with 128 + signal like a shell would
    finally:
        # The workers are gone: a second signal may now end us at once.
        for name in HANDLED_SIGNALS:
            signal.signal(getattr(signal, name), signal.SIG_DFL)
        server.stop()
    sys.exit(agent.exit_code)


if __name__ == "__main__":
    main()
