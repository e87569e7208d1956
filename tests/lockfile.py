"""The committed lock files, read: the exact version each package is pinned to.

One reader for every check that keeps the environments honest: the tests in
tests/unit/test_locks.py (the venv and the Lambda layer against requirements/dev.lock), `make build`'s
check of what `sam build` packaged (tests/check_sam_build.py), and `make test-latest`, which prints
how today's newest releases differ from the lock:

    python -m tests.lockfile diff requirements/dev.lock
"""

from __future__ import annotations

import re
import sys
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEV_LOCK = REPO / "requirements" / "dev.lock"
LAYER_REQUIREMENTS = REPO / "layers" / "common" / "requirements.txt"

#: In a venv but never in a lock: pip comes with the venv, the two projects are installed editable.
NOT_LOCKED = frozenset({"pip", "hyperpod-serverless-control-plane", "hyperpod-agent"})

_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([^\s;\\]+)")


def canonical(name: str) -> str:
    """PEP 503's normal form: `Typing_Extensions` and `typing-extensions` are one package."""
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(path: Path) -> dict[str, str]:
    """name -> version of every `name==version` requirement in a pip requirements/lock file."""
    found: dict[str, str] = {}
    for line in path.read_text().splitlines():
        match = _PIN.match(line)
        if match:
            found[canonical(match.group(1))] = match.group(2)
    return found


def unhashed(path: Path) -> list[str]:
    """The pins of a lock that carry no `--hash` (pip's hash-checking mode refuses them)."""
    blocks = re.split(r"\n(?=\S)", path.read_text())
    return [block.split()[0] for block in blocks if _PIN.match(block) and "--hash=sha256:" not in block]


def installed() -> dict[str, str]:
    """name -> version of every distribution in the running interpreter's environment."""
    return {canonical(d.metadata["Name"]): d.version for d in metadata.distributions()}


def drift(locked: dict[str, str], have: dict[str, str], ignore: frozenset[str] = NOT_LOCKED) -> list[str]:
    """One line per package whose installed version is not the locked one, or that one side lacks."""
    lines = []
    for name in sorted((set(locked) | set(have)) - ignore):
        want, got = locked.get(name), have.get(name)
        if want == got:
            continue
        if want is None:
            lines.append(f"{name} {got} is installed but not in the lock")
        elif got is None:
            lines.append(f"{name}=={want} is locked but not installed")
        else:
            lines.append(f"{name}: locked {want}, installed {got}")
    return lines


def without(text: str, pinned: dict[str, str]) -> str:
    """A lock's text less the packages ``pinned`` holds (each package's block: its pin, hashes and
    comments): what an environment needs beyond one it reuses (``.venv-aws-agent`` over ``.venv``)."""
    blocks = re.split(r"\n(?=\S)", text.rstrip("\n"))
    kept = [b for b in blocks if not ((m := _PIN.match(b)) and canonical(m.group(1)) in pinned)]
    return "\n".join(kept) + "\n"


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "without":
        sys.stdout.write(without(sys.stdin.read(), pins(Path(sys.argv[2]))))
        sys.exit(0)
    if len(sys.argv) != 3 or sys.argv[1] != "diff":
        sys.exit("usage: python -m tests.lockfile diff LOCKFILE | without LOCKFILE < LOCK > LOCK")
    changes = drift(pins(Path(sys.argv[2])), installed())
    print("\n".join(changes) if changes else "the environment is exactly the lock")
    sys.exit(1 if changes else 0)
