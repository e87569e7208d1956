"""The install workflow's decisions, as pure functions over plain data and models."""

from __future__ import annotations

import json

import pytest

from hyperpod_control.adapters.kube import contains, differs
from hyperpod_control.exceptions import (
    AddonFailedError,
    InvalidInputError,
    LockHeldError,
    OperatorConflictError,
    OperatorNotReadyError,
    PermanentError,
)
from hyperpod_control.models.install import (
    ACCESS_TIERS,
    AddonConfiguration,
    ClusterRef,
    EnsureRoleInput,
    InstallRequest,
    WorkflowLock,
    parse_quantity,
    passable_by,
)
from hyperpod_control.models.records import OperatorMode, OperatorRecord, OperatorStatus
from hyperpod_control.models.validation import parse_input
from hyperpod_control.services import install

pytestmark = pytest.mark.unit

CLUSTER = ClusterRef(
    cluster_name="c1",
    cluster_arn="arn:aws:sagemaker:us-west-2:123456789012:cluster/abc",
    eks_cluster_name="e1",
)
LOCK = WorkflowLock(owner="exec-1", cluster_arn=CLUSTER.cluster_arn)
EKS_ARN = "arn:aws:eks:us-west-2:123456789012:cluster/e1"
ROLE = "arn:aws:iam::123456789012:role/hyperpod-control-plane/hyperpod-control-plane-operator-c1"
OPERATOR_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "hpTrainingControllerManager": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "manager": {"type": "object"},
                "nodeSelector": {"type": "object", "additionalProperties": {"type": "string"}},
            },
        }
    },
}


# -- version choice ---------------------------------------------------------------------------


def test_latest_compatible_version_is_chosen_in_numeric_order():
    versions = ["v1.0.0", "v1.10.0", "v1.2.1-eksbuild.1", "v1.2.0-eksbuild.1", "v1.9.0"]
    assert install.choose_version(None, versions, "1.31") == "v1.10.0"
    assert install.version_key("v1.2.1-eksbuild.1") == (1, 2, 1, 1)


def test_a_requested_version_is_kept_and_an_unavailable_one_is_refused_naming_the_field():
    assert install.choose_version("v1.0.0", ["v1.0.0", "v1.1.0"], "1.31") == "v1.0.0"
    with pytest.raises(InvalidInputError, match=r"^addonVersion: v2\.0\.0 .*available: v1\.1\.0, v1\.0\.0"):
        install.choose_version("v2.0.0", ["v1.0.0", "v1.1.0"], "1.31")
    with pytest.raises(InvalidInputError, match=r"no version .* Kubernetes 1\.40"):
        install.choose_version(None, [], "1.40")


@pytest.mark.parametrize("version", ["1.2.0", "v1.2", "latest", "v1.2.0-eks.1"])
def test_malformed_versions_fail_validation_naming_addon_version(version):
    with pytest.raises(InvalidInputError, match="addonVersion"):
        parse_input(InstallRequest, {"clusterName": "c1", "addonVersion": version})


# -- configuration values -----------------------------------------------------------------------


def test_configuration_model_takes_the_seed_table_and_serialises_camel_case():
    config = AddonConfiguration.model_validate(
        {
            "hpTrainingControllerManager": {
                "manager": {
                    "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"cpu": 2}}
                },
                "nodeSelector": {"sagemaker.amazonaws.com/compute-type": "HyperPod"},
            }
        }
    )
    text = install.configuration_json(config)
    assert json.loads(text)["hpTrainingControllerManager"]["manager"]["resources"]["limits"] == {"cpu": "2"}
    assert install.schema_errors(json.loads(text), OPERATOR_SCHEMA) == []
    assert install.configuration_json(None) is None


@pytest.mark.parametrize(
    ("values", "named"),
    [
        ({"hpTrainingControllerManager": {"manager": {"resources": {"requests": {"cpu": "lots"}}}}}, "cpu"),
        ({"hpTrainingControllerManager": {"replicas": 2}}, "replicas"),
        (
            {"hpTrainingControllerManager": {"manager": {"resources": {"requests": {"memory": "8Gi"}}}}},
            "memory",
        ),
        ({"hpTrainingControllerManager": {"nodeSelector": {"a": 1}}}, "nodeSelector"),
    ],
    ids=["not-a-quantity", "unknown-key", "request-over-default-limit", "selector-not-string"],
)
def test_configuration_outside_the_table_is_refused_naming_the_field(values, named):
    with pytest.raises(InvalidInputError) as err:
        parse_input(InstallRequest, {"clusterName": "c1", "configurationValues": values})
    assert named in str(err.value) and "configurationValues" in str(err.value)


