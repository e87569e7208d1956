"""The import contract: which part of the tree may import which.

The layer ``hyperpod_control`` is read bottom-up: ``models`` (shapes, no I/O) <- ``adapters`` (AWS,
Kubernetes, the store) <- ``services`` (decisions and steps) <- ``functions/*/app.py``. A change that
makes an adapter reach into a service, a model reach into an adapter, or two modules import each
other (even inside a function) fails here, in the lint stage of the tests, instead of as a circular
import at a Lambda's cold start. Imports are read with ``ast``; nothing is imported.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
LIBRARY = ROOT / "layers" / "common" / "hyperpod_control"

# Top-level modules of the library that every layer may use: they hold no decisions and import
# nothing from the layers.
SHARED = {"hyperpod_control", "hyperpod_control.exceptions", "hyperpod_control.deadline"}


def _modules(package_dir: Path, package: str) -> dict[str, Path]:
    found = {}
    for path in package_dir.rglob("*.py"):
        parts = (package, *path.relative_to(package_dir).with_suffix("").parts)
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def _type_checking_only(tree: ast.AST) -> set[int]:
    """Ids of the import nodes under ``if TYPE_CHECKING:``: never run, so never a circle."""
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(inner) for stmt in node.body for inner in ast.walk(stmt))
    return skipped


def _imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """Every module of ``known`` that ``name`` imports, at module level or inside a function.
    ``from package import module`` imports the module (as import-linter counts it)."""
    out: set[str] = set()
    tree = ast.parse(path.read_text())
    skipped = _type_checking_only(tree)
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                here = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
                here = here[: len(here) - node.level + 1]
                base = ".".join([*here, base] if base else here)
            submodules = [f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in known]
            targets = submodules if len(submodules) == len(node.names) else [base, *submodules]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                out.add(target)
    return out


def _graph(package_dir: Path, package: str) -> dict[str, set[str]]:
    known = _modules(package_dir, package)
    return {name: _imports(name, path, known) for name, path in known.items()}


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for vertex in graph:
        if vertex not in index:
            visit(vertex)
    return found


LIBRARY_GRAPH = _graph(LIBRARY, "hyperpod_control")


def _violations(layer: str, allowed: set[str]) -> list[str]:
    return sorted(
        f"{module} imports {target}"
        for module, targets in LIBRARY_GRAPH.items()
        if _layer(module) == layer
        for target in targets
        if target not in SHARED and _layer(target) not in allowed
    )


def test_models_import_only_models():
    assert _violations("models", {"models"}) == []


def test_adapters_import_models_never_services():
    assert _violations("adapters", {"models", "adapters", "settings", "observability"}) == []


def test_the_library_has_no_import_circle():
    assert _cycles(LIBRARY_GRAPH) == []


SANDBOX_GRAPH = _graph(ROOT / "sandbox", "sandbox")


def test_the_sandbox_has_no_import_circle():
    assert _cycles(SANDBOX_GRAPH) == []


def test_the_sandbox_does_not_import_its_own_client():
    # The emulator stands for AWS and Kubernetes; hpctl is a client of it, never a part.
    for module, path in _modules(ROOT / "sandbox", "sandbox").items():
        tree = ast.parse(path.read_text())
        names = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names] + [
            n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)
        ]
        assert not [n for n in names if n == "hpctl" or n.startswith("hpctl.")], module


def test_the_agent_does_not_import_the_control_plane():
    agent = _graph(ROOT / "agent" / "hyperpod_agent", "hyperpod_agent")
    offending = sorted(
        f"{module}: {line.strip()}"
        for module in agent
        for line in _modules(ROOT / "agent" / "hyperpod_agent", "hyperpod_agent")[module]
        .read_text()
        .splitlines()
        if "hyperpod_control" in line and "import" in line
    )
    assert offending == []


def test_the_checker_sees_a_circle():
    # The checker itself: two modules importing each other, one of them inside a function.
    assert _cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []
