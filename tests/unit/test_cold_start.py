"""Cold start: importing a handler builds no AWS client and pulls in no test or sandbox machinery."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from unit_support import FUNCTIONS

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
    # The X-Ray SDK, which Powertools' module-level Tracer imports, builds its own sampling client
    # ("xray"); that is Powertools' documented pattern, not one of the control plane's clients.
    assert [name for name in report["created_clients"] if name != "xray"] == []
    assert report["kubernetes"] == []
    assert report["moto"] == []
    assert report["sandbox"] == []
