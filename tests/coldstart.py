"""Importing handlers the way a Lambda cold start does, in fresh interpreters: what they load, and
how long it takes (the unit test tests/unit/test_cold_start.py and ``make bench``'s
tests/bench/coldstart_bench.py share this).

A handler is imported as Lambda's Python runtime imports it: ``app`` from its function directory,
the layer (``layers/common``) on ``sys.path``, the environment template.yaml gives the function
(Globals and its own variables; a value the stack resolves at deploy time becomes a placeholder)
plus the variables the runtime sets. No AWS endpoint is reachable from it: a handler that built a
client at import would still only build it (no call is made at import).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
FUNCTIONS = REPO / "functions"
LAYER = REPO / "layers" / "common"
TEMPLATE = REPO / "template.yaml"

HANDLERS = tuple(sorted(p.parent.name for p in FUNCTIONS.glob("*/app.py")))
#: Event-driven handlers on the path from a node-health event to the job running again.
FAULT_PATH = ("node_health", "job_events", "supervise_job")
#: Import budgets (ms, this repository's 2-core CI machine).
BUDGET_MS = 300
FAULT_PATH_BUDGET_MS = 150

#: Modules no handler may import at import time (top-level package names): the X-Ray SDK (its
#: subsegments are opt-in, hyperpod_control/observability.py), the Kubernetes client and boto3
#: (built on first use, adapters/kube/ and adapters/aws.py), and test or sandbox machinery that
#: the layer does not ship.
DENIED = (
    "aws_xray_sdk",
    "kubernetes",
    "boto3",
    "moto",
    "pytest",
    "_pytest",
    "sandbox",
    "tests",
    "hyperpod_agent",
)
#: Submodules denied although their package may be loaded (Powertools imports ``botocore`` itself
#: for its exception types): a botocore session or client means a client was being built.
DENIED_SUBMODULES = ("botocore.session", "botocore.client")

#: What Lambda's Python runtime sets in every function's environment (values for an import).
RUNTIME_ENV = {
    "AWS_REGION": "us-west-2",
    "AWS_DEFAULT_REGION": "us-west-2",
    "AWS_EXECUTION_ENV": "AWS_Lambda_python3.11",
    "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "512",
    "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
    "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
    "AWS_LAMBDA_RUNTIME_API": "127.0.0.1:9001",
    "AWS_XRAY_CONTEXT_MISSING": "LOG_ERROR",
    "AWS_XRAY_DAEMON_ADDRESS": "169.254.79.129:2000",
    "LAMBDA_RUNTIME_DIR": "/var/runtime",
    "_HANDLER": "app.lambda_handler",
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
}


def _template() -> dict[str, Any]:
    # The sandbox's loader reads the short-form tags (!Ref, !Sub ...); only this parent process
    # uses it, never the interpreter that imports a handler.
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from sandbox.template import load_template

    return load_template(TEMPLATE)


def _value(value: Any, parameters: dict[str, Any]) -> str:
    """A literal as the function sees it; a parameter's default; a placeholder for the rest."""
    if isinstance(value, dict) and set(value) == {"Ref"} and value["Ref"] in parameters:
        return str(parameters[value["Ref"]].get("Default", ""))
    if isinstance(value, dict):
        return "resolved-at-deploy"
    return str(value).lower() if isinstance(value, bool) else str(value)


