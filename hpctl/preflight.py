"""``hpctl preflight``: run the prerequisite checks from a workstation and print the results.

Calls the preflight service directly with the standard AWS environment (credentials,
AWS_REGION, AWS_ENDPOINT_URL for the sandbox), not through the Lambda; so the Kubernetes checks
run as the caller's principal, not the control plane's, which the access.kubernetes line says.
Exit codes: 0 no error failed, 1 an error-severity check failed, 2 bad input.
"""

from __future__ import annotations

import json
import shutil
import sys
import textwrap
from pathlib import Path
from typing import Any, TextIO

from hyperpod_control.models.preflight import CheckResult, PreflightReport

_MARK = {"passed": "ok", "failed": "FAIL", "skipped": "skip"}


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
    head = f"{mark:<17} {result.id}"
    body = f"{result.resource}: {result.message}" if result.resource else result.message
    lines = [head]
    lines += textwrap.wrap(body, width=max(width - 4, 40), initial_indent="    ", subsequent_indent="    ")
    if result.status.value == "failed" and result.remedy:
        lines += textwrap.wrap(
            f"fix: {result.remedy}",
            width=max(width - 4, 40),
            initial_indent="    ",
            subsequent_indent="         ",
        )
    return lines


def format_table(report: PreflightReport, width: int | None = None) -> str:
    """One block per check: status, id, then its message and (for failures) the fix."""
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
    order = {"failed": 0, "skipped": 2, "passed": 1}
    rows = sorted(report.results, key=lambda r: (order[r.status.value], r.severity.value != "error"))
    body = [line for r in rows for line in _row(r, width)]
    counts = {
        s: sum(1 for r in report.results if r.status.value == s) for s in ("passed", "failed", "skipped")
    }
    errors = len(report.failures)
    summary = (
        f"{counts['passed']} passed, {counts['failed']} failed ({errors} errors), "
        f"{counts['skipped']} skipped: "
        + ("ready to install." if report.ok else "fix the errors above before installing.")
    )
    return "\n".join([*header, *body, "", summary])


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
        report = preflight.run_preflight(
            request, adapters or preflight.PreflightAdapters.default(), preflight.options_from_env()
        )
    except InvalidInputError as exc:
        print(f"hpctl preflight: {exc}", file=err)
        return 2
    except ControlPlaneError as exc:
        print(f"hpctl preflight: {exc}", file=err)
        return 1
    if output == "json":
        print(json.dumps(report.dump(), indent=2), file=out)
    else:
        print(format_table(report), file=out)
    return 0 if report.ok else 1
