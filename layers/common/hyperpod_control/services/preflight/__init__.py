"""Preflight: every prerequisite of the training operator checked before anything is installed.

Two halves. ``gather`` (``gathering``) asks the adapters (SageMaker, EKS, EC2, Service Quotas,
FSx, Kubernetes; their calls are the Protocols in ``ports``) for what the checks need and returns a
``ClusterFacts``, built from the responses by the pure functions in ``facts``; a read that fails
for a reason retrying will not cure leaves its fact ``None`` with the reason in ``facts.gaps``.
``run_checks`` (``report``) then runs pure checks over the facts (``cluster_checks``,
``access_checks``, ``network_checks``, ``capacity_checks``): each returns one ``CheckResult``
(passed / failed / skipped with the reason; never a pass it cannot back up). A read that failed
because AWS could not be called (credentials, access denied, network, throttling) is not something
the APIs cannot tell: its checks are ``unchecked``, which stops an install (``mark_unchecked``).

Sources (docs/hyperpod-contract.md, "Cluster prerequisites"): AWS's page "Installing the training
operator" for the add-on prerequisites; "Prerequisites for using SageMaker HyperPod" for quotas,
VPC, subnets, EFA, Region, FSx and IPv6. Those cluster-creation checks are about creating a
cluster: errors for a planned cluster (``clusterConfig``),
warnings for one that exists (it was created already; they still tell what scaling will hit),
except the ENI quota and the subnet's free addresses, which stay errors on an existing cluster:
they decide whether a replacement node can start, and node replacement is how this control plane
remediates faults (see ``REPLACEMENT_HEADROOM`` in ``tables``).

This package re-exports what its callers use (the Preflight function, ``hpctl preflight``, the
tests); each name has its home in one of the modules above.
"""

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
from hyperpod_control.services.preflight.facts import facts_from_config, parse_cluster_config, subnet_facts
from hyperpod_control.services.preflight.gathering import gather, unchecked_cause
from hyperpod_control.services.preflight.network_checks import (
    check_efa_security_groups,
    check_fsx_zone,
    check_ipv6,
    check_override_vpc_config,
    check_s3_endpoint,
    check_single_region,
    check_vpc_endpoints,
)
from hyperpod_control.services.preflight.ports import PreflightAdapters, options_from_env
from hyperpod_control.services.preflight.report import (
    CHECKS,
    failure_message,
    mark_unchecked,
    report_for,
    run_checks,
    run_preflight,
)
from hyperpod_control.services.preflight.tables import (
    CERT_MANAGER_CRDS,
    HYPERPOD_JOB_GVK,
    REPLACEMENT_HEADROOM,
    SECOND_SEED,
    TASK_GOVERNANCE,
    addresses_per_instance,
)

__all__ = [
    "CERT_MANAGER_CRDS",
    "CHECKS",
    "HYPERPOD_JOB_GVK",
    "REPLACEMENT_HEADROOM",
    "SECOND_SEED",
    "TASK_GOVERNANCE",
    "PreflightAdapters",
    "addresses_per_instance",
    "check_addon_kubernetes_version",
    "check_authentication_mode",
    "check_cert_manager",
    "check_cluster_usage_quota",
    "check_efa_security_groups",
    "check_eks_cluster",
    "check_endpoint_access",
    "check_eni_quota",
    "check_fsx_zone",
    "check_hyperpod_cluster",
    "check_ipv6",
    "check_kubernetes_access",
    "check_kueue",
    "check_node_image",
    "check_override_vpc_config",
    "check_pass_role",
    "check_pod_identity_agent",
    "check_pod_port",
    "check_s3_endpoint",
    "check_sagemaker_tag",
    "check_single_region",
    "check_subnet_addresses",
    "check_task_governance",
    "check_vpc_endpoints",
    "facts_from_config",
    "failure_message",
    "gather",
    "mark_unchecked",
    "options_from_env",
    "parse_cluster_config",
    "report_for",
    "run_checks",
    "run_preflight",
    "subnet_facts",
    "unchecked_cause",
]
