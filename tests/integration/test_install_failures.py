"""install_operator on a fresh sandbox (see test_install_workflow.py): moto with the EKS/HyperPod
extensions, the sandbox Kubernetes API server (the add-on mirrored into it), the state machines of
template.yaml executed with their Lambdas in process."""

from __future__ import annotations

import json

import pytest

from hyperpod_control.models.install import (
    ADDON_NAME,
)
from sandbox import Sandbox, SandboxConfig
from sandbox.aws_ext import eks_addons, faults
from sandbox.world import WorldOptions

pytestmark = pytest.mark.integration

POLICY_ARN = "arn:aws:iam::aws:policy/AmazonSageMakerHyperPodTrainingOperatorAccess"


def _sandbox() -> Sandbox:
    return Sandbox(SandboxConfig(world=WorldOptions(nodes=2), kube=True, pods=False))


def _install(sb: Sandbox, **extra) -> object:
    payload = {"clusterName": sb.world.hyperpod_cluster_name, **extra}
    return sb.run_execution("InstallOperatorStateMachine", payload, timeout=90)


def _operator_item(sb: Sandbox) -> dict:
    from hyperpod_control.adapters.store import Store

    record = Store(sb.output("TableName"), client=sb.client("dynamodb")).get_operator(
        sb.world.hyperpod_cluster_arn
    )
    return record.model_dump(mode="json") if record else {}


def _associations(sb: Sandbox) -> list[dict]:
    return sb.client("eks").list_pod_identity_associations(clusterName=sb.world.eks_cluster_name)[
        "associations"
    ]


def _iam_snapshot(sb: Sandbox) -> dict:
    iam = sb.client("iam")
    roles = {r["RoleName"]: r for r in iam.list_roles(PathPrefix="/hyperpod-control-plane/")["Roles"]}
    return {
        name: (
            json.dumps(role["AssumeRolePolicyDocument"], sort_keys=True),
            sorted(
                p["PolicyArn"] for p in iam.list_attached_role_policies(RoleName=name)["AttachedPolicies"]
            ),
        )
        for name, role in roles.items()
    }


def test_throttling_is_retried_and_create_failed_ends_with_the_health_issue():
    with _sandbox() as sb:
        # More throttles than the SDK's own five attempts: the state machine's Retry takes over.
        faults.inject("CreateAddon", times=6, error="throttle", service="eks")
        eks_addons.fail_next(
            ADDON_NAME,
            "CREATE_FAILED",
            [
                {
                    "code": "ConfigurationConflict",
                    "message": "Conflicts found when trying to apply.",
                    "resourceIds": [],
                }
            ],
        )
        failed = _install(sb)
        assert not faults.pending()
        assert failed.status == "FAILED"
        assert failed.error == "AddonFailedError"
        assert "CREATE_FAILED" in failed.cause and "Conflicts found when trying to apply." in failed.cause
        history = [e for e in failed.history if e.get("type") == "TaskFailed"]
        assert any("ThrottledError" in json.dumps(e, default=str) for e in history)
        item = _operator_item(sb)
        assert item["status"] == "FAILED" and item["lock_owner"] is None
        assert "DescribeAddon" in item["reason"]
