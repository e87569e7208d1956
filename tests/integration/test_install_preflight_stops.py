"""A failing prerequisite stops the whole install_operator workflow in Preflight, and nothing is
created: no add-on, no operator role, no Pod Identity association, no access entry beyond the EKS
cluster creator's, no Kubernetes RBAC, namespace or CRD, no OPERATOR item and so no lock.

Each case is its own sandbox with the broken world as its main world, so the sandbox Kubernetes API
server serves it and every other check passes: the workflow stops for this one reason alone. The
sandboxes come one after another (one Sandbox per process) through a parametrized module-scoped
fixture.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from hpctl.install import summary
from hyperpod_control.models.install import (
    ACCESS_TIERS,
    ADDON_NAME,
    CONTROL_PLANE_GROUP,
    JOB_CRD,
    OPERATOR_NAMESPACE,
    tier_group,
)
from hyperpod_control.settings import operator_role_prefix
from sandbox import Sandbox, SandboxConfig
from sandbox.kube.cluster import ClusterSeed
from sandbox.world import WorldOptions

pytestmark = pytest.mark.integration

QUIET = {"LogLevel": "ERROR"}


@dataclass(frozen=True)
class Case:
    check_id: str
    words: tuple[str, ...]
    world: dict[str, Any] = field(default_factory=dict)
    seed: ClusterSeed | None = None
    #: More of the workflow's input than the cluster's name.
    request: dict[str, Any] = field(default_factory=dict)
    #: Where it stops: Kubernetes-side checks run once the control plane has its access entries
    #: (PreflightKubernetes, after EnsureAccess, which is then taken back); the others in Preflight.
    step: str = "Preflight"


CASES = {
    # Kubernetes side: the EKS add-on record may say ACTIVE, but cert-manager is not in the cluster.
    "no-cert-manager": Case(
        "k8s.cert-manager",
        ("certificates.cert-manager.io missing", "no webhook Deployment"),
        seed=ClusterSeed(cert_manager=False),
        step="PreflightKubernetes",
    ),
    # Private subnets without the interface endpoints the operator needs.
    "no-interface-endpoints": Case(
        "network.vpc-endpoints", ("sagemaker.api", "eks-auth"), world={"interface_endpoints": ()}
    ),
    # An existing cluster with no ENI left for a replacement node: an error, not a warning.
    "low-eni-quota": Case(
        "quotas.network-interfaces",
        ("is 3 with", "cannot replace a faulty node"),
        world={"quotas": {("vpc", "L-DF5E4CA3"): 3}},
    ),
    # A /28 subnet: 11 usable addresses, fewer than one ml.g5.8xlarge node takes.
    "small-subnet": Case(
        "network.subnet-addresses",
        ("no room for a replacement node", "11 usable"),
        world={"subnet_prefix": 28},
    ),
    # The README's own roleArn on a stack deployed without OperatorRoleArns: its iam:PassRole
    # allows only the workflow's roles, so the association step would be denied.
    "unpassable-role": Case(
        "iam.pass-role",
        ("arn:aws:iam::123456789012:role/my-operator-role", "hyperpod-control-plane/*", "OperatorRoleArns"),
        request={"roleArn": "arn:aws:iam::123456789012:role/my-operator-role"},
    ),
}


@pytest.fixture(scope="module", params=list(CASES), ids=list(CASES))
def broken(request) -> Iterator[tuple[Sandbox, Case]]:
    case = CASES[request.param]
    config = SandboxConfig(
        world=WorldOptions(nodes=1, **case.world),
        kube=True,
        pods=False,
        kube_seed=case.seed,
        parameters=QUIET,
    )
    with Sandbox(config) as sb:
        yield sb, case


def _operator_item(sb: Sandbox) -> Any:
    from hyperpod_control.adapters.store import Store

    return Store(sb.output("TableName"), client=sb.client("dynamodb")).get_operator(
        sb.world.hyperpod_cluster_arn
    )


RBAC_NAMES = [CONTROL_PLANE_GROUP, *(tier_group(t) for t in ACCESS_TIERS)]


def _snapshot(sb: Sandbox) -> dict[str, Any]:
    """Everything an install would create, AWS side and Kubernetes side."""
    eks, iam, cluster = sb.client("eks"), sb.client("iam"), sb.world.eks_cluster_name
    store = sb.kube.store
    return {
        "addons": sorted(eks.list_addons(clusterName=cluster)["addons"]),
        "roles": sorted(
            r["RoleName"] for r in iam.get_paginator("list_roles").paginate().build_full_result()["Roles"]
        ),
        "associations": eks.list_pod_identity_associations(clusterName=cluster)["associations"],
        "access_entries": sorted(eks.list_access_entries(clusterName=cluster)["accessEntries"]),
        "operator_item": _operator_item(sb),
        "cluster_role": [
            store.find(store.rt("rbac.authorization.k8s.io", "clusterroles"), None, name)
            for name in RBAC_NAMES
        ],
        "binding": [
            store.find(store.rt("rbac.authorization.k8s.io", "clusterrolebindings"), None, name)
            for name in RBAC_NAMES
        ],
        "namespace": store.find(store.rt("", "namespaces"), None, OPERATOR_NAMESPACE),
        "crd": store.find(store.rt("apiextensions.k8s.io", "customresourcedefinitions"), None, JOB_CRD),
    }


def test_a_failing_prerequisite_stops_the_install_in_preflight_and_nothing_is_created(broken):
    sb, case = broken
    before = _snapshot(sb)
    creator = sb.client("sts").get_caller_identity()["Arn"].replace(":sts::", ":iam::")
    assert before["access_entries"] == [creator]  # the sandbox's EKS cluster creator, nothing else
    assert before["operator_item"] is None

    outcome = sb.run_execution(
        "InstallOperatorStateMachine", {"clusterName": sb.world.hyperpod_cluster_name, **case.request}
    )

    assert outcome.status == "FAILED"
    assert outcome.error == "PreflightFailedError", (outcome.error, outcome.cause)
    states = outcome.states_entered()
    assert outcome.assigned("failedStep") == case.step and f"{case.step}Passed" not in states
    if case.step == "Preflight":
        assert "AcquireLock" not in states and "EnsureAccess" not in states
    else:  # the Kubernetes side: read with the control plane's own entries, taken back after
        assert "EnsureAccess" in states and "RemoveAccessAfterPreflight" in states
        assert "ChooseOperator" not in states
    assert summary(outcome, "install").startswith(f"install FAILED at {case.step}: PreflightFailedError: ")
    # The cause lists every failed error check, "- [id] resource: message Fix: remedy": this one alone.
    assert set(re.findall(r"^- \[([a-z0-9.-]+)\]", outcome.cause, re.M)) == {case.check_id}, outcome.cause
    line = next(line for line in outcome.cause.splitlines() if line.startswith(f"- [{case.check_id}]"))
    for word in case.words:
        assert word in line, (word, line)
    assert " Fix: " in line

    after = _snapshot(sb)
    if case.step != "Preflight":  # the lock was taken: the OPERATOR item stays, unlocked
        item = after.pop("operator_item")
        assert item is not None and item.lock_owner is None, item
        before.pop("operator_item")
    assert after == before
    assert ADDON_NAME not in after["addons"]
    assert not [r for r in after["roles"] if r.startswith(operator_role_prefix())]
    assert after["associations"] == []
    assert after["access_entries"] == [creator]
    assert after.get("operator_item") is None  # no OPERATOR item, so no lock either
    assert after["cluster_role"] == after["binding"] == [None] * len(RBAC_NAMES)
    assert (after["namespace"], after["crd"]) == (None, None)
