"""Every function acts as itself: its own role's credentials sign its AWS calls and its
EKS tokens; IAM allows only what its role grants; the API server only what its tier's RBAC does.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from hyperpod_control.adapters.kube import KubeAdapter
from hyperpod_control.exceptions import AccessDeniedError
from sandbox import Sandbox, SandboxConfig
from sandbox.identity import acting_as, expecting_denial
from sandbox.world import WorldOptions

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def sb() -> Iterator[Sandbox]:
    config = SandboxConfig(world=WorldOptions(nodes=2), kube=True, pods=False)
    with Sandbox(config) as sandbox:
        sandbox.grant_control_plane_access()
        yield sandbox


def spec(sb: Sandbox, logical: str):
    return sb.runtime.lookup(f"{sb.config.stack_name}-{logical}")


def test_each_function_signs_with_its_own_role(sb):
    roles = {s.role_arn for s in sb.runtime.functions.values()}
    assert len(roles) == len(sb.runtime.functions)  # one role per function, as SAM makes them
    check = spec(sb, "CheckClusterFunction")
    with acting_as(check.identity):
        caller = sb.client("sts").get_caller_identity()["Arn"]
    assert caller == check.identity.session_arn
    assert caller.startswith(
        "arn:aws:sts::123456789012:assumed-role/hyperpod-control-plane-CheckClusterFunctionRole-"
    )
    assert sb.client("sts").get_caller_identity()["Arn"] != caller  # the sandbox itself is not the function


def test_a_function_whose_role_lacks_a_statement_gets_access_denied(sb):
    check = spec(sb, "CheckClusterFunction")
    iam = sb.client("iam")
    role = check.role_arn.rsplit("/", 1)[-1]
    (name,) = iam.list_role_policies(RoleName=role)["PolicyNames"]
    document = iam.get_role_policy(RoleName=role, PolicyName=name)["PolicyDocument"]
    event = {"clusterName": sb.world.hyperpod_cluster_name, "mode": "addon"}
    assert sb.invoke_lambda(check.name, event)[1] is None
    # The template's one statement (sagemaker:DescribeCluster), removed from the deployed role.
    assert document["Statement"][0]["Action"] == "sagemaker:DescribeCluster"
    iam.delete_role_policy(RoleName=role, PolicyName=name)
    try:
        with expecting_denial():
            payload, error = sb.invoke_lambda(check.name, event)
    finally:
        iam.put_role_policy(RoleName=role, PolicyName=name, PolicyDocument=json.dumps(document))
    assert error == "AccessDeniedError"
    assert "not authorized to perform: sagemaker:DescribeCluster" in payload["errorMessage"]
    assert check.identity.session_arn in payload["errorMessage"]
    assert sb.invoke_lambda(check.name, event)[1] is None  # the statement back: allowed again


def test_a_resource_outside_the_statement_is_denied_too(sb):
    record = spec(sb, "RecordOperatorFunction")
    with acting_as(record.identity), expecting_denial():
        ddb = sb.client("dynamodb")
        with pytest.raises(ddb.exceptions.ClientError) as exc:
            ddb.get_item(TableName="some-other-table", Key={"pk": {"S": "x"}})
    assert exc.value.response["Error"]["Code"] == "AccessDeniedException"
    assert ":table/some-other-table" in exc.value.response["Error"]["Message"]


def test_the_api_server_refuses_a_verb_outside_the_functions_tier(sb):
    node_health = spec(sb, "NodeHealthFunction")
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "not-mine", "namespace": "default"},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]},
    }
    with acting_as(node_health.identity), KubeAdapter(sb.world.eks_cluster_name) as kube:
        assert kube.nodes()  # its tier reads nodes...
        with expecting_denial(), pytest.raises(AccessDeniedError) as exc:
            kube.create_pod("default", pod)  # ...and creates no pod
    assert "403" in str(exc.value) and 'cannot create resource \\"pods\\"' in str(exc.value)


def test_a_function_without_an_access_entry_is_unauthorized(sb):
    # A role of the stack that calls no Kubernetes API has no access entry: EKS answers 401.
    record = spec(sb, "RecordOperatorFunction")
    cluster = sb.client("eks").describe_cluster(name=sb.world.eks_cluster_name)["cluster"]
    with (
        acting_as(record.identity),
        KubeAdapter(sb.world.eks_cluster_name, cluster=cluster) as kube,
        pytest.raises(Exception) as exc,
    ):
        kube.nodes()
    assert "401" in str(exc.value)


def test_an_install_passes_preflight_where_only_the_stacks_own_entries_exist(sb):
    eks, name = sb.client("eks"), sb.world.eks_cluster_name
    creator = sb.client("sts").get_caller_identity()["Arn"].replace(":sts::", ":iam::")
    eks.delete_access_entry(clusterName=name, principalArn=creator)  # the cluster creator's admin entry
    outcome = sb.run_execution(
        "InstallOperatorStateMachine",
        {"clusterName": sb.world.hyperpod_cluster_name, "operator": "serverless"},
    )
    assert outcome.ok, (outcome.error, outcome.cause)
    assert "PreflightKubernetes" in outcome.states_entered()
    entries = eks.list_access_entries(clusterName=name)["accessEntries"]
    stack_roles = {s.role_arn for s in sb.runtime.functions.values()}
    assert entries and set(entries) <= stack_roles  # nobody else's entry, and the install needed none
    # Both Preflights read the Kubernetes API with their own entry: the check passed, not skipped.
    statuses = []
    for event in outcome.history:
        output = (event.get("taskSucceededEventDetails") or {}).get("output")
        payload = json.loads(output).get("Payload") if output else None
        if isinstance(payload, dict) and "results" in payload:
            statuses += [r["status"] for r in payload["results"] if r["id"] == "access.kubernetes"]
    assert statuses == ["passed", "passed"]
