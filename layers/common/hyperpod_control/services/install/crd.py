"""The HyperPodPyTorchJob CRD the serverless operator installs and removes, and the check that an
operator (the add-on's or ours) serves it: its controller available, its CRD Established.
"""

from __future__ import annotations

from typing import Any

from hyperpod_control.adapters.kube import KubeAdapter
from hyperpod_control.exceptions import (
    OperatorNotReadyError,
)
from hyperpod_control.models.install import (
    JOB_CRD,
    JOB_GROUP,
    JOB_KIND,
    JOB_PLURAL,
    JOB_VERSION,
    MANAGED_BY,
    MANAGED_LABEL,
    OPERATOR_NAMESPACE,
    OPERATOR_SELECTOR,
    CrdOutcome,
    VerifyOutcome,
)
from hyperpod_control.models.job_schema import job_schema
from hyperpod_control.services.install.rbac import managed_labels


def _condition(obj: dict[str, Any], kind: str) -> bool:
    return any(
        c.get("type") == kind and c.get("status") == "True"
        for c in (obj.get("status") or {}).get("conditions") or []
    )


def assess_operator(deployments: list[dict[str, Any]], crd: dict[str, Any] | None) -> VerifyOutcome:
    """Pure: the operator works when its controller Deployment is available and its CRD Established."""
    if not deployments:
        raise OperatorNotReadyError(
            f"no controller Deployment ({OPERATOR_SELECTOR}) in namespace {OPERATOR_NAMESPACE} yet."
        )
    deployment = deployments[0]
    name = deployment["metadata"]["name"]
    available = int((deployment.get("status") or {}).get("availableReplicas") or 0)
    if available < 1 or not _condition(deployment, "Available"):
        raise OperatorNotReadyError(f"Deployment {OPERATOR_NAMESPACE}/{name} has no available replica yet.")
    if crd is None:
        raise OperatorNotReadyError(f"CRD {JOB_CRD} is not installed yet.")
    if not _condition(crd, "Established"):
        raise OperatorNotReadyError(f"CRD {JOB_CRD} is not Established yet.")
    return VerifyOutcome(
        deployment=name,
        namespace=OPERATOR_NAMESPACE,
        available_replicas=available,
        crd=JOB_CRD,
        established=True,
    )


def verify_operator(kube: KubeAdapter) -> VerifyOutcome:
    return assess_operator(
        kube.deployments(OPERATOR_NAMESPACE, label_selector=OPERATOR_SELECTOR), kube.crd(JOB_CRD)
    )


def job_crd() -> dict[str, Any]:
    """Pure: the HyperPodPyTorchJob CRD the serverless operator serves (same group, version and
    kind as AWS's operator, so job manifests move between the two unchanged)."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": JOB_CRD, "labels": managed_labels()},
        "spec": {
            "group": JOB_GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": JOB_KIND,
                "plural": JOB_PLURAL,
                "singular": JOB_KIND.lower(),
                "listKind": f"{JOB_KIND}List",
                "shortNames": ["hyperpodpytorchjob", "hpj"],
            },
            "versions": [
                {
                    "name": JOB_VERSION,
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": job_schema()},
                    "subresources": {"status": {}},
                }
            ],
        },
    }


def ensure_crd(kube: KubeAdapter) -> CrdOutcome:
    action = kube.apply_crd(job_crd())
    crd = kube.crd(JOB_CRD)
    if crd is None or not _condition(crd, "Established"):
        raise OperatorNotReadyError(f"CRD {JOB_CRD} is not Established yet.")
    return CrdOutcome(name=JOB_CRD, action=action)  # type: ignore[arg-type]


def remove_crd(kube: KubeAdapter) -> CrdOutcome:
    crd = kube.crd(JOB_CRD)
    if crd is None:
        return CrdOutcome(name=JOB_CRD, action="absent")
    if (crd["metadata"].get("labels") or {}).get(MANAGED_LABEL) != MANAGED_BY:
        return CrdOutcome(name=JOB_CRD, action="unchanged")  # not ours (the add-on's, or a user's)
    kube.delete_crd(JOB_CRD)
    return CrdOutcome(name=JOB_CRD, action="deleted")
