"""AWS managed IAM policies the project attaches, loaded into moto's IAM on demand.

moto loads all ~1,300 AWS managed policies only with ``load_aws_managed_policies`` (about a
second on the first IAM call). The install workflow needs a handful, so ``ensure()`` loads those
from moto's own copy of the documents (same ARNs, versions and policy JSON), cheaply, whatever
the sandbox's setting.
"""

from __future__ import annotations

import json
from functools import cache
from typing import Any

from moto.core import DEFAULT_ACCOUNT_ID

#: What the control plane and the world use.
PROJECT_POLICIES = (
    "AmazonSageMakerHyperPodTrainingOperatorAccess",
    "AmazonSageMakerClusterInstanceRolePolicy",
    "AmazonEKSClusterPolicy",
)


@cache
def _documents() -> dict[str, Any]:
    from moto.iam.aws_managed_policies import aws_managed_policies_data

    return json.loads(aws_managed_policies_data)


def ensure(names: tuple[str, ...] = PROJECT_POLICIES, account_id: str = DEFAULT_ACCOUNT_ID) -> list[str]:
    """Make the named AWS managed policies exist in the account's IAM; returns their ARNs."""
    from moto.iam.models import AWSManagedPolicy, iam_backends

    backend = iam_backends[account_id]["global"]
    arns = []
    for name in names:
        data = _documents().get(name)
        if data is None:
            raise KeyError(f"moto has no copy of the AWS managed policy {name}")
        policy = AWSManagedPolicy.from_data(name, account_id, backend.region_name, data)
        backend.managed_policies.setdefault(policy.arn, policy)
        arns.append(policy.arn)
    return arns