def test_schema_check_names_the_path_of_each_violation():
    errors = install.schema_errors(
        {"hpTrainingControllerManager": {"tolerations": [], "nodeSelector": {"a": 1}}}, OPERATOR_SCHEMA
    )
    assert errors == [
        "configurationValues.hpTrainingControllerManager.tolerations: is not a configuration value of "
        "amazon-sagemaker-hyperpod-training-operator",
        "configurationValues.hpTrainingControllerManager.nodeSelector.a: must be string",
    ]


def test_quantities():
    assert parse_quantity("500m") < parse_quantity("1") < parse_quantity("2")
    assert parse_quantity("2Gi") == 2 * 1024**3
    with pytest.raises(ValueError):
        parse_quantity("2 GB")


def test_serverless_refuses_addon_only_fields():
    with pytest.raises(InvalidInputError, match="addonVersion, roleArn only apply to operator=addon"):
        parse_input(
            InstallRequest,
            {"clusterName": "c1", "operator": "serverless", "addonVersion": "v1.0.0", "roleArn": ROLE},
        )


# -- the add-on ---------------------------------------------------------------------------------


def test_addon_decision():
    active = {"status": "ACTIVE", "addonVersion": "v1.1.0", "configurationValues": '{"a": 1}'}
    assert install.decide_addon(None, "v1.1.0", None) == "create"
    assert install.decide_addon(active, "v1.1.0", '{"a":1}') == "unchanged"  # same JSON, other spacing
    assert install.decide_addon(active, "v1.2.0", '{"a":1}') == "update"
    assert install.decide_addon(active, "v1.1.0", None) == "update"
    assert install.decide_addon({**active, "status": "DEGRADED"}, "v1.1.0", '{"a":1}') == "update"
    assert install.decide_addon({**active, "status": "CREATING"}, "v1.2.0", None) == "unchanged"


def test_a_failed_addon_ends_the_wait_with_its_health_issues():
    addon = {
        "status": "CREATE_FAILED",
        "health": {"issues": [{"code": "AccessDenied", "message": "no role"}]},
    }
    with pytest.raises(AddonFailedError, match="CREATE_FAILED: AccessDenied: no role"):
        install.addon_state(addon, expect_gone=False)
    assert install.addon_state({"status": "CREATING"}, False).done is False
    assert install.addon_state({"status": "ACTIVE"}, False).done is True
    assert install.addon_state(None, expect_gone=True).status == "GONE"


# -- Pod Identity ---------------------------------------------------------------------------------


def test_association_is_reused_when_equal_updated_when_another_role_and_inline_ones_refused():
    assert install.decide_association(None, ROLE) == "create"
    assert install.decide_association({"associationId": "a-1", "roleArn": ROLE}, ROLE) == "unchanged"
    assert install.decide_association({"associationId": "a-1", "roleArn": ROLE + "x"}, ROLE) == "update"
    with pytest.raises(PermanentError, match="declared inline"):
        install.decide_association({"associationId": "a-1", "roleArn": ROLE, "ownerArn": "arn:addon"}, ROLE)


# -- trust policy and role name -----------------------------------------------------------------


def test_trust_policy_is_eks_pod_identity_scoped_to_the_cluster():
    policy = install.trust_policy("123456789012", EKS_ARN)
    (statement,) = policy["Statement"]
    assert statement["Principal"] == {"Service": "pods.eks.amazonaws.com"}
    assert statement["Action"] == ["sts:AssumeRole", "sts:TagSession"]
    assert "eks-auth:AssumeRoleForPodIdentity" not in json.dumps(policy)  # the node side's action
    assert statement["Condition"]["ArnEquals"]["aws:SourceArn"] == EKS_ARN
    assert install.trust_problems(policy) == []


def test_a_user_role_without_tag_session_or_the_pod_principal_is_reported():
    lambda_trust = {
        "Statement": [
            {"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}
        ]
    }
    no_tag = {
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": ["pods.eks.amazonaws.com"]},
                "Action": "sts:AssumeRole",
            }
        ]
    }
    assert install.trust_problems(lambda_trust) == [
        "its trust policy does not allow pods.eks.amazonaws.com to sts:AssumeRole and sts:TagSession"
    ]
    assert install.trust_problems(no_tag) == [
        "its trust policy does not allow pods.eks.amazonaws.com to sts:TagSession"
    ]


def test_role_names_keep_the_prefix_and_fit_iam():
    assert install.role_name_for("c1", "stack-operator-") == "stack-operator-c1"
    long = install.role_name_for("x" * 63, "hyperpod-control-plane-operator-")
    assert len(long) == 64 and long.startswith("hyperpod-control-plane-operator-")
    assert long != install.role_name_for("x" * 62 + "y", "hyperpod-control-plane-operator-")


