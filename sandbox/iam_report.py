"""``make iam-report``: per function, what it used across the test suite against what it is granted.

The test suite runs with ``SANDBOX_IAM_USAGE_DIR`` set, so every sandbox writes its functions' AWS
calls (with IAM's decision), Kubernetes requests (with the API server's) and the deployed roles'
policies there (``sandbox.identity``). This reads them all and prints, per function:

- AWS actions used, and on which resources;
- denials nobody expected (a test that provokes one says so with ``expecting_denial``): each
  fails the report, since a deployed function would fail the same way;
- actions granted and never used, with the reason to keep each from ``docs/iam-unused.json``
  (those without a reason are listed as such, to be removed or explained);
- Kubernetes requests by verb and resource, and their denials.

    python -m sandbox.iam_report [DIR]      (exit 1 on an unexpected denial)
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

from sandbox.iam import _as_list, _glob

REPO_ROOT = Path(__file__).resolve().parent.parent
REASONS = REPO_ROOT / "docs" / "iam-unused.json"
DEFAULT_DIR = REPO_ROOT / ".iam-usage"


def load(directory: Path) -> dict[str, Any]:
    merged: dict[str, Any] = {"aws": [], "kube": [], "granted": {}}
    for path in sorted(directory.glob("usage-*.json")):
        data = json.loads(path.read_text())
        merged["aws"] += data.get("aws", [])
        merged["kube"] += data.get("kube", [])
        merged["granted"].update(data.get("granted", {}))
    return merged


def granted_actions(policies: list[dict]) -> list[str]:
    return sorted(
        {
            a
            for doc in policies
            for s in _as_list(doc.get("Statement"))
            if s.get("Effect") == "Allow"
            for a in _as_list(s.get("Action"))
        }
    )


def report(data: dict[str, Any], reasons: dict[str, dict[str, str]]) -> tuple[list[str], int]:
    lines: list[str] = []
    used: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    unknown: dict[str, set[str]] = defaultdict(set)
    failures = 0
    for use in data["aws"]:
        if use["allowed"]:
            used[use["function"]][use["action"]].add(use["resource"])
            if not use["resource_known"]:
                unknown[use["function"]].add(use["action"])
        elif not use["expected_denial"]:
            failures += 1
            lines.append(f"DENIED  {use['function']}: {use['action']} on {use['resource']}")
    kube: dict[str, set[str]] = defaultdict(set)
    for req in data["kube"]:
        what = f"{req['verb']} {req['group'] + '/' if req['group'] else ''}{req['resource']}"
        if req["allowed"]:
            kube[req["function"]].add(what)
        elif not req["expected_denial"] and req["status"] == 403:
            failures += 1
            lines.append(f"DENIED  {req['function']}: Kubernetes {what} ({req['status']})")
    for function in sorted(data["granted"]):  # the project's own functions (not test fixtures')
        lines.append(f"\n{function}")
        for action in sorted(used.get(function, {})):
            note = " (resource not evaluated)" if action in unknown.get(function, set()) else ""
            lines.append(f"  used     {action}{note}")
        for what in sorted(kube.get(function, set())):
            lines.append(f"  k8s      {what}")
        for action in granted_actions(data["granted"].get(function, [])):
            if any(_glob(action, u, ignore_case=True) for u in used.get(function, {})):
                continue
            reason = reasons.get(function, {}).get(action) or "NO REASON RECORDED: remove it, or say why"
            lines.append(f"  unused   {action}: {reason}")
    return lines, failures


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    directory = Path(args[0]) if args else DEFAULT_DIR
    if not directory.is_dir():
        print(f"no usage recorded in {directory}: run the tests first (make test)", file=sys.stderr)
        return 2
    data = load(directory)
    reasons = json.loads(REASONS.read_text()) if REASONS.exists() else {}
    lines, failures = report(data, reasons)
    print("\n".join(lines))
    print(
        f"\n{len(data['granted'])} functions, {len({(u['function'], u['action']) for u in data['aws']})} "
        f"(function, action) pairs used, {failures} unexpected denials"
    )
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
