"""``hpctl install`` and ``hpctl uninstall``: start the workflow, show each step as it runs with its
elapsed time, and end with a summary (argument parsing is in cli.py)."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from hpctl.stack import load_outputs
from hpctl.workflows import Outcome, follow, start

#: Pass and Choice states that only move data; the step list shows the work.
_PLUMBING = ("Defaults", "Start", "UseCluster", "UsePlan", "LockTaken", "ChooseOperator", "PreflightPassed")


def load_config(path: str | Path) -> dict[str, Any]:
    """The add-on's configuration values from a JSON or YAML file."""
    text = Path(path).read_text()
    try:
        data = json.loads(text)
    except ValueError:
        import yaml

        data = yaml.safe_load(text)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: the configuration must be a mapping (hpTrainingControllerManager: ...)")
    return data


def install_input(
    cluster: str,
    operator: str = "addon",
    version: str | None = None,
    config: dict[str, Any] | None = None,
    role_arn: str | None = None,
) -> dict[str, Any]:
    """The execution input, as the Step Functions console or an EventBridge rule would send it."""
    payload: dict[str, Any] = {"clusterName": cluster, "operator": operator}
    if version:
        payload["addonVersion"] = version
    if config is not None:
        payload["configurationValues"] = config
    if role_arn:
        payload["roleArn"] = role_arn
    return payload


def _watch(
    sfn: Any,
    arn: str,
    *,
    timeout: float,
    out: TextIO | None,
    poll: Callable[[float], None] = time.sleep,
) -> Outcome:
    """Follow an execution, one line per step (Pass plumbing hidden), with elapsed seconds."""
    return follow(sfn, arn, timeout=timeout, out=out, poll=poll, hide=_PLUMBING)


def summary(outcome: Outcome, what: str) -> str:
    """One paragraph a person reads at the end: what was installed, or which step failed and why."""
    if outcome.ok:
        out = outcome.output or {}
        operator = out.get("operator") or {}
        if isinstance(operator, dict):
            parts = [f"operator {operator.get('operator', out.get('mode', '?'))}"]
            parts += [
                f"{k} {operator[k]}" for k in ("addonVersion", "roleArn", "associationId") if operator.get(k)
            ]
        else:
            parts = [f"operator {out.get('mode')}"]
        return f"{what} SUCCEEDED on {out.get('clusterName', '?')}: " + ", ".join(parts) + "."
    # Each catcher names its step in the workflow's failedStep variable.
    failed_step = outcome.assigned("failedStep") or "?"
    return f"{what} {outcome.status} at {failed_step}: {outcome.error}: {outcome.cause}"


def install(
    stack: str,
    cluster: str,
    operator: str = "addon",
    version: str | None = None,
    config_path: str | None = None,
    role_arn: str | None = None,
    wait: bool = True,
    *,
    timeout: float = 3600.0,
    sfn: Any = None,
    cloudformation: Any = None,
    out: TextIO = sys.stderr,
) -> Outcome | str:
    """Run install_operator for ``cluster``; with ``wait``, follow it and return its outcome."""
    import boto3

    outputs = load_outputs(stack, cloudformation)
    sfn = sfn or boto3.client("stepfunctions")
    config = load_config(config_path) if config_path else None
    payload = install_input(cluster, operator, version, config, role_arn)
    arn = start(sfn, outputs["InstallOperatorStateMachineArn"], f"install-{operator}-{cluster}", payload)
    print(f"install_operator started: {arn}", file=out, flush=True)
    if not wait:
        return arn
    outcome = _watch(sfn, arn, timeout=timeout, out=out)
    print(summary(outcome, "install"), file=out, flush=True)
    return outcome


def uninstall(
    stack: str,
    cluster: str,
    force: bool = False,
    wait: bool = True,
    *,
    timeout: float = 3600.0,
    sfn: Any = None,
    cloudformation: Any = None,
    out: TextIO = sys.stderr,
) -> Outcome | str:
    """Run uninstall_operator for ``cluster`` (refused while jobs exist unless ``force``)."""
    import boto3

    outputs = load_outputs(stack, cloudformation)
    sfn = sfn or boto3.client("stepfunctions")
    payload = {"clusterName": cluster, "force": force}
    arn = start(sfn, outputs["UninstallOperatorStateMachineArn"], f"uninstall-{cluster}", payload)
    print(f"uninstall_operator started: {arn}", file=out, flush=True)
    if not wait:
        return arn
    outcome = _watch(sfn, arn, timeout=timeout, out=out)
    print(summary(outcome, "uninstall"), file=out, flush=True)
    return outcome
