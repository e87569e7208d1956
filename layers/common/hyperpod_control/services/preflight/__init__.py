"""Preflight: every prerequisite of the training operator checked before anything is installed.

Two halves. ``gather`` asks the adapters (SageMaker, EKS, EC2, Service Quotas, FSx, Kubernetes)
for what the checks need and returns a ``ClusterFacts``; a read that fails for a reason retrying
will not cure (access denied, not found, an unreachable Kubernetes API) leaves its fact ``None``
with the reason in ``facts.gaps``, while throttling and service errors propagate so the state
machine's Retry handles them (``hpctl``, which has no such Retry after botocore's, records them as
gaps too). ``run_checks`` then runs pure checks over the facts: each returns one ``CheckResult``
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
remediates faults (see ``REPLACEMENT_HEADROOM``).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_pascal

from hyperpod_control.exceptions import (
    AccessDeniedError,
    ControlPlaneError,
    CredentialsExpiredError,
    CredentialsMissingError,
    DependencyUnavailableError,
    InvalidInputError,
    KubernetesAccessPendingError,
    PermanentError,
    ResourceNotFoundError,
    ThrottledError,
)
from hyperpod_control.models.agent import AGENT_PORT
from hyperpod_control.models.install import (
    ADDON_NAME,
    OPERATOR_ROLE_ARNS_PARAMETER,
    PASSABLE_ROLES_ENV,
    passable_by,
    version_key,
)
from hyperpod_control.models.preflight import (
    CAUSE_REMEDY,
    AddonFact,
    AddonVersionFact,
    CheckResult,
    CheckStatus,
    ClusterFacts,
    DeploymentFact,
    EksFact,
    FsxFact,
    InstanceGroupFact,
    KubeFacts,
    NodeFact,
    PreflightInput,
    PreflightOptions,
    PreflightReport,
    QuotaFact,
    RuleFact,
    SecurityGroupFact,
    Severity,
    SubnetFact,
    UncheckedCause,
    VpcEndpointFact,
)
from hyperpod_control.models.records import OperatorMode
from hyperpod_control.models.validation import describe_errors

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

_FSX_DNS = re.compile(r"^(fs-[0-9a-f]+)\.fsx\.([a-z0-9-]+)\.amazonaws\.com", re.IGNORECASE)


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


# --- the planned cluster (a CreateCluster request) ------------------------------------------------


class _Pascal(BaseModel):
    model_config = ConfigDict(alias_generator=to_pascal, populate_by_name=True, extra="ignore")


class PlannedVpcConfig(_Pascal):
    # no length limits here: the override-config check reports them with their fix
    security_group_ids: list[str] = Field(default_factory=list)
    subnets: list[str] = Field(default_factory=list)


class PlannedGroup(_Pascal):
    instance_group_name: str
    instance_type: str
    instance_count: int = Field(ge=0)
    override_vpc_config: PlannedVpcConfig | None = Field(default=None, alias="OverrideVpcConfig")
    instance_storage_configs: list[dict[str, Any]] = Field(default_factory=list)


class PlannedCluster(_Pascal):
    cluster_name: str | None = None
    instance_groups: list[PlannedGroup] = Field(min_length=1)
    vpc_config: PlannedVpcConfig | None = None
    orchestrator: dict[str, Any] | None = None
    tags: list[dict[str, str]] = Field(default_factory=list)


def parse_cluster_config(config: dict[str, Any], cluster_name: str) -> PlannedCluster:
    try:
        planned = PlannedCluster.model_validate(config)
    except ValidationError as exc:
        raise InvalidInputError(
            f"invalid clusterConfig (a SageMaker CreateCluster request): {describe_errors(exc)}",
            remedy="give the CreateCluster request as JSON (aws sagemaker create-cluster "
            "--generate-cli-skeleton shows its shape).",
        ) from None
    if planned.cluster_name and planned.cluster_name != cluster_name:
        raise InvalidInputError(
            f"clusterConfig.ClusterName is '{planned.cluster_name}' but clusterName is '{cluster_name}'.",
            remedy="use the same name in both, or leave ClusterName out of the file.",
        )
    return planned


# --- pure fact builders from API responses ---------------------------------------------------------


def _fsx_names(storage: list[dict[str, Any]] | None) -> list[str]:
    return [
        s["FsxLustreConfig"]["DnsName"]
        for s in storage or []
        if isinstance(s.get("FsxLustreConfig"), dict) and s["FsxLustreConfig"].get("DnsName")
    ]


def _eks_arn(orchestrator: dict[str, Any] | None) -> tuple[str | None, str | None]:
    orchestrator = orchestrator or {}
    if "Eks" in orchestrator:
        return "eks", (orchestrator.get("Eks") or {}).get("ClusterArn")
    if "Slurm" in orchestrator:
        return "slurm", None
    return None, None


def facts_from_description(facts: ClusterFacts, desc: dict[str, Any]) -> None:
    """Fill the HyperPod half of ``facts`` from a DescribeCluster response."""
    facts.exists = True
    facts.cluster_arn = desc.get("ClusterArn")
    facts.status = desc.get("ClusterStatus")
    facts.failure_message = desc.get("FailureMessage") or None
    facts.orchestrator, facts.eks_cluster_arn = _eks_arn(desc.get("Orchestrator"))
    if facts.orchestrator is None and desc.get("Orchestrator") is None:
        facts.orchestrator = "slurm"  # clusters created before orchestrators existed are Slurm
    vpc = desc.get("VpcConfig") or {}
    facts.has_cluster_vpc_config = bool(vpc)
    facts.cluster_subnets = list(vpc.get("Subnets") or [])
    facts.cluster_security_group_ids = list(vpc.get("SecurityGroupIds") or [])
    facts.instance_groups = []
    for group in desc.get("InstanceGroups") or []:
        override = group.get("OverrideVpcConfig")
        facts.instance_groups.append(
            InstanceGroupFact(
                name=group.get("InstanceGroupName", ""),
                instance_type=group.get("InstanceType", ""),
                count=int(group.get("TargetCount", group.get("CurrentCount", 0)) or 0),
                subnets=list((override or vpc).get("Subnets") or []),
                security_group_ids=list((override or vpc).get("SecurityGroupIds") or []),
                override_subnets=list(override.get("Subnets") or []) if override else None,
                override_security_group_ids=list(override.get("SecurityGroupIds") or [])
                if override
                else None,
                image_version_status=group.get("ImageVersionStatus"),
                fsx_dns_names=_fsx_names(group.get("InstanceStorageConfigs")),
            )
        )


def facts_from_config(facts: ClusterFacts, planned: PlannedCluster) -> None:
    """Fill the HyperPod half of ``facts`` from a planned CreateCluster request."""
    facts.orchestrator, facts.eks_cluster_arn = _eks_arn(planned.orchestrator)
    vpc = planned.vpc_config
    facts.has_cluster_vpc_config = vpc is not None
    facts.cluster_subnets = list(vpc.subnets) if vpc else []
    facts.cluster_security_group_ids = list(vpc.security_group_ids) if vpc else []
    facts.tags = {t.get("Key", ""): t.get("Value", "") for t in planned.tags}
    facts.instance_groups = [
        InstanceGroupFact(
            name=g.instance_group_name,
            instance_type=g.instance_type,
            count=g.instance_count,
            subnets=list((g.override_vpc_config or vpc or PlannedVpcConfig()).subnets),
            security_group_ids=list((g.override_vpc_config or vpc or PlannedVpcConfig()).security_group_ids),
            override_subnets=list(g.override_vpc_config.subnets) if g.override_vpc_config else None,
            override_security_group_ids=(
                list(g.override_vpc_config.security_group_ids) if g.override_vpc_config else None
            ),
            fsx_dns_names=_fsx_names(g.instance_storage_configs),
        )
        for g in planned.instance_groups
    ]


def eks_fact(cluster: dict[str, Any]) -> EksFact:
    vpc = cluster.get("resourcesVpcConfig") or {}
    return EksFact(
        name=cluster.get("name", ""),
        arn=cluster.get("arn", ""),
        status=cluster.get("status", ""),
        version=str(cluster.get("version", "")),
        endpoint=cluster.get("endpoint") or "",
        certificate_authority=(cluster.get("certificateAuthority") or {}).get("data") or "",
        endpoint_public_access=bool(vpc.get("endpointPublicAccess", True)),
        endpoint_private_access=bool(vpc.get("endpointPrivateAccess", False)),
        public_access_cidrs=list(vpc.get("publicAccessCidrs") or []),
        authentication_mode=(cluster.get("accessConfig") or {}).get("authenticationMode"),
        cluster_security_group_id=vpc.get("clusterSecurityGroupId"),
        security_group_ids=list(vpc.get("securityGroupIds") or []),
        subnet_ids=list(vpc.get("subnetIds") or []),
        vpc_id=vpc.get("vpcId"),
        ip_family=(cluster.get("kubernetesNetworkConfig") or {}).get("ipFamily") or "ipv4",
    )


def addon_fact(addon: dict[str, Any]) -> AddonFact:
    return AddonFact(
        name=addon.get("addonName", ""),
        version=addon.get("addonVersion", ""),
        status=addon.get("status", ""),
        issues=[
            f"{i.get('code', '')}: {i.get('message', '')}".strip(": ")
            for i in (addon.get("health") or {}).get("issues") or []
        ],
    )


def addon_version_facts(versions: list[dict[str, Any]]) -> list[AddonVersionFact]:
    return [
        AddonVersionFact(
            version=v["addonVersion"],
            cluster_versions=[c.get("clusterVersion", "") for c in v.get("compatibilities") or []],
            default_for=[
                c.get("clusterVersion", "") for c in v.get("compatibilities") or [] if c.get("defaultVersion")
            ],
        )
        for v in versions
        if v.get("addonVersion")
    ]


def _rules(permissions: list[dict[str, Any]]) -> list[RuleFact]:
    return [
        RuleFact(
            protocol=str(p.get("IpProtocol", "-1")),
            from_port=p.get("FromPort"),
            to_port=p.get("ToPort"),
            cidrs=[r["CidrIp"] for r in p.get("IpRanges") or [] if r.get("CidrIp")]
            + [r["CidrIpv6"] for r in p.get("Ipv6Ranges") or [] if r.get("CidrIpv6")],
            group_ids=[g["GroupId"] for g in p.get("UserIdGroupPairs") or [] if g.get("GroupId")],
            prefix_list_ids=[
                pl["PrefixListId"] for pl in p.get("PrefixListIds") or [] if pl.get("PrefixListId")
            ],
        )
        for p in permissions
    ]


def security_group_fact(group: dict[str, Any]) -> SecurityGroupFact:
    return SecurityGroupFact(
        group_id=group["GroupId"],
        vpc_id=group.get("VpcId", ""),
        ingress=_rules(group.get("IpPermissions") or []),
        egress=_rules(group.get("IpPermissionsEgress") or []),
    )


def _default_route(table: dict[str, Any] | None) -> str | None:
    for route in (table or {}).get("Routes") or []:
        if route.get("DestinationCidrBlock") != "0.0.0.0/0" or route.get("State") == "blackhole":
            continue
        gateway = route.get("GatewayId") or ""
        if gateway.startswith("igw-"):
            return "igw"
        if route.get("NatGatewayId"):
            return "nat"
        return (
            route.get("TransitGatewayId")
            or route.get("NetworkInterfaceId")
            or route.get("VpcPeeringConnectionId")
            or gateway
            or "other"
        )
    return None


def subnet_facts(subnets: list[dict[str, Any]], route_tables: list[dict[str, Any]]) -> dict[str, SubnetFact]:
    """Subnets with where their 0.0.0.0/0 route leads (explicit association, else the main table)."""
    explicit: dict[str, dict[str, Any]] = {}
    main: dict[str, dict[str, Any]] = {}
    for table in route_tables:
        for assoc in table.get("Associations") or []:
            if assoc.get("SubnetId"):
                explicit[assoc["SubnetId"]] = table
            if assoc.get("Main"):
                main[table.get("VpcId", "")] = table
    found = {}
    for s in subnets:
        table = explicit.get(s["SubnetId"]) or main.get(s.get("VpcId", ""))
        found[s["SubnetId"]] = SubnetFact(
            subnet_id=s["SubnetId"],
            vpc_id=s.get("VpcId", ""),
            availability_zone=s.get("AvailabilityZone", ""),
            cidr_block=s.get("CidrBlock", ""),
            available_ips=int(s.get("AvailableIpAddressCount", 0)),
            ipv6_cidr_blocks=[
                a["Ipv6CidrBlock"]
                for a in s.get("Ipv6CidrBlockAssociationSet") or []
                if a.get("Ipv6CidrBlock")
                and (a.get("Ipv6CidrBlockState") or {}).get("State", "associated")
                in ("associated", "associating")
            ],
            default_route=_default_route(table),
            route_table_id=(table or {}).get("RouteTableId"),
        )
    return found


def vpc_endpoint_fact(endpoint: dict[str, Any]) -> VpcEndpointFact:
    return VpcEndpointFact(
        endpoint_id=endpoint.get("VpcEndpointId", ""),
        service_name=endpoint.get("ServiceName", ""),
        type=endpoint.get("VpcEndpointType", "Interface"),
        state=endpoint.get("State", ""),
        vpc_id=endpoint.get("VpcId", ""),
        subnet_ids=list(endpoint.get("SubnetIds") or []),
        security_group_ids=[g["GroupId"] for g in endpoint.get("Groups") or [] if g.get("GroupId")],
        route_table_ids=list(endpoint.get("RouteTableIds") or []),
    )


def deployment_fact(deployment: dict[str, Any]) -> DeploymentFact:
    metadata = deployment.get("metadata") or {}
    replicas = (deployment.get("spec") or {}).get("replicas")
    status = deployment.get("status") or {}
    return DeploymentFact(
        namespace=metadata.get("namespace") or "",
        name=metadata["name"],
        replicas=replicas if replicas is not None else 1,
        available=status.get("availableReplicas") or 0,
        available_condition=any(
            c.get("type") == "Available" and c.get("status") == "True" for c in status.get("conditions") or []
        ),
    )


def kueue_config_from(config_maps: list[dict[str, Any]]) -> tuple[dict[str, Any] | None, str]:
    """Kueue's controller-manager configuration, from whichever ConfigMap holds it."""
    for cm in sorted(config_maps, key=lambda c: c["metadata"]["name"] != "kueue-manager-config"):
        text = (cm.get("data") or {}).get(KUEUE_CONFIG_KEY)
        if text:
            import yaml  # comes with the kubernetes client; only Kueue's config needs it

            try:
                parsed = yaml.safe_load(text)
            except yaml.YAMLError:
                parsed = None
            source = f"ConfigMap {cm['metadata'].get('namespace')}/{cm['metadata']['name']}"
            return (parsed if isinstance(parsed, dict) else {"_unparsable": True}), source
    return None, ""


