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
from hyperpod_control.services.preflight.access_checks import (
    check_authentication_mode,
    check_endpoint_access,
    check_kubernetes_access,
    check_pass_role,
    check_pod_port,
)
from hyperpod_control.services.preflight.capacity_checks import (
    check_cluster_usage_quota,
    check_eni_quota,
    check_subnet_addresses,
)
from hyperpod_control.services.preflight.cluster_checks import (
    check_addon_kubernetes_version,
    check_cert_manager,
    check_eks_cluster,
    check_hyperpod_cluster,
    check_kueue,
    check_node_image,
    check_pod_identity_agent,
    check_sagemaker_tag,
    check_task_governance,
)
from hyperpod_control.services.preflight.gathering import gather
from hyperpod_control.services.preflight.network_checks import (
    check_efa_security_groups,
    check_fsx_zone,
    check_ipv6,
    check_override_vpc_config,
    check_s3_endpoint,
    check_single_region,
    check_vpc_endpoints,
)
from hyperpod_control.services.preflight.ports import PreflightAdapters
from hyperpod_control.services.preflight.results import _eks_name

CHECKS: tuple[Callable[[ClusterFacts, PreflightOptions], CheckResult], ...] = (
    check_hyperpod_cluster,
    check_eks_cluster,
    check_addon_kubernetes_version,
    check_node_image,
    check_cert_manager,
    check_pod_identity_agent,
    check_pass_role,
    check_endpoint_access,
    check_authentication_mode,
    check_kubernetes_access,
    check_pod_port,
    check_vpc_endpoints,
    check_s3_endpoint,
    check_sagemaker_tag,
    check_cluster_usage_quota,
    check_eni_quota,
    check_subnet_addresses,
    check_override_vpc_config,
    check_efa_security_groups,
    check_single_region,
    check_fsx_zone,
    check_ipv6,
    check_kueue,
    check_task_governance,
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