def test_caller_arns_become_access_entry_principals():
    assert install.canonical_principal("arn:aws:sts::123456789012:assumed-role/fn-role/sess") == (
        "arn:aws:iam::123456789012:role/fn-role"
    )
    assert (
        install.canonical_principal("arn:aws:sts::123456789012:user/moto")
        == "arn:aws:iam::123456789012:user/moto"
    )


# -- lock and the one-operator rule ---------------------------------------------------------------


def _record(**kw) -> OperatorRecord:
    return OperatorRecord(cluster_arn=CLUSTER.cluster_arn, cluster_name="c1", mode=OperatorMode.ADDON, **kw)


def test_claim_takes_the_lock_refuses_another_owner_and_the_other_operator():
    claimed = install.decide_claim(None, CLUSTER, "exec-1", OperatorMode.ADDON, "install")
    assert (claimed.lock_owner, claimed.status) == ("exec-1", OperatorStatus.INSTALLING)
    assert (
        install.decide_claim(claimed, CLUSTER, "exec-1", OperatorMode.ADDON, "install").lock_owner == "exec-1"
    )
    with pytest.raises(LockHeldError):
        install.decide_claim(claimed, CLUSTER, "exec-2", OperatorMode.ADDON, "install")
    active = _record(status=OperatorStatus.ACTIVE)
    with pytest.raises(OperatorConflictError, match=r"^operator: .* already runs the addon"):
        install.decide_claim(active, CLUSTER, "exec-3", OperatorMode.SERVERLESS, "install")
    # a re-install of the same operator keeps it ACTIVE while it runs
    assert (
        install.decide_claim(active, CLUSTER, "exec-3", OperatorMode.ADDON, "install").status
        is OperatorStatus.ACTIVE
    )


def test_release_only_by_the_owner_and_a_failed_install_is_marked_failed():
    held = _record(status=OperatorStatus.INSTALLING, lock_owner="exec-1")
    assert install.decide_release(held, "exec-2", succeeded=False) is None
    released = install.decide_release(held, "exec-1", succeeded=False)
    assert (released.lock_owner, released.status) == (None, OperatorStatus.FAILED)
    assert install.decide_release(
        _record(status=OperatorStatus.ACTIVE, lock_owner="x"), "x", False
    ).status is (OperatorStatus.ACTIVE)


def test_jobs_block_an_uninstall_unless_forced():
    jobs = [{"metadata": {"namespace": "team", "name": "llama"}}]
    with pytest.raises(PermanentError, match="team/llama"):
        install.judge_jobs(jobs, force=False)
    assert install.judge_jobs(jobs, force=True).count == 1


# -- Kubernetes -----------------------------------------------------------------------------------


def test_operator_verification_needs_an_available_deployment_and_an_established_crd():
    deployment = {
        "metadata": {"name": "d"},
        "status": {"availableReplicas": 1, "conditions": [{"type": "Available", "status": "True"}]},
    }
    crd = {"status": {"conditions": [{"type": "Established", "status": "True"}]}}
    assert install.assess_operator([deployment], crd).available_replicas == 1
    for deployments, found in (([], crd), ([{**deployment, "status": {}}], crd), ([deployment], None)):
        with pytest.raises(OperatorNotReadyError):
            install.assess_operator(deployments, found)


def test_rbac_is_narrow_and_split_by_need():
    roles = {tier: install.tier_cluster_role(tier)["rules"] for tier in ACCESS_TIERS}
    for rules in roles.values():
        resources = {r for rule in rules for r in rule["resources"]}
        verbs = {v for rule in rules for v in rule["verbs"]}
        assert "*" not in resources | verbs and "secrets" not in resources and "clusterroles" not in resources

    def may(tier: str, verb: str, resource: str) -> bool:
        return any(resource in r["resources"] and verb in r["verbs"] for r in roles[tier])

    # reading is everyone's; writing only where a tier's functions write
    assert all(may(t, "list", "pods") for t in ACCESS_TIERS)
    assert [t for t in ACCESS_TIERS if may(t, "create", "pods")] == ["supervisor"]
    assert [t for t in ACCESS_TIERS if may(t, "create", "pods/proxy")] == ["supervisor"]
    assert [t for t in ACCESS_TIERS if may(t, "patch", "nodes")] == ["node-handler"]
    assert [t for t in ACCESS_TIERS if may(t, "create", "customresourcedefinitions")] == ["crd-owner"]
    crd_rules = [
        r
        for r in roles["crd-owner"]
        if "customresourcedefinitions" in r["resources"] and "delete" in r["verbs"]
    ]
    assert [r["resourceNames"] for r in crd_rules] == [["hyperpodpytorchjobs.sagemaker.amazonaws.com"]]


