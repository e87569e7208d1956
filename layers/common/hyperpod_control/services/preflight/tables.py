"""What preflight knows from AWS's documentation: the names it looks for, the figures it counts
with, and which checks are about creating a cluster.

Sources (docs/hyperpod-contract.md, "Cluster prerequisites"): AWS's page "Installing the training
operator" for the add-ons, Kueue's framework and the interface endpoints; the EC2 instance-type
network specifications for the address and interface counts; "Prerequisites for using SageMaker
HyperPod" for EFA and the cluster-creation checks (``SECOND_SEED``, ``REPLACEMENT_HEADROOM``).
"""

from __future__ import annotations

POD_IDENTITY_AGENT = "eks-pod-identity-agent"
CERT_MANAGER = "cert-manager"
TASK_GOVERNANCE = "amazon-sagemaker-hyperpod-taskgovernance"
#: AWS's page "Installing the training operator": "When installing the task governance add-on,
#: use v1.3.0-eksbuild.1 or later".
TASK_GOVERNANCE_MIN = "v1.3.0-eksbuild.1"
#: What Kueue's controller_manager_config.yaml must list under integrations.externalFrameworks.
HYPERPOD_JOB_GVK = "HyperPodPytorchJob.v1.sagemaker.amazonaws.com"
KUEUE_NAMESPACE = "kueue-system"
KUEUE_CONFIG_KEY = "controller_manager_config.yaml"
CERT_MANAGER_CRDS = (
    "certificates.cert-manager.io",
    "issuers.cert-manager.io",
    "clusterissuers.cert-manager.io",
)
CERT_MANAGER_COMPONENTS = ("controller", "cainjector", "webhook")
#: Interface endpoints the operator needs on private subnets (AWS's page "Installing the training
#: operator").
OPERATOR_ENDPOINTS = ("sagemaker.api", "eks-auth")
ENI_QUOTA_CODE = "L-DF5E4CA3"

#: (IPv4 addresses per ENI, network cards) from the EC2 instance-type network specifications.
#: HyperPod documents only P5 (81 addresses per instance on EKS = the primary ENI's 50 plus one
#: for each of the other 31 cards; 32 on Slurm = one per card); for other types we apply that same
#: rule to their EC2 figures, an estimate the check's message says it is.
NETWORK_SPECS: dict[str, tuple[int, int]] = {
    "ml.p5.48xlarge": (50, 32),
    "ml.p5e.48xlarge": (50, 32),
    "ml.p5en.48xlarge": (50, 32),  # the doc's "P5" figure; its own card count is not in our sources
    "ml.p4d.24xlarge": (50, 4),
    "ml.p4de.24xlarge": (50, 4),
    "ml.trn1.32xlarge": (50, 8),
    "ml.trn1n.32xlarge": (50, 16),
    "ml.g5.xlarge": (15, 1),
    "ml.g5.2xlarge": (15, 1),
    "ml.g5.4xlarge": (30, 1),
    "ml.g5.8xlarge": (30, 1),
    "ml.g5.12xlarge": (50, 1),
    "ml.g5.16xlarge": (30, 1),
    "ml.g5.24xlarge": (50, 1),
    "ml.g5.48xlarge": (50, 1),
    "ml.c5.xlarge": (15, 1),
    "ml.c5.2xlarge": (15, 1),
    "ml.c5.4xlarge": (30, 1),
    "ml.m5.xlarge": (15, 1),
    "ml.m5.2xlarge": (15, 1),
    "ml.m5.4xlarge": (30, 1),
    "ml.t3.medium": (6, 1),
    "ml.t3.large": (12, 1),
}
#: Unknown types: the most addresses an ENI holds (an upper bound, so the check errs on the safe side).
DEFAULT_NETWORK_SPEC = (50, 1)
DOCUMENTED_EKS_ADDRESSES = {"ml.p5.48xlarge": 81, "ml.p5e.48xlarge": 81, "ml.p5en.48xlarge": 81}
#: Instance types with EFA, to which the EFA security-group guidance applies.
EFA_TYPES = frozenset(
    {
        "ml.p4d.24xlarge",
        "ml.p4de.24xlarge",
        "ml.p5.48xlarge",
        "ml.p5e.48xlarge",
        "ml.p5en.48xlarge",
        "ml.trn1.32xlarge",
        "ml.trn1n.32xlarge",
        "ml.trn2.48xlarge",
        "ml.g5.8xlarge",
        "ml.g5.12xlarge",
        "ml.g5.16xlarge",
        "ml.g5.24xlarge",
        "ml.g5.48xlarge",
        "ml.g6.8xlarge",
        "ml.g6.12xlarge",
        "ml.g6.16xlarge",
        "ml.g6.24xlarge",
        "ml.g6.48xlarge",
    }
)
#: The cluster-creation checks (AWS's page "Prerequisites for using SageMaker HyperPod"): errors
#: for a planned cluster; warnings for an existing one, except
#: those in ``REPLACEMENT_HEADROOM``.
SECOND_SEED = frozenset(
    {
        "quotas.cluster-usage",
        "quotas.network-interfaces",
        "network.subnet-addresses",
        "network.s3-endpoint",
        "vpc.override-config",
        "network.efa-security-groups",
        "region.single",
        "fsx.availability-zone",
    }
)
#: Cluster-creation checks that are errors for an existing cluster too. The control plane heals a faulty
#: node by replacing it (its fault remediation), and a replacement instance needs a network interface
#: under the Region's ENI quota and free addresses in its subnet before the old instance's are
#: released. Without that room every replacement fails, so installing onto such a cluster would
#: leave it unhealable: Preflight stops the install instead of warning.
REPLACEMENT_HEADROOM = frozenset({"quotas.network-interfaces", "network.subnet-addresses"})


def addresses_per_instance(instance_type: str, orchestrator: str | None = "eks") -> tuple[int, bool]:
    """(addresses one instance takes from its subnet, whether the docs state the figure)."""
    per_eni, cards = NETWORK_SPECS.get(instance_type, DEFAULT_NETWORK_SPEC)
    if orchestrator == "slurm":
        return cards, instance_type in DOCUMENTED_EKS_ADDRESSES
    if instance_type in DOCUMENTED_EKS_ADDRESSES:
        return DOCUMENTED_EKS_ADDRESSES[instance_type], True
    return per_eni + cards - 1, False


def interfaces_per_instance(instance_type: str) -> int:
    return NETWORK_SPECS.get(instance_type, DEFAULT_NETWORK_SPEC)[1]
