"""The upgrade rule (docs/hyperpod-contract.md, "The training-operator add-on"), as a pure
function: every branch of the plan and every refusal, each naming why; plus the manifest a
resubmission sends and the OPERATOR item it records."""

from __future__ import annotations

import pytest

from hyperpod_control.exceptions import UpgradeRefusedError, VersionConflictError
from hyperpod_control.models.install import ClusterRef, WorkflowLock
from hyperpod_control.models.records import OperatorMode, OperatorRecord, OperatorStatus
from hyperpod_control.models.upgrade import JobSnapshotRecord, RecordUpgradeInput, UpgradeRequest
from hyperpod_control.models.validation import parse_input
from hyperpod_control.services import upgrade
from hyperpod_control.services.upgrade import ELASTIC, IN_PROCESS_RESTART, decide_plan

pytestmark = pytest.mark.unit

ALL = ["v1.0.0", "v1.0.1", "v1.1.0", "v1.1.1", "v1.1.2", "v1.2.0-eksbuild.1", "v1.2.1-eksbuild.1"]
K8S = "1.31"


def job(name: str, *, elastic: bool = False, command=None, args=None, ns: str = "default") -> dict:
    container = {
        "name": "c",
        "image": "i",
        "command": command or ["hyperpodrun"],
        "args": args or ["train.py"],
    }
    spec: dict = {
        "replicaSpecs": [{"name": "pod", "replicas": 1, "template": {"spec": {"containers": [container]}}}]
    }
    if elastic:
        spec["elasticPolicy"] = {"minReplicas": 1, "maxReplicas": 4}
    return {"metadata": {"name": name, "namespace": ns, "uid": f"uid-{name}"}, "spec": spec}


def plan(current, target, jobs=(), force=False, compatible=None):
    return decide_plan(
        current, target, ALL, ALL if compatible is None else compatible, K8S, list(jobs), force
    )


# -- refusals ------------------------------------------------------------------------------------


def test_no_addon_installed_is_refused():
    with pytest.raises(UpgradeRefusedError, match="not installed"):
        plan(None, "v1.2.0-eksbuild.1")


def test_unknown_target_is_refused_naming_the_known_versions():
    with pytest.raises(UpgradeRefusedError, match=r"v9\.9\.9 does not exist.*known versions: v1\.2\.1"):
        plan("v1.1.2", "v9.9.9")


def test_target_incompatible_with_the_clusters_kubernetes_is_refused():
    with pytest.raises(
        UpgradeRefusedError, match=r"v1\.2\.1-eksbuild\.1 is not compatible with .*Kubernetes 1\.31"
    ):
        plan("v1.1.2", "v1.2.1-eksbuild.1", compatible=["v1.1.2", "v1.2.0-eksbuild.1"])


def test_no_compatible_version_at_all_is_refused():
    with pytest.raises(UpgradeRefusedError, match=r"no version .* supports Kubernetes 1\.31"):
        plan("v1.1.2", None, compatible=[])


def test_downgrade_below_1_2_0_refused_for_an_elastic_job_naming_it():
    with pytest.raises(UpgradeRefusedError, match=r"default/a \(elasticPolicy\)") as err:
        plan("v1.2.1-eksbuild.1", "v1.1.2", [job("a", elastic=True), job("b")])
    assert "default/b" not in str(err.value) and "force" in str(err.value)


@pytest.mark.parametrize(
    ("command", "args"),
    [
        (["hyperpodrun"], ["--inprocess-restart", "train.py"]),
        (["hyperpodrun"], ["--inprocess-restart=true", "train.py"]),
        (["bash", "-c"], ["hyperpodrun --nproc-per-node=8 --inprocess-restart train.py"]),
    ],
)
def test_downgrade_refused_for_in_process_restart_in_hyperpodrun_arguments(command, args):
    with pytest.raises(UpgradeRefusedError, match="in-process restart"):
        plan("v1.2.0-eksbuild.1", "v1.1.0", [job("a", command=command, args=args)])


def test_inprocess_flag_without_hyperpodrun_is_not_the_feature():
    assert upgrade.job_features(job("a", command=["python"], args=["--inprocess-restart"])) == []


def test_upgrade_to_an_older_line_without_features_is_refused_for_elastic_jobs_too():
    with pytest.raises(UpgradeRefusedError, match="elasticPolicy"):
        plan("v1.0.0", "v1.1.2", [job("a", elastic=True)])


# -- plans ---------------------------------------------------------------------------------------


def test_same_version_is_a_noop_whatever_the_jobs_use():
    decided = plan("v1.2.1-eksbuild.1", "v1.2.1-eksbuild.1", [job("a", elastic=True)])
    assert decided.action == "noop" and not decided.snapshot and not decided.drain


def test_no_target_means_the_latest_compatible():
    decided = plan("v1.1.2", None, compatible=["v1.1.2", "v1.2.0-eksbuild.1"])
    assert (decided.action, decided.target_version) == ("upgrade", "v1.2.0-eksbuild.1")


def test_upgrade_within_the_old_line_touches_no_job():
    decided = plan("v1.0.0", "v1.1.2", [job("a")])
    assert decided.action == "upgrade"
    assert not (decided.crosses or decided.snapshot or decided.drain or decided.rollback_drain)


