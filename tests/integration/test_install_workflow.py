"""install_operator and uninstall_operator end to end in the sandbox: moto with the EKS/HyperPod
extensions, the sandbox Kubernetes API server (the add-on mirrored into it), the state machines of
template.yaml executed with their Lambdas in process."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import pytest
from install_support import (
    POLICY_ARN,
    iam_snapshot,
    install_sandbox,
    list_associations,
    operator_item,
    run_install,
)

from hyperpod_control.models.install import (
    ADDON_NAME,
    JOB_CRD,
    OPERATOR_NAMESPACE,
    OPERATOR_SERVICE_ACCOUNT,
)
from sandbox import Sandbox

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def sb() -> Iterator[Sandbox]:
    with install_sandbox() as sandbox:
        yield sandbox


def test_addon_install_creates_role_association_addon_and_record_and_a_second_run_changes_nothing(sb):
    outcome = run_install(sb)
    assert outcome.ok, (outcome.error, outcome.cause)
    states = outcome.states_entered()
    for step in (
        "Preflight",
        "AcquireLock",
        "EnsureAccess",
        "EnsureExecutionRole",
        "EnsurePodIdentityAssociation",
        "CreateOrUpdateAddon",
        "DescribeAddon",
        "VerifyOperator",
        "Record",
        "ReleaseLock",
    ):
        assert step in states, step
    assert "EnsureCRD" not in states

    eks, iam = sb.client("eks"), sb.client("iam")
    addon = eks.describe_addon(clusterName=sb.world.eks_cluster_name, addonName=ADDON_NAME)["addon"]
    assert addon["status"] == "ACTIVE"
    assert addon["addonVersion"] == "v1.2.1-eksbuild.1"  # the latest the cluster's 1.31 supports
    assert not addon.get("podIdentityAssociations")  # standalone, never inline

    item = operator_item(sb)
    assert item["mode"] == "addon" and item["status"] == "ACTIVE" and item["lock_owner"] is None
    assert item["addon_version"] == "v1.2.1-eksbuild.1"
    role_name = item["role_arn"].rsplit("/", 1)[-1]
    role = iam.get_role(RoleName=role_name)["Role"]
    assert role["PermissionsBoundary"]["PermissionsBoundaryArn"].endswith(
        ":policy/hyperpod-control-plane-operator-boundary"
    )
    statement = role["AssumeRolePolicyDocument"]["Statement"][0]
    assert statement["Principal"] == {"Service": "pods.eks.amazonaws.com"}
    assert sorted(statement["Action"]) == ["sts:AssumeRole", "sts:TagSession"]
    assert statement["Condition"]["ArnEquals"]["aws:SourceArn"] == sb.world.eks_cluster_arn
    attached = [
        p["PolicyArn"] for p in iam.list_attached_role_policies(RoleName=role_name)["AttachedPolicies"]
    ]
    assert attached == [POLICY_ARN]

    associations = list_associations(sb)
    assert len(associations) == 1
    assert (associations[0]["namespace"], associations[0]["serviceAccount"]) == (
        OPERATOR_NAMESPACE,
        OPERATOR_SERVICE_ACCOUNT,
    )
    assert associations[0]["associationId"] == item["association_id"]
    described = eks.describe_pod_identity_association(
        clusterName=sb.world.eks_cluster_name, associationId=item["association_id"]
    )["association"]
    assert described["roleArn"] == item["role_arn"]

    # Second run: same result, nothing changed.
    before = (iam_snapshot(sb), list_associations(sb), addon["modifiedAt"])
    again = run_install(sb)
    assert again.ok, (again.error, again.cause)
    after_addon = eks.describe_addon(clusterName=sb.world.eks_cluster_name, addonName=ADDON_NAME)["addon"]
    assert (iam_snapshot(sb), list_associations(sb), after_addon["modifiedAt"]) == before
    assert again.output["operator"]["roleArn"] == item["role_arn"]


def test_hpctl_install_shows_each_step_with_elapsed_time_and_a_summary(sb, tmp_path):
    import io

    from hpctl.install import install

    config = tmp_path / "values.yaml"
    config.write_text(
        "hpTrainingControllerManager:\n  nodeSelector:\n    sagemaker.amazonaws.com/compute-type: HyperPod\n"
    )
    out = io.StringIO()
    outcome = install(
        sb.config.stack_name,
        sb.world.hyperpod_cluster_name,
        config_path=str(config),
        sfn=sb.client("stepfunctions"),
        cloudformation=sb.client("cloudformation"),
        out=out,
    )
    text = out.getvalue()
    assert outcome.ok, text
    assert outcome.execution_arn.split(":")[-1].startswith(f"install-addon-{sb.world.hyperpod_cluster_name}-")
    for step in ("Preflight", "CreateOrUpdateAddon", "VerifyOperator", "Record"):
        assert re.search(rf"^\s+\d+\.\ds  {step}$", text, re.M), text
    assert "install SUCCEEDED on sandbox-hyperpod: operator addon, addonVersion v1.2.1-eksbuild.1" in text
    addon = sb.client("eks").describe_addon(clusterName=sb.world.eks_cluster_name, addonName=ADDON_NAME)[
        "addon"
    ]
    assert json.loads(addon["configurationValues"]) == {
        "hpTrainingControllerManager": {"nodeSelector": {"sagemaker.amazonaws.com/compute-type": "HyperPod"}}
    }


def test_serverless_is_refused_where_the_addon_runs_naming_the_operator(sb):
    outcome = run_install(sb, operator="serverless")
    assert outcome.status == "FAILED"
    assert outcome.error == "OperatorConflictError"
    assert "operator:" in outcome.cause and ADDON_NAME in outcome.cause
    assert operator_item(sb)["lock_owner"] is None  # the lock was released on the failure path


@pytest.mark.parametrize(
    ("extra", "error", "field"),
    [
        ({"addonVersion": "1.2"}, "InvalidInputError", "addonVersion"),
        ({"addonVersion": "v9.9.9-eksbuild.1"}, "", "v9.9.9"),
        (
            {
                "configurationValues": {
                    "hpTrainingControllerManager": {"manager": {"resources": {"requests": {"cpu": "lots"}}}}
                }
            },
            "InvalidInputError",
            "cpu",
        ),
        (
            {"configurationValues": {"hpTrainingControllerManager": {"replicas": 3}}},
            "InvalidInputError",
            "replicas",
        ),
    ],
    ids=["malformed-version", "unknown-version", "bad-quantity", "unknown-key"],
)
def test_bad_input_fails_with_the_field_named(sb, extra, error, field):
    outcome = run_install(sb, **extra)
    assert outcome.status == "FAILED"
    if error:
        assert outcome.error == error, outcome.cause
    assert field in outcome.cause
    assert operator_item(sb)["lock_owner"] is None


def test_unknown_cluster_fails_in_preflight(sb):
    outcome = sb.run_execution("InstallOperatorStateMachine", {"clusterName": "no-such-cluster"}, timeout=60)
    assert outcome.status == "FAILED"
    assert "no-such-cluster" in outcome.cause
    assert "AcquireLock" not in outcome.states_entered()


def test_uninstall_refuses_while_jobs_exist_then_force_removes_everything(sb):
    from sandbox.testing import eventually

    store = sb.kube.store
    rt = store.rt("sagemaker.amazonaws.com", "hyperpodpytorchjobs")
    eventually(
        lambda: store.find(store.rt("apiextensions.k8s.io", "customresourcedefinitions"), None, JOB_CRD),
        what="the add-on's CRD",
    )
    store.create(
        rt,
        "default",
        {
            "apiVersion": "sagemaker.amazonaws.com/v1",
            "kind": "HyperPodPyTorchJob",
            "metadata": {"name": "llama", "namespace": "default"},
            "spec": {},
        },
    )
    cluster = sb.world.hyperpod_cluster_name
    refused = sb.run_execution("UninstallOperatorStateMachine", {"clusterName": cluster}, timeout=60)
    assert refused.status == "FAILED" and refused.error == "JobsRunningError"
    assert "default/llama" in refused.cause and "force" in refused.cause

    done = sb.run_execution(
        "UninstallOperatorStateMachine", {"clusterName": cluster, "force": True}, timeout=90
    )
    assert done.ok, (done.error, done.cause)
    eks = sb.client("eks")
    assert ADDON_NAME not in eks.list_addons(clusterName=sb.world.eks_cluster_name)["addons"]
    assert list_associations(sb) == []
    assert iam_snapshot(sb) == {}
    item = operator_item(sb)
    assert item["status"] == "REGISTERED" and item["role_arn"] is None and item["lock_owner"] is None
