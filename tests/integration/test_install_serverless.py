"""install_operator on a fresh sandbox (see test_install_workflow.py): moto with the EKS/HyperPod
extensions, the sandbox Kubernetes API server (the add-on mirrored into it), the state machines of
template.yaml executed with their Lambdas in process."""

from __future__ import annotations

import json

import pytest

from hyperpod_control.models.install import (
    ADDON_NAME,
    CONTROL_PLANE_GROUP,
    JOB_CRD,
)
from sandbox import Sandbox, SandboxConfig
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


def test_serverless_on_a_fresh_sandbox_gives_access_rbac_and_crd_and_no_addon():
    with _sandbox() as sb:
        outcome = _install(sb, operator="serverless")
        assert outcome.ok, (outcome.error, outcome.cause)
        assert "EnsureCRD" in outcome.states_entered()
        assert "CreateOrUpdateAddon" not in outcome.states_entered()
        eks = sb.client("eks")
        assert ADDON_NAME not in eks.list_addons(clusterName=sb.world.eks_cluster_name)["addons"]
        # The Kubernetes-calling functions' role (one sandbox role for all) has an entry in the group.
        role = sb.client("lambda").get_function_configuration(
            FunctionName=sb.stack.resources["VerifyOperatorFunction"]
        )["Role"]
        entry = eks.describe_access_entry(clusterName=sb.world.eks_cluster_name, principalArn=role)[
            "accessEntry"
        ]
        assert entry["kubernetesGroups"] == [CONTROL_PLANE_GROUP]
        store = sb.kube.store
        cluster_role = store.find(
            store.rt("rbac.authorization.k8s.io", "clusterroles"), None, CONTROL_PLANE_GROUP
        )
        binding = store.find(
            store.rt("rbac.authorization.k8s.io", "clusterrolebindings"), None, CONTROL_PLANE_GROUP
        )
        assert cluster_role is not None and binding is not None
        assert binding["subjects"] == [
            {"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": CONTROL_PLANE_GROUP}
        ]
        resources = {r for rule in cluster_role["rules"] for r in rule["resources"]}
        assert "secrets" not in resources and "*" not in resources
        crd = store.find(store.rt("apiextensions.k8s.io", "customresourcedefinitions"), None, JOB_CRD)
        assert crd is not None
        item = _operator_item(sb)
        assert item["mode"] == "serverless" and item["status"] == "ACTIVE" and item["addon_version"] is None

        # The other operator is refused now, naming the field.
        addon = _install(sb, operator="addon")
        assert addon.status == "FAILED" and addon.error == "OperatorConflictError"
        assert "operator:" in addon.cause and "serverless" in addon.cause
