"""Cold start: importing a handler builds no AWS client and pulls in no test or sandbox machinery,
nor the X-Ray SDK, the Kubernetes client or boto3 (the timings are ``make bench``'s,
tests/bench/coldstart_bench.py: nothing here is timed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from unit_support import FUNCTIONS

from tests.coldstart import DENIED, FAULT_PATH, HANDLERS, denied_imports, imported_modules

pytestmark = pytest.mark.unit

APPS = sorted(p.parent.name for p in FUNCTIONS.glob("*/app.py"))

PROBE = r"""
import importlib.util, json, sys
from pathlib import Path

import botocore.session

created = []
_real_create_client = botocore.session.Session.create_client


def _spy(self, service_name, *args, **kwargs):
    created.append(service_name)
    return _real_create_client(self, service_name, *args, **kwargs)


botocore.session.Session.create_client = _spy

for i, path in enumerate(json.loads(sys.argv[1])):
    spec = importlib.util.spec_from_file_location(f"cold_app_{i}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    assert callable(module.lambda_handler), path

from hyperpod_control.adapters import aws

print(json.dumps({
    "cached_clients": [list(k) for k in aws._clients],
    "created_clients": created,
    "kubernetes": sorted(m for m in sys.modules if m == "kubernetes" or m.startswith("kubernetes.")),
    "moto": sorted(m for m in sys.modules if m == "moto" or m.startswith("moto.")),
    "sandbox": sorted(m for m in sys.modules if m == "sandbox" or m.startswith("sandbox.")),
}))
"""


def test_there_are_handlers_to_check():
    assert {"check_cluster", "node_health", "record_failure", "record_operator"} <= set(APPS)


def test_importing_every_handler_builds_no_client_and_imports_no_kubernetes_or_moto(tmp_path):
    paths = [str(FUNCTIONS / name / "app.py") for name in APPS]
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AWS_", "POWERTOOLS_", "PYTEST")) and k != "TABLE_NAME"
    }
    env.update(
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_REGION="us-west-2",
        AWS_DEFAULT_REGION="us-west-2",
        TABLE_NAME="t-cold",
        POWERTOOLS_TRACE_DISABLED="true",
        POWERTOOLS_METRICS_DISABLED="true",
    )

    proc = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(paths)],
        cwd=tmp_path,  # not the repository root: `sandbox` must not be importable by accident
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["cached_clients"] == []
    assert report["created_clients"] == []
    assert report["kubernetes"] == []
    assert report["moto"] == []
    assert report["sandbox"] == []


@pytest.fixture(scope="module")
def imports_by_handler():
    """Each handler imported alone in a fresh interpreter (one probe process, a fork per handler)."""
    return imported_modules()


def test_every_handler_is_probed(imports_by_handler):
    assert set(HANDLERS) == set(APPS) and set(FAULT_PATH) <= set(HANDLERS)
    errors = {name: found["error"] for name, found in imports_by_handler.items() if "error" in found}
    assert errors == {}


@pytest.mark.parametrize("name", HANDLERS)
def test_handler_imports_nothing_on_the_deny_list(imports_by_handler, name):
    found = imports_by_handler[name]
    assert "error" not in found, found.get("error")
    assert "hyperpod_control.observability" in found["modules"]  # the probe imported the handler
    assert denied_imports(found["modules"]) == [], (
        f"{name} imports {denied_imports(found['modules'])} at import time: build it on first use "
        "(adapters/aws.py get_client, adapters/kube/), or see observability.py for the X-Ray SDK"
    )


def test_the_probe_sees_the_xray_sdk_when_subsegments_are_turned_on():
    """XRAY_SUBSEGMENTS=true is the opt-in (template parameter XRaySubsegments): Powertools' Tracer
    and the SDK are then imported, and the deny list above would name them."""
    found = imported_modules(("node_health",), extra_env={"XRAY_SUBSEGMENTS": "true"})["node_health"]
    assert "error" not in found, found.get("error")
    assert "aws_xray_sdk" in denied_imports(found["modules"])
    assert "aws_xray_sdk" in DENIED


def test_under_provisioned_concurrency_the_fault_path_warms_its_clients_at_init():
    """Lambda initializes a provisioned environment ahead of any event; there the fault path's
    handlers build their clients and import the Kubernetes client at init (adapters/aws.py
    prewarm_when_provisioned), which on demand wait for the first invocation (the test above)."""
    provisioned = {"AWS_LAMBDA_INITIALIZATION_TYPE": "provisioned-concurrency"}
    for name, found in imported_modules(FAULT_PATH, extra_env=provisioned).items():
        assert "error" not in found, f"{name}: {found.get('error')}"
        assert {"boto3", "kubernetes", "botocore.client"} <= set(denied_imports(found["modules"])), name
        assert "aws_xray_sdk" not in denied_imports(found["modules"]), name
