"""hpctl's argument parsing and dispatch. Exit codes: 0 ok, 1 the operation failed, 2 bad usage."""

from __future__ import annotations

import argparse
import json
import sys

from hpctl.stack import StackNotFound, default_stack_name


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hpctl",
        description=(
            "Operate the HyperPod serverless control plane. Commands use the standard AWS "
            "environment (credentials, AWS_REGION, AWS_ENDPOINT_URL), so they work the same against "
            "AWS and against the local sandbox (source the env file of `hpctl sandbox up`)."
        ),
    )
    parser.add_argument(
        "--stack",
        default=None,
        help="CloudFormation stack of the control plane (default: $HPCTL_STACK, else samconfig.toml's "
        "stack_name, else hyperpod-control-plane)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sandbox = sub.add_parser("sandbox", help="run the local sandbox (an emulated AWS account)")
    sandbox_sub = sandbox.add_subparsers(dest="sandbox_command", required=True, metavar="SUBCOMMAND")
    up = sandbox_sub.add_parser(
        "up",
        help="start the sandbox in the foreground until Ctrl-C",
        description="Start moto on 127.0.0.1 with the control plane's stack deployed in it, write the "
        "environment a client needs, and serve until Ctrl-C or SIGTERM.",
    )
    up.add_argument("--env-file", help="write NAME=value lines here (source it: set -a; . FILE; set +a)")
    up.add_argument("--port", type=int, default=0, help="moto's port (default: any free port)")
    up.add_argument(
        "--kubeconfig", help="write the kubeconfig here (default: a temporary file, in the env file)"
    )
    up.add_argument(
        "--nodes", type=int, default=4, help="nodes of the sandbox's HyperPod cluster (default 4)"
    )
    up.add_argument(
        "--time-scale",
        type=float,
        default=0.05,
        help="wall seconds per sandbox second for Waits, retries and schedules (default 0.05; 1 = real time)",
    )

    demo = sub.add_parser("demo", help="run the end-to-end demo on a fresh sandbox and print its timeline")
    demo.add_argument("--time-scale", type=float, default=0.01, help="sandbox time scale (default 0.01)")

    register = sub.add_parser(
        "register",
        help="register a HyperPod cluster with the control plane",
        description="Run the register_cluster workflow: wait until the HyperPod cluster is InService, "
        "then record which training operator runs it (a cluster runs exactly one).",
    )
    register.add_argument("--cluster", required=True, help="HyperPod cluster name")
    register.add_argument("--mode", required=True, choices=["addon", "serverless"], help="training operator")
    register.add_argument("--no-wait", action="store_true", help="start the workflow and return")
    register.add_argument("--timeout", type=float, default=3600, help="seconds to wait (default 3600)")

    status = sub.add_parser("status", help="show the control plane's record of a cluster")
    status.add_argument("--cluster", required=True, help="HyperPod cluster name")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    stack = args.stack or default_stack_name()
    try:
        if args.command == "sandbox":
            from sandbox.server import serve

            return serve(
                env_file=args.env_file,
                port=args.port,
                nodes=args.nodes,
                time_scale=args.time_scale,
                kubeconfig=args.kubeconfig,
            )
        if args.command == "demo":
            from hpctl.demo import run_demo

            return run_demo(time_scale=args.time_scale)
        if args.command == "register":
            from hpctl.commands import register

            outcome = register(stack, args.cluster, args.mode, wait=not args.no_wait, timeout=args.timeout)
            if isinstance(outcome, str):
                print(outcome)
                return 0
            print(json.dumps({"status": outcome.status, "error": outcome.error, "cause": outcome.cause}))
            return 0 if outcome.ok else 1
        if args.command == "status":
            from hpctl.commands import status

            print(json.dumps(status(stack, args.cluster), indent=2))
            return 0
    except StackNotFound as exc:
        print(f"hpctl: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        from hyperpod_control.exceptions import ControlPlaneError

        if isinstance(exc, ControlPlaneError):
            print(f"hpctl: {exc}", file=sys.stderr)
            return 1
        raise
    return 2


if __name__ == "__main__":
    sys.exit(main())