# --- gathering ----------------------------------------------------------------------------------------


@dataclass
class PreflightAdapters:
    """The adapters preflight reads through; tests replace any of them."""

    sagemaker: Any
    eks: Any
    ec2: Any
    quotas: Any
    fsx: Any = None
    #: (EKS DescribeCluster ``cluster``, region) -> a KubeAdapter-like reader (reads return plain dicts)
    kube_factory: Callable[[dict[str, Any], str], Any] | None = None
    region: str = "us-east-1"
    #: The IAM principal this preflight runs as (access entries name it); None: not known.
    principal: Callable[[], str] | None = None
    #: True (the Lambda): a throttled or unanswered read propagates, the state machine's Retry runs
    #: the step again. False (hpctl): botocore's retries were the last, the read is unchecked.
    retried_outside: bool = True

    @classmethod
    def default(cls, region: str | None = None) -> PreflightAdapters:
        import os

        from hyperpod_control.adapters.ec2 import Ec2Adapter, FsxAdapter
        from hyperpod_control.adapters.eks import EksAdapter
        from hyperpod_control.adapters.kube import KubeAdapter
        from hyperpod_control.adapters.quotas import QuotasAdapter
        from hyperpod_control.adapters.sagemaker import SageMakerAdapter

        region = region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
        return cls(
            sagemaker=SageMakerAdapter(),
            eks=EksAdapter(),
            ec2=Ec2Adapter(region=region),
            quotas=QuotasAdapter(region=region),
            fsx=FsxAdapter(region=region),
            kube_factory=lambda cluster, r: KubeAdapter(cluster.get("name") or "", cluster=cluster, region=r),
            region=region,
            principal=_own_principal,
        )


def _own_principal() -> str:
    from hyperpod_control.adapters.aws import get_client
    from hyperpod_control.services.install import canonical_principal

    return canonical_principal(get_client("sts").get_caller_identity()["Arn"])


def unchecked_cause(exc: ControlPlaneError) -> UncheckedCause | None:
    """Why AWS could not be called for a read, or None when AWS answered (not found, invalid...)."""
    if isinstance(exc, CredentialsMissingError):
        return UncheckedCause.NO_CREDENTIALS
    if isinstance(exc, CredentialsExpiredError):
        return UncheckedCause.EXPIRED_CREDENTIALS
    if isinstance(exc, AccessDeniedError):
        return UncheckedCause.ACCESS_DENIED
    if isinstance(exc, ThrottledError):
        return UncheckedCause.THROTTLED
    if isinstance(exc, DependencyUnavailableError):
        return UncheckedCause.UNREACHABLE
    return None


def _attempt(adapters: PreflightAdapters, facts: ClusterFacts, gap: str, fn: Callable[[], Any]) -> Any:
    """Run one read; a permanent failure becomes a gap (the checks over it skip with the reason,
    or are unchecked when AWS could not be called); a retryable one propagates to the state
    machine's Retry, or is an unchecked gap too where no Retry follows (``retried_outside``)."""
    try:
        return fn()
    except (ThrottledError, DependencyUnavailableError) as exc:
        if adapters.retried_outside:
            raise
        _gap(facts, gap, exc)
        return None
    except PermanentError as exc:
        _gap(facts, gap, exc)
        if isinstance(exc, ResourceNotFoundError):
            facts.gaps[f"{gap}.not-found"] = str(exc)
        return None


def _gap(facts: ClusterFacts, gap: str, exc: ControlPlaneError) -> None:
    cause = unchecked_cause(exc)
    # Unchecked: the message without the control plane's remedy, the check's own (CAUSE_REMEDY) says it.
    facts.gaps[gap] = str(exc) if cause is None else exc.message
    if cause is not None:
        facts.unchecked[gap] = cause


def gather(request: PreflightInput, adapters: PreflightAdapters) -> ClusterFacts:
    facts = ClusterFacts(
        cluster_name=request.cluster_name,
        region=adapters.region,
        planned=request.cluster_config is not None,
        operator=request.operator,
        addon_version=request.addon_version,
        role_arn=request.role_arn,
    )
    desc = _attempt(
        adapters, facts, "hyperpod", lambda: adapters.sagemaker.describe_cluster(request.cluster_name)
    )
    if request.cluster_config is not None:
        if desc is None and "hyperpod.not-found" in facts.gaps:  # expected: it is planned
            facts.gaps.pop("hyperpod")
            facts.gaps.pop("hyperpod.not-found")
        facts_from_config(facts, parse_cluster_config(request.cluster_config, request.cluster_name))
        if desc is not None:  # a planned name that is taken: the hyperpod check says so
            facts.exists, facts.cluster_arn, facts.status = (
                True,
                desc.get("ClusterArn"),
                desc.get("ClusterStatus"),
            )
    elif desc is not None:
        facts_from_description(facts, desc)
        facts.tags = _attempt(
            adapters, facts, "tags", lambda: adapters.sagemaker.list_tags(facts.cluster_arn)
        )
        nodes = _attempt(
            adapters, facts, "nodes", lambda: adapters.sagemaker.list_cluster_nodes(request.cluster_name)
        )
        if nodes is not None:
            facts.nodes = [
                NodeFact(
                    instance_id=n.get("InstanceId", ""),
                    instance_group=n.get("InstanceGroupName", ""),
                    image_version_status=n.get("ImageVersionStatus"),
                    current_image=n.get("CurrentImageReleaseVersion"),
                )
                for n in nodes
            ]
    else:
        return facts  # nothing to look at: the hyperpod check reports the gap

    eks_cluster = None
    if facts.eks_cluster_arn:
        name = facts.eks_cluster_arn.rsplit("/", 1)[-1]
        eks_cluster = _attempt(adapters, facts, "eks", lambda: adapters.eks.describe_cluster(name))
        if eks_cluster is not None:
            facts.eks = eks_fact(eks_cluster)
            addons = _attempt(adapters, facts, "addons", lambda: _addons(adapters.eks, name))
            if addons is not None:
                facts.addons = {n: addon_fact(a) for n, a in addons.items()}
            if request.operator is OperatorMode.ADDON:
                versions = _attempt(
                    adapters,
                    facts,
                    "addon-versions",
                    lambda: adapters.eks.addon_versions(ADDON_NAME, None),
                )
                if versions is not None:
                    facts.operator_versions = addon_version_facts(versions)
    _gather_network(facts, adapters)
    _gather_quotas(facts, adapters)
    if eks_cluster is not None and adapters.kube_factory is not None:
        _gather_kube(facts, adapters, eks_cluster, access_expected=request.kubernetes_access)
    _gather_fsx(facts, adapters)
    return facts


