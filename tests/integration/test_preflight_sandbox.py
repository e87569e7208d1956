"""Preflight against the sandbox: a default world passes; each broken world fails its own check.

Kubernetes-side checks need the sandbox's API server, which serves only a sandbox's main world, so
those worlds get their own module-scoped sandboxes; the AWS-side broken worlds share one sandbox
(distinct names), checked without a Kubernetes reader.
"""

from __future__ import annotations

import importlib.util
import io
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from hpctl.preflight import run_preflight as cli_preflight
from hyperpod_control.exceptions import PreflightFailedError
from hyperpod_control.models.preflight import (
    CheckStatus,
    ClusterFacts,
    PreflightInput,
    PreflightOptions,
    PreflightReport,
)
from hyperpod_control.services import preflight as pf
from sandbox import Sandbox, SandboxConfig
from sandbox.kube.cluster import ClusterSeed
from sandbox.world import INTERFACE_ENDPOINTS, WorldOptions

pytestmark = pytest.mark.integration

QUIET = {"LogLevel": "ERROR"}
REPO = Path(__file__).resolve().parents[2]


class Context:
    function_name = "preflight"
    memory_limit_in_mb = 256
    invoked_function_arn = "arn:aws:lambda:us-west-2:123456789012:function:preflight"
    aws_request_id = "test"

    def get_remaining_time_in_millis(self) -> int:
        return 60_000


