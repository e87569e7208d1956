"""upgrade_operator end to end in the sandbox: the add-on installed at v1.1.2 by install_operator,
HyperPodPyTorchJobs created through the Kubernetes API, then upgrades, a draining downgrade, a
failed update that rolls back, and a refusal. Every path ends with every job present."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from hyperpod_control.models.install import ADDON_NAME, JOB_GROUP, JOB_PLURAL, JOB_VERSION
from sandbox import Sandbox, SandboxConfig
from sandbox.aws_ext import eks_addons
from sandbox.testing import eventually
from sandbox.world import WorldOptions

pytestmark = pytest.mark.integration

NAMESPACE = "default"


@pytest.fixture(scope="module")
def sb() -> Iterator[Sandbox]:
    with Sandbox(SandboxConfig(world=WorldOptions(nodes=1), kube=True, pods=False)) as sandbox:
        outcome = sandbox.run_execution(
            "InstallOperatorStateMachine",
            {"clusterName": sandbox.world.hyperpod_cluster_name, "addonVersion": "v1.1.2-eksbuild.1"},
            timeout=90,
        )
        assert outcome.ok, (outcome.error, outcome.cause)
        yield sandbox


def _custom(sb: Sandbox):
    from kubernetes import client

    return client.CustomObjectsApi(client.ApiClient(sb.kube.client_configuration()))


def _job(name: str, *, elastic: bool = False, big: int = 0) -> dict:
    container = {
        "name": "pytorch-job-container",
        "image": "example.com/train:1",
        "command": ["hyperpodrun"],
        "args": ["--nproc-per-node=8", "train.py"],
        "ports": [{"containerPort": 8080}],
        "env": [{"name": "PAYLOAD", "value": "x" * big}] if big else [],
    }
    spec: dict = {
        "nprocPerNode": "auto",
        "replicaSpecs": [{"name": "pod", "replicas": 1, "template": {"spec": {"containers": [container]}}}],
        "runPolicy": {"cleanPodPolicy": "None", "jobMaxRetryCount": 3},
    }
    if elastic:
        spec["elasticPolicy"] = {"minReplicas": 1, "maxReplicas": 2}
    return {
        "apiVersion": f"{JOB_GROUP}/{JOB_VERSION}",
        "kind": "HyperPodPyTorchJob",
        "metadata": {
            "name": name,
            "labels": {"team": "research", "kueue.x-k8s.io/queue-name": "q1"},
            "annotations": {"example.com/owner": name, "kueue.x-k8s.io/podset-preferred-topology": "x"},
        },
        "spec": spec,
    }


def _create(sb: Sandbox, body: dict) -> dict:
    return _custom(sb).create_namespaced_custom_object(JOB_GROUP, JOB_VERSION, NAMESPACE, JOB_PLURAL, body)


def _jobs(sb: Sandbox) -> dict[str, dict]:
    found = _custom(sb).list_namespaced_custom_object(JOB_GROUP, JOB_VERSION, NAMESPACE, JOB_PLURAL)
    return {j["metadata"]["name"]: j for j in found["items"]}


def _delete_all(sb: Sandbox) -> None:
    for name in _jobs(sb):
        _custom(sb).delete_namespaced_custom_object(JOB_GROUP, JOB_VERSION, NAMESPACE, JOB_PLURAL, name)
    eventually(lambda: not _jobs(sb), timeout=20, what="jobs deleted")


def _addon(sb: Sandbox) -> dict:
    return sb.client("eks").describe_addon(clusterName=sb.world.eks_cluster_name, addonName=ADDON_NAME)[
        "addon"
    ]


def _upgrade(sb: Sandbox, version: str | None = None, **extra) -> object:
    payload = {"clusterName": sb.world.hyperpod_cluster_name, **extra}
    if version:
        payload["addonVersion"] = version
    return sb.run_execution("UpgradeOperatorStateMachine", payload, timeout=120)


def _operator(sb: Sandbox):
    from hyperpod_control.adapters.store import Store

    return Store(sb.output("TableName"), client=sb.client("dynamodb")).get_operator(
        sb.world.hyperpod_cluster_arn
    )


def _snapshot_items(sb: Sandbox) -> list[dict]:
    found = sb.client("dynamodb").scan(
        TableName=sb.output("TableName"),
        FilterExpression="begins_with(PK, :p)",
        ExpressionAttributeValues={":p": {"S": "UPGRADE#"}},
    )
    return found["Items"]


def _snapshot_objects(sb: Sandbox) -> list[str]:
    found = sb.client("s3").list_objects_v2(Bucket=sb.output("SnapshotBucketName"))
    return [o["Key"] for o in found.get("Contents", [])]


def _user_fields(job: dict) -> tuple:
    meta = job["metadata"]
    return job["spec"], meta.get("labels"), meta.get("annotations")


def _order(outcome, names: list[str]) -> list[str]:
    states = outcome.steps_entered()
    return [s for s in states if s in names]


def _child(outcome, phase: str):
    """The one apply_addon_version execution upgrade_operator ran for ``phase``: ``upgrade`` (the
    forward path) or ``rollback``."""
    (child,) = [c for c in outcome.children if c.input["phase"] == phase]
    return child


def test_1_upgrade_across_1_2_0_snapshots_and_leaves_the_jobs_untouched(sb):
    before = {n: _create(sb, _job(n)) for n in ("job-a", "job-b")}
    outcome = _upgrade(sb, "v1.2.1-eksbuild.1")
    assert outcome.ok, (outcome.error, outcome.cause)
    states = outcome.steps_entered()
    assert "SnapshotJobs" in states and "DeleteJobs" not in states
    assert [c.input["phase"] for c in outcome.children] == ["upgrade"]
    assert _order(
        outcome, ["PlanUpgrade", "SnapshotJobs", "EnsurePodIdentityAssociation", "UpdateAddon"]
    ) == [
        "PlanUpgrade",
        "SnapshotJobs",
        "EnsurePodIdentityAssociation",
        "UpdateAddon",
    ]
    assert outcome.output["action"] == "upgrade"
    after = _jobs(sb)
    assert {n: j["metadata"]["uid"] for n, j in after.items()} == {
        n: j["metadata"]["uid"] for n, j in before.items()
    }  # not deleted and recreated
    addon = _addon(sb)
    assert (addon["status"], addon["addonVersion"]) == ("ACTIVE", "v1.2.1-eksbuild.1")
    record = _operator(sb)
    assert record.addon_version == "v1.2.1-eksbuild.1" and record.lock_owner is None
    assert _snapshot_items(sb) == [] and _snapshot_objects(sb) == []  # confirmed, then removed


class _Outputs:
    """What ``hpctl`` reads from CloudFormation, from the sandbox's deployed stack."""

    def __init__(self, sb: Sandbox) -> None:
        self.outputs = sb.stack.outputs

    def describe_stacks(self, StackName: str) -> dict:
        return {
            "Stacks": [{"Outputs": [{"OutputKey": k, "OutputValue": v} for k, v in self.outputs.items()]}]
        }


