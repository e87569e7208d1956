"""Preflight: its task input, the facts it gathers about a cluster, and the report it returns.

The service gathers everything it needs through the adapters into ``ClusterFacts`` first and then
runs pure checks over it, so most checks are tested with plain data. A fact the APIs could not
supply is ``None`` with a reason in ``ClusterFacts.gaps``: a check over it is ``skipped`` with that
reason, never passed. When the reason is that AWS could not be called at all (no or refused
credentials, access denied, no network, throttling after the retries), the gap is also in
``ClusterFacts.unchecked`` and the check is ``unchecked``: it could not run, which blocks an install
as a failed error does, where ``skipped`` means the APIs cannot tell and does not.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_pascal

from hyperpod_control.models.install import ROLE_ARN_PATTERN
from hyperpod_control.models.records import OperatorMode
from hyperpod_control.models.tasks import TaskModel


class Severity(StrEnum):
    ERROR = "error"
    WARNING = "warning"


class CheckStatus(StrEnum):
    PASSED = "passed"
    FAILED = "failed"
    SKIPPED = "skipped"
    #: AWS could not be called (``CheckResult.cause`` says why): not a finding, and not "ready".
    UNCHECKED = "unchecked"


class UncheckedCause(StrEnum):
    """Why a check could not run; each has its own exit code in ``hpctl`` (README, hpctl)."""

    NO_CREDENTIALS = "no-credentials"
    EXPIRED_CREDENTIALS = "expired-credentials"
    ACCESS_DENIED = "access-denied"
    UNREACHABLE = "unreachable"
    THROTTLED = "throttled"


#: What each cause is, in a summary line ("3 could not run: access denied").
CAUSE_TEXT = {
    UncheckedCause.NO_CREDENTIALS: "no AWS credentials",
    UncheckedCause.EXPIRED_CREDENTIALS: "AWS refused the credentials (expired or invalid)",
    UncheckedCause.ACCESS_DENIED: "access denied",
    UncheckedCause.UNREACHABLE: "AWS did not answer (network, endpoint or a server error)",
    UncheckedCause.THROTTLED: "AWS throttled the calls after the retries",
}
#: The fix of an unchecked check, by cause.
CAUSE_REMEDY = {
    UncheckedCause.NO_CREDENTIALS: "give the caller AWS credentials (environment, profile, SSO login or "
    "an instance role), then run preflight again.",
    UncheckedCause.EXPIRED_CREDENTIALS: "renew the credentials (aws sso login, a new session token) or "
    "use a valid access key, then run preflight again.",
    UncheckedCause.ACCESS_DENIED: "grant the principal the action AWS names in the message, then run "
    "preflight again.",
    UncheckedCause.UNREACHABLE: "check the network, proxy, Region and AWS_ENDPOINT_URL, then run preflight "
    "again.",
    UncheckedCause.THROTTLED: "run preflight again when the account's API rate allows.",
}


class CheckResult(TaskModel):
    id: str = Field(description="Stable check id, e.g. 'access.endpoint'.")
    severity: Severity
    status: CheckStatus
    resource: str = Field(default="", description="The resource the message is about (name, id or ARN).")
    message: str
    remedy: str = ""
    cause: UncheckedCause | None = Field(
        default=None, description="Why an unchecked check could not run (None for the other statuses)."
    )

    @property
    def blocking(self) -> bool:
        """Stops an install: a failed error, or a check that could not run (whatever its severity:
        what it would have found is unknown)."""
        return (
            self.status is CheckStatus.FAILED and self.severity is Severity.ERROR
        ) or self.status is CheckStatus.UNCHECKED


class PreflightInput(TaskModel):
    """Input of the Preflight task (install_operator's first step) and of ``hpctl preflight``."""

    cluster_name: str = Field(
        min_length=1,
        max_length=63,
        pattern=r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$",
        description="The HyperPod cluster's name (not the EKS cluster's).",
    )
    operator: OperatorMode = Field(
        default=OperatorMode.ADDON, description="Which training operator the cluster will run."
    )
    addon_version: str | None = Field(
        default=None,
        pattern=r"^v\d+\.\d+\.\d+(-eksbuild\.\d+)?$",
        description="Training-operator add-on version, e.g. v1.2.1-eksbuild.1 (default: the latest "
        "compatible one).",
    )
    cluster_config: dict[str, Any] | None = Field(
        default=None,
        description="A SageMaker CreateCluster request for a planned cluster (checked before it exists).",
    )
    role_arn: str | None = Field(
        default=None,
        pattern=ROLE_ARN_PATTERN,
        description="The install's roleArn, the user's own operator role (checked against the roles the "
        "stack may pass).",
    )
    kubernetes_access: bool = Field(
        default=False,
        description="True once the install's EnsureAccess step has given the control plane its access "
        "entries: a 401 from the cluster is then EKS still applying them (retried), not a missing entry.",
    )


class PreflightReport(TaskModel):
    """The Preflight task's output: what part B's state machine and ``hpctl`` read."""

    cluster_name: str
    operator: OperatorMode
    planned: bool = False
    cluster_arn: str | None = None
    eks_cluster_name: str | None = None
    kubernetes_version: str | None = None
    results: list[CheckResult] = Field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(r.blocking for r in self.results)

    @property
    def failures(self) -> list[CheckResult]:
        """The failed error checks (the unchecked ones are in ``unchecked``)."""
        return [r for r in self.results if r.blocking and r.status is CheckStatus.FAILED]

    @property
    def unchecked(self) -> list[CheckResult]:
        return [r for r in self.results if r.status is CheckStatus.UNCHECKED]

    def dump(self) -> dict:
        # exclude_none would drop clusterArn etc.; the contract lists them, so keep them as null.
        return {"ok": self.ok, **self.model_dump(mode="json", by_alias=True)}


class PreflightOptions(BaseModel):
    """How the control plane reaches clusters: set by the deployment (environment), not per request."""

    model_config = ConfigDict(frozen=True)

    #: CIDRs the control plane's calls to the EKS API come from (a NAT gateway's address, say).
    #: Empty: unknown (Lambdas outside a VPC use AWS's shared public ranges), so only 0.0.0.0/0
    #: is known to admit them.
    source_cidrs: tuple[str, ...] = ()
    #: The Lambdas run inside the cluster's VPC (they can use a private-only endpoint).
    in_vpc: bool = False
    #: Role ARN patterns the stack's iam:PassRole statement allows (its own role path and the
    #: OperatorRoleArns parameter); None: not known here (hpctl preflight from a workstation).
    passable_roles: tuple[str, ...] | None = None


# --- the planned cluster ----------------------------------------------------------------------------


class _Pascal(BaseModel):
    """SageMaker's PascalCase names, as a CreateCluster request spells them."""

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
    """A planned cluster: the CreateCluster request in ``PreflightInput.cluster_config``, read for
    what preflight checks (other fields are ignored)."""

    cluster_name: str | None = None
    instance_groups: list[PlannedGroup] = Field(min_length=1)
    vpc_config: PlannedVpcConfig | None = None
    orchestrator: dict[str, Any] | None = None
    tags: list[dict[str, str]] = Field(default_factory=list)


# --- facts --------------------------------------------------------------------------------------


class Facts(BaseModel):
    model_config = ConfigDict(extra="ignore")


class InstanceGroupFact(Facts):
    name: str
    instance_type: str
    count: int = 0
    subnets: list[str] = Field(default_factory=list)
    security_group_ids: list[str] = Field(default_factory=list)
    #: The group's own OverrideVpcConfig as given (None: it inherits the cluster's VpcConfig).
    override_subnets: list[str] | None = None
    override_security_group_ids: list[str] | None = None
    image_version_status: str | None = None
    fsx_dns_names: list[str] = Field(default_factory=list)


class NodeFact(Facts):
    instance_id: str
    instance_group: str = ""
    image_version_status: str | None = None
    current_image: str | None = None


class EksFact(Facts):
    name: str
    arn: str = ""
    status: str = ""
    version: str = ""
    endpoint: str = ""
    certificate_authority: str = ""
    endpoint_public_access: bool = True
    endpoint_private_access: bool = False
    public_access_cidrs: list[str] = Field(default_factory=list)
    authentication_mode: str | None = None
    cluster_security_group_id: str | None = None
    security_group_ids: list[str] = Field(default_factory=list)
    subnet_ids: list[str] = Field(default_factory=list)
    vpc_id: str | None = None
    ip_family: str = "ipv4"


class AddonFact(Facts):
    name: str
    version: str = ""
    status: str = ""
    issues: list[str] = Field(default_factory=list)


class AddonVersionFact(Facts):
    version: str
    cluster_versions: list[str] = Field(default_factory=list)
    default_for: list[str] = Field(default_factory=list)


class SubnetFact(Facts):
    subnet_id: str
    vpc_id: str = ""
    availability_zone: str = ""
    cidr_block: str = ""
    available_ips: int = 0
    ipv6_cidr_blocks: list[str] = Field(default_factory=list)
    #: Where 0.0.0.0/0 leads from its route table: "igw", "nat", another target id, or None.
    default_route: str | None = None
    route_table_id: str | None = None


class RuleFact(Facts):
    """One security-group rule, flattened: protocol "-1" is all traffic."""

    protocol: str = "-1"
    from_port: int | None = None
    to_port: int | None = None
    cidrs: list[str] = Field(default_factory=list)
    group_ids: list[str] = Field(default_factory=list)
    prefix_list_ids: list[str] = Field(default_factory=list)

    def covers_port(self, port: int, protocol: str = "tcp") -> bool:
        if self.protocol in ("-1", "all"):
            return True
        if self.protocol not in (protocol, {"tcp": "6", "udp": "17"}.get(protocol)):
            return False
        if self.from_port is None or self.to_port is None or self.from_port == -1:
            return True
        return self.from_port <= port <= self.to_port


class SecurityGroupFact(Facts):
    group_id: str
    vpc_id: str = ""
    ingress: list[RuleFact] = Field(default_factory=list)
    egress: list[RuleFact] = Field(default_factory=list)


class VpcEndpointFact(Facts):
    endpoint_id: str
    service_name: str
    type: str = "Interface"
    state: str = ""
    vpc_id: str = ""
    subnet_ids: list[str] = Field(default_factory=list)
    security_group_ids: list[str] = Field(default_factory=list)
    route_table_ids: list[str] = Field(default_factory=list)


class QuotaFact(Facts):
    name: str
    code: str | None = None
    value: float | None = None
    #: Instances (or interfaces) counted against it now, this cluster included when it exists.
    in_use: int | None = None


class FsxFact(Facts):
    file_system_id: str
    region: str | None = None
    subnet_ids: list[str] = Field(default_factory=list)
    availability_zones: list[str] = Field(default_factory=list)
    #: Where the reference came from (an instance group's storage config, a PersistentVolume).
    referenced_by: str = ""


class DeploymentFact(Facts):
    namespace: str
    name: str
    replicas: int = 0
    available: int = 0
    available_condition: bool = False

    @property
    def ready(self) -> bool:
        return self.available_condition and self.available >= max(self.replicas, 1)


class KubeFacts(Facts):
    """What the cluster's Kubernetes API told us (as the control plane's own principal)."""

    principal: str = ""
    crds: list[str] = Field(default_factory=list)
    cert_manager: list[DeploymentFact] = Field(default_factory=list)
    pod_identity_ready: int | None = None
    pod_identity_desired: int | None = None
    #: Kueue's controller-manager configuration (parsed YAML), None when no Kueue config was found.
    kueue_config: dict[str, Any] | None = None
    kueue_config_source: str = ""
    fsx_volume_handles: dict[str, str] = Field(default_factory=dict)


class ClusterFacts(Facts):
    """Everything preflight knows about one HyperPod cluster (existing or planned)."""

    cluster_name: str
    region: str
    planned: bool = False
    operator: OperatorMode = OperatorMode.ADDON
    addon_version: str | None = None
    #: The user's own operator role (the install's roleArn); None: the workflow creates one.
    role_arn: str | None = None
    #: The HyperPod cluster as DescribeCluster reports it (None: planned and not created yet).
    exists: bool = False
    cluster_arn: str | None = None
    status: str | None = None
    failure_message: str | None = None
    orchestrator: str | None = None  # "eks", "slurm" or None
    eks_cluster_arn: str | None = None
    tags: dict[str, str] | None = None
    cluster_subnets: list[str] = Field(default_factory=list)
    cluster_security_group_ids: list[str] = Field(default_factory=list)
    has_cluster_vpc_config: bool = False
    instance_groups: list[InstanceGroupFact] = Field(default_factory=list)
    nodes: list[NodeFact] | None = None
    eks: EksFact | None = None
    addons: dict[str, AddonFact] | None = None
    operator_versions: list[AddonVersionFact] | None = None
    subnets: dict[str, SubnetFact] | None = None
    missing_subnets: list[str] = Field(default_factory=list)
    security_groups: dict[str, SecurityGroupFact] | None = None
    missing_security_groups: list[str] = Field(default_factory=list)
    vpc_endpoints: list[VpcEndpointFact] | None = None
    eni_quota: QuotaFact | None = None
    usage_quotas: dict[str, QuotaFact] | None = None
    fsx: list[FsxFact] | None = None
    kube: KubeFacts | None = None
    #: fact name -> why it could not be gathered ("kube": "401 Unauthorized ...").
    gaps: dict[str, str] = Field(default_factory=dict)
    #: The gaps AWS could not be called for, fact name -> why (their checks are unchecked, not skipped).
    unchecked: dict[str, UncheckedCause] = Field(default_factory=dict)

    def gap(self, *names: str) -> str:
        for name in names:
            if name in self.gaps:
                return self.gaps[name]
        return "the APIs did not report it"
