"""Checks what `sam build` produced: every function's handler, and the layer's package and deps at
exactly the versions of layers/common/requirements.txt (the dev lock's, tests/unit/test_locks.py).

Run by `make build` (``python -m tests.check_sam_build .aws-sam/build``); exits 1 naming what is
missing, so a template or layer change that builds "successfully" into something Lambda cannot
import fails the build.
"""

from __future__ import annotations

import sys
from importlib import metadata
from pathlib import Path

from sandbox.template import load_template
from tests.lockfile import LAYER_REQUIREMENTS, canonical, drift, pins

REPO = Path(__file__).resolve().parent.parent


def problems(build_dir: Path) -> list[str]:
    found: list[str] = []
    template = load_template(REPO / "template.yaml")
    for logical, res in template["Resources"].items():
        if res["Type"] == "AWS::Serverless::Function":
            module = res["Properties"]["Handler"].rsplit(".", 1)[0]
            if not (build_dir / logical / f"{module}.py").is_file():
                found.append(f"{logical}: {module}.py missing from the build")
        if res["Type"] == "AWS::Serverless::LayerVersion":
            site = build_dir / logical / "python"
            for package in (
                "hyperpod_control/__init__.py",
                "aws_lambda_powertools",
                "pydantic",
                "pydantic_core",
            ):
                if not (site / package).exists():
                    found.append(f"{logical}: python/{package} missing from the layer")
            dists = metadata.distributions(path=[str(site)])
            packaged = {canonical(d.metadata["Name"]): d.version for d in dists}
            found += [f"{logical}: {line}" for line in drift(pins(LAYER_REQUIREMENTS), packaged)]
    return found


if __name__ == "__main__":
    issues = problems(Path(sys.argv[1]))
    for issue in issues:
        print(f"sam build check: {issue}", file=sys.stderr)
    if not issues:
        print("sam build check: every function handler is in place; the layer holds exactly its locked pins")
    sys.exit(1 if issues else 0)