def _hpctl_upgrade(sb: Sandbox, **kwargs) -> tuple[object, str]:
    import io

    from hpctl.upgrade import upgrade

    out = io.StringIO()
    result = upgrade(
        "sandbox",
        sb.world.hyperpod_cluster_name,
        cloudformation=_Outputs(sb),
        lambda_client=sb.client("lambda"),
        sfn=sb.client("stepfunctions"),
        out=out,
        timeout=120,
        **kwargs,
    )
    return result, out.getvalue()


def test_1b_hpctl_dry_run_shows_the_draining_plan_and_changes_nothing(sb):
    before = (_addon(sb)["modifiedAt"], {n: j["metadata"]["uid"] for n, j in _jobs(sb).items()})
    executions = sb.client("stepfunctions").list_executions(
        stateMachineArn=sb.output("UpgradeOperatorStateMachineArn")
    )["executions"]
    # The build suffix left out, as people write it: the newest build of v1.1.2 is meant.
    plan, printed = _hpctl_upgrade(sb, version="v1.1.2", dry_run=True)
    assert plan["action"] == "draining_downgrade" and plan["drain"] and plan["snapshot"]
    assert "draining downgrade" in printed and "v1.2.1-eksbuild.1 -> v1.1.2-eksbuild.1" in printed
    assert "default/job-a" in printed and "default/job-b" in printed and "dry run" in printed
    assert (_addon(sb)["modifiedAt"], {n: j["metadata"]["uid"] for n, j in _jobs(sb).items()}) == before
    assert (
        sb.client("stepfunctions").list_executions(
            stateMachineArn=sb.output("UpgradeOperatorStateMachineArn")
        )["executions"]
        == executions
    )


