"""EKS add-ons through a plain boto3 client: lifecycle on sandbox time, catalogue, schema, errors."""

from __future__ import annotations

import json

import pytest
from botocore.exceptions import ClientError

from sandbox.aws_ext import eks_addons
from tests.sandbox.aws_ext.conftest import ACCOUNT, code, make_eks, operator_values, status

OPERATOR = "amazon-sagemaker-hyperpod-training-operator"
ROLE = f"arn:aws:iam::{ACCOUNT}:role/operator"
SA = "hp-training-operator-controller-manager"


def describe(eks, name=OPERATOR, cluster="eks1"):
    return eks.describe_addon(clusterName=cluster, addonName=name)["addon"]


def test_create_goes_creating_then_active_after_the_delay(aws):
    make_eks(aws)
    eks = aws.client("eks")

    addon = eks.create_addon(clusterName="eks1", addonName=OPERATOR, resolveConflicts="OVERWRITE")["addon"]

    assert addon["status"] == "CREATING"
    assert addon["addonVersion"] == "v1.2.1-eksbuild.1"  # the catalogue's default for 1.31
    assert addon["addonArn"].startswith(f"arn:aws:eks:us-west-2:{ACCOUNT}:addon/eks1/{OPERATOR}/")
    assert addon["namespaceConfig"] == {"namespace": "aws-hyperpod"}
    aws.clock.advance(29)
    assert describe(eks)["status"] == "CREATING"
    aws.clock.advance(1)
    active = describe(eks)
    assert active["status"] == "ACTIVE" and active["health"] == {"issues": []}
    assert eks.list_addons(clusterName="eks1")["addons"] == [OPERATOR]


def test_create_errors(aws):
    make_eks(aws)
    eks = aws.client("eks")
    with pytest.raises(ClientError) as missing_cluster:
        eks.create_addon(clusterName="nope", addonName=OPERATOR)
    assert (code(missing_cluster), status(missing_cluster)) == ("ResourceNotFoundException", 404)
    assert "No cluster found for name: nope." in str(missing_cluster.value)

    with pytest.raises(ClientError) as unknown:
        eks.create_addon(clusterName="eks1", addonName="not-an-addon")
    assert code(unknown) == "InvalidParameterException" and "addonName" in str(unknown.value)

    with pytest.raises(ClientError) as bad_version:
        eks.create_addon(clusterName="eks1", addonName=OPERATOR, addonVersion="v9.9.9")
    assert code(bad_version) == "InvalidParameterException" and "addonVersion" in str(bad_version.value)

    eks.create_addon(clusterName="eks1", addonName=OPERATOR)
    with pytest.raises(ClientError) as twice:
        eks.create_addon(clusterName="eks1", addonName=OPERATOR)
    assert (code(twice), status(twice)) == ("ResourceInUseException", 409)


def test_versions_follow_the_clusters_kubernetes_version(aws):
    make_eks(aws, name="new", version="1.34")
    eks = aws.client("eks")
    with pytest.raises(ClientError) as no_default:
        eks.create_addon(clusterName="new", addonName=OPERATOR)
    assert code(no_default) == "InvalidParameterException" and "1.34" in str(no_default.value)
    with pytest.raises(ClientError) as incompatible:
        eks.create_addon(clusterName="new", addonName=OPERATOR, addonVersion="v1.2.0-eksbuild.1")
    assert code(incompatible) == "InvalidParameterException" and "addonVersion" in str(incompatible.value)
    # The prerequisites support 1.34.
    assert eks.create_addon(clusterName="new", addonName="cert-manager")["addon"]["status"] == "CREATING"


