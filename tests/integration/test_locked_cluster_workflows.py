"""install_operator's steps act only on the cluster the workflow locked (services/workflow_lock.py),
in the sandbox: the stack's own install definition, deployed again with one step's input naming
another cluster (a tampered or mistaken definition), runs the real Lambdas under their own roles.
The step fails with ClusterMismatchError naming both clusters, the lock is released and the
failure recorded, and the other cluster is left as it was."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from install_support import install_sandbox, list_associations, operator_item

from hyperpod_control.models.install import ADDON_NAME
from sandbox import Sandbox

pytestmark = pytest.mark.integration

OTHER_EKS = "other-eks"


@pytest.fixture(scope="module")
def sb() -> Iterator[Sandbox]:
    with install_sandbox() as sandbox:
        # a second EKS cluster in the account, as the world's own is made
        world = sandbox.world
        sandbox.client("eks").create_cluster(
            name=OTHER_EKS,
            version=world.options.kubernetes_version,
            roleArn=world.eks_role_arn,
            resourcesVpcConfig={
                "subnetIds": world.private_subnet_ids,
                "securityGroupIds": [world.security_group_id],
            },
            accessConfig={"authenticationMode": "API_AND_CONFIG_MAP"},
        )
        yield sandbox


def other_cluster(sb: Sandbox) -> dict:
    """The step input's ClusterRef naming the other cluster (a HyperPod ARN no lock covers)."""
    arn = sb.world.hyperpod_cluster_arn.rsplit("/", 1)[0] + "/0ther0c1u5ter"
    return {"clusterName": "other-hyperpod", "clusterArn": arn, "eksClusterName": OTHER_EKS}


def other_cluster_state(sb: Sandbox) -> dict:
    eks = sb.client("eks")
    return {
        "accessEntries": sorted(eks.list_access_entries(clusterName=OTHER_EKS)["accessEntries"]),
        "addons": eks.list_addons(clusterName=OTHER_EKS)["addons"],
        "associations": eks.list_pod_identity_associations(clusterName=OTHER_EKS)["associations"],
    }


def tampered_install(sb: Sandbox, step: str, cluster: dict) -> str:
    """The deployed install definition with ``step``'s cluster replaced by ``cluster``; its ARN."""
    sfn = sb.client("stepfunctions")
    deployed = sfn.describe_state_machine(stateMachineArn=sb.state_machine_arn("InstallOperatorStateMachine"))
    definition = json.loads(deployed["definition"])
    payload = definition["States"][step]["Parameters"]["Payload"]
    del payload["cluster.$"]
    payload["cluster"] = cluster
    created = sfn.create_state_machine(
        name=f"install-tampered-{step}", definition=json.dumps(definition), roleArn=deployed["roleArn"]
    )
    return created["stateMachineArn"]


@pytest.mark.parametrize("step", ["EnsureAccess", "CreateOrUpdateAddon"])
def test_a_step_naming_another_cluster_than_the_lock_fails_and_leaves_it_untouched(sb, step):
    other = other_cluster(sb)
    before = other_cluster_state(sb)
    machine = tampered_install(sb, step, other)

    outcome = sb.wait_execution(
        sb.start_execution(machine, {"clusterName": sb.world.hyperpod_cluster_name, "operator": "addon"}),
        timeout=90,
    )

    assert outcome.status == "FAILED"
    assert outcome.error == "ClusterMismatchError", (outcome.error, outcome.cause)
    # the reason names both: the cluster the step was handed and the one the workflow locked
    handed = f"HyperPod cluster other-hyperpod ({other['clusterArn']}, EKS cluster {OTHER_EKS})"
    assert f"asked to act on {handed}" in outcome.cause
    locked = (
        f"HyperPod cluster {sb.world.hyperpod_cluster_name} ({sb.world.hyperpod_cluster_arn}, EKS cluster "
    )
    assert f"locked {locked}{sb.world.eks_cluster_name})" in outcome.cause
    # the other cluster: as it was (its creator's access entry only), and no OPERATOR item for it
    assert other_cluster_state(sb) == before
    assert before["addons"] == before["associations"] == []
    assert not [e for e in before["accessEntries"] if ":role/" in e], "no entry of the stack's roles"
    table = sb.client("dynamodb").scan(TableName=sb.output("TableName"))["Items"]
    assert not [i for i in table if other["clusterArn"] in i["PK"]["S"]]
    # the locked cluster: the lock released, the failure recorded with the step and the reason
    item = operator_item(sb)
    assert item["lock_owner"] is None and item["status"] == "FAILED"
    assert item["reason"].startswith(f"{step}: ClusterMismatchError: cluster: this step was asked to act on")
    assert item["eks_cluster_name"] == sb.world.eks_cluster_name
    assert ADDON_NAME not in sb.client("eks").list_addons(clusterName=sb.world.eks_cluster_name)["addons"]
    if step == "EnsureAccess":  # the first step after the lock: no association made either
        assert list_associations(sb) == []