def function_environments() -> dict[str, dict[str, str]]:
    """Each handler's environment at import: template.yaml's, then the runtime's."""
    template = _template()
    parameters = template.get("Parameters", {})
    common = template.get("Globals", {}).get("Function", {}).get("Environment", {}).get("Variables", {})
    envs: dict[str, dict[str, str]] = {}
    for logical, resource in template["Resources"].items():
        if resource.get("Type") != "AWS::Serverless::Function":
            continue
        props = resource.get("Properties", {})
        name = Path(str(props.get("CodeUri", ""))).name
        if name not in HANDLERS:
            continue
        own = props.get("Environment", {}).get("Variables", {})
        env = {k: _value(v, parameters) for k, v in {**common, **own}.items()}
        env.update(RUNTIME_ENV)
        env["AWS_LAMBDA_FUNCTION_NAME"] = f"stack-{logical}"
        env["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] = str(props.get("MemorySize", 512))
        env["LAMBDA_TASK_ROOT"] = str(FUNCTIONS / name)
        envs[name] = env
    return envs


def _clean_env(extra: dict[str, str]) -> dict[str, str]:
    """PATH and the locale from this process; nothing else leaks in (no PYTHONPATH, no AWS_*)."""
    keep = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR")}
    return {**keep, **extra}


# Runs in a fresh interpreter: imports one handler per forked child, so each child starts with
# only this probe's few standard-library modules, and reports its sys.modules.
_MODULES_PROBE = r"""
import json, os, sys

layer, jobs = sys.argv[1], json.loads(sys.argv[2])
results = {}
for name, code_dir, env in jobs:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        answer = {}
        try:
            os.environ.clear()
            os.environ.update(env)
            sys.path[:0] = [code_dir, layer]
            import importlib
            importlib.import_module("app")
            answer["modules"] = sorted(sys.modules)
            import pydantic
            def subclasses(cls):
                for sub in cls.__subclasses__():
                    yield sub
                    yield from subclasses(sub)
            answer["built_models"] = sorted(
                f"{c.__module__}.{c.__qualname__}" for c in set(subclasses(pydantic.BaseModel))
                if c.__module__.startswith("hyperpod_control") and c.__pydantic_complete__
            )
        except BaseException as exc:
            answer["error"] = f"{type(exc).__name__}: {exc}"
        with os.fdopen(write, "w") as out:
            json.dump(answer, out)
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as answer:
        results[name] = json.loads(answer.read() or '{"error": "no answer"}')
    os.waitpid(pid, 0)
print(json.dumps(results))
"""

# Runs in a fresh interpreter per sample: the import of one handler, timed.
_TIME_PROBE = r"""
import sys, time
sys.path[:0] = [sys.argv[1], sys.argv[2]]
start, cpu = time.perf_counter(), time.process_time()
import app
print(f"{(time.perf_counter() - start) * 1000:.3f} {(time.process_time() - cpu) * 1000:.3f}")
"""


def imported_modules(
    names: tuple[str, ...] = HANDLERS, extra_env: dict[str, str] | None = None
) -> dict[str, dict[str, Any]]:
    """``{handler: {"modules": [...], "built_models": [...]}}`` (or ``{"error": ...}``) after
    importing each handler alone, all from one interpreter (a forked child per handler);
    ``built_models``: the hyperpod_control models whose pydantic schema the import built."""
    envs = function_environments()
    jobs = [
        (name, str(FUNCTIONS / name), {**(envs.get(name) or RUNTIME_ENV), **(extra_env or {})})
        for name in names
    ]
    proc = subprocess.run(
        [sys.executable, "-c", _MODULES_PROBE, str(LAYER), json.dumps(jobs)],
        env=_clean_env({}),
        cwd="/",  # not the repository: `sandbox` and `tests` must not be importable by accident
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"import probe failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def denied_imports(modules: list[str]) -> list[str]:
    """The packages (and submodules) of ``modules`` on the deny list."""
    tops = {module.split(".", 1)[0] for module in modules}
    return sorted((tops & set(DENIED)) | (set(modules) & set(DENIED_SUBMODULES)))


def time_import(name: str, env: dict[str, str] | None = None) -> tuple[float, float]:
    """Milliseconds (wall, CPU) one fresh interpreter takes to import ``name``'s app.py."""
    environment = env if env is not None else function_environments()[name]
    proc = subprocess.run(
        [sys.executable, "-c", _TIME_PROBE, str(FUNCTIONS / name), str(LAYER)],
        env=_clean_env(environment),
        cwd="/",
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"importing {name} failed: {proc.stderr[-2000:]}")
    wall, cpu = proc.stdout.split()
    return float(wall), float(cpu)