def test_configuration_values_are_checked_against_the_schema(aws):
    make_eks(aws)
    eks = aws.client("eks")
    good = operator_values(requests={"cpu": "1", "memory": "2Gi"}, limits={"cpu": 2, "memory": "4Gi"})
    created = eks.create_addon(clusterName="eks1", addonName=OPERATOR, configurationValues=good)["addon"]
    assert created["configurationValues"] == good
    aws.clock.advance(30)

    for values, field in (
        # A translated AWS page's capitalised keys are a translation artefact: the real keys are camelCase.
        (
            json.dumps({"hpTrainingControllerManager": {"Manager": {}}}),
            "$.hpTrainingControllerManager.Manager",
        ),
        (
            operator_values(requests={"cpu": ["1"]}),
            "$.hpTrainingControllerManager.manager.resources.requests.cpu",
        ),
        (operator_values(limits={"memory": "lots"}), "limits.memory"),
        ("hpTrainingControllerManager:\n  nodeSelector:\n    pool: 3\n", "nodeSelector.pool"),
    ):
        with pytest.raises(ClientError) as bad:
            eks.update_addon(clusterName="eks1", addonName=OPERATOR, configurationValues=values)
        assert code(bad) == "InvalidParameterException"
        assert "ConfigurationValue provided in request is not supported" in str(bad.value)
        assert field in str(bad.value)
    with pytest.raises(ClientError) as on_create:
        eks.create_addon(clusterName="eks1", addonName="cert-manager", configurationValues="[1, 2]")
    assert code(on_create) == "InvalidParameterException" and "array found, object expected" in str(
        on_create.value
    )

    yaml_values = "hpTrainingControllerManager:\n  nodeSelector:\n    pool: gpu\n"
    update = eks.update_addon(clusterName="eks1", addonName=OPERATOR, configurationValues=yaml_values)[
        "update"
    ]
    assert update["status"] == "InProgress"


def test_inline_pod_identity_needs_a_version_that_requires_iam(aws):
    make_eks(aws)
    eks = aws.client("eks")
    with pytest.raises(ClientError) as flipped:
        eks.create_addon(
            clusterName="eks1",
            addonName=OPERATOR,
            addonVersion="v1.2.1-eksbuild.1",
            podIdentityAssociations=[{"serviceAccount": SA, "roleArn": ROLE}],
        )
    assert code(flipped) == "InvalidParameterException"
    assert "Pod Identity feature is not supported for addon version: v1.2.1-eksbuild.1" in str(flipped.value)

    with pytest.raises(ClientError) as wrong_sa:
        eks.create_addon(
            clusterName="eks1",
            addonName=OPERATOR,
            addonVersion="v1.2.0-eksbuild.1",
            podIdentityAssociations=[{"serviceAccount": "default", "roleArn": ROLE}],
        )
    assert code(wrong_sa) == "InvalidParameterException" and "serviceAccount" in str(wrong_sa.value)

    addon = eks.create_addon(
        clusterName="eks1",
        addonName=OPERATOR,
        addonVersion="v1.2.0-eksbuild.1",
        podIdentityAssociations=[{"serviceAccount": SA, "roleArn": ROLE}],
    )["addon"]
    [association] = eks.list_pod_identity_associations(clusterName="eks1")["associations"]
    assert addon["podIdentityAssociations"] == [association["associationArn"]]
    assert association["ownerArn"] == addon["addonArn"]
    assert (association["namespace"], association["serviceAccount"]) == ("aws-hyperpod", SA)


def test_update_goes_updating_then_active_and_the_update_succeeds(aws):
    make_eks(aws)
    eks = aws.client("eks")
    eks.create_addon(clusterName="eks1", addonName=OPERATOR, addonVersion="v1.1.2-eksbuild.1")
    with pytest.raises(ClientError) as busy:
        eks.update_addon(clusterName="eks1", addonName=OPERATOR, addonVersion="v1.2.0-eksbuild.1")
    assert code(busy) == "ResourceInUseException"
    aws.clock.advance(30)

    update = eks.update_addon(
        clusterName="eks1", addonName=OPERATOR, addonVersion="v1.2.0-eksbuild.1", resolveConflicts="OVERWRITE"
    )["update"]

    assert update["type"] == "AddonUpdate" and update["status"] == "InProgress"
    assert {"type": "AddonVersion", "value": "v1.2.0-eksbuild.1"} in update["params"]
    assert describe(eks)["status"] == "UPDATING"
    assert describe(eks)["addonVersion"] == "v1.1.2-eksbuild.1"
    aws.clock.advance(30)
    assert describe(eks)["status"] == "ACTIVE"
    assert describe(eks)["addonVersion"] == "v1.2.0-eksbuild.1"
    done = eks.describe_update(name="eks1", updateId=update["id"], addonName=OPERATOR)["update"]
    assert done["status"] == "Successful"
    assert eks.list_updates(name="eks1", addonName=OPERATOR)["updateIds"] == [update["id"]]