def load_handler():
    """functions/preflight/app.py under a name of its own (every handler is app.py)."""
    spec = importlib.util.spec_from_file_location(
        "preflight_app_under_test", REPO / "functions/preflight/app.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def check(report: PreflightReport, check_id: str):
    return next(r for r in report.results if r.id == check_id)


def preflight(name: str, operator: str = "addon", kube: bool = True, **extra) -> PreflightReport:
    adapters = pf.PreflightAdapters.default()
    if not kube:
        adapters.kube_factory = None
    request = PreflightInput.model_validate({"clusterName": name, "operator": operator, **extra})
    return pf.run_preflight(request, adapters)


@pytest.fixture(scope="class")
def healthy() -> Iterator[Sandbox]:
    config = SandboxConfig(world=WorldOptions(nodes=2), kube=True, pods=False, parameters=QUIET)
    with Sandbox(config) as sb:
        yield sb


class TestHealthyWorld:
    def test_the_default_world_passes_with_no_errors_in_both_modes(self, healthy):
        for operator in ("addon", "serverless"):
            report = preflight(healthy.world.hyperpod_cluster_name, operator)
            failed = [r for r in report.results if r.status is CheckStatus.FAILED]
            assert failed == [], failed
            assert report.ok
        # Kubernetes was read with an EKS token for this process's principal (the EKS cluster's
        # creator, which the sandbox gave an access entry), endpoint and CA from describe_cluster.
        report = preflight(healthy.world.hyperpod_cluster_name)
        assert check(report, "access.kubernetes").status is CheckStatus.PASSED
        assert "cert-manager/cert-manager-webhook" in check(report, "k8s.cert-manager").message
        principal = healthy.client("sts").get_caller_identity()["Arn"].replace(":sts::", ":iam::")
        entries = healthy.client("eks").list_access_entries(clusterName=healthy.world.eks_cluster_name)
        assert principal in entries["accessEntries"]

    def test_the_handler_returns_the_contract_and_the_cli_prints_it(self, healthy):
        app = load_handler()
        out = app.lambda_handler({"clusterName": healthy.world.hyperpod_cluster_name}, Context())
        assert out["ok"] is True
        assert out["clusterArn"] == healthy.world.hyperpod_cluster_arn
        assert (out["eksClusterName"], out["kubernetesVersion"]) == (healthy.world.eks_cluster_name, "1.31")
        assert {r["id"] for r in out["results"]} == {
            c(ClusterFacts(cluster_name="x", region="r"), PreflightOptions()).id for c in pf.CHECKS
        }

        buffer = io.StringIO()
        rc = cli_preflight(healthy.world.hyperpod_cluster_name, "serverless", output="json", out=buffer)
        assert rc == 0 and json.loads(buffer.getvalue())["ok"] is True
        table = io.StringIO()
        assert cli_preflight(healthy.world.hyperpod_cluster_name, out=table) == 0
        assert "ready to install" in table.getvalue() and "access.endpoint" in table.getvalue()

        err = io.StringIO()
        assert cli_preflight("no-such-cluster", out=io.StringIO(), err=err) == 1


@pytest.fixture(scope="class")
def no_cert_manager() -> Iterator[Sandbox]:
    config = SandboxConfig(
        world=WorldOptions(nodes=1),
        kube=True,
        pods=False,
        kube_seed=ClusterSeed(cert_manager=False, kueue=True),
        parameters=QUIET,
    )
    with Sandbox(config) as sb:
        yield sb


class TestNoCertManager:
    def test_no_cert_manager_fails_in_kubernetes_and_the_handler_raises(self, no_cert_manager):
        # Only the Kubernetes side lacks it: the EKS add-on record says ACTIVE, the Deployments are gone.
        report = preflight(no_cert_manager.world.hyperpod_cluster_name)
        result = check(report, "k8s.cert-manager")
        assert result.status is CheckStatus.FAILED
        assert (
            "certificates.cert-manager.io missing" in result.message
            and "no webhook Deployment" in result.message
        )
        assert not report.ok

        app = load_handler()
        with pytest.raises(PreflightFailedError) as raised:
            app.lambda_handler({"clusterName": no_cert_manager.world.hyperpod_cluster_name}, Context())
        assert "[k8s.cert-manager]" in str(raised.value) and "create-addon" in str(raised.value)

    def test_kueue_without_the_hyperpod_framework_fails_then_passes(self, no_cert_manager):
        from kubernetes import client

        api = client.CoreV1Api(client.ApiClient(no_cert_manager.kube.client_configuration()))
        body = {
            "metadata": {"name": "kueue-manager-config", "namespace": "kueue-system"},
            "data": {"controller_manager_config.yaml": "integrations:\n  frameworks: [batch/job]\n"},
        }
        api.create_namespaced_config_map("kueue-system", body)
        result = check(preflight(no_cert_manager.world.hyperpod_cluster_name), "kueue.external-frameworks")
        assert result.status is CheckStatus.FAILED and pf.HYPERPOD_JOB_GVK in result.message

        body["data"] = {
            "controller_manager_config.yaml": "integrations:\n  externalFrameworks:\n"
            '  - "HyperPodPytorchJob.v1.sagemaker.amazonaws.com"\n'
        }
        api.replace_namespaced_config_map("kueue-manager-config", "kueue-system", body)
        assert check(
            preflight(no_cert_manager.world.hyperpod_cluster_name), "kueue.external-frameworks"
        ).status is (CheckStatus.PASSED)


BROKEN = {
    "no-pia": {"addons": {"cert-manager": None}},
    "no-endpoints": {"interface_endpoints": (), "gateway_endpoints": ()},
    "private-only": {"endpoint_public_access": False},
    "small-subnet": {"subnet_prefix": 28},
    "config-map": {"authentication_mode": "CONFIG_MAP"},
    "no-eks-auth": {"interface_endpoints": tuple(e for e in INTERFACE_ENDPOINTS if e != "eks-auth")},
    # The ENI quota is account-wide: an error for every existing cluster now (no room for a
    # replacement node), so the test lowers it only while it checks this world (LOW_QUOTAS).
    "low-eni": {},
}
LOW_QUOTAS = {"low-eni": {("vpc", "L-DF5E4CA3"): 3}}


CASES = [
    ("no-pia", "addon.pod-identity-agent", ["not installed"], "error"),
    ("no-endpoints", "network.vpc-endpoints", ["sagemaker.api", "eks-auth"], "error"),
    ("no-endpoints", "network.s3-endpoint", ["S3"], "warning"),
    ("no-eks-auth", "network.vpc-endpoints", ["eks-auth"], "error"),
    ("private-only", "access.endpoint", ["private-only"], "error"),
    ("small-subnet", "network.subnet-addresses", ["no room for a replacement node", "11 usable"], "error"),
    ("config-map", "access.authentication-mode", ["CONFIG_MAP"], "error"),
    ("low-eni", "quotas.network-interfaces", ["is 3 with", "cannot replace a faulty node"], "error"),
]


@contextmanager
def lowered_quotas(sb: Sandbox, values: dict[tuple[str, str], float]) -> Iterator[None]:
    """Apply quota values for the block, then give each back its AWS default."""
    from sandbox.aws_ext import quotas

    sq = sb.client("service-quotas")
    applied = [
        (service, quotas.set_quota(service, quota, value)) for (service, quota), value in values.items()
    ]
    try:
        yield
    finally:
        for service, code in applied:
            default = sq.get_aws_default_service_quota(ServiceCode=service, QuotaCode=code)["Quota"]["Value"]
            quotas.set_quota(service, code, default)


@pytest.fixture(scope="class")
def broken() -> Iterator[Sandbox]:
    with Sandbox(SandboxConfig(parameters=QUIET)) as sb:
        sb.worlds = {
            key: sb.build_world(
                WorldOptions(
                    hyperpod_cluster_name=f"hp-{key}", eks_cluster_name=f"eks-{key}", nodes=1, **opts
                )
            )
            for key, opts in BROKEN.items()
        }
        yield sb


class TestBrokenWorlds:
    @pytest.mark.parametrize(("world", "check_id", "words", "severity"), CASES)
    def test_each_broken_world_fails_its_check(self, broken, world, check_id, words, severity):
        with lowered_quotas(broken, LOW_QUOTAS.get(world, {})):
            report = preflight(f"hp-{world}", kube=False)
        result = check(report, check_id)
        assert result.status is CheckStatus.FAILED, result
        assert result.severity.value == severity
        assert result.remedy
        for word in words:
            assert word in result.message
        # and no other error fails but the ones this world breaks (the reachability ones follow from
        # private-only / CONFIG_MAP; without a Kubernetes reader nothing else is judged)
        expected = {c[1] for c in CASES if c[0] == world and c[3] == "error"} | {"access.kubernetes"}
        assert {r.id for r in report.failures} <= expected

    def test_a_planned_cluster_with_a_bad_override_vpc_config_fails_as_errors(self, broken):
        world = broken.worlds["no-pia"]
        config = {
            "ClusterName": "hp-planned",
            "InstanceGroups": [
                {
                    "InstanceGroupName": "gpu",
                    "InstanceType": "ml.g5.8xlarge",
                    "InstanceCount": 2,
                    "OverrideVpcConfig": {"Subnets": world.private_subnet_ids * 9, "SecurityGroupIds": []},
                }
            ],
            "VpcConfig": {"Subnets": world.private_subnet_ids, "SecurityGroupIds": [world.security_group_id]},
            "Orchestrator": {"Eks": {"ClusterArn": world.eks_cluster_arn}},
            "Tags": [{"Key": "SageMaker", "Value": "true"}],
        }
        report = preflight("hp-planned", kube=False, clusterConfig=config)
        assert report.planned and not report.ok
        result = check(report, "vpc.override-config")
        assert (result.status, result.severity.value) == (CheckStatus.FAILED, "error")
        assert "has 18 (1 to 16 allowed)" in result.message and "has 0 (1 to 5 allowed)" in result.message
        assert check(report, "hyperpod.cluster").status is CheckStatus.PASSED  # the name is free
        # the same request for a name that exists is refused by the hyperpod check
        taken = preflight("hp-no-pia", kube=False, clusterConfig={**config, "ClusterName": "hp-no-pia"})
        assert "already exists" in check(taken, "hyperpod.cluster").message
