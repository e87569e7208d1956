"""hpctl's argument parsing and dispatch. Exit codes: hpctl/errors.py (EXIT_CODES_HELP), one per
class of failure; a failure prints one line with its fix, the traceback only with --debug."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

from hpctl.errors import (
    EXIT_CODES_HELP,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    REGION_FIX,
    describe,
    resolve_region,
    use_region,
)
from hpctl.stack import default_stack_name


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hpctl",
        description=(
            "Operate the HyperPod serverless control plane. Commands use the standard AWS "
            "environment (credentials, AWS_REGION, AWS_ENDPOINT_URL), so they work the same against "
            "AWS and against the local sandbox (source the env file of `hpctl sandbox up`). The Region "
            "is --region, else AWS_REGION, else AWS_DEFAULT_REGION, else the profile's, for every command."
        ),
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
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

    up.add_argument(
        "--pod-start-delay",
        type=float,
        default=0.0,
        help="seconds each pod waits before starting, standing for image pull (default 0)",
    )
    _fault_commands(sandbox_sub)

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

    preflight = sub.add_parser(
        "preflight",
        help="check a cluster's prerequisites for the training operator",
        description="Run every prerequisite check against a HyperPod cluster (or a planned one from a "
        "CreateCluster request file) and print each result with its fix; exit 1 when an error fails.",
    )
    preflight.add_argument(
        "--cluster", required=True, help="the HyperPod cluster's name (not the EKS cluster's)"
    )
    preflight.add_argument(
        "--operator", choices=["addon", "serverless"], default="addon", help="default addon"
    )
    preflight.add_argument(
        "--version", help="add-on version to check, e.g. v1.2.1-eksbuild.1 (default: latest)"
    )
    preflight.add_argument(
        "--cluster-config",
        metavar="FILE",
        help="CreateCluster request (JSON or YAML) of a planned cluster; its VPC and quota checks are errors",
    )
    preflight.add_argument("--output", choices=["table", "json"], default="table")

    install = sub.add_parser(
        "install",
        help="install a cluster's training operator (the install_operator workflow)",
        description="Run install_operator: preflight, the cluster's lock, then the add-on with its role and "
        "Pod Identity association (addon) or access and CRD (serverless), showing each step as it runs.",
    )
    install.add_argument("--cluster", required=True, help="HyperPod cluster name")
    install.add_argument("--operator", choices=["addon", "serverless"], default="addon", help="default addon")
    install.add_argument(
        "--version", help="add-on version, e.g. v1.2.1-eksbuild.1 (default: latest compatible)"
    )
    install.add_argument("--config", help="JSON or YAML file of the add-on's configuration values")
    install.add_argument("--role-arn", help="an existing IAM role for the operator (default: one is created)")
    install.add_argument("--no-wait", action="store_true", help="start the workflow and return")
    uninstall = sub.add_parser("uninstall", help="remove a cluster's training operator (uninstall_operator)")
    uninstall.add_argument("--cluster", required=True, help="HyperPod cluster name")
    uninstall.add_argument(
        "--force",
        action="store_true",
        help="uninstall even while HyperPodPytorchJobs exist (they are deleted)",
    )
    uninstall.add_argument("--no-wait", action="store_true", help="start the workflow and return")

    upgrade = sub.add_parser(
        "upgrade",
        help="upgrade or downgrade the training-operator add-on without losing a job",
        description="Plan the update (shown before anything changes), then run upgrade_operator: jobs are "
        "snapshotted when the update crosses 1.2.0, drained and resubmitted for a downgrade below it, and "
        "a failed update rolls back.",
    )
    upgrade.add_argument("--cluster", required=True, help="HyperPod cluster name")
    upgrade.add_argument("--version", help="target add-on version, e.g. v1.2.1-eksbuild.1 (default: latest)")
    upgrade.add_argument(
        "--force", action="store_true", help="go ahead although jobs use features the target version lacks"
    )
    upgrade.add_argument("--dry-run", action="store_true", help="show the plan only; change nothing")

    addon = sub.add_parser("addon", help="the training-operator add-on's versions")
    addon_sub = addon.add_subparsers(dest="addon_command", required=True, metavar="SUBCOMMAND")
    versions = addon_sub.add_parser(
        "versions",
        help="list the add-on versions compatible with the cluster's Kubernetes and what each supports",
    )
    versions.add_argument("--cluster", required=True, help="HyperPod cluster name")
    versions.add_argument("--output", choices=["table", "json"], default="table")

    status = sub.add_parser("status", help="show the control plane's record of a cluster")
    status.add_argument("--cluster", required=True, help="HyperPod cluster name")
    _jobs_commands(sub)
    _operations_commands(sub)
    _common_options(parser, top=True)
    return parser


def _common_options(parser: argparse.ArgumentParser, top: bool = False) -> None:
    """--region and --debug on hpctl and on every (sub)command, so they work before or after it."""
    # Below the top, SUPPRESS: an option not given there leaves the top's value alone.
    region_default = None if top else argparse.SUPPRESS
    debug_default = False if top else argparse.SUPPRESS
    parser.add_argument(
        "--region",
        default=region_default,
        help="AWS Region (default: AWS_REGION, AWS_DEFAULT_REGION, then the profile's region)",
    )
    parser.add_argument(
        "--debug", action="store_true", default=debug_default, help="on a failure, print the traceback"
    )
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):  # aliases share a parser
                _common_options(child)


def _operations_commands(sub: Any) -> None:
    """``hpctl dlq show|redrive`` and ``hpctl unlock`` (docs/runbooks.md)."""
    dlq = sub.add_parser("dlq", help="the events dead-letter queue: show its messages, or redrive them")
    dlq_sub = dlq.add_subparsers(dest="dlq_command", required=True, metavar="SUBCOMMAND")
    show = dlq_sub.add_parser(
        "show", help="list the dead letters: each event, its target and the error that put it there"
    )
    show.add_argument("--max", type=int, default=10, help="at most this many messages (default 10)")
    show.add_argument("--json", action="store_true", help="print JSON instead of text")
    redrive = dlq_sub.add_parser(
        "redrive",
        help="hand each dead letter's event to its function again (asynchronously); delete those accepted",
    )
    redrive.add_argument("--max", type=int, default=100, help="at most this many messages (default 100)")
    unlock = sub.add_parser(
        "unlock",
        help="release a cluster's workflow lock whose execution has ended (aborted or timed out)",
        description="Release the cluster's lock (its OPERATOR item's lock_owner) when the install, "
        "uninstall or upgrade execution holding it has ended without releasing it; an install it "
        "interrupted is marked FAILED. The next install takes such a lock over by itself.",
    )
    unlock.add_argument("--cluster", required=True, help="HyperPod cluster name")
    unlock.add_argument(
        "--force", action="store_true", help="release it even while its execution runs (stop that first)"
    )


def _jobs_commands(sub: Any) -> None:
    """``hpctl jobs`` and ``hpctl jobs describe NAME``: the HyperPodPyTorchJobs the control plane knows."""
    jobs = sub.add_parser(
        "jobs",
        help="list the training jobs of the registered clusters (describe NAME: one job in detail)",
        description="List every HyperPodPyTorchJob the control plane has recorded on its registered "
        "clusters (serverless mode: run by its supervisor; addon mode: as AWS's operator reported "
        "them), from its DynamoDB table: cluster, phase, ranks, spares, restarts, how long ago it was "
        "seen or how long it ran, and why it is where it is. `hpctl jobs describe NAME` shows one job.",
    )
    jobs.add_argument("--cluster", default=None, help="only this HyperPod cluster (name or ARN)")
    jobs.add_argument("--json", action="store_true", help="print JSON instead of a table")
    jobs_sub = jobs.add_subparsers(dest="jobs_command", metavar="SUBCOMMAND")
    describe = jobs_sub.add_parser(
        "describe",
        help="one job: phase, ranks, Kubernetes conditions and pods, history",
        description="Show one job: its phase and reason, the supervise_job execution and segment, the "
        "master address, which pod holds each rank on which node and IP (spares marked spare), the "
        "job's conditions and pods as the cluster's Kubernetes API reports them now, and the history "
        "the control plane recorded. When the Kubernetes API cannot be read, the records are still "
        "shown with the reason. Exit 1 for an unknown job, 2 when several clusters have one of that "
        "name (pass --cluster).",
    )
    _one_job_arguments(describe)
    describe.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="print JSON instead of text"
    )
    timeline = jobs_sub.add_parser(
        "timeline",
        help="the job's faults, decisions and recoveries over time (terminal; --out FILE.html too)",
        description="Draw the job's recorded history on four lanes - lifecycle, faults, remediation "
        "decisions, recoveries - over time, and list its entries; --out also writes it as an HTML page.",
    )
    _one_job_arguments(timeline)
    timeline.add_argument("--out", dest="out_file", default=None, help="also write an HTML page here")
    logs = jobs_sub.add_parser(
        "logs",
        help="one rank's output (its pod's log, through the cluster's Kubernetes API)",
        description="Print the output of the pod that holds a rank of the job (rank 0 by default), as "
        "`kubectl logs` reads it; --follow keeps printing until the pod stops running.",
    )
    _one_job_arguments(logs)
    logs.add_argument("--rank", type=int, default=0, help="whose output (default 0)")
    logs.add_argument("--follow", "-f", action="store_true", help="keep printing while the pod runs")
    logs.add_argument(
        "--previous", action="store_true", help="the output of the container's run before its last restart"
    )


def _one_job_arguments(parser: argparse.ArgumentParser) -> None:
    """NAME, --namespace and --cluster of the commands about one job."""
    parser.add_argument("name", help="the HyperPodPyTorchJob's name (metadata.name)")
    parser.add_argument("--namespace", "-n", default="default", help="its namespace (default: default)")
    # SUPPRESS: given after the subcommand or before it (hpctl jobs --cluster X describe NAME), both count.
    parser.add_argument(
        "--cluster", default=argparse.SUPPRESS, help="the HyperPod cluster (name or ARN) that runs it"
    )


def _fault_commands(sandbox_sub: Any) -> None:
    """Fault injection into a running sandbox (`hpctl sandbox up`), through its control endpoint."""
    fail = sandbox_sub.add_parser(
        "fail-node",
        help="fail a node as a dead instance does, and put HyperPod's node-health event",
        description="By default a dirty failure, as on EKS: the node's processes freeze (connections "
        "to its pods hang), its pods stay Running; after the node-monitor grace period (40 s on the "
        "sandbox clock) the node goes NotReady with the unreachable taints, and each pod is evicted "
        "when its 300 s toleration runs out, then stays Terminating. HyperPod marks the node (label, "
        "taint, fault annotation) and puts a 'SageMaker HyperPod Cluster Node Health Event' on the "
        "default bus at the failure (--event first), once NotReady (--event after), or not at all "
        "(--event never). --clean: the processes die at once, the node is NotReady and its pods "
        "are deleted at once.",
    )
    fail.add_argument("node", help="node name, hyperpod-i-...")
    fail.add_argument(
        "--clean", dest="mode", action="store_const", const="clean", default="dirty", help="a clean kill"
    )
    fail.add_argument(
        "--event",
        choices=["first", "after", "never"],
        default="first",
        help="when HyperPod's health event comes: at the failure (default), after NotReady, never",
    )
    fail.add_argument("--fault-type", default="NvidiaErrorTerminate", help="default NvidiaErrorTerminate")
    fail.add_argument("--reason", dest="fault_reason", default="XidHardwareFailure", help="fault reason")
    fail.add_argument(
        "--repair", dest="repair_action", default="Replace", choices=["Replace", "Reboot", "None"]
    )
    fail.add_argument("--times", type=int, default=1, help="put the event N times, each with its own id")
    heal = sandbox_sub.add_parser("heal-node", help="bring a failed node back and put a Healthy event")
    heal.add_argument("node", help="node name, hyperpod-i-...")
    heal.add_argument("--times", type=int, default=1, help="put the event N times, each with its own id")
    repeat = sandbox_sub.add_parser("repeat-event", help="put a node's last health event again with new ids")
    repeat.add_argument("node", help="node name, hyperpod-i-...")
    repeat.add_argument("--times", type=int, default=2, help="how many more copies (default 2)")
    crash = sandbox_sub.add_parser("crash-pod", help="kill one pod's main process (SIGKILL by default)")
    crash.add_argument("pod", help="NAMESPACE/POD")
    crash.add_argument("--container", help="container name (default: the first)")
    crash.add_argument("--signal", dest="sig", default="KILL", help="signal name, e.g. KILL, TERM, SEGV")
    hang = sandbox_sub.add_parser("hang-pod", help="SIGSTOP every process of a pod (--resume: SIGCONT)")
    hang.add_argument("pod", help="NAMESPACE/POD")
    hang.add_argument("--resume", action="store_true", help="resume a hung pod")
    agent = sandbox_sub.add_parser(
        "hang-agent",
        help="SIGSTOP a pod's agent only: its port accepts and never answers, its workers run on",
    )
    agent.add_argument("pod", help="NAMESPACE/POD")
    agent.add_argument("--container", help="container name (default: the first)")


def _fault_call(args: argparse.Namespace) -> Any:
    import os
    import signal

    from sandbox.control import request

    url = os.environ.get("HPCTL_SANDBOX_CONTROL")
    if not url:
        raise _UsageError(
            "HPCTL_SANDBOX_CONTROL is not set: start `hpctl sandbox up --env-file FILE` and "
            "source FILE (set -a; . FILE; set +a)"
        )
    op = args.sandbox_command
    if op in ("fail-node", "heal-node", "repeat-event"):
        if not args.node.startswith("hyperpod-i-"):
            raise _UsageError(f"node {args.node!r} is not a HyperPod node name (hyperpod-i-...)")
        keys = {"fail-node": ("mode", "event", "fault_type", "fault_reason", "repair_action", "times")}.get(
            op, ("times",)
        )
        return request(url, op, {"node": args.node, **{k: getattr(args, k) for k in keys}})
    namespace, _, name = args.pod.partition("/")
    if not name:
        raise _UsageError(f"pod {args.pod!r}: write it as NAMESPACE/POD")
    if op == "hang-agent":
        body = {"namespace": namespace, "name": name}
        if args.container:
            body["container"] = args.container
        return request(url, op, body)
    if op == "crash-pod":
        sig = getattr(signal, f"SIG{args.sig.upper().removeprefix('SIG')}", None)
        if sig is None:
            raise _UsageError(f"unknown signal {args.sig}")
        body = {"namespace": namespace, "name": name, "sig": int(sig)}
        if args.container:
            body["container"] = args.container
        return request(url, op, body)
    return request(url, "resume-pod" if args.resume else "hang-pod", {"namespace": namespace, "name": name})


class _UsageError(Exception):
    pass


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    restore_region = None
    try:
        restore_region = _use_region(args)
        stack = args.stack or default_stack_name()
        if args.command == "sandbox" and args.sandbox_command != "up":
            print(json.dumps(_fault_call(args)))
            return 0
        if args.command == "sandbox":
            from sandbox.server import serve

            return serve(
                env_file=args.env_file,
                port=args.port,
                nodes=args.nodes,
                time_scale=args.time_scale,
                kubeconfig=args.kubeconfig,
                pod_start_delay=args.pod_start_delay,
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
        if args.command == "preflight":
            from hpctl.preflight import run_preflight

            return run_preflight(args.cluster, args.operator, args.version, args.cluster_config, args.output)
        if args.command in ("install", "uninstall"):
            from hpctl import install as workflows

            if args.command == "install":
                outcome = workflows.install(
                    stack,
                    args.cluster,
                    args.operator,
                    args.version,
                    args.config,
                    args.role_arn,
                    wait=not args.no_wait,
                )
            else:
                outcome = workflows.uninstall(stack, args.cluster, args.force, wait=not args.no_wait)
            if isinstance(outcome, str):
                print(outcome)
                return 0
            return 0 if outcome.ok else 1
        if args.command == "upgrade":
            from hpctl.upgrade import exit_code
            from hpctl.upgrade import upgrade as run_upgrade

            return exit_code(run_upgrade(stack, args.cluster, args.version, args.force, args.dry_run))
        if args.command == "addon":
            import io

            from hpctl.upgrade import addon_versions

            table = io.StringIO()
            rows = addon_versions(args.cluster, out=table)
            print(json.dumps(rows, indent=2) if args.output == "json" else table.getvalue().rstrip("\n"))
            return 0
        if args.command == "jobs":
            from hpctl.jobs import run as run_jobs

            return run_jobs(
                stack,
                args.jobs_command,
                name=getattr(args, "name", None),
                namespace=getattr(args, "namespace", "default"),
                cluster=args.cluster,
                as_json=args.json,
                rank=getattr(args, "rank", 0),
                follow=getattr(args, "follow", False),
                previous=getattr(args, "previous", False),
                out_file=getattr(args, "out_file", None),
            )
        if args.command == "dlq":
            from hpctl import operations

            if args.dlq_command == "show":
                operations.dlq_show(stack, args.max, as_json=args.json)
                return 0
            counts = operations.dlq_redrive(stack, args.max)
            return 0 if counts["left"] == 0 else 1
        if args.command == "unlock":
            from hpctl.operations import unlock

            unlock(stack, args.cluster, force=args.force)
            return 0
        if args.command == "status":
            from hpctl.commands import status

            print(json.dumps(status(stack, args.cluster), indent=2))
            return 0
    except _UsageError as exc:
        print(f"hpctl: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except Exception as exc:
        if args.debug:
            raise
        if isinstance(exc, RuntimeError) and args.command in ("sandbox", "demo"):
            # the sandbox's control endpoint refused or did not answer, or no supported moto is
            # installed (sandbox.compat.UnsupportedMotoError): its message is the line
            print(f"hpctl: {exc}", file=sys.stderr)
            return 1
        failure = describe(exc)
        print(failure.line, file=sys.stderr)
        return failure.code
    finally:
        if restore_region is not None:
            restore_region()
    return 2


def _use_region(args: argparse.Namespace) -> Callable[[], None] | None:
    """The Region every command resolves the same way, in the environment while it runs (the
    sandbox's own commands and the demo need none: they talk to a sandbox, or start their own)."""
    if args.command in ("sandbox", "demo"):
        return None
    region = resolve_region(args.region)
    if not region:
        from hyperpod_control.exceptions import RegionMissingError

        raise RegionMissingError("no AWS Region is configured.", remedy=REGION_FIX)
    return use_region(region)


if __name__ == "__main__":
    sys.exit(main())