def test_2_same_version_is_a_noop(sb):
    plan, printed = _hpctl_upgrade(sb)  # no version: the latest compatible, already running
    assert plan["action"] == "noop" and "nothing to do" in printed

    outcome = _upgrade(sb, "v1.2.1-eksbuild.1")
    assert outcome.ok, (outcome.error, outcome.cause)
    assert outcome.output["action"] == "noop"
    assert "UpdateAddon" not in outcome.steps_entered() and outcome.children == []


def test_3_downgrade_refused_for_an_elastic_job_without_force(sb):
    _create(sb, _job("job-elastic", elastic=True))
    jobs_before = {n: j["metadata"]["uid"] for n, j in _jobs(sb).items()}
    outcome = _upgrade(sb, "v1.1.2-eksbuild.1")
    assert outcome.status == "FAILED"
    assert "job-elastic" in outcome.cause and "elasticPolicy" in outcome.cause
    assert "UpdateAddon" not in outcome.steps_entered() and "AcquireLock" not in outcome.steps_entered()
    assert _addon(sb)["addonVersion"] == "v1.2.1-eksbuild.1"
    assert {n: j["metadata"]["uid"] for n, j in _jobs(sb).items()} == jobs_before
    _custom(sb).delete_namespaced_custom_object(JOB_GROUP, JOB_VERSION, NAMESPACE, JOB_PLURAL, "job-elastic")
    eventually(lambda: "job-elastic" not in _jobs(sb), timeout=20, what="job-elastic deleted")


def test_4_draining_downgrade_deletes_updates_and_resubmits_the_same_jobs(sb):
    _create(sb, _job("job-big", big=450 * 1024))  # a manifest over DynamoDB's 400 KB
    before = _jobs(sb)
    assert set(before) == {"job-a", "job-b", "job-big"}
    outcome = _upgrade(sb, "v1.1.2-eksbuild.1")
    assert outcome.ok, (outcome.error, outcome.cause)
    assert outcome.output["action"] == "draining_downgrade"
    order = _order(
        outcome, ["SnapshotJobs", "DeleteJobs", "UpdateAddon", "WaitForAddon", "ResubmitJobs", "Record"]
    )
    assert [s for i, s in enumerate(order) if s not in order[:i]] == [
        "SnapshotJobs",
        "DeleteJobs",
        "UpdateAddon",
        "WaitForAddon",
        "ResubmitJobs",
        "Record",
    ]
    after = _jobs(sb)
    assert set(after) == set(before)
    for name, job in after.items():
        assert job["metadata"]["uid"] != before[name]["metadata"]["uid"]  # deleted and resubmitted
        assert _user_fields(job) == _user_fields(before[name])
    addon = _addon(sb)
    assert (addon["status"], addon["addonVersion"]) == ("ACTIVE", "v1.1.2-eksbuild.1")
    assert _operator(sb).addon_version == "v1.1.2-eksbuild.1"
    assert _snapshot_items(sb) == [] and _snapshot_objects(sb) == []


