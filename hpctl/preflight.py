"""``hpctl preflight``: run the prerequisite checks from a workstation and print the results.

Calls the preflight service directly with the standard AWS environment (credentials,
AWS_REGION, AWS_ENDPOINT_URL for the sandbox), not through the Lambda; so the Kubernetes checks
run as the caller's principal, not the control plane's, which the access.kubernetes line says.
Exit codes: 0 no error failed and every check ran, 1 an error-severity check failed, 2 bad input;
checks that could not run (AWS could not be called) exit with their cause's code, 5-9
(hpctl/errors.py), before a failure's 1: what they would find is unknown.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys
import textwrap
from collections import Counter
from pathlib import Path
from typing import Any, TextIO

from hyperpod_control.models.preflight import CAUSE_TEXT, CheckResult, PreflightReport

_MARK = {"passed": "ok", "failed": "FAIL", "skipped": "skip", "unchecked": "COULD NOT RUN"}


def load_cluster_config(path: str) -> dict[str, Any]:
    """A CreateCluster request as JSON (``aws sagemaker create-cluster --cli-input-json`` form) or YAML."""
    from hyperpod_control.exceptions import InvalidInputError

    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise InvalidInputError(
            f"--cluster-config {path}: {exc.strerror}.", remedy="give a readable file."
        ) from exc
    try:
        data = json.loads(text)
    except ValueError:
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise InvalidInputError(
                f"--cluster-config {path} is neither JSON nor YAML: {exc}", remedy="fix the file's syntax."
            ) from exc
    if not isinstance(data, dict):
        raise InvalidInputError(
            f"--cluster-config {path} holds no object.", remedy="give a CreateCluster request (an object)."
        )
    return data


def _row(result: CheckResult, width: int) -> list[str]:
    mark = _MARK[result.status.value] + (
        "" if result.status.value != "failed" else f" ({result.severity.value})"
    )
    lines = textwrap.wrap(
        f"{mark:<17} {result.id}", width=max(width, 60), subsequent_indent=" " * 18, break_on_hyphens=False
    )
    body = f"{result.resource}: {result.message}" if result.resource else result.message
    # ARNs and ids hold hyphens: break only at spaces, so each can be found (and copied) whole.
    lines += textwrap.wrap(
        body,
        width=max(width - 4, 40),
        initial_indent="    ",
        subsequent_indent="    ",
        break_on_hyphens=False,
    )
    if result.status.value in ("failed", "unchecked") and result.remedy:
        lines += textwrap.wrap(
            f"fix: {result.remedy}",
            width=max(width - 4, 40),
            initial_indent="    ",
            subsequent_indent="         ",
        )
    return lines


def format_table(report: PreflightReport, width: int | None = None) -> str:
    """One block per check: status, id, then its message and (for failures) the fix; the checks
    that could not run for the same reason share one block."""
    width = width or min(shutil.get_terminal_size((110, 20)).columns, 140)
    kind = "planned cluster" if report.planned else "cluster"
    header = [
        f"Preflight of HyperPod {kind} {report.cluster_name} for the {report.operator.value} operator"
        + (
            f" (EKS {report.eks_cluster_name}, Kubernetes {report.kubernetes_version})"
            if report.eks_cluster_name
            else ""
        ),
        "",
    ]
    order = {"failed": 0, "passed": 1, "skipped": 2}
    rows = sorted(
        (r for r in report.results if r.status.value in order),
        key=lambda r: (order[r.status.value], r.severity.value != "error"),
    )
    # Checks stopped by the same failed call say the same thing: one block, after the failures,
    # names them all.
    stopped: dict[tuple[str, str], list[str]] = {}
    for r in report.unchecked:
        stopped.setdefault((r.message, r.remedy), []).append(r.id)
    failed = sum(1 for r in rows if r.status.value == "failed")
    rows[failed:failed] = [
        CheckResult(id=", ".join(ids), severity="error", status="unchecked", message=message, remedy=remedy)
        for (message, remedy), ids in stopped.items()
    ]
    body = [line for r in rows for line in _row(r, width)]
    counts = {
        s: sum(1 for r in report.results if r.status.value == s) for s in ("passed", "failed", "skipped")
    }
    errors = len(report.failures)
    summary = (
        f"{counts['passed']} passed, {counts['failed']} failed ({errors} errors), {counts['skipped']} skipped"
    )
    if report.unchecked:
        why = Counter(CAUSE_TEXT[r.cause] for r in report.unchecked if r.cause)
        summary += f", {len(report.unchecked)} could not run (" + "; ".join(why) + ")"
    if report.ok:
        summary += ": ready to install."
    elif report.unchecked and not errors:
        summary += ": not known to be ready; fix what stopped the checks above and run preflight again."
    else:
        summary += ": fix the errors above before installing."
    return "\n".join([*header, *body, "", summary])


def exit_code(report: PreflightReport) -> int:
    """0 ready; the cause's code (5-9) when checks could not run; else 1 when an error failed."""
    from hpctl.errors import CAUSE_EXIT, EXIT_FAILED, EXIT_OK

    causes = [r.cause for r in report.unchecked if r.cause]
    if causes:
        return CAUSE_EXIT[Counter(causes).most_common(1)[0][0]]
    return EXIT_OK if report.ok else EXIT_FAILED


def run_preflight(
    cluster: str,
    operator: str = "addon",
    version: str | None = None,
    cluster_config_path: str | None = None,
    output: str = "table",
    *,
    adapters: Any = None,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
) -> int:
    from hpctl.errors import describe
    from hyperpod_control.exceptions import ControlPlaneError, InvalidInputError
    from hyperpod_control.models.preflight import PreflightInput
    from hyperpod_control.models.validation import parse_input
    from hyperpod_control.services import preflight

    try:
        payload: dict[str, Any] = {"clusterName": cluster, "operator": operator}
        if version:
            payload["addonVersion"] = version
        if cluster_config_path:
            payload["clusterConfig"] = load_cluster_config(cluster_config_path)
        request = parse_input(PreflightInput, payload)
        # No Step Functions Retry follows hpctl's call: botocore's retries were the last, and a
        # read still throttled or unanswered is a check that could not run.
        adapters = dataclasses.replace(
            adapters or preflight.PreflightAdapters.default(), retried_outside=False
        )
        report = preflight.run_preflight(request, adapters, preflight.options_from_env())
    except InvalidInputError as exc:
        print(f"hpctl preflight: {exc}", file=err)
        return 2
    except ControlPlaneError as exc:
        failure = describe(exc)
        print(failure.line.replace("hpctl:", "hpctl preflight:", 1), file=err)
        return failure.code
    if output == "json":
        print(json.dumps(report.dump(), indent=2), file=out)
    else:
        print(format_table(report), file=out)
    return exit_code(report)
