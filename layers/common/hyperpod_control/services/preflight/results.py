"""What every check is built from: its result builder and the names several checks share.

``_Check`` gives a check its ``ok``, ``fail`` (with the remedy) and ``skip`` (with the reason);
``_result`` applies the one severity rule that is not the check's own: the cluster-creation checks
(``SECOND_SEED``) are errors for a planned cluster and warnings for an existing one, except those
in ``REPLACEMENT_HEADROOM``, which decide whether a replacement node can start.
"""

from __future__ import annotations

from dataclasses import dataclass

from hyperpod_control.models.preflight import CheckResult, CheckStatus, ClusterFacts, Severity
from hyperpod_control.services.preflight.tables import REPLACEMENT_HEADROOM, SECOND_SEED


def _result(
    facts: ClusterFacts,
    check_id: str,
    severity: Severity,
    status: CheckStatus,
    resource: str,
    message: str,
    remedy: str = "",
) -> CheckResult:
    if check_id in SECOND_SEED and check_id not in REPLACEMENT_HEADROOM:
        severity = Severity.ERROR if facts.planned else Severity.WARNING
    return CheckResult(
        id=check_id, severity=severity, status=status, resource=resource, message=message, remedy=remedy
    )


@dataclass(frozen=True)
class _Check:
    """One check's result builder: ``ok``, ``fail`` (with the remedy) or ``skip`` (with the reason)."""

    facts: ClusterFacts
    id: str
    severity: Severity

    def ok(self, resource: str, message: str) -> CheckResult:
        return _result(self.facts, self.id, self.severity, CheckStatus.PASSED, resource, message)

    def fail(self, resource: str, message: str, remedy: str) -> CheckResult:
        return _result(self.facts, self.id, self.severity, CheckStatus.FAILED, resource, message, remedy)

    def skip(self, resource: str, reason: str) -> CheckResult:
        return _result(
            self.facts, self.id, self.severity, CheckStatus.SKIPPED, resource, f"not checked: {reason}"
        )


def _eks_name(facts: ClusterFacts) -> str:
    """The EKS cluster's name for messages, from its description or else its ARN."""
    if facts.eks:
        return facts.eks.name
    return (facts.eks_cluster_arn or "").rsplit("/", 1)[-1] or "(no EKS cluster)"


def _node_subnets(facts: ClusterFacts) -> list[str]:
    """The subnets the nodes are placed in: the instance groups' own, else the cluster's."""
    return list(dict.fromkeys(s for g in facts.instance_groups for s in g.subnets)) or facts.cluster_subnets


def _node_groups(facts: ClusterFacts) -> list[str]:
    """The nodes' security groups: the instance groups' own, else the cluster's."""
    ids = [s for g in facts.instance_groups for s in g.security_group_ids] or facts.cluster_security_group_ids
    return list(dict.fromkeys(ids))
