"""install_operator on a fresh sandbox (see test_install_workflow.py): moto with the EKS/HyperPod
extensions, the sandbox Kubernetes API server (the add-on mirrored into it), the state machines of
template.yaml executed with their Lambdas in process."""

from __future__ import annotations

import pytest
from install_support import (
    install_sandbox,
    operator_item,
    run_install,
)

from hyperpod_control.models.install import (
    ADDON_NAME,
    JOB_CRD,
    tier_group,
)

pytestmark = pytest.mark.integration


def test_serverless_on_a_fresh_sandbox_gives_access_rbac_and_crd_and_no_addon():
    with install_sandbox() as sb:
        outcome = run_install(sb, operator="serverless")
        assert outcome.ok, (outcome.error, outcome.cause)
        assert "EnsureCRD" in outcome.states_entered()
        assert "CreateOrUpdateAddon" not in outcome.states_entered()
        eks = sb.client("eks")
        assert ADDON_NAME not in eks.list_addons(clusterName=sb.world.eks_cluster_name)["addons"]
        # Each Kubernetes-calling function's own role has an entry in its tier's group.
        store = sb.kube.store
        for function, tier in (("VerifyOperatorFunction", "reader"), ("SuperviseJobFunction", "supervisor")):
            role = sb.client("lambda").get_function_configuration(FunctionName=sb.stack.resources[function])[
                "Role"
            ]
            entry = eks.describe_access_entry(clusterName=sb.world.eks_cluster_name, principalArn=role)[
                "accessEntry"
            ]
            assert entry["kubernetesGroups"] == [tier_group(tier)]
            cluster_role = store.find(
                store.rt("rbac.authorization.k8s.io", "clusterroles"), None, tier_group(tier)
            )
            binding = store.find(
                store.rt("rbac.authorization.k8s.io", "clusterrolebindings"), None, tier_group(tier)
            )
            assert cluster_role is not None and binding is not None
            assert binding["subjects"] == [
                {"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": tier_group(tier)}
            ]
            resources = {r for rule in cluster_role["rules"] for r in rule["resources"]}
            assert "secrets" not in resources and "*" not in resources
        # The installer keeps its entry, without cluster-admin once the RBAC is written.
        installer = sb.client("lambda").get_function_configuration(
            FunctionName=sb.stack.resources["ClusterAccessFunction"]
        )["Role"]
        policies = eks.list_associated_access_policies(
            clusterName=sb.world.eks_cluster_name, principalArn=installer
        )
        assert policies["associatedAccessPolicies"] == []
        crd = store.find(store.rt("apiextensions.k8s.io", "customresourcedefinitions"), None, JOB_CRD)
        assert crd is not None
        item = operator_item(sb)
        assert item["mode"] == "serverless" and item["status"] == "ACTIVE" and item["addon_version"] is None

        # The other operator is refused now, naming the field.
        addon = run_install(sb, operator="addon")
        assert addon.status == "FAILED" and addon.error == "OperatorConflictError"
        assert "operator:" in addon.cause and "serverless" in addon.cause