def test_update_and_describe_update_errors(aws):
    make_eks(aws)
    eks = aws.client("eks")
    with pytest.raises(ClientError) as missing:
        eks.update_addon(clusterName="eks1", addonName=OPERATOR, addonVersion="v1.1.2-eksbuild.1")
    assert code(missing) == "ResourceNotFoundException"
    assert f"No addon: {OPERATOR} found in cluster: eks1" in str(missing.value)
    with pytest.raises(ClientError) as no_update:
        eks.describe_update(name="eks1", updateId="00000000-0000-0000-0000-000000000000")
    assert code(no_update) == "ResourceNotFoundException"
    with pytest.raises(ClientError) as no_addon:
        eks.describe_addon(clusterName="eks1", addonName=OPERATOR)
    assert code(no_addon) == "ResourceNotFoundException"


def test_failures_on_demand(aws):
    make_eks(aws)
    eks = aws.client("eks")
    issue = {
        "code": "ConfigurationConflict",
        "message": "cert-manager is missing",
        "resourceIds": ["webhook"],
    }
    eks_addons.fail_next(OPERATOR, "CREATE_FAILED", [issue], operations=("create",))
    eks.create_addon(clusterName="eks1", addonName=OPERATOR, addonVersion="v1.1.2-eksbuild.1")
    aws.clock.advance(30)
    failed = describe(eks)
    assert failed["status"] == "CREATE_FAILED" and failed["health"]["issues"] == [issue]

    eks.delete_addon(clusterName="eks1", addonName=OPERATOR)
    aws.clock.advance(15)
    eks.create_addon(clusterName="eks1", addonName=OPERATOR, addonVersion="v1.1.2-eksbuild.1")
    aws.clock.advance(30)
    assert describe(eks)["status"] == "ACTIVE"  # the armed failure was used up

    eks_addons.fail_next(OPERATOR, "UPDATE_FAILED", operations=("update",))
    update = eks.update_addon(clusterName="eks1", addonName=OPERATOR, addonVersion="v1.2.0-eksbuild.1")[
        "update"
    ]
    aws.clock.advance(30)
    after = describe(eks)
    assert after["status"] == "UPDATE_FAILED" and after["addonVersion"] == "v1.1.2-eksbuild.1"
    failed_update = eks.describe_update(name="eks1", updateId=update["id"], addonName=OPERATOR)["update"]
    assert failed_update["status"] == "Failed"
    assert failed_update["errors"][0]["errorCode"] == "InsufficientNumberOfReplicas"

    eks_addons.set_health("eks1", OPERATOR, "DEGRADED")
    assert describe(eks)["status"] == "DEGRADED"
    eks_addons.set_health("eks1", OPERATOR, "ACTIVE")
    assert describe(eks)["health"]["issues"] == []


