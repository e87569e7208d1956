"""Running preflight: the checks in report order (``CHECKS``), when a skipped check is unchecked
instead, the report, and the message PreflightFailedError carries.
"""

from __future__ import annotations

from collections.abc import Callable

from hyperpod_control.models.preflight import (
    CAUSE_REMEDY,
    CheckResult,
    CheckStatus,
    ClusterFacts,
    PreflightInput,
    PreflightOptions,
    PreflightReport,
)
from hyperpod_control.services.preflight import (
    access_checks,
    capacity_checks,
    cluster_checks,
    network_checks,
)
from hyperpod_control.services.preflight.gathering import gather
from hyperpod_control.services.preflight.ports import PreflightAdapters
from hyperpod_control.services.preflight.results import _eks_name

#: Every check, in the order the report lists its results.
CHECKS: tuple[Callable[[ClusterFacts, PreflightOptions], CheckResult], ...] = (
    cluster_checks.check_hyperpod_cluster,
    cluster_checks.check_eks_cluster,
    cluster_checks.check_addon_kubernetes_version,
    cluster_checks.check_node_image,
    cluster_checks.check_cert_manager,
    cluster_checks.check_pod_identity_agent,
    access_checks.check_pass_role,
    access_checks.check_endpoint_access,
    access_checks.check_authentication_mode,
    access_checks.check_kubernetes_access,
    access_checks.check_pod_port,
    network_checks.check_vpc_endpoints,
    network_checks.check_s3_endpoint,
    cluster_checks.check_sagemaker_tag,
    capacity_checks.check_cluster_usage_quota,
    capacity_checks.check_eni_quota,
    capacity_checks.check_subnet_addresses,
    network_checks.check_override_vpc_config,
    network_checks.check_efa_security_groups,
    network_checks.check_single_region,
    network_checks.check_fsx_zone,
    network_checks.check_ipv6,
    cluster_checks.check_kueue,
    cluster_checks.check_task_governance,
)


def run_checks(facts: ClusterFacts, options: PreflightOptions | None = None) -> list[CheckResult]:
    options = options or PreflightOptions()
    return [mark_unchecked(facts, check(facts, options)) for check in CHECKS]


def mark_unchecked(facts: ClusterFacts, result: CheckResult) -> CheckResult:
    """A check that could not run because AWS could not be called is ``unchecked``, not skipped.

    When the HyperPod cluster itself could not be read, every check is: each starts from its
    description (or, planned, from whether the name is taken), so even a pass is not backed.
    Otherwise a skip is unchecked when its reason is a read AWS could not be called for."""
    if "hyperpod" in facts.unchecked:
        gap = "hyperpod"
    elif result.status is CheckStatus.SKIPPED:
        gap = next((g for g in facts.unchecked if facts.gaps[g] in result.message), "")
        if not gap:
            return result
    else:
        return result
    cause = facts.unchecked[gap]
    return result.model_copy(
        update={
            "status": CheckStatus.UNCHECKED,
            "message": f"could not run: {facts.gaps[gap]}",
            "remedy": CAUSE_REMEDY[cause],
            "cause": cause,
        }
    )


def report_for(facts: ClusterFacts, results: list[CheckResult]) -> PreflightReport:
    return PreflightReport(
        cluster_name=facts.cluster_name,
        operator=facts.operator,
        planned=facts.planned,
        cluster_arn=facts.cluster_arn,
        eks_cluster_name=facts.eks.name
        if facts.eks
        else (_eks_name(facts) if facts.eks_cluster_arn else None),
        kubernetes_version=facts.eks.version if facts.eks else None,
        results=results,
    )


def run_preflight(
    request: PreflightInput, adapters: PreflightAdapters, options: PreflightOptions | None = None
) -> PreflightReport:
    facts = gather(request, adapters)
    return report_for(facts, run_checks(facts, options))


def failure_message(report: PreflightReport) -> str:
    """What PreflightFailedError says: every failed error check with its resource and remedy."""
    lines = [
        f"preflight failed for HyperPod cluster '{report.cluster_name}' ({len(report.failures)} errors"
        + (f", {len(report.unchecked)} checks could not run" if report.unchecked else "")
        + "):"
    ]
    for r in [*report.failures, *report.unchecked]:
        lines.append(f"- [{r.id}] {r.resource}: {r.message} Fix: {r.remedy}")
    return "\n".join(lines)
