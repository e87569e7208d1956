"""upgrade_operator when a step fails for good (UpdateAddon refused, the add-on never ACTIVE, the
Kubernetes API refusing to create the resubmitted jobs), on an upgrade and a downgrade: the
execution fails saying what failed, and every job exists at the end. Then a forced downgrade
under an elastic job, a cluster without the add-on, and ``hpctl addon versions``."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from hyperpod_control.models.install import ADDON_NAME, JOB_PLURAL
from sandbox import Sandbox, SandboxConfig
from sandbox.aws_ext import api_faults, eks_addons
from sandbox.testing import eventually
from sandbox.world import WorldOptions
from tests.integration.test_upgrade_workflow import (
    _addon,
    _child,
    _create,
    _job,
    _jobs,
    _operator,
    _snapshot_items,
    _snapshot_objects,
    _upgrade,
    _user_fields,
)

pytestmark = pytest.mark.integration

UP = "v1.2.1-eksbuild.1"
DOWN = "v1.1.2-eksbuild.1"


@pytest.fixture(scope="module")
def sb() -> Iterator[Sandbox]:
    with Sandbox(SandboxConfig(world=WorldOptions(nodes=1), kube=True, pods=False)) as sandbox:
        outcome = sandbox.run_execution(
            "InstallOperatorStateMachine",
            {"clusterName": sandbox.world.hyperpod_cluster_name, "addonVersion": DOWN},
            timeout=90,
        )
        assert outcome.ok, (outcome.error, outcome.cause)
        for name in ("job-a", "job-b"):
            _create(sandbox, _job(name))
        yield sandbox


@pytest.fixture(autouse=True)
def _no_leftover_faults(sb: Sandbox) -> Iterator[None]:
    yield
    api_faults.clear()
    sb.kube.faults.clear()


def _same_jobs(sb: Sandbox, before: dict[str, dict]) -> None:
    after = _jobs(sb)
    assert set(after) == set(before)
    for name, job in after.items():
        assert _user_fields(job) == _user_fields(before[name]), name


def _at(sb: Sandbox, version: str) -> None:
    addon = _addon(sb)
    assert (addon["status"], addon["addonVersion"]) == ("ACTIVE", version)


def _move_to(sb: Sandbox, version: str, **extra) -> None:
    outcome = _upgrade(sb, version, **extra)
    assert outcome.ok, (outcome.error, outcome.cause)
    _at(sb, version)


def _refuse_update() -> None:
    api_faults.inject(
        "UpdateAddon", times=1, error="InvalidParameterException", message="injected: the update is refused"
    )


def test_1_upgrade_update_addon_refused_rolls_back_and_keeps_every_job(sb):
    before = _jobs(sb)
    _refuse_update()
    outcome = _upgrade(sb, UP)
    assert outcome.status == "FAILED" and outcome.error == "UpgradeRolledBackError"
    assert "UpdateAddon failed (InvalidInputError" in outcome.cause, outcome.cause
    assert "injected: the update is refused" in outcome.cause and DOWN in outcome.cause
    _same_jobs(sb, before)
    _at(sb, DOWN)
    assert _operator(sb).addon_version == DOWN and _operator(sb).lock_owner is None
    assert _snapshot_items(sb) == [] and _snapshot_objects(sb) == []


def test_2_upgrade_whose_rollback_cannot_resubmit_at_first_still_ends_with_every_job(sb):
    # The add-on fails after the update; going back down drains the jobs, and creating them again
    # fails through all of RollbackResubmitJobs' attempts: RestoreJobs is the last try.
    before = _jobs(sb)
    eks_addons.fail_next(
        ADDON_NAME, "UPDATE_FAILED", cluster_name=sb.world.eks_cluster_name, operations=("update",)
    )
    sb.kube.faults.inject("create", JOB_PLURAL, count=8, status=500)
    outcome = _upgrade(sb, UP)
    assert outcome.status == "FAILED" and outcome.error == "UpgradeRolledBackError"
    assert "WaitForAddon failed" in outcome.cause and "UPDATE_FAILED" in outcome.cause, outcome.cause
    assert "resubmitting the jobs failed (DependencyUnavailableError" in outcome.cause
    assert "500" in outcome.cause
    rollback = _child(outcome, "rollback").states_entered()
    assert "DeleteJobs" in rollback and "ResubmitJobs" in rollback
    assert "RestoreJobs" in outcome.states_entered()
    assert outcome.assigned("failedStep") == "RollbackResubmitJobs"  # the rollback's resubmission failed
    _same_jobs(sb, before)
    _at(sb, DOWN)
    assert _snapshot_items(sb) == [] and _snapshot_objects(sb) == []


def test_3_downgrade_update_addon_refused_resubmits_the_drained_jobs(sb):
    _move_to(sb, UP)
    before = _jobs(sb)
    _refuse_update()
    outcome = _upgrade(sb, DOWN)
    assert outcome.status == "FAILED" and outcome.error == "UpgradeRolledBackError"
    assert "UpdateAddon failed (InvalidInputError" in outcome.cause, outcome.cause
    assert "injected: the update is refused" in outcome.cause and UP in outcome.cause
    assert "DeleteJobs" in _child(outcome, "upgrade").states_entered()
    assert "ResubmitJobs" in _child(outcome, "rollback").states_entered()
    _same_jobs(sb, before)
    assert all(j["metadata"]["uid"] != before[n]["metadata"]["uid"] for n, j in _jobs(sb).items())
    _at(sb, UP)
    assert _snapshot_items(sb) == [] and _snapshot_objects(sb) == []


def test_4_downgrade_whose_resubmission_fails_at_first_still_ends_with_every_job(sb):
    before = _jobs(sb)
    sb.kube.faults.inject("create", JOB_PLURAL, count=8, status=500)
    outcome = _upgrade(sb, DOWN)
    assert outcome.status == "FAILED"
    assert outcome.error == "DependencyUnavailableError", (outcome.error, outcome.cause)
    assert "500" in outcome.cause, outcome.cause
    states = outcome.steps_entered()
    assert outcome.assigned("failedStep") == "ResubmitJobs"
    assert "ResubmitJobs" in _child(outcome, "upgrade").states_entered()
    assert "RestoreJobs" in states and "Record" not in states
    assert "ResubmitJobs" in _operator(sb).reason
    _same_jobs(sb, before)
    _at(sb, DOWN)  # the update itself went through
    assert _snapshot_items(sb) == [] and _snapshot_objects(sb) == []


def test_5_downgrade_under_an_elastic_job_is_refused_and_allowed_with_force(sb):
    _move_to(sb, UP)
    _create(sb, _job("job-elastic", elastic=True))
    before = _jobs(sb)
    refused = _upgrade(sb, DOWN)
    assert refused.status == "FAILED" and "job-elastic" in refused.cause and "elasticPolicy" in refused.cause
    assert "UpdateAddon" not in refused.steps_entered()
    _at(sb, UP)

    outcome = _upgrade(sb, DOWN, force=True)
    assert outcome.ok, (outcome.error, outcome.cause)
    assert outcome.output["action"] == "draining_downgrade"
    assert "ResubmitJobs" in _child(outcome, "upgrade").states_entered()
    _same_jobs(sb, before)  # the elastic job too, resubmitted unchanged
    assert _jobs(sb)["job-elastic"]["spec"]["elasticPolicy"] == {"minReplicas": 1, "maxReplicas": 2}
    _at(sb, DOWN)
    assert _operator(sb).addon_version == DOWN


def test_6_hpctl_addon_versions_lists_what_each_version_supports(sb, monkeypatch, capsys):
    from hpctl.cli import main

    for key, value in sb.env.items():
        monkeypatch.setenv(key, value)
    assert main(["addon", "versions", "--cluster", sb.world.hyperpod_cluster_name]) == 0
    table = capsys.readouterr().out
    kubernetes = sb.client("eks").describe_cluster(name=sb.world.eks_cluster_name)["cluster"]["version"]
    assert f"Kubernetes {kubernetes}" in table and f"installed: {DOWN}" in table
    rows = {
        line.split()[1 if line.lstrip().startswith("*") else 0]: line for line in table.splitlines()[2:-1]
    }
    assert rows[DOWN].lstrip().startswith("*") and not rows[UP].lstrip().startswith("*")
    assert rows[DOWN].split()[-4:] == ["no", "no", "no", "yes"]  # before 1.2.0
    assert rows[UP].split()[-4:] == ["yes", "yes", "yes", "no"]  # no inline Pod Identity

    assert main(["addon", "versions", "--cluster", sb.world.hyperpod_cluster_name, "--output", "json"]) == 0
    listed = __import__("json").loads(capsys.readouterr().out)
    versions = [r["version"] for r in listed]
    compatible = [
        v["addonVersion"]
        for a in sb.client("eks").describe_addon_versions(addonName=ADDON_NAME, kubernetesVersion=kubernetes)[
            "addons"
        ]
        for v in a["addonVersions"]
    ]
    assert sorted(versions) == sorted(compatible) and UP in versions and DOWN in versions
    assert [r["version"] for r in listed if r["installed"]] == [DOWN]
    by_version = {r["version"]: r for r in listed}
    assert by_version[UP]["elasticTraining"] and by_version[UP]["checkpointlessTraining"]
    assert not by_version[UP]["inlinePodIdentity"] and not by_version[DOWN]["requiresAgent"]


def test_7_a_cluster_without_the_add_on_is_refused_and_nothing_changes(sb):
    eks = sb.client("eks")
    eks.delete_addon(clusterName=sb.world.eks_cluster_name, addonName=ADDON_NAME)

    def gone() -> bool:
        return ADDON_NAME not in eks.list_addons(clusterName=sb.world.eks_cluster_name)["addons"]

    eventually(gone, timeout=30, what="add-on deleted")
    # Without the add-on its CRD is gone, and the jobs with it: what is left must stay as it is.
    before = _kube_state(sb)
    record = _operator(sb)
    outcome = _upgrade(sb, UP)
    assert outcome.status == "FAILED" and outcome.error == "UpgradeRefusedError", (
        outcome.error,
        outcome.cause,
    )
    assert "add-on is not installed on this cluster" in outcome.cause
    assert "UpdateAddon" not in outcome.steps_entered() and "SnapshotJobs" not in outcome.steps_entered()
    assert gone()
    assert _kube_state(sb) == before
    after = _operator(sb)
    assert (after.addon_version, after.role_arn, after.lock_owner) == (
        record.addon_version,
        record.role_arn,
        None,
    )
    assert _snapshot_items(sb) == [] and _snapshot_objects(sb) == []


def _kube_state(sb: Sandbox) -> tuple:
    from kubernetes import client

    api = client.ApiClient(sb.kube.client_configuration())
    crds = sorted(
        c.metadata.name for c in client.ApiextensionsV1Api(api).list_custom_resource_definition().items
    )
    pods = sorted(p.metadata.name for p in client.CoreV1Api(api).list_pod_for_all_namespaces().items)
    return crds, pods