def test_each_principal_gets_its_tier_group_and_keeps_groups_not_ours():
    assert install.decide_entry(None, "reader") == ("create", ["hyperpod-control-plane:reader"])
    legacy = {"principalArn": "r", "kubernetesGroups": ["hyperpod-control-plane", "team-a"]}
    assert install.decide_entry(legacy, "supervisor") == (
        "update",
        ["team-a", "hyperpod-control-plane:supervisor"],
    )
    same = {"principalArn": "r", "kubernetesGroups": ["hyperpod-control-plane:reader"]}
    assert install.decide_entry(same, "reader")[0] == "unchanged"
    tiers = install.parse_kubernetes_functions("reader=A, B;supervisor=C")
    assert tiers == {"reader": ["A", "B"], "supervisor": ["C"]}
    with pytest.raises(PermanentError, match="KUBERNETES_CLIENT_FUNCTIONS"):
        install.parse_kubernetes_functions("admin=A")


def test_apply_ignores_server_defaults_but_sees_real_changes():
    body = {"metadata": {"name": "x", "labels": {"a": "b"}}, "rules": [{"verbs": ["get"]}]}
    stored = {
        "metadata": {"name": "x", "labels": {"a": "b"}, "uid": "1"},
        "rules": [{"verbs": ["get"], "extra": 1}],
    }
    assert contains(stored, {"rules": [{"verbs": ["get"]}]})
    assert not differs(stored, body)
    assert differs({**stored, "rules": [{"verbs": ["list"]}]}, body)
    assert differs({**stored, "metadata": {"name": "x"}}, body)


def test_a_version_without_its_build_suffix_means_the_newest_build_of_it():
    published = ["v1.1.2-eksbuild.1", "v1.1.2-eksbuild.3", "v1.2.0-eksbuild.1"]
    assert install.choose_version("v1.1.2", published, "1.31") == "v1.1.2-eksbuild.3"
    assert install.choose_version("v1.1.2-eksbuild.1", published, "1.31") == "v1.1.2-eksbuild.1"
    with pytest.raises(InvalidInputError, match=r"v1\.1\.9 is not a version"):
        install.choose_version("v1.1.9", published, "1.31")


# -- the user's own operator role ------------------------------------------------------------------

OWN_ROLES = "arn:aws:iam::123456789012:role/hyperpod-control-plane/*"


def test_a_role_is_passable_only_by_a_pattern_that_covers_it_as_iam_matches_arns():
    mine = "arn:aws:iam::123456789012:role/my-operator-role"
    assert passable_by(ROLE, [OWN_ROLES]) == OWN_ROLES
    assert passable_by(mine, [OWN_ROLES]) is None
    assert passable_by(mine, [OWN_ROLES, mine]) == mine
    assert passable_by(mine, ["arn:aws:iam::123456789012:role/my-*"]) is not None
    assert passable_by(mine, ["arn:aws:iam::123456789012:role/my-operator-rol?"]) is not None
    # The match is case-sensitive, and the rest is literal (a . is no wildcard).
    assert passable_by(mine, ["arn:aws:iam::123456789012:role/My-*"]) is None
    assert passable_by(mine, ["arn:aws:iam::123456789012:role/my.operator-role"]) is None
    assert passable_by(mine, ["arn:aws:iam::210987654321:role/my-operator-role"]) is None


class _Iam:
    def __init__(self, role: dict) -> None:
        self.role = role

    def get_role(self, name: str) -> dict | None:
        return self.role if name == self.role["RoleName"] else None

    def attached_policies(self, name: str) -> list[str]:
        return ["arn:aws:iam::aws:policy/AmazonSageMakerHyperPodTrainingOperatorAccess"]


class _Eks:
    def describe_cluster(self, name: str) -> dict:
        return {"name": name, "arn": EKS_ARN}


def _user_role(arn: str) -> dict:
    return {
        "RoleName": arn.rsplit("/", 1)[-1],
        "Arn": arn,
        "AssumeRolePolicyDocument": install.trust_policy("123456789012", EKS_ARN),
    }


def test_a_user_role_is_named_by_its_full_arn_path_included():
    real = "arn:aws:iam::123456789012:role/team/my-operator-role"
    given = "arn:aws:iam::123456789012:role/my-operator-role"
    iam = _Iam(_user_role(real))

    request = EnsureRoleInput(cluster=CLUSTER, lock=LOCK, role_arn=real)
    outcome = install.ensure_execution_role(request, iam, _Eks())
    assert (outcome.role_arn, outcome.created) == (real, False)
    # The same name without its path: the association would carry another ARN than Preflight checked.
    request = EnsureRoleInput(cluster=CLUSTER, lock=LOCK, role_arn=given)
    with pytest.raises(InvalidInputError, match=r"^roleArn: .*team/my-operator-role") as raised:
        install.ensure_execution_role(request, iam, _Eks())
    assert real in raised.value.remedy
