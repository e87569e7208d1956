"""install_operator with the user's own operator role (the README's example roleArn), on a stack
deployed with OperatorRoleArns naming it: Preflight admits it, the sandbox's IAM lets the
association step pass it to EKS Pod Identity, and the workflow creates no role of its own."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from install_support import POLICY_ARN, list_associations, operator_item, run_install

from hyperpod_control.settings import operator_role_prefix
from sandbox import Sandbox, SandboxConfig
from sandbox.world import WorldOptions

pytestmark = pytest.mark.integration

ROLE_NAME = "my-operator-role"
#: The README's example roleArn.
ROLE_ARN = f"arn:aws:iam::123456789012:role/{ROLE_NAME}"


@pytest.fixture(scope="module")
def sb() -> Iterator[Sandbox]:
    config = SandboxConfig(
        world=WorldOptions(nodes=2),
        kube=True,
        pods=False,
        parameters={"LogLevel": "ERROR", "OperatorRoleArns": ROLE_ARN},
    )
    with Sandbox(config) as sandbox:
        iam = sandbox.client("iam")
        trust = {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"Service": "pods.eks.amazonaws.com"},
                    "Action": ["sts:AssumeRole", "sts:TagSession"],
                }
            ],
        }
        iam.create_role(RoleName=ROLE_NAME, AssumeRolePolicyDocument=json.dumps(trust))
        iam.attach_role_policy(RoleName=ROLE_NAME, PolicyArn=POLICY_ARN)
        yield sandbox


def test_the_readme_role_is_passed_to_pod_identity_and_no_role_is_created(sb):
    outcome = run_install(sb, roleArn=ROLE_ARN)

    assert outcome.ok, (outcome.error, outcome.cause)
    associations = list_associations(sb)
    assert len(associations) == 1
    described = sb.client("eks").describe_pod_identity_association(
        clusterName=sb.world.eks_cluster_name, associationId=associations[0]["associationId"]
    )["association"]
    assert described["roleArn"] == ROLE_ARN
    assert operator_item(sb)["role_arn"] == ROLE_ARN
    roles = sb.client("iam").list_roles()["Roles"]
    assert not [r["RoleName"] for r in roles if r["RoleName"].startswith(operator_role_prefix())]
