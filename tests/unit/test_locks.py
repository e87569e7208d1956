"""The environments are the locks: what the tests run with is what `make` installs and `sam build`
packages, and the sandbox names the moto it supports instead of breaking inside a patch."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib

import pytest

from sandbox.compat import MOTO_SUPPORTED, UnsupportedMotoError, require_supported_moto
from tests.lockfile import DEV_LOCK, LAYER_REQUIREMENTS, REPO, canonical, drift, installed, pins, unhashed

pytestmark = pytest.mark.unit

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
LOCKS = [*sorted((REPO / "requirements").glob("*.lock")), LAYER_REQUIREMENTS]


def _requirement_name(requirement: str) -> str:
    return canonical(requirement.split("[")[0].split(">")[0].split("<")[0].split("=")[0].strip())


@pytest.mark.skipif(
    os.environ.get("HYPERPOD_UNLOCKED_ENV") == "1",
    reason="`make test-latest` runs on the ranges' newest releases, on purpose not the lock",
)
def test_the_venv_is_exactly_the_dev_lock():
    assert drift(pins(DEV_LOCK), installed()) == [], (
        "the environment running the tests is not requirements/dev.lock: run `make setup` "
        "(it rebuilds .venv from the lock), or `make lock` to move the lock deliberately"
    )


def test_the_layer_pins_exactly_the_dev_locks_versions():
    layer, lock = pins(LAYER_REQUIREMENTS), pins(DEV_LOCK)
    moved = {name: (version, lock.get(name)) for name, version in layer.items() if lock.get(name) != version}
    assert moved == {}, "layers/common/requirements.txt drifted from requirements/dev.lock: run `make lock`"


def test_the_layer_holds_the_runtime_dependencies_and_no_emulator():
    layer = pins(LAYER_REQUIREMENTS)
    runtime = {_requirement_name(r) for r in PYPROJECT["project"]["dependencies"]}
    assert runtime - set(layer) == set()
    assert {"moto", "flask", "cryptography", "pytest"} & set(layer) == set()


@pytest.mark.parametrize("lock", LOCKS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_pin_is_exact_and_hashed(lock):
    text = lock.read_text()
    requirement_lines = [line for line in text.splitlines() if line and not line.startswith((" ", "#", "-"))]
    assert requirement_lines, f"{lock} pins nothing"
    assert [line for line in requirement_lines if "==" not in line] == []
    assert unhashed(lock) == []


def test_the_installed_package_brings_no_emulator():
    runtime = {_requirement_name(r) for r in PYPROJECT["project"]["dependencies"]}
    assert {"moto", "cryptography", "flask", "packaging"} & runtime == set()
    sandbox_extra = {_requirement_name(r) for r in PYPROJECT["project"]["optional-dependencies"]["sandbox"]}
    assert "moto" in sandbox_extra


def test_hpctl_help_imports_neither_moto_nor_the_sandbox():
    probe = (
        "import sys, contextlib, io\n"
        "from hpctl.cli import main\n"
        "with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
        "    main(['--help'])\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('moto', 'sandbox', 'flask')))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "[]"


def test_the_sandbox_moto_range_is_the_sandbox_extras():
    (moto,) = [r for r in PYPROJECT["project"]["optional-dependencies"]["sandbox"] if r.startswith("moto")]
    assert moto.endswith("]" + MOTO_SUPPORTED), (moto, MOTO_SUPPORTED)
    assert require_supported_moto(pins(DEV_LOCK)["moto"]) == pins(DEV_LOCK)["moto"]


@pytest.mark.parametrize("version", ["5.2.5", "5.3.0", "6.0.0", "not-a-version"])
def test_an_unsupported_moto_is_refused_in_one_line_naming_range_and_version(version):
    with pytest.raises(UnsupportedMotoError) as refused:
        require_supported_moto(version)
    message = str(refused.value)
    assert "\n" not in message
    assert MOTO_SUPPORTED in message and f"moto {version} is installed" in message
    assert "make setup" in message


def test_drift_names_each_difference_and_ignores_what_no_lock_holds():
    locked = {"boto3": "1.44.18", "moto": "5.2.6", "gone": "1.0"}
    have = {"boto3": "1.44.19", "moto": "5.2.6", "extra": "2.0", "pip": "26.3"}
    assert drift(locked, have) == [
        "boto3: locked 1.44.18, installed 1.44.19",
        "extra 2.0 is installed but not in the lock",
        "gone==1.0 is locked but not installed",
    ]