def test_upgrade_across_1_2_0_snapshots_and_a_rollback_would_drain():
    decided = plan("v1.1.2", "v1.2.1-eksbuild.1", [job("a"), job("b")])
    assert decided.action == "upgrade"
    assert decided.crosses and decided.snapshot and decided.rollback_drain and not decided.drain
    assert [j.name for j in decided.jobs] == ["a", "b"]
    assert any("standalone" in n for n in decided.notes)  # the v1.2.1-eksbuild.1 inline break


def test_downgrade_within_the_new_line_is_plain():
    decided = plan("v1.2.1-eksbuild.1", "v1.2.0-eksbuild.1", [job("a", elastic=True)])
    assert decided.action == "downgrade" and not decided.snapshot and not decided.drain


def test_downgrade_within_the_old_line_is_plain():
    decided = plan("v1.1.2", "v1.0.0", [job("a")])
    assert decided.action == "downgrade" and not decided.drain


def test_downgrade_across_1_2_0_with_jobs_drains():
    decided = plan("v1.2.0-eksbuild.1", "v1.1.2", [job("a"), job("b")])
    assert decided.action == "draining_downgrade"
    assert decided.snapshot and decided.drain and decided.crosses and not decided.rollback_drain
    assert any("deleting the jobs first" in n for n in decided.notes)


def test_downgrade_across_1_2_0_without_jobs_needs_no_drain():
    decided = plan("v1.2.0-eksbuild.1", "v1.1.2", [])
    assert decided.action == "downgrade" and not decided.drain


def test_force_allows_the_refused_downgrade_and_says_which_jobs_it_forces():
    decided = plan("v1.2.1-eksbuild.1", "v1.1.2", [job("a", elastic=True)], force=True)
    assert decided.action == "draining_downgrade" and decided.forced == ["default/a (elasticPolicy)"]
    assert decided.jobs[0].features == [ELASTIC]


def test_feature_line_compares_numbers_not_strings():
    assert upgrade.has_features("v1.2.0-eksbuild.1") and upgrade.has_features("v1.10.0")
    assert not upgrade.has_features("v1.1.9")
    assert upgrade.crosses_feature_line("v1.1.2", "v1.2.0-eksbuild.1")
    assert not upgrade.crosses_feature_line("v1.2.0-eksbuild.1", "v1.2.1-eksbuild.1")


def test_job_features_sees_both():
    both = job("a", elastic=True, args=["--inprocess-restart"])
    assert upgrade.job_features(both) == [ELASTIC, IN_PROCESS_RESTART]


# -- request, resubmission, record ---------------------------------------------------------------


def test_request_validates_the_version_pattern():
    with pytest.raises(Exception, match="addonVersion"):
        parse_input(UpgradeRequest, {"clusterName": "c1", "addonVersion": "1.2"})


def test_resubmittable_keeps_spec_labels_annotations_and_drops_server_fields():
    original = {
        "apiVersion": "sagemaker.amazonaws.com/v1",
        "kind": "HyperPodPyTorchJob",
        "metadata": {
            "name": "a",
            "namespace": "team",
            "labels": {"x": "1"},
            "annotations": {"y": "2"},
            "uid": "u",
            "resourceVersion": "7",
            "generation": 2,
            "creationTimestamp": "t",
            "managedFields": [{}],
            "finalizers": ["f"],
        },
        "spec": {"replicaSpecs": []},
        "status": {"conditions": []},
    }
    body = upgrade.resubmittable(original)
    assert body["metadata"] == {
        "name": "a",
        "namespace": "team",
        "labels": {"x": "1"},
        "annotations": {"y": "2"},
    }
    assert body["spec"] == original["spec"] and "status" not in body
    assert original["metadata"]["uid"] == "u"  # the snapshot itself is not changed


def test_snapshot_items_are_keyed_by_upgrade_and_job_uid():
    record = JobSnapshotRecord(
        cluster_name="c1", upgrade_id="exec-1", uid="u1", namespace="ns", name="a", s3_key="k"
    )
    assert (record.pk, record.sk) == ("UPGRADE#c1#exec-1", "JOB#u1")
    assert upgrade.upgrade_id_of("arn:aws:states:us-west-2:1:execution:sm:exec-1") == "exec-1"
    assert upgrade.snapshot_key("c1", "exec-1", job("a")) == "upgrades/c1/exec-1/default/a-uid-a.json"


CLUSTER = ClusterRef(
    cluster_name="c1", cluster_arn="arn:aws:sagemaker:us-west-2:1:cluster/x", eks_cluster_name="e"
)


def test_upgraded_record_sets_the_version_and_needs_the_lock():
    existing = OperatorRecord(
        cluster_arn=CLUSTER.cluster_arn,
        cluster_name="c1",
        mode=OperatorMode.ADDON,
        status=OperatorStatus.ACTIVE,
        addon_version="v1.1.2",
        lock_owner="exec",
        reason="old failure",
    )
    request = RecordUpgradeInput(
        cluster=CLUSTER,
        lock=WorkflowLock(owner="exec", cluster_arn=CLUSTER.cluster_arn),
        owner="exec",
        addon_version="v1.2.1-eksbuild.1",
    )
    record = upgrade.upgraded_record(existing, request)
    assert (record.addon_version, record.reason, record.lock_owner) == ("v1.2.1-eksbuild.1", None, "exec")
    with pytest.raises(VersionConflictError):
        upgrade.upgraded_record(existing, request.model_copy(update={"owner": "other"}))