def _addons(eks: Any, cluster: str) -> dict[str, dict[str, Any]]:
    """Every add-on of ``cluster`` as DescribeAddon reports it (one deleted meanwhile is left out)."""
    found = {}
    for name in eks.list_addons(cluster):
        addon = eks.describe_addon(cluster, name)
        if addon is not None:
            found[name] = addon
    return found


def _gather_network(facts: ClusterFacts, adapters: PreflightAdapters) -> None:
    subnet_ids = list(
        dict.fromkeys(
            facts.cluster_subnets
            + [s for g in facts.instance_groups for s in g.subnets]
            + (facts.eks.subnet_ids if facts.eks else [])
        )
    )
    group_ids = list(
        dict.fromkeys(
            facts.cluster_security_group_ids
            + [s for g in facts.instance_groups for s in g.security_group_ids]
            + (
                [facts.eks.cluster_security_group_id]
                if facts.eks and facts.eks.cluster_security_group_id
                else []
            )
            + (facts.eks.security_group_ids if facts.eks else [])
        )
    )
    found = _attempt(adapters, facts, "subnets", lambda: adapters.ec2.subnets(subnet_ids))
    if found is not None:
        subnets, facts.missing_subnets = found
        vpcs = list(dict.fromkeys(s.get("VpcId", "") for s in subnets if s.get("VpcId")))
        tables: list[dict[str, Any]] = []
        endpoints: list[dict[str, Any]] | None = []
        for vpc in vpcs:
            tables += (
                _attempt(adapters, facts, "route-tables", lambda v=vpc: adapters.ec2.route_tables(v)) or []
            )
            got = _attempt(adapters, facts, "vpc-endpoints", lambda v=vpc: adapters.ec2.vpc_endpoints(v))
            endpoints = None if got is None or endpoints is None else endpoints + got
        facts.subnets = subnet_facts(subnets, tables)
        facts.vpc_endpoints = [vpc_endpoint_fact(e) for e in endpoints] if endpoints is not None else None
    groups = _attempt(adapters, facts, "security-groups", lambda: adapters.ec2.security_groups(group_ids))
    if groups is not None:
        found_groups, facts.missing_security_groups = groups
        facts.security_groups = {g["GroupId"]: security_group_fact(g) for g in found_groups}


def _gather_quotas(facts: ClusterFacts, adapters: PreflightAdapters) -> None:
    quota = _attempt(adapters, facts, "eni-quota", lambda: adapters.quotas.get("vpc", ENI_QUOTA_CODE))
    if quota is not None:
        in_use = _attempt(adapters, facts, "eni-quota", adapters.ec2.count_network_interfaces)
        facts.eni_quota = QuotaFact(
            name=quota.get("QuotaName", "Network interfaces per Region"),
            code=ENI_QUOTA_CODE,
            value=quota.get("Value"),
            in_use=in_use,
        )
    types = sorted({g.instance_type for g in facts.instance_groups})
    if not types:
        return
    usage = _attempt(adapters, facts, "cluster-usage", lambda: _instances_in_use(adapters.sagemaker, types))
    quotas: dict[str, QuotaFact] = {}
    for instance_type in types:
        name = f"{instance_type} for cluster usage"
        found = _attempt(
            adapters, facts, "cluster-usage", lambda n=name: adapters.quotas.find_by_name("sagemaker", n)
        )
        quotas[instance_type] = QuotaFact(
            name=name,
            code=(found or {}).get("QuotaCode"),
            value=(found or {}).get("Value"),
            in_use=None if usage is None else usage.get(instance_type, 0),
        )
    if "cluster-usage" in facts.gaps and all(q.value is None for q in quotas.values()):
        return
    facts.usage_quotas = quotas


#: Beyond this many clusters, counting their instances costs more calls than a preflight should make.
MAX_CLUSTERS_COUNTED = 50


def _instances_in_use(sagemaker: Any, types: list[str]) -> dict[str, int]:
    names = sagemaker.list_cluster_names()
    if len(names) > MAX_CLUSTERS_COUNTED:
        raise PermanentError(f"the account has {len(names)} HyperPod clusters; preflight counts at most 50.")
    used: dict[str, int] = {}
    for name in names:
        try:
            desc = sagemaker.describe_cluster(name)
        except ResourceNotFoundError:
            continue  # deleted while we counted
        if desc.get("ClusterStatus") in ("Failed", "Deleting"):
            continue
        for g in desc.get("InstanceGroups") or []:
            if g.get("InstanceType") in types:
                used[g["InstanceType"]] = used.get(g["InstanceType"], 0) + int(g.get("TargetCount", 0) or 0)
    return used


def _unauthorized(
    facts: ClusterFacts, adapters: PreflightAdapters, eks_cluster: dict[str, Any], error: str
) -> None:
    """What a 401 means: EKS answers it to a principal without an access entry. Before the
    install's EnsureAccess step has run, the control plane's roles have none: not a failure."""
    facts.gaps["kube"] = error
    facts.gaps["kube.kind"] = "unauthorized"
    if adapters.principal is None:
        return
    principal = _attempt(adapters, facts, "kube.principal", adapters.principal)
    if not principal:
        return
    name = eks_cluster.get("name") or ""
    entry = _attempt(
        adapters, facts, "kube.entry", lambda: adapters.eks.describe_access_entry(name, principal)
    )
    if entry is None and "kube.entry" not in facts.gaps:
        facts.gaps["kube.kind"] = "no-entry"
        facts.gaps["kube.principal"] = principal


