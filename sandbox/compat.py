"""Which moto the sandbox runs on, checked once before anything reaches into moto's internals.

``sandbox/patches.py`` and ``sandbox/aws_ext/`` patch moto's private modules (its ASL interpreter,
its response classes, its exceptions), so a moto outside the tested range fails somewhere in the
middle of a patch, with an ImportError or an AttributeError that says nothing about versions. This
module turns that into one line that names the supported range and what is installed.
"""

from __future__ import annotations

from importlib import metadata

#: The moto releases the sandbox is tested on. The same range is the `sandbox` extra's in
#: pyproject.toml (tests/unit/test_locks.py ties the two); the lock pins one release inside it.
MOTO_SUPPORTED = ">=5.2.6,<5.3"


class UnsupportedMotoError(RuntimeError):
    """The installed moto is outside MOTO_SUPPORTED (or missing); the sandbox cannot start."""


def require_supported_moto(installed: str | None = None) -> str:
    """Return the installed moto version, or raise UnsupportedMotoError naming the range and the fix."""
    fix = "run `make setup` (installs requirements/dev.lock) or pip install 'moto" + MOTO_SUPPORTED + "'"
    if installed is None:
        try:
            installed = metadata.version("moto")
        except metadata.PackageNotFoundError:
            raise UnsupportedMotoError(
                "the sandbox needs moto" + MOTO_SUPPORTED + " and moto is not installed: install the "
                "`sandbox` extra (pip install 'hyperpod-serverless-control-plane[sandbox]') or " + fix
            ) from None
    # packaging comes with the `sandbox` extra, like moto: imported only once moto is known present.
    from packaging.specifiers import SpecifierSet
    from packaging.version import InvalidVersion, Version

    try:
        ok = Version(installed) in SpecifierSet(MOTO_SUPPORTED)
    except InvalidVersion:
        ok = False
    if not ok:
        raise UnsupportedMotoError(
            f"the sandbox supports moto{MOTO_SUPPORTED}, but moto {installed} is installed: {fix}"
        )
    return installed