def test_delete_goes_deleting_then_gone_with_its_associations(aws):
    make_eks(aws)
    eks = aws.client("eks")
    eks.create_addon(
        clusterName="eks1",
        addonName=OPERATOR,
        addonVersion="v1.2.0-eksbuild.1",
        podIdentityAssociations=[{"serviceAccount": SA, "roleArn": ROLE}],
    )
    aws.clock.advance(30)

    deleted = eks.delete_addon(clusterName="eks1", addonName=OPERATOR)["addon"]

    assert deleted["status"] == "DELETING"
    assert eks.list_pod_identity_associations(clusterName="eks1")["associations"] == []
    with pytest.raises(ClientError) as again:
        eks.delete_addon(clusterName="eks1", addonName=OPERATOR)
    assert code(again) == "ResourceInUseException"
    aws.clock.advance(15)
    assert eks.list_addons(clusterName="eks1")["addons"] == []
    with pytest.raises(ClientError) as gone:
        eks.delete_addon(clusterName="eks1", addonName=OPERATOR)
    assert code(gone) == "ResourceNotFoundException"


def test_describe_addon_versions(aws):
    eks = aws.client("eks")
    everything = eks.describe_addon_versions()["addons"]
    assert {a["addonName"] for a in everything} == {
        OPERATOR,
        "eks-pod-identity-agent",
        "cert-manager",
        "amazon-sagemaker-hyperpod-taskgovernance",
    }
    [operator] = eks.describe_addon_versions(addonName=OPERATOR, kubernetesVersion="1.31")["addons"]
    versions = {v["addonVersion"]: v for v in operator["addonVersions"]}
    assert list(versions) == [
        "v1.2.1-eksbuild.1",
        "v1.2.0-eksbuild.1",
        "v1.1.2-eksbuild.1",
        "v1.1.1-eksbuild.1",
        "v1.1.0-eksbuild.1",
        "v1.0.1-eksbuild.1",
        "v1.0.0-eksbuild.1",
    ]
    assert versions["v1.2.1-eksbuild.1"]["requiresIamPermissions"] is False
    assert versions["v1.2.0-eksbuild.1"]["requiresIamPermissions"] is True
    assert versions["v1.2.1-eksbuild.1"]["compatibilities"] == [
        {"clusterVersion": "1.31", "platformVersions": ["*"], "defaultVersion": True}
    ]
    assert versions["v1.1.2-eksbuild.1"]["compatibilities"][0]["defaultVersion"] is False
    assert eks.describe_addon_versions(addonName=OPERATOR, kubernetesVersion="1.34")["addons"] == []
    assert eks.describe_addon_versions(addonName="nothing")["addons"] == []

    first = eks.describe_addon_versions(maxResults=3)
    rest = eks.describe_addon_versions(maxResults=3, nextToken=first["nextToken"])
    assert len(first["addons"]) == 3 and len(rest["addons"]) == 1 and "nextToken" not in rest
    with pytest.raises(ClientError) as bad_token:
        eks.describe_addon_versions(nextToken="garbage")
    assert code(bad_token) == "InvalidParameterException"


def test_describe_addon_configuration(aws):
    eks = aws.client("eks")
    answer = eks.describe_addon_configuration(addonName=OPERATOR, addonVersion="v1.2.0-eksbuild.1")
    schema = json.loads(answer["configurationSchema"])
    manager = schema["properties"]["hpTrainingControllerManager"]["properties"]
    assert set(manager) == {"manager", "nodeSelector"}
    assert set(manager["manager"]["properties"]["resources"]["properties"]) == {"requests", "limits"}
    assert answer["podIdentityConfiguration"] == [
        {
            "serviceAccount": SA,
            "recommendedManagedPolicies": [
                "arn:aws:iam::aws:policy/AmazonSageMakerHyperPodTrainingOperatorAccess"
            ],
        }
    ]
    flipped = eks.describe_addon_configuration(addonName=OPERATOR, addonVersion="v1.2.1-eksbuild.1")
    assert flipped["podIdentityConfiguration"] == []

    with pytest.raises(ClientError) as no_addon:
        eks.describe_addon_configuration(addonName="nothing", addonVersion="v1")
    assert code(no_addon) == "ResourceNotFoundException"
    with pytest.raises(ClientError) as no_version:
        eks.describe_addon_configuration(addonName=OPERATOR, addonVersion="v0.0.1")
    assert code(no_version) == "InvalidParameterException"