def _gather_kube(
    facts: ClusterFacts,
    adapters: PreflightAdapters,
    eks_cluster: dict[str, Any],
    access_expected: bool = False,
) -> None:
    try:
        kube = adapters.kube_factory(eks_cluster, adapters.region)  # type: ignore[misc]
        crds = kube.crd_names()
    except ThrottledError:
        raise
    except KubernetesAccessPendingError as exc:
        if access_expected:  # the entry was just made: EKS applies it within seconds (Retry)
            raise
        _unauthorized(facts, adapters, eks_cluster, str(exc))
        return
    except ControlPlaneError as exc:
        # An unreachable or refusing API is a finding (access.kubernetes), not a reason to retry.
        facts.gaps["kube"] = str(exc)
        facts.gaps["kube.kind"] = "forbidden" if isinstance(exc, AccessDeniedError) else "unreachable"
        return
    kf = KubeFacts(crds=sorted(crds))

    def read(gap: str, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except ThrottledError:
            raise
        except ControlPlaneError as exc:
            facts.gaps[gap] = str(exc)
            return None

    deployments = read("kube.cert-manager", lambda: kube.deployments(namespace="cert-manager"))
    if deployments == []:  # installed elsewhere: find it by its Helm/add-on instance label
        deployments = read(
            "kube.cert-manager",
            lambda: kube.deployments(label_selector="app.kubernetes.io/instance=cert-manager"),
        )
    kf.cert_manager = [
        deployment_fact(d) for d in deployments or [] if "cert-manager" in d["metadata"]["name"]
    ]
    if deployments is None:
        kf.cert_manager = []
    ds = read("kube.pod-identity", lambda: kube.daemon_set("kube-system", POD_IDENTITY_AGENT))
    if ds is not None and ds.get("status") is not None:
        kf.pod_identity_desired = ds["status"].get("desiredNumberScheduled")
        kf.pod_identity_ready = ds["status"].get("numberReady") or 0
    if any(c.endswith(".kueue.x-k8s.io") for c in crds):
        cms = read("kube.kueue", lambda: kube.config_maps(KUEUE_NAMESPACE))
        if cms is not None:
            kf.kueue_config, kf.kueue_config_source = kueue_config_from(cms)
    pvs = read("kube.fsx", kube.persistent_volumes)
    if pvs is not None:
        for pv in pvs:
            csi = (pv.get("spec") or {}).get("csi") or {}
            if csi.get("driver") == "fsx.csi.aws.com" and csi.get("volumeHandle"):
                kf.fsx_volume_handles[pv["metadata"]["name"]] = csi["volumeHandle"].split("::")[0]
    facts.kube = kf


def _gather_fsx(facts: ClusterFacts, adapters: PreflightAdapters) -> None:
    referenced: dict[str, FsxFact] = {}
    for group in facts.instance_groups:
        for dns in group.fsx_dns_names:
            m = _FSX_DNS.match(dns)
            if m:
                referenced.setdefault(
                    m.group(1),
                    FsxFact(
                        file_system_id=m.group(1),
                        region=m.group(2),
                        referenced_by=f"instance group {group.name}",
                    ),
                )
    for pv, fs_id in (facts.kube.fsx_volume_handles if facts.kube else {}).items():
        referenced.setdefault(fs_id, FsxFact(file_system_id=fs_id, referenced_by=f"PersistentVolume {pv}"))
    if not referenced:
        facts.fsx = []
        return
    same_region = [f for f in referenced.values() if f.region in (None, facts.region)]
    if adapters.fsx is None:
        facts.gaps["fsx"] = "no FSx adapter configured"
        facts.fsx = None
        return
    described = _attempt(
        adapters, facts, "fsx", lambda: adapters.fsx.file_systems([f.file_system_id for f in same_region])
    )
    if described is None:
        return
    for fs in described:
        fact = referenced.get(fs.get("FileSystemId", ""))
        if fact is not None:
            fact.subnet_ids = list(fs.get("SubnetIds") or [])
            fact.region = fact.region or facts.region
    subnet_ids = [s for f in referenced.values() for s in f.subnet_ids if s not in (facts.subnets or {})]
    extra = (
        _attempt(adapters, facts, "fsx", lambda: adapters.ec2.subnets(subnet_ids)) if subnet_ids else ([], [])
    )
    zones = {s.subnet_id: s.availability_zone for s in (facts.subnets or {}).values()}
    zones.update({s["SubnetId"]: s.get("AvailabilityZone", "") for s in (extra or ([], []))[0]})
    for fact in referenced.values():
        fact.availability_zones = sorted({zones[s] for s in fact.subnet_ids if zones.get(s)})
    facts.fsx = list(referenced.values())


# --- checks (pure) ---------------------------------------------------------------------------------------


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
    if facts.eks:
        return facts.eks.name
    return (facts.eks_cluster_arn or "").rsplit("/", 1)[-1] or "(no EKS cluster)"


def check_hyperpod_cluster(facts: ClusterFacts, options: PreflightOptions) -> CheckResult:
    cid, sev, name = "hyperpod.cluster", Severity.ERROR, facts.cluster_name
    c = _Check(facts, cid, sev)
    if facts.planned:
        if facts.exists:
            return c.fail(
                name,
                f"a HyperPod cluster named '{name}' already exists ({facts.status}); CreateCluster would be "
                "refused.",
                "choose another ClusterName, or check the existing cluster without --cluster-config.",
            )
        if facts.orchestrator != "eks" or not facts.eks_cluster_arn:
            return c.fail(
                name,
                "the planned cluster has no Orchestrator.Eks.ClusterArn; the training operator runs only on "
                "HyperPod clusters orchestrated by Amazon EKS.",
                'add "Orchestrator": {"Eks": {"ClusterArn": "<EKS cluster ARN>"}} to the CreateCluster '
                "request.",
            )
        return c.ok(
            name,
            f"planned cluster '{name}' is orchestrated by {_eks_name(facts)}.",
        )
    if not facts.exists:
        if "hyperpod.not-found" in facts.gaps:
            return c.fail(
                name,
                f"HyperPod cluster '{name}' does not exist in {facts.region}.",
                "check the name with `aws sagemaker list-clusters` (the HyperPod cluster's name, not the EKS "
                "cluster's), or pass --cluster-config to check a planned cluster.",
            )
        return c.skip(name, facts.gap("hyperpod"))
    if facts.orchestrator != "eks":
        return c.fail(
            facts.cluster_arn or name,
            f"HyperPod cluster '{name}' is orchestrated by {facts.orchestrator or 'no orchestrator'}, "
            "not Amazon "
            "EKS; the training operator needs an EKS-orchestrated cluster.",
            "create a HyperPod cluster with Orchestrator.Eks (the orchestrator cannot be changed).",
        )
    if facts.status != "InService":
        reason = f" ({facts.failure_message})" if facts.failure_message else ""
        transitional = facts.status in ("Creating", "Updating", "SystemUpdating", "RollingBack")
        return c.fail(
            facts.cluster_arn or name,
            f"HyperPod cluster '{name}' is {facts.status}{reason}, not InService.",
            "wait until it is InService and run again."
            if transitional
            else "repair or recreate the cluster (see its FailureMessage).",
        )
    return c.ok(
        facts.cluster_arn or name,
        f"HyperPod cluster '{name}' is InService, orchestrated by EKS cluster {_eks_name(facts)}.",
    )


def check_eks_cluster(facts: ClusterFacts, options: PreflightOptions) -> CheckResult:
    cid, sev = "eks.cluster", Severity.ERROR
    c = _Check(facts, cid, sev)
    resource = facts.eks_cluster_arn or _eks_name(facts)
    if facts.eks is None:
        if "eks.not-found" in facts.gaps:
            return c.fail(
                resource,
                f"EKS cluster {_eks_name(facts)} named by the HyperPod cluster's orchestrator does not "
                "exist in "
                f"{facts.region}.",
                "create the EKS cluster first, or correct Orchestrator.Eks.ClusterArn.",
            )
        reason = facts.gap("eks", "hyperpod") if facts.eks_cluster_arn else "no EKS orchestrator to look at"
        return c.skip(resource, reason)
    if facts.eks.status != "ACTIVE":
        return c.fail(
            facts.eks.arn,
            f"EKS cluster {facts.eks.name} is {facts.eks.status}, not ACTIVE.",
            f"wait until it is ACTIVE (aws eks wait cluster-active --name {facts.eks.name}) and run again.",
        )
    return c.ok(
        facts.eks.arn,
        f"EKS cluster {facts.eks.name} is ACTIVE (Kubernetes {facts.eks.version}).",
    )


def check_addon_kubernetes_version(facts: ClusterFacts, options: PreflightOptions) -> CheckResult:
    cid, sev = "addon.kubernetes-version", Severity.ERROR
    c = _Check(facts, cid, sev)
    resource = f"{ADDON_NAME} on {_eks_name(facts)}"
    if facts.operator is OperatorMode.SERVERLESS:
        return c.skip(resource, "the serverless operator installs no add-on.")
    if facts.eks is None:
        return c.skip(resource, facts.gap("eks", "hyperpod"))
    if facts.operator_versions is None:
        return c.skip(resource, facts.gap("addon-versions"))
    k8s = facts.eks.version
    compatible = [v for v in facts.operator_versions if k8s in v.cluster_versions]
    if facts.addon_version:
        chosen = next((v for v in facts.operator_versions if v.version == facts.addon_version), None)
        if chosen is None:
            published = ", ".join(sorted((v.version for v in facts.operator_versions), key=version_key))
            return c.fail(
                resource,
                f"add-on version {facts.addon_version} does not exist (published: {published or 'none'}).",
                f"pick a version from `aws eks describe-addon-versions --addon-name {ADDON_NAME}`.",
            )
        if k8s not in chosen.cluster_versions:
            fits = ", ".join(v.version for v in compatible) or "none"
            return c.fail(
                resource,
                f"add-on version {chosen.version} supports Kubernetes "
                f"{', '.join(chosen.cluster_versions)}; EKS "
                f"cluster {facts.eks.name} runs {k8s}.",
                f"choose a version compatible with {k8s} ({fits}), or upgrade the EKS cluster.",
            )
        return c.ok(
            resource,
            f"add-on version {chosen.version} supports Kubernetes {k8s}.",
        )
    if not compatible:
        supported = sorted({c for v in facts.operator_versions for c in v.cluster_versions}, key=version_key)
        return c.fail(
            resource,
            f"no version of the add-on supports Kubernetes {k8s} (supported: "
            f"{', '.join(supported) or 'none'}).",
            f"upgrade EKS cluster {facts.eks.name} to a supported Kubernetes version.",
        )
    default = next((v for v in compatible if k8s in v.default_for), None) or max(
        compatible, key=lambda v: version_key(v.version)
    )
    return c.ok(
        resource,
        f"Kubernetes {k8s} is supported; {default.version} would be installed "
        f"({len(compatible)} compatible versions).",
    )


def check_node_image(facts: ClusterFacts, options: PreflightOptions) -> CheckResult:
    cid, sev, resource = "nodes.image", Severity.WARNING, facts.cluster_arn or facts.cluster_name
    c = _Check(facts, cid, sev)
    if facts.planned:
        return c.skip(resource, "a planned cluster's instances start on the current HyperPod AMI.")
    if not facts.exists:
        return c.skip(resource, facts.gap("hyperpod"))
    statuses = [(n.instance_id, n.image_version_status) for n in facts.nodes or [] if n.image_version_status]
    statuses += [
        (f"group {g.name}", g.image_version_status) for g in facts.instance_groups if g.image_version_status
    ]
    if not statuses:
        reason = facts.gap("nodes") if facts.nodes is None else "the APIs reported no ImageVersionStatus"
        return c.skip(resource, reason)
    stale = [who for who, status in statuses if status != "UpToDate"]
    if stale:
        return c.fail(
            resource,
            f"a newer HyperPod AMI is available: {', '.join(stale[:5])}"
            f"{' and more' if len(stale) > 5 else ''} not on it (the operator's prerequisites ask for the "
            "latest AMI).",
            f"aws sagemaker update-cluster-software --cluster-name {facts.cluster_name}",
        )
    return c.ok(
        resource,
        "every node reports the latest HyperPod AMI (UpToDate).",
    )


def check_cert_manager(facts: ClusterFacts, options: PreflightOptions) -> CheckResult:
    cid, sev, resource = "k8s.cert-manager", Severity.ERROR, f"cert-manager on {_eks_name(facts)}"
    c = _Check(facts, cid, sev)
    if facts.operator is OperatorMode.SERVERLESS:
        return c.skip(resource, "cert-manager is a prerequisite of the training-operator add-on only.")
    remedy = (
        f"aws eks create-addon --cluster-name {_eks_name(facts)} --addon-name cert-manager (or install "
        "it with "
        "Helm), then wait until its Deployments are available."
    )
    if facts.kube is None:
        addon = (facts.addons or {}).get(CERT_MANAGER)
        if addon is not None and addon.status == "ACTIVE":
            return c.ok(
                resource,
                f"the cert-manager EKS add-on ({addon.version}) is ACTIVE; its Deployments were not read "
                f"({facts.gap('kube', 'eks')}).",
            )
        return c.skip(resource, f"Kubernetes not readable: {facts.gap('kube', 'eks', 'hyperpod')}")
    if "kube.cert-manager" in facts.gaps:
        return c.skip(resource, facts.gaps["kube.cert-manager"])
    problems = [f"CRD {c} missing" for c in CERT_MANAGER_CRDS if c not in facts.kube.crds]
    by_component: dict[str, DeploymentFact] = {}
    for d in facts.kube.cert_manager:
        component = next((c for c in ("cainjector", "webhook") if d.name.endswith(c)), "controller")
        by_component[component] = d
    for component in CERT_MANAGER_COMPONENTS:
        d = by_component.get(component)
        if d is None:
            problems.append(f"no {component} Deployment")
        elif not d.ready:
            problems.append(f"Deployment {d.namespace}/{d.name} has {d.available}/{d.replicas} available")
    if problems:
        return c.fail(
            resource,
            f"cert-manager is not installed and ready on EKS cluster {_eks_name(facts)}: "
            f"{'; '.join(problems)}.",
            remedy,
        )
    names = ", ".join(f"{d.namespace}/{d.name}" for d in by_component.values())
    return c.ok(
        resource,
        f"cert-manager is ready: CRDs present; {names} available.",
    )


def check_pod_identity_agent(facts: ClusterFacts, options: PreflightOptions) -> CheckResult:
    # The add-on's controller cannot work without it; serverless jobs can (their agents' fault
    # pushes need it, and without them faults are found by the supervisor's polls, later).
    serverless = facts.operator is OperatorMode.SERVERLESS
    cid, sev = "addon.pod-identity-agent", Severity.WARNING if serverless else Severity.ERROR
    c = _Check(facts, cid, sev)
    resource = f"{POD_IDENTITY_AGENT} on {_eks_name(facts)}"
    needs = (
        "the training pods' agents push their faults to the control plane with Pod Identity credentials; "
        "without them a fault is found by the supervisor's next poll (SupervisorPollSeconds)"
        if serverless
        else "the operator's controller gets its AWS credentials through Pod Identity"
    )
    if facts.addons is None:
        return c.skip(resource, facts.gap("addons", "eks", "hyperpod"))
    remedy = f"aws eks create-addon --cluster-name {_eks_name(facts)} --addon-name {POD_IDENTITY_AGENT}"
    addon = facts.addons.get(POD_IDENTITY_AGENT)
    if addon is None:
        return c.fail(
            resource,
            f"the EKS Pod Identity Agent add-on is not installed on EKS cluster {_eks_name(facts)}; {needs}.",
            remedy,
        )
    if addon.status != "ACTIVE":
        issues = f" ({'; '.join(addon.issues)})" if addon.issues else ""
        return c.fail(
            resource,
            f"the {POD_IDENTITY_AGENT} add-on is {addon.status}{issues}, not ACTIVE.",
            "fix the health issues shown by `aws eks describe-addon --cluster-name "
            f"{_eks_name(facts)} --addon-name {POD_IDENTITY_AGENT}`, or wait for it to become ACTIVE.",
        )
    kube = facts.kube
    if (
        kube is not None
        and kube.pod_identity_desired is not None
        and (kube.pod_identity_ready or 0) < (kube.pod_identity_desired or 0)
    ):
        return c.fail(
            resource,
            f"the {POD_IDENTITY_AGENT} add-on is ACTIVE but its DaemonSet "
            f"kube-system/{POD_IDENTITY_AGENT} has "
            f"{kube.pod_identity_ready}/{kube.pod_identity_desired} pods ready.",
            "check the DaemonSet's pods (kubectl -n kube-system describe ds eks-pod-identity-agent).",
        )
    return c.ok(
        resource,
        f"the {POD_IDENTITY_AGENT} add-on ({addon.version}) is ACTIVE.",
    )


def check_pass_role(facts: ClusterFacts, options: PreflightOptions) -> CheckResult:
    """The user's roleArn is one the stack may pass to EKS Pod Identity. Its iam:PassRole statement
    names the stack's own role path and the OperatorRoleArns parameter, nothing else: any other role
    would get through the role step and fail at CreatePodIdentityAssociation with AccessDenied, after
    the lock was taken. Checked here, the install stops before anything changes."""
    cid, sev = "iam.pass-role", Severity.ERROR
    c = _Check(facts, cid, sev)
    if facts.operator is not OperatorMode.ADDON:
        return c.skip(facts.cluster_name, "the serverless operator has no Pod Identity role")
    if not facts.role_arn:
        return c.skip(
            facts.cluster_name,
            "no roleArn: the workflow creates the operator's role under its own path, which the stack "
            "may always pass",
        )
    if options.passable_roles is None:
        return c.skip(
            facts.role_arn,
            f"the roles the stack may pass are not known here ({PASSABLE_ROLES_ENV} is set only in the "
            "stack's Preflight function; the install's Preflight step checks it)",
        )
    pattern = passable_by(facts.role_arn, options.passable_roles)
    if pattern is not None:
        return c.ok(facts.role_arn, f"the stack may pass {facts.role_arn} to EKS Pod Identity ({pattern}).")
    return c.fail(
        facts.role_arn,
        f"roleArn {facts.role_arn} is not a role this stack may pass to EKS Pod Identity: its iam:PassRole "
        f"allows only {', '.join(options.passable_roles)}, so creating the operator's Pod Identity "
        "association would be denied.",
        f"deploy the stack again with the role added to the {OPERATOR_ROLE_ARNS_PARAMETER} parameter "
        f"(sam deploy --parameter-overrides {OPERATOR_ROLE_ARNS_PARAMETER}={facts.role_arn}; "
        "comma-separate several, * and ? allowed), or leave roleArn out and the workflow creates a role.",
    )


def _contains(outer: str, inner: str) -> bool:
    try:
        a, b = ipaddress.ip_network(outer, strict=False), ipaddress.ip_network(inner, strict=False)
    except ValueError:
        return False
    return a.version == b.version and b.subnet_of(a)  # type: ignore[arg-type]


def check_endpoint_access(facts: ClusterFacts, options: PreflightOptions) -> CheckResult:
    cid, sev = "access.endpoint", Severity.ERROR
    c = _Check(facts, cid, sev)
    if facts.eks is None:
        return c.skip(_eks_name(facts), facts.gap("eks", "hyperpod"))
    eks = facts.eks
    if options.in_vpc and eks.endpoint_private_access:
        return c.ok(
            eks.arn,
            "the control plane runs in the VPC and the private endpoint is on.",
        )
    update = f"aws eks update-cluster-config --name {eks.name} --resources-vpc-config "
    if not eks.endpoint_public_access:
        return c.fail(
            eks.arn,
            f"EKS cluster {eks.name} has a private-only API endpoint; the control plane's Lambdas run "
            "outside the "
            "VPC and cannot reach it.",
            update
            + "endpointPublicAccess=true,endpointPrivateAccess=true,publicAccessCidrs=<CIDRs that admit "
            "the control plane>; or deploy the stack with VpcSubnetIds and VpcSecurityGroupIds (the "
            "Kubernetes-calling Lambdas then run in the cluster's VPC; see the README).",
        )
    cidrs = eks.public_access_cidrs or ["0.0.0.0/0"]
    if any(c in ("0.0.0.0/0", "::/0") for c in cidrs):
        return c.ok(
            eks.arn,
            f"the public endpoint of {eks.name} admits any source (0.0.0.0/0).",
        )
    if options.source_cidrs and all(any(_contains(c, s) for c in cidrs) for s in options.source_cidrs):
        return c.ok(
            eks.arn,
            f"publicAccessCidrs {', '.join(cidrs)} admit the control plane's "
            f"{', '.join(options.source_cidrs)}.",
        )
    known = (
        f"the control plane's addresses ({', '.join(options.source_cidrs)})"
        if options.source_cidrs
        else "the control plane (Lambdas outside a VPC call from AWS's shared public addresses; set "
        "CONTROL_PLANE_SOURCE_CIDRS when they leave through a NAT gateway)"
    )
    return c.fail(
        eks.arn,
        f"the public endpoint of {eks.name} admits only {', '.join(cidrs)}, which does not cover {known}.",
        update + "publicAccessCidrs=<existing CIDRs>,<the control plane's NAT address>/32",
    )


def check_authentication_mode(facts: ClusterFacts, options: PreflightOptions) -> CheckResult:
    cid, sev = "access.authentication-mode", Severity.ERROR
    c = _Check(facts, cid, sev)
    if facts.eks is None:
        return c.skip(_eks_name(facts), facts.gap("eks", "hyperpod"))
    mode = facts.eks.authentication_mode
    if mode is None:
        return c.skip(facts.eks.arn, "EKS reported no accessConfig.authenticationMode")
    if mode not in ("API", "API_AND_CONFIG_MAP"):
        return c.fail(
            facts.eks.arn,
            f"EKS cluster {facts.eks.name} uses authenticationMode {mode}: access entries (how the "
            "control plane "
            "is admitted to Kubernetes) are off.",
            f"aws eks update-cluster-config --name {facts.eks.name} --access-config "
            "authenticationMode=API_AND_CONFIG_MAP (existing aws-auth mappings keep working).",
        )
    return c.ok(
        facts.eks.arn,
        f"authenticationMode {mode} allows access entries.",
    )


def check_kubernetes_access(facts: ClusterFacts, options: PreflightOptions) -> CheckResult:
    cid, sev = "access.kubernetes", Severity.ERROR
    c = _Check(facts, cid, sev)
    if facts.eks is None:
        return c.skip(_eks_name(facts), facts.gap("eks", "hyperpod"))
    if facts.eks.status != "ACTIVE":
        return c.skip(facts.eks.arn, f"EKS cluster is {facts.eks.status}")
    if facts.kube is not None:
        return c.ok(
            facts.eks.endpoint or facts.eks.arn,
            f"this principal reads the Kubernetes API of {facts.eks.name} with an EKS token.",
        )
    if "kube" not in facts.gaps:
        return c.skip(facts.eks.arn, "no Kubernetes reader configured")
    kind = facts.gaps.get("kube.kind")
    if kind == "no-entry":
        return c.skip(
            facts.eks.endpoint or facts.eks.arn,
            f"{facts.gaps['kube.principal']} has no access entry on {facts.eks.name} yet: the install's "
            "EnsureAccess step creates the control plane's entries, and the next preflight (upgrade, "
            "re-install) reads the Kubernetes API with it",
        )
    remedy = {
        "unauthorized": f"aws eks create-access-entry --cluster-name {facts.eks.name} --principal-arn "
        "<the control "
        f"plane's role ARN>; then aws eks associate-access-policy --cluster-name {facts.eks.name} "
        "--principal-arn "
        "<role ARN> --policy-arn arn:aws:eks::aws:cluster-access-policy/AmazonEKSViewPolicy --access-scope "
        "type=cluster",
        "forbidden": "associate an access policy (AmazonEKSViewPolicy at least) with the control plane's "
        "access entry.",
    }.get(kind or "", "make the EKS endpoint reachable from the control plane (see access.endpoint).")
    return c.fail(
        facts.eks.endpoint or facts.eks.arn,
        f"cannot read the Kubernetes API of {facts.eks.name}: {facts.gaps['kube']}",
        remedy,
    )


def _admits(
    groups: dict[str, Any], target_ids: list[str], source_ids: list[str], source_cidrs: list[str], port: int
) -> bool:
    """Whether any of ``target_ids`` has an ingress rule for TCP ``port`` from a source group or
    from CIDRs covering every one of ``source_cidrs``."""
    for gid in target_ids:
        for rule in groups[gid].ingress:
            if not rule.covers_port(port):
                continue
            if set(rule.group_ids) & set(source_ids):
                return True
            if source_cidrs and all(any(_contains(c, s) for c in rule.cidrs) for s in source_cidrs):
                return True
    return False


def _sends(
    groups: dict[str, Any], source_ids: list[str], target_ids: list[str], target_cidrs: list[str], port: int
) -> bool:
    for gid in source_ids:
        for rule in groups[gid].egress:
            if not rule.covers_port(port):
                continue
            if set(rule.group_ids) & set(target_ids):
                return True
            if any(c in ("0.0.0.0/0",) for c in rule.cidrs):
                return True
            if target_cidrs and all(any(_contains(c, t) for c in rule.cidrs) for t in target_cidrs):
                return True
    return False


def check_pod_port(facts: ClusterFacts, options: PreflightOptions) -> CheckResult:
    cid, sev = "network.pod-port", Severity.ERROR
    c = _Check(facts, cid, sev)
    resource = (
        ", ".join(dict.fromkeys(s for g in facts.instance_groups for s in g.security_group_ids))
        or facts.cluster_name
    )
    if facts.operator is OperatorMode.ADDON:
        return c.skip(
            resource,
            "only the serverless operator reaches the agents on port 8080 (through the API server's pod "
            "proxy).",
        )
    if facts.eks is None or facts.security_groups is None or facts.subnets is None:
        return c.skip(resource, facts.gap("eks", "security-groups", "subnets", "hyperpod"))
    control = [g for g in [facts.eks.cluster_security_group_id, *facts.eks.security_group_ids] if g]
    control = list(dict.fromkeys(control))
    if not control:
        return c.skip(resource, "EKS reported no security group for its control-plane interfaces")
    groups = facts.security_groups
    unknown = [
        g
        for g in control + [s for ig in facts.instance_groups for s in ig.security_group_ids]
        if g not in groups
    ]
    if unknown:
        return c.skip(resource, f"security groups not found: {', '.join(dict.fromkeys(unknown))}")
    eks_cidrs = [facts.subnets[s].cidr_block for s in facts.eks.subnet_ids if s in facts.subnets]
    problems = []
    for ig in facts.instance_groups:
        node_cidrs = [facts.subnets[s].cidr_block for s in ig.subnets if s in facts.subnets]
        if not _admits(groups, ig.security_group_ids, control, eks_cidrs, AGENT_PORT):
            problems.append(
                f"instance group {ig.name}: {', '.join(ig.security_group_ids)} admit no TCP {AGENT_PORT} "
                "from the "
                f"cluster security group {', '.join(control)}"
            )
        elif not _sends(groups, control, ig.security_group_ids, node_cidrs, AGENT_PORT):
            problems.append(
                f"instance group {ig.name}: {', '.join(control)} allow no TCP {AGENT_PORT} egress to "
                f"{', '.join(ig.security_group_ids)}"
            )
    if problems:
        node_sg = (
            facts.instance_groups[0].security_group_ids[0]
            if facts.instance_groups and facts.instance_groups[0].security_group_ids
            else "<node SG>"
        )
        return c.fail(
            resource,
            "the API server cannot reach the agents' port: " + "; ".join(problems) + ".",
            f"aws ec2 authorize-security-group-ingress --group-id {node_sg} --protocol tcp --port "
            f"{AGENT_PORT} "
            f"--source-group {control[0]} (and egress to it from {control[0]} if restricted).",
        )
    return c.ok(
        resource,
        f"the nodes' security groups admit TCP {AGENT_PORT} from the cluster security group "
        f"{', '.join(control)}.",
    )


def _node_subnets(facts: ClusterFacts) -> list[str]:
    return list(dict.fromkeys(s for g in facts.instance_groups for s in g.subnets)) or facts.cluster_subnets


def _node_groups(facts: ClusterFacts) -> list[str]:
    ids = [s for g in facts.instance_groups for s in g.security_group_ids] or facts.cluster_security_group_ids
    return list(dict.fromkeys(ids))


def _isolated(facts: ClusterFacts) -> tuple[list[str], list[str]]:
    """(subnets without any default route, subnets whose default route leads somewhere we cannot judge)."""
    isolated, unknown = [], []
    for sid in _node_subnets(facts):
        subnet = (facts.subnets or {}).get(sid)
        if subnet is None:
            continue
        if subnet.default_route is None:
            isolated.append(sid)
        elif subnet.default_route not in ("igw", "nat"):
            unknown.append(f"{sid} (0.0.0.0/0 via {subnet.default_route})")
    return isolated, unknown


def check_vpc_endpoints(facts: ClusterFacts, options: PreflightOptions) -> CheckResult:
    cid, sev = "network.vpc-endpoints", Severity.ERROR
    c = _Check(facts, cid, sev)
    resource = (
        ", ".join(dict.fromkeys(s.vpc_id for s in (facts.subnets or {}).values() if s.vpc_id))
        or facts.cluster_name
    )
    if facts.subnets is None:
        return c.skip(resource, facts.gap("subnets", "hyperpod"))
    isolated, unknown = _isolated(facts)
    if not isolated and not unknown:
        return c.ok(
            resource,
            "the nodes' subnets reach the AWS APIs through an internet or NAT gateway; VPC endpoints are "
            "optional.",
        )
    if facts.vpc_endpoints is None:
        return c.skip(resource, facts.gap("vpc-endpoints"))
    node_groups = _node_groups(facts)
    node_cidrs = [facts.subnets[s].cidr_block for s in isolated if s in facts.subnets]
    problems = []
    for suffix in OPERATOR_ENDPOINTS:
        service = f"com.amazonaws.{facts.region}.{suffix}"
        vpcs = {
            facts.subnets[s].vpc_id
            for s in isolated + [u.split(" ")[0] for u in unknown]
            if s in facts.subnets
        }
        found = [e for e in facts.vpc_endpoints if e.service_name == service and e.vpc_id in vpcs]
        usable = [e for e in found if e.state.lower() == "available"]
        if not usable:
            problems.append(f"no {'available ' if found else ''}interface endpoint {service}")
            continue
        groups = facts.security_groups or {}
        if all(g in groups for e in usable for g in e.security_group_ids) and not any(
            _admits(groups, e.security_group_ids, node_groups, node_cidrs, 443) for e in usable
        ):
            problems.append(
                f"endpoint {usable[0].endpoint_id} ({suffix}): its security groups admit no HTTPS from "
                "the nodes' "
                f"{', '.join(node_groups)}"
            )
    if not problems:
        return c.ok(
            resource,
            f"private subnets have the {' and '.join(OPERATOR_ENDPOINTS)} endpoints, reachable from the "
            "nodes.",
        )
    if not isolated:
        return c.skip(
            resource,
            f"{'; '.join(problems)}, but whether {', '.join(unknown)} reach the AWS APIs another way "
            "cannot be told",
        )
    vpc = facts.subnets[isolated[0]].vpc_id
    return c.fail(
        resource,
        f"subnets {', '.join(isolated)} have no route to the internet and the VPC lacks what the "
        "operator needs: "
        f"{'; '.join(problems)}. The add-on install can fail without them.",
        f"aws ec2 create-vpc-endpoint --vpc-id {vpc} --vpc-endpoint-type Interface --service-name "
        f"com.amazonaws.{facts.region}.<sagemaker.api|eks-auth> --subnet-ids {' '.join(isolated)} "
        f"--security-group-ids {' '.join(node_groups) or '<SG admitting 443 from the nodes>'} "
        "--private-dns-enabled",
    )


def check_s3_endpoint(facts: ClusterFacts, options: PreflightOptions) -> CheckResult:
    cid, sev = "network.s3-endpoint", Severity.ERROR
    c = _Check(facts, cid, sev)
    resource = (
        ", ".join(dict.fromkeys(s.vpc_id for s in (facts.subnets or {}).values() if s.vpc_id))
        or facts.cluster_name
    )
    if facts.subnets is None:
        return c.skip(resource, facts.gap("subnets", "hyperpod"))
    isolated, unknown = _isolated(facts)
    if not isolated:
        if unknown:
            return c.skip(resource, f"cannot tell whether {', '.join(unknown)} reach S3")
        return c.ok(resource, "the nodes' subnets reach S3 through a gateway.")
    if facts.vpc_endpoints is None:
        return c.skip(resource, facts.gap("vpc-endpoints"))
    service = f"com.amazonaws.{facts.region}.s3"
    missing = []
    for sid in isolated:
        subnet = facts.subnets[sid]
        ok = any(
            e.service_name == service
            and e.vpc_id == subnet.vpc_id
            and e.state.lower() == "available"
            and (
                (e.type == "Gateway" and subnet.route_table_id in e.route_table_ids)
                or (e.type == "Interface")
            )
            for e in facts.vpc_endpoints
        )
        if not ok:
            missing.append(sid)
    if missing:
        subnet = facts.subnets[missing[0]]
        return c.fail(
            resource,
            f"subnets {', '.join(missing)} reach no S3 endpoint: instance groups cannot fetch lifecycle "
            "scripts or "
            "training data without internet access.",
            f"aws ec2 create-vpc-endpoint --vpc-id {subnet.vpc_id} --vpc-endpoint-type Gateway "
            "--service-name "
            f"{service} --route-table-ids {subnet.route_table_id or '<route table of the subnets>'}",
        )
    return c.ok(
        resource,
        f"private subnets reach S3 through a {service} endpoint.",
    )


def check_sagemaker_tag(facts: ClusterFacts, options: PreflightOptions) -> CheckResult:
    cid, sev, resource = "hyperpod.sagemaker-tag", Severity.WARNING, facts.cluster_arn or facts.cluster_name
    c = _Check(facts, cid, sev)
    if facts.tags is None:
        return c.skip(resource, facts.gap("tags", "hyperpod"))
    if str(facts.tags.get("SageMaker", "")).lower() == "true":
        return c.ok(resource, "the cluster is tagged SageMaker: true.")
    remedy = (
        'add {"Key": "SageMaker", "Value": "true"} to Tags in the CreateCluster request.'
        if facts.planned
        else f"aws sagemaker add-tags --resource-arn {facts.cluster_arn} --tags Key=SageMaker,Value=true"
    )
    return c.fail(
        resource,
        f"HyperPod cluster '{facts.cluster_name}' lacks the tag SageMaker: true; installing the add-on "
        "from the EKS "
        "console fails without it (this workflow does not need it).",
        remedy,
    )


def check_cluster_usage_quota(facts: ClusterFacts, options: PreflightOptions) -> CheckResult:
    cid, sev, resource = "quotas.cluster-usage", Severity.ERROR, "Service Quotas: sagemaker"
    c = _Check(facts, cid, sev)
    if facts.usage_quotas is None:
        return c.skip(
            resource,
            facts.gap("cluster-usage", "hyperpod") if facts.instance_groups else "no instance groups",
        )
    requested: dict[str, int] = {}
    for g in facts.instance_groups:
        requested[g.instance_type] = requested.get(g.instance_type, 0) + g.count
    over, unknown, fine = [], [], []
    for instance_type, quota in sorted(facts.usage_quotas.items()):
        if quota.value is None or quota.in_use is None:
            unknown.append(f"'{quota.name}'")
            continue
        need = quota.in_use + (requested.get(instance_type, 0) if facts.planned else 0)
        line = f"'{quota.name}' is {int(quota.value)}, {need} {'needed' if facts.planned else 'in use'}"
        (over if need > quota.value else fine).append(line)
    if over:
        return c.fail(
            resource,
            f"SageMaker cluster-usage quotas too low: {'; '.join(over)}.",
            "request an increase in the Service Quotas console (Amazon SageMaker, search 'cluster usage'); "
            "HyperPod cannot request it for you.",
        )
    if not fine:
        return c.skip(resource, f"quota or usage unknown for {', '.join(unknown)}")
    tail = f" (not found: {', '.join(unknown)})" if unknown else ""
    return c.ok(resource, f"within quota: {'; '.join(fine)}{tail}.")


def check_eni_quota(facts: ClusterFacts, options: PreflightOptions) -> CheckResult:
    cid, sev, resource = "quotas.network-interfaces", Severity.ERROR, f"Service Quotas: vpc/{ENI_QUOTA_CODE}"
    c = _Check(facts, cid, sev)
    quota = facts.eni_quota
    if quota is None or quota.value is None or quota.in_use is None:
        return c.skip(resource, facts.gap("eni-quota"))
    per_instance = {g.name: interfaces_per_instance(g.instance_type) for g in facts.instance_groups}
    if facts.planned:
        needed = sum(g.count * per_instance[g.name] for g in facts.instance_groups)
        what = f"the planned cluster needs about {needed} more"
    else:
        needed = max(per_instance.values(), default=1)  # a replacement node's interfaces before the old go
        what = f"replacing a node needs {needed} more"
    if quota.in_use + needed > quota.value:
        # An error for an existing cluster too (REPLACEMENT_HEADROOM): without a free interface the
        # control plane's node replacement, its fault remediation, cannot start a new node.
        why = (
            ""
            if facts.planned
            else " Without room for a replacement node the control plane cannot replace a faulty node "
            "(its fault remediation), so the install stops here."
        )
        return c.fail(
            resource,
            f"network interfaces per Region ({ENI_QUOTA_CODE}) is {int(quota.value)} with {quota.in_use} "
            f"in use; {what}.{why}",
            f"request an increase of {ENI_QUOTA_CODE} in the Service Quotas console (Amazon VPC) to at "
            f"least {quota.in_use + needed}, so that "
            + ("the cluster's instances" if facts.planned else "a replacement node")
            + " can get its network interfaces; HyperPod cannot request it for you.",
        )
    return c.ok(
        resource,
        f"network interfaces: {quota.in_use} in use of {int(quota.value)}; {what}.",
    )


def _usable(cidr: str) -> int:
    try:
        return max(ipaddress.ip_network(cidr, strict=False).num_addresses - 5, 0)  # AWS reserves 5 per subnet
    except ValueError:
        return 0


def check_subnet_addresses(facts: ClusterFacts, options: PreflightOptions) -> CheckResult:
    """Planned: each subnet's free addresses hold every instance placed in it. Existing: each subnet
    has the free addresses one replacement node takes (an error: REPLACEMENT_HEADROOM) and its CIDR
    holds the groups at their target counts (a warning only: it limits scaling, not healing)."""
    cid, sev = "network.subnet-addresses", Severity.ERROR
    c = _Check(facts, cid, sev)
    resource = ", ".join(_node_subnets(facts)) or facts.cluster_name
    if facts.subnets is None:
        return c.skip(resource, facts.gap("subnets", "hyperpod"))
    # Groups without an override share the cluster's subnets: HyperPod picks one subnet from that
    # list for all of them (AWS's prerequisites page), so each listed subnet must hold them all.
    placements: dict[tuple[str, ...], list[InstanceGroupFact]] = {}
    for g in facts.instance_groups:
        placements.setdefault(tuple(g.subnets), []).append(g)
    problems, too_small, estimated, lines = [], [], False, []
    for subnets, groups in placements.items():
        need, replacement = 0, 0
        for g in groups:
            per, documented = addresses_per_instance(g.instance_type, facts.orchestrator)
            estimated |= not documented
            need += g.count * per
            replacement = max(replacement, per)
        names = ", ".join(g.name for g in groups)
        for sid in subnets:
            subnet = facts.subnets.get(sid)
            if subnet is None:
                continue
            if facts.planned:
                line = f"{sid} ({subnet.cidr_block}): {subnet.available_ips} free, {need} needed by {names}"
                (problems if subnet.available_ips < need else lines).append(line)
                continue
            # An existing cluster's nodes hold their addresses already: what matters now is room for
            # one replacement node (the control plane's fault remediation), an error when missing.
            line = (
                f"{sid} ({subnet.cidr_block}): {subnet.available_ips} free, {replacement} needed by a "
                f"replacement node of {names}"
            )
            (problems if subnet.available_ips < replacement else lines).append(line)
            usable = _usable(subnet.cidr_block)
            if usable < need:
                too_small.append(f"{sid} ({subnet.cidr_block}): {usable} usable, {need} needed by {names}")
    note = (
        " Addresses per instance: 81 per P5 on EKS (documented); other types estimated as their primary "
        "ENI's IPv4 addresses plus one per further network card, the rule behind the P5 figure."
        if estimated
        else ""
    )
    remedy = (
        "use subnets with larger CIDR blocks (a subnet's size cannot change; a cluster that outgrows it "
        "must be recreated)."
    )
    if problems:
        if facts.planned:
            return c.fail(
                resource,
                f"subnets too small for the cluster's instances: {'; '.join(problems)}.{note}",
                remedy,
            )
        # REPLACEMENT_HEADROOM: an error for an existing cluster too.
        return c.fail(
            resource,
            f"no room for a replacement node: {'; '.join(problems)}. Without it the control plane cannot "
            "replace a faulty node (its fault remediation), so the install stops here."
            + (
                f" The CIDR blocks are also too small for the instance groups: {'; '.join(too_small)}."
                if too_small
                else ""
            )
            + note,
            "free addresses in the subnet (delete unused network interfaces or endpoints in it) so that a "
            "replacement node fits, or move the instance groups to larger subnets (a subnet's size cannot "
            "change; a cluster that outgrows it must be recreated).",
        )
    if too_small:
        # Room to heal but not to reach the target counts: a scaling concern, so a warning.
        return _result(
            facts,
            cid,
            Severity.WARNING,
            CheckStatus.FAILED,
            resource,
            f"subnets too small for the instance groups' target counts: {'; '.join(too_small)}.{note}",
            remedy,
        )
    if not lines:
        return c.skip(
            resource,
            f"subnets not found: {', '.join(facts.missing_subnets) or 'none listed'}",
        )
    return c.ok(resource, f"enough addresses: {'; '.join(lines)}.{note}")


def check_override_vpc_config(facts: ClusterFacts, options: PreflightOptions) -> CheckResult:
    cid, sev, resource = "vpc.override-config", Severity.ERROR, facts.cluster_name
    c = _Check(facts, cid, sev)
    problems = []
    if facts.orchestrator == "eks" and not facts.has_cluster_vpc_config and (facts.planned or facts.exists):
        problems.append("the cluster has no VpcConfig, which EKS orchestration requires")
    overrides = [g for g in facts.instance_groups if g.override_subnets is not None]
    for g in overrides:
        subnets, groups = g.override_subnets or [], g.override_security_group_ids or []
        if not 1 <= len(subnets) <= 16:
            problems.append(
                f"instance group {g.name}: OverrideVpcConfig.Subnets has {len(subnets)} (1 to 16 allowed)"
            )
        if not 1 <= len(groups) <= 5:
            problems.append(
                f"instance group {g.name}: OverrideVpcConfig.SecurityGroupIds has {len(groups)} (1 to 5 "
                "allowed)"
            )
        if facts.orchestrator == "slurm" and not facts.has_cluster_vpc_config:
            problems.append(
                f"instance group {g.name}: OverrideVpcConfig on Slurm needs a cluster-level VpcConfig"
            )
    if problems:
        return c.fail(
            resource,
            f"VPC configuration invalid: {'; '.join(problems)}.",
            "give each OverrideVpcConfig 1-16 Subnets and 1-5 SecurityGroupIds (it cannot be changed "
            "once the "
            "instance group exists).",
        )
    if not overrides:
        return c.ok(
            resource,
            "no instance group overrides the cluster's VpcConfig.",
        )
    return c.ok(
        resource,
        f"OverrideVpcConfig of {', '.join(g.name for g in overrides)} within limits (1-16 subnets, 1-5 "
        "groups).",
    )


def check_efa_security_groups(facts: ClusterFacts, options: PreflightOptions) -> CheckResult:
    cid, sev = "network.efa-security-groups", Severity.ERROR
    c = _Check(facts, cid, sev)
    efa = [g for g in facts.instance_groups if g.instance_type in EFA_TYPES]
    resource = ", ".join(dict.fromkeys(s for g in efa for s in g.security_group_ids)) or facts.cluster_name
    if not efa:
        return c.skip(resource, "no EFA-capable instance type in the cluster")
    if facts.security_groups is None:
        return c.skip(resource, facts.gap("security-groups"))
    problems = []
    for g in efa:
        own = [s for s in g.security_group_ids if s in facts.security_groups]
        if not own:
            problems.append(f"instance group {g.name}: no security group found")
            continue
        rules_in = [r for s in own for r in facts.security_groups[s].ingress]
        rules_out = [r for s in own for r in facts.security_groups[s].egress]
        if not any(r.protocol == "-1" and set(r.group_ids) & set(own) for r in rules_in):
            problems.append(f"{', '.join(own)} ({g.name}) admit no inbound all-traffic from themselves")
        if not any(r.protocol == "-1" and set(r.group_ids) & set(own) for r in rules_out):
            problems.append(f"{', '.join(own)} ({g.name}) allow no outbound all-traffic to themselves")
        if any(c in ("0.0.0.0/0", "::/0") for r in rules_out for c in r.cidrs):
            problems.append(
                f"{', '.join(own)} ({g.name}) have an outbound rule to 0.0.0.0/0 (EFA health checks may fail)"
            )
    if problems:
        sg = efa[0].security_group_ids[0] if efa[0].security_group_ids else "<SG>"
        return c.fail(
            resource,
            f"EFA security groups not as EFA needs them: {'; '.join(problems)}.",
            f"aws ec2 authorize-security-group-ingress --group-id {sg} --ip-permissions "
            f"IpProtocol=-1,UserIdGroupPairs=[{{GroupId={sg}}}]; the same with "
            "authorize-security-group-egress; "
            "and revoke any 0.0.0.0/0 egress rule.",
        )
    return c.ok(
        resource,
        "EFA instance groups' security groups pass all traffic to and from themselves, with no 0.0.0.0/0 "
        "egress.",
    )


def check_single_region(facts: ClusterFacts, options: PreflightOptions) -> CheckResult:
    cid, sev, resource = "region.single", Severity.ERROR, facts.region
    c = _Check(facts, cid, sev)
    problems = []
    if facts.eks_cluster_arn:
        parts = facts.eks_cluster_arn.split(":")
        if len(parts) > 3 and parts[3] != facts.region:
            problems.append(f"EKS cluster {facts.eks_cluster_arn} is in {parts[3]}")
    if facts.missing_subnets:
        problems.append(f"subnets {', '.join(facts.missing_subnets)} not found in {facts.region}")
    if facts.missing_security_groups:
        problems.append(
            f"security groups {', '.join(facts.missing_security_groups)} not found in {facts.region}"
        )
    for fs in facts.fsx or []:
        if fs.region and fs.region != facts.region:
            problems.append(f"FSx file system {fs.file_system_id} is in {fs.region}")
    if problems:
        return c.fail(
            resource,
            f"resources outside the cluster's Region {facts.region}: {'; '.join(problems)}.",
            f"create every resource (EKS cluster, VPC, subnets, security groups, FSx) in {facts.region}.",
        )
    if facts.subnets is None and facts.security_groups is None:
        return c.skip(resource, facts.gap("subnets", "security-groups", "hyperpod"))
    return c.ok(
        resource,
        f"the EKS cluster, subnets, security groups and referenced file systems are all in {facts.region}.",
    )


def check_fsx_zone(facts: ClusterFacts, options: PreflightOptions) -> CheckResult:
    cid, sev, resource = "fsx.availability-zone", Severity.ERROR, facts.cluster_name
    c = _Check(facts, cid, sev)
    if facts.fsx is None:
        return c.skip(resource, facts.gap("fsx", "kube"))
    if not facts.fsx:
        if facts.kube is None:
            pvs = f"PersistentVolumes not read: {facts.gap('kube')}"
        elif "kube.fsx" in facts.gaps:
            pvs = f"PersistentVolumes not read: {facts.gaps['kube.fsx']}"
        else:
            pvs = "nor by a PersistentVolume of fsx.csi.aws.com"
        where = f"instance groups' InstanceStorageConfigs; {pvs}"
        return c.skip(resource, f"no FSx for Lustre file system referenced ({where})")
    subnets = facts.subnets or {}
    node_zones = sorted({subnets[s].availability_zone for s in _node_subnets(facts) if s in subnets})
    problems, fine = [], []
    for fs in facts.fsx:
        if not fs.availability_zones or not node_zones:
            continue
        if set(fs.availability_zones) & set(node_zones):
            fine.append(f"{fs.file_system_id} in {', '.join(fs.availability_zones)}")
        else:
            problems.append(
                f"{fs.file_system_id} ({fs.referenced_by}) is in {', '.join(fs.availability_zones)}, the "
                "nodes in "
                f"{', '.join(node_zones)}"
            )
    if problems:
        return c.fail(
            ", ".join(f.file_system_id for f in facts.fsx),
            f"FSx for Lustre in another Availability Zone than the nodes: {'; '.join(problems)} "
            "(cross-AZ traffic, "
            "network problems).",
            "place the instance groups' subnets in the file system's AZ (OverrideVpcConfig), or use a "
            "file system "
            "in the nodes' AZ.",
        )
    if not fine:
        return c.skip(resource, "the file systems' or nodes' Availability Zones are unknown")
    return c.ok(resource, f"FSx in the nodes' AZ: {'; '.join(fine)}.")


def check_ipv6(facts: ClusterFacts, options: PreflightOptions) -> CheckResult:
    # Always a warning: AWS's prerequisites page describes what happens (pods stay IPv4), not a
    # failure.
    cid, sev, resource = "network.ipv6", Severity.WARNING, _eks_name(facts)
    c = _Check(facts, cid, sev)
    if facts.subnets is None or facts.eks is None:
        return c.skip(resource, facts.gap("subnets", "eks", "hyperpod"))
    v6 = [s for s in _node_subnets(facts) if s in facts.subnets and facts.subnets[s].ipv6_cidr_blocks]
    if not v6:
        return c.ok(resource, "the nodes' subnets are IPv4 only.")
    if facts.eks.ip_family.lower() != "ipv6":
        return c.fail(
            resource,
            f"subnets {', '.join(v6)} have IPv6 CIDRs but EKS cluster {facts.eks.name} is IPv4: nodes "
            "get dual-stack "
            "addresses, pods only IPv4.",
            "for IPv6 pods, create a new EKS cluster with ipFamily ipv6 (an IPv4 cluster cannot be "
            "converted).",
        )
    return c.ok(
        resource,
        f"IPv6 subnets with an IPv6 EKS cluster {facts.eks.name}.",
    )


def check_kueue(facts: ClusterFacts, options: PreflightOptions) -> CheckResult:
    cid, sev, resource = "kueue.external-frameworks", Severity.ERROR, f"Kueue on {_eks_name(facts)}"
    c = _Check(facts, cid, sev)
    governance = (facts.addons or {}).get(TASK_GOVERNANCE) is not None
    kueue = facts.kube is not None and any(c.endswith(".kueue.x-k8s.io") for c in facts.kube.crds)
    if not governance and not kueue:
        if facts.kube is None and facts.addons is None:
            return c.skip(resource, facts.gap("kube", "addons", "eks", "hyperpod"))
        if facts.kube is None:
            return c.skip(
                resource,
                "no task-governance add-on; whether Kueue runs is unknown (" + facts.gap("kube") + ")",
            )
        return c.skip(resource, "neither task governance nor Kueue is installed")
    if facts.kube is None:
        return c.skip(resource, f"Kueue's configuration not readable: {facts.gap('kube')}")
    if "kube.kueue" in facts.gaps:
        return c.skip(resource, facts.gaps["kube.kueue"])
    config = facts.kube.kueue_config
    if config is None:
        return c.skip(resource, f"no ConfigMap in {KUEUE_NAMESPACE} holds {KUEUE_CONFIG_KEY}")
    frameworks = ((config.get("integrations") or {}).get("externalFrameworks")) or []
    # Kueue compares GVKs exactly; the docs spell the kind HyperPodPytorchJob while the CRD says
    # HyperPodPyTorchJob, so accept either spelling rather than fail a working setup.
    if any(str(f).lower() == HYPERPOD_JOB_GVK.lower() for f in frameworks):
        return c.ok(
            facts.kube.kueue_config_source,
            f"Kueue lists {HYPERPOD_JOB_GVK} in integrations.externalFrameworks.",
        )
    return c.fail(
        facts.kube.kueue_config_source,
        f"Kueue runs ({'task governance' if governance else 'Kueue CRDs'}) but its "
        "integrations.externalFrameworks "
        f"({', '.join(map(str, frameworks)) or 'empty'}) lacks {HYPERPOD_JOB_GVK}: HyperPod jobs would "
        "not be "
        "queued.",
        f'add "{HYPERPOD_JOB_GVK}" to integrations.externalFrameworks in {KUEUE_CONFIG_KEY} and restart '
        "kueue-controller-manager.",
    )


def check_task_governance(facts: ClusterFacts, options: PreflightOptions) -> CheckResult:
    cid, sev, resource = "addon.task-governance", Severity.ERROR, f"{TASK_GOVERNANCE} on {_eks_name(facts)}"
    c = _Check(facts, cid, sev)
    if facts.addons is None:
        return c.skip(resource, facts.gap("addons", "eks", "hyperpod"))
    addon = facts.addons.get(TASK_GOVERNANCE)
    if addon is None:
        return c.skip(resource, "the task-governance add-on is not installed")
    if version_key(addon.version) < version_key(TASK_GOVERNANCE_MIN):
        return c.fail(
            resource,
            f"the task-governance add-on is {addon.version}; the training operator needs "
            f"{TASK_GOVERNANCE_MIN} or "
            "later.",
            f"aws eks update-addon --cluster-name {_eks_name(facts)} --addon-name {TASK_GOVERNANCE} "
            "--addon-version "
            f"{TASK_GOVERNANCE_MIN} (or later)",
        )
    return c.ok(
        resource,
        f"task-governance add-on {addon.version} >= {TASK_GOVERNANCE_MIN}.",
    )


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


def options_from_env(env: dict[str, str] | None = None) -> PreflightOptions:
    """CONTROL_PLANE_SOURCE_CIDRS (comma-separated), CONTROL_PLANE_IN_VPC (true/false) and
    OPERATOR_PASSABLE_ROLES (comma-separated role ARN patterns; unset: not known)."""
    import os

    env = os.environ if env is None else env
    cidrs = tuple(c.strip() for c in env.get("CONTROL_PLANE_SOURCE_CIDRS", "").split(",") if c.strip())
    roles = env.get(PASSABLE_ROLES_ENV)
    return PreflightOptions(
        source_cidrs=cidrs,
        in_vpc=env.get("CONTROL_PLANE_IN_VPC", "").lower() in ("1", "true", "yes"),
        passable_roles=None if roles is None else tuple(r.strip() for r in roles.split(",") if r.strip()),
    )
