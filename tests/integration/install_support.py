"""Shared helpers of the install/uninstall workflow tests (one sandbox per module: moto's state
is process-wide, so each module builds its own with ``install_sandbox()``)."""

from __future__ import annotations

import json

from sandbox import Sandbox, SandboxConfig
from sandbox.world import WorldOptions

POLICY_ARN = "arn:aws:iam::aws:policy/AmazonSageMakerHyperPodTrainingOperatorAccess"


def install_sandbox() -> Sandbox:
    return Sandbox(SandboxConfig(world=WorldOptions(nodes=2), kube=True, pods=False))


def run_install(sb: Sandbox, **extra) -> object:
    payload = {"clusterName": sb.world.hyperpod_cluster_name, **extra}
    return sb.run_execution("InstallOperatorStateMachine", payload, timeout=90)


def operator_item(sb: Sandbox) -> dict:
    from hyperpod_control.adapters.store import Store

    record = Store(sb.output("TableName"), client=sb.client("dynamodb")).get_operator(
        sb.world.hyperpod_cluster_arn
    )
    return record.model_dump(mode="json") if record else {}


def list_associations(sb: Sandbox) -> list[dict]:
    return sb.client("eks").list_pod_identity_associations(clusterName=sb.world.eks_cluster_name)[
        "associations"
    ]


def iam_snapshot(sb: Sandbox) -> dict:
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
