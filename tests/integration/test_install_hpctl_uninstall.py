"""`hpctl uninstall` as a user runs it: another process, configured by nothing but the sandbox's
environment (server mode: moto over HTTP on loopback, the state machines and their Lambdas in this
process, the sandbox Kubernetes API server behind the world's EKS cluster)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator

import pytest

from hyperpod_control.models.install import ADDON_NAME, JOB_CRD
from sandbox import Sandbox, SandboxConfig
from sandbox.testing import eventually
from sandbox.world import WorldOptions

pytestmark = pytest.mark.integration

HPCTL = [sys.executable, "-m", "hpctl.cli"]
EXECUTION_ARN = re.compile(r"^arn:aws:states:[a-z0-9-]+:\d{12}:execution:[^:]+:uninstall-[\w-]+$")


@pytest.fixture(scope="module")
def sb() -> Iterator[Sandbox]:
    config = SandboxConfig(
        server=True, world=WorldOptions(nodes=1), kube=True, pods=False, parameters={"LogLevel": "ERROR"}
    )
    with Sandbox(config) as sandbox:
        yield sandbox


def hpctl(sb: Sandbox, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, **sb.env}
    return subprocess.run([*HPCTL, *args], env=env, capture_output=True, text=True, timeout=120)


def _install(sb: Sandbox) -> None:
    outcome = sb.run_execution(
        "InstallOperatorStateMachine", {"clusterName": sb.world.hyperpod_cluster_name}, timeout=90
    )
    assert outcome.ok, (outcome.error, outcome.cause)
    assert _addon_present(sb)


def _addon_present(sb: Sandbox) -> bool:
    return ADDON_NAME in sb.client("eks").list_addons(clusterName=sb.world.eks_cluster_name)["addons"]


def _operator_item(sb: Sandbox) -> dict:
    from hyperpod_control.adapters.store import Store

    record = Store(sb.output("TableName"), client=sb.client("dynamodb")).get_operator(
        sb.world.hyperpod_cluster_arn
    )
    return record.model_dump(mode="json") if record else {}


def _assert_uninstalled(sb: Sandbox) -> None:
    assert not _addon_present(sb)
    eks = sb.client("eks")
    assert eks.list_pod_identity_associations(clusterName=sb.world.eks_cluster_name)["associations"] == []
    roles = sb.client("iam").list_roles(PathPrefix="/hyperpod-control-plane/")["Roles"]
    assert roles == []
    item = _operator_item(sb)
    assert item["status"] == "REGISTERED" and item["role_arn"] is None and item["lock_owner"] is None


def test_uninstall_no_wait_prints_the_execution_and_returns_at_once(sb):
    _install(sb)
    done = hpctl(sb, "uninstall", "--cluster", sb.world.hyperpod_cluster_name, "--no-wait")
    assert done.returncode == 0, done.stderr
    arn = done.stdout.strip()
    assert EXECUTION_ARN.match(arn), done.stdout
    assert f"uninstall_operator started: {arn}" in done.stderr
    assert "SUCCEEDED" not in done.stderr  # it did not follow the execution
    outcome = sb.wait_execution(arn, timeout=90)
    assert outcome.ok, (outcome.error, outcome.cause)
    assert "DeleteAddon" in outcome.states_entered()
    _assert_uninstalled(sb)


def test_uninstall_refuses_while_jobs_exist_and_force_removes_the_operator(sb):
    _install(sb)
    store = sb.kube.store
    eventually(
        lambda: store.find(store.rt("apiextensions.k8s.io", "customresourcedefinitions"), None, JOB_CRD),
        what="the add-on's CRD",
    )
    store.create(
        store.rt("sagemaker.amazonaws.com", "hyperpodpytorchjobs"),
        "default",
        {
            "apiVersion": "sagemaker.amazonaws.com/v1",
            "kind": "HyperPodPyTorchJob",
            "metadata": {"name": "llama", "namespace": "default"},
            "spec": {},
        },
    )
    cluster = sb.world.hyperpod_cluster_name

    refused = hpctl(sb, "uninstall", "--cluster", cluster)
    assert refused.returncode == 1, refused.stderr
    assert "uninstall FAILED at CheckJobs: JobsRunningError: " in refused.stderr, refused.stderr
    assert "default/llama" in refused.stderr
    assert _addon_present(sb) and _operator_item(sb)["lock_owner"] is None

    forced = hpctl(sb, "uninstall", "--cluster", cluster, "--force")
    assert forced.returncode == 0, forced.stderr
    for step in ("PlanUninstall", "CheckJobs", "DeleteAddon", "RemovePodIdentity", "Record"):
        assert re.search(rf"^\s+\d+\.\ds  {step}$", forced.stderr, re.M), forced.stderr
    assert f"uninstall SUCCEEDED on {cluster}" in forced.stderr
    _assert_uninstalled(sb)


def test_uninstall_of_an_unknown_cluster_exits_1_naming_it(sb):
    done = hpctl(sb, "uninstall", "--cluster", "no-such-cluster")
    assert done.returncode == 1
    assert "uninstall FAILED at PlanUninstall" in done.stderr and "no-such-cluster" in done.stderr