def test_5_a_failed_update_rolls_back_resubmits_and_ends_failed_with_the_reason(sb):
    # v1.1.2 -> v1.2.1 crosses 1.2.0 upward: the rollback (downward) drains and resubmits.
    before = _jobs(sb)
    eks_addons.fail_next(
        ADDON_NAME, "UPDATE_FAILED", cluster_name=sb.world.eks_cluster_name, operations=("update",)
    )
    outcome = _upgrade(sb, "v1.2.1-eksbuild.1")
    assert outcome.status == "FAILED"
    assert outcome.error == "UpgradeRolledBackError"
    assert "WaitForAddon" in outcome.cause and "UPDATE_FAILED" in outcome.cause
    assert "v1.1.2-eksbuild.1" in outcome.cause
    assert "Rollback" in outcome.states_entered()
    rollback = _child(outcome, "rollback")  # the same steps, run by the child to go back
    assert _order(rollback, ["DeleteJobs", "UpdateAddon", "ResubmitJobs"]) == [
        "DeleteJobs",
        "UpdateAddon",
        "ResubmitJobs",
    ]
    assert rollback.input["addonVersion"] == "v1.1.2-eksbuild.1"
    after = _jobs(sb)
    assert set(after) == set(before)
    for name, job in after.items():
        assert _user_fields(job) == _user_fields(before[name])
    addon = _addon(sb)
    assert (addon["status"], addon["addonVersion"]) == ("ACTIVE", "v1.1.2-eksbuild.1")
    record = _operator(sb)
    assert record.addon_version == "v1.1.2-eksbuild.1" and record.lock_owner is None
    assert "rolled back" in record.reason
    assert _snapshot_items(sb) == [] and _snapshot_objects(sb) == []


def test_5b_a_failed_draining_downgrade_goes_back_up_and_resubmits(sb):
    outcome, printed = _hpctl_upgrade(sb, version="v1.2.1-eksbuild.1")  # the plan, then the progress
    assert outcome.ok, printed
    assert printed.index("plan: upgrade: v1.1.2-eksbuild.1 -> v1.2.1-eksbuild.1") < printed.index(
        "upgrade_operator started"
    )
    for step in ("PlanUpgrade", "SnapshotJobs", "UpdateAddon", "ResubmitJobs", "Record"):
        assert re.search(rf"^\s+\d+\.\ds  {step}$", printed, re.M), printed
    assert "ChooseAction" not in printed and "NeedSnapshot" not in printed
    # The child's steps are shown under the parent's step that ran them, indented one level more.
    lines = printed.splitlines()
    parent = next(i for i, line in enumerate(lines) if line.endswith("s  ApplyVersion"))
    child = next(i for i, line in enumerate(lines) if line.endswith("s  SnapshotJobs"))
    assert parent < child, printed
    assert len(lines[child]) - len(lines[child].lstrip()) > len(lines[parent]) - len(lines[parent].lstrip())
    assert "upgrade SUCCEEDED on sandbox-hyperpod: upgrade v1.1.2-eksbuild.1 -> v1.2.1-eksbuild.1." in printed
    before = _jobs(sb)
    eks_addons.fail_next(
        ADDON_NAME, "DEGRADED", cluster_name=sb.world.eks_cluster_name, operations=("update",)
    )
    outcome = _upgrade(sb, "v1.1.2-eksbuild.1")
    assert outcome.status == "FAILED" and outcome.error == "UpgradeRolledBackError"
    assert "DEGRADED" in outcome.cause and "v1.2.1-eksbuild.1" in outcome.cause
    assert "DeleteJobs" in _child(outcome, "upgrade").states_entered()
    rollback = _child(outcome, "rollback").states_entered()
    assert "UpdateAddon" in rollback and "ResubmitJobs" in rollback
    assert "DeleteJobs" not in rollback  # going back up crosses 1.2.0 upward: no drain
    after = _jobs(sb)
    assert set(after) == set(before)
    for name, job in after.items():
        assert _user_fields(job) == _user_fields(before[name])
    addon = _addon(sb)
    assert (addon["status"], addon["addonVersion"]) == ("ACTIVE", "v1.2.1-eksbuild.1")
    assert _snapshot_items(sb) == [] and _snapshot_objects(sb) == []


def test_6_unknown_version_is_refused_and_changes_nothing(sb):
    before = (_addon(sb)["modifiedAt"], {n: j["metadata"]["uid"] for n, j in _jobs(sb).items()})
    outcome = _upgrade(sb, "v9.9.9")
    assert outcome.status == "FAILED"
    assert "v9.9.9 does not exist" in outcome.cause
    refused, printed = _hpctl_upgrade(sb, version="v9.9.9")
    assert "v9.9.9 does not exist" in refused["refused"] and printed.startswith("upgrade refused:")
    assert (_addon(sb)["modifiedAt"], {n: j["metadata"]["uid"] for n, j in _jobs(sb).items()}) == before
    _delete_all(sb)
