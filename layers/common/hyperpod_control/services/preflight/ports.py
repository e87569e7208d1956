"""The seam between preflight and the clients it reads through.

Each Protocol names the calls preflight makes of one client, and no more: the production adapters
(``hyperpod_control.adapters``) satisfy them, and a test passes any object that answers those
calls. ``PreflightAdapters`` bundles them. ``PreflightAdapters.default`` builds the production
bundle, importing the adapters when called so that importing preflight builds no client (README,
Performance); ``options_from_env`` reads the deployment's ``PreflightOptions`` from the
environment template.yaml sets.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from hyperpod_control.models.install import PASSABLE_ROLES_ENV
from hyperpod_control.models.preflight import PreflightOptions
from hyperpod_control.settings import any_aws_region, environment


class SageMakerReads(Protocol):
    """The HyperPod cluster, its tags and nodes, and the account's other clusters (usage quota)."""

    def describe_cluster(self, name: str) -> dict[str, Any]: ...

    def list_tags(self, arn: str) -> dict[str, str]: ...

    def list_cluster_nodes(self, name: str) -> list[dict[str, Any]]: ...

    def list_cluster_names(self) -> list[str]: ...


class EksReads(Protocol):
    """The EKS cluster, its add-ons, the operator add-on's versions and an access entry."""

    def describe_cluster(self, name: str) -> dict[str, Any]: ...

    def list_addons(self, cluster: str) -> list[str]: ...

    def describe_addon(self, cluster: str, addon: str) -> dict[str, Any] | None: ...

    def addon_versions(self, addon: str, kubernetes_version: str | None) -> list[dict[str, Any]]: ...

    def describe_access_entry(self, cluster: str, principal_arn: str) -> dict[str, Any] | None: ...


class Ec2Reads(Protocol):
    """The network: subnets and security groups by id (found, missing ids), a VPC's route tables
    and endpoints, and the Region's network interfaces (the ENI quota's usage)."""

    def subnets(self, ids: list[str]) -> tuple[list[dict[str, Any]], list[str]]: ...

    def security_groups(self, ids: list[str]) -> tuple[list[dict[str, Any]], list[str]]: ...

    def route_tables(self, vpc_id: str) -> list[dict[str, Any]]: ...

    def vpc_endpoints(self, vpc_id: str) -> list[dict[str, Any]]: ...

    def count_network_interfaces(self) -> int: ...


class QuotaReads(Protocol):
    """Service Quotas: one quota by its code, or by its name where the code is not published."""

    def get(self, service_code: str, quota_code: str) -> dict[str, Any]: ...

    def find_by_name(self, service_code: str, name: str) -> dict[str, Any] | None: ...


class FsxReads(Protocol):
    """The FSx for Lustre file systems the cluster references (their subnets give their zones)."""

    def file_systems(self, ids: list[str]) -> list[dict[str, Any]]: ...


class KubeReads(Protocol):
    """One cluster's Kubernetes API, read as the control plane's principal (plain dicts)."""

    def crd_names(self) -> list[str]: ...

    def deployments(self, namespace: str | None = None, label_selector: str = "") -> list[dict[str, Any]]: ...

    def daemon_set(self, namespace: str, name: str) -> dict[str, Any] | None: ...

    def config_maps(self, namespace: str) -> list[dict[str, Any]]: ...

    def persistent_volumes(self) -> list[dict[str, Any]]: ...


#: (EKS DescribeCluster ``cluster``, region) -> the reader of that cluster's Kubernetes API.
KubeFactory = Callable[[dict[str, Any], str], KubeReads]


@dataclass
class PreflightAdapters:
    """The adapters preflight reads through; tests replace any of them."""

    sagemaker: SageMakerReads
    eks: EksReads
    ec2: Ec2Reads
    quotas: QuotaReads
    fsx: FsxReads | None = None
    #: Builds the reader of one cluster's Kubernetes API; None: Kubernetes is not read.
    kube_factory: KubeFactory | None = None
    region: str = "us-east-1"
    #: The IAM principal this preflight runs as (access entries name it); None: not known.
    principal: Callable[[], str] | None = None
    #: True (the Lambda): a throttled or unanswered read propagates, the state machine's Retry runs
    #: the step again. False (hpctl): botocore's retries were the last, the read is unchecked.
    retried_outside: bool = True

    @classmethod
    def default(cls, region: str | None = None) -> PreflightAdapters:
        from hyperpod_control.adapters.ec2 import Ec2Adapter, FsxAdapter
        from hyperpod_control.adapters.eks import EksAdapter
        from hyperpod_control.adapters.kube import KubeAdapter
        from hyperpod_control.adapters.quotas import QuotasAdapter
        from hyperpod_control.adapters.sagemaker import SageMakerAdapter

        # Not Settings.region: Settings needs TABLE_NAME, which hpctl's environment does not set.
        region = region or any_aws_region() or "us-east-1"
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


def options_from_env(env: dict[str, str] | None = None) -> PreflightOptions:
    """CONTROL_PLANE_SOURCE_CIDRS (comma-separated), CONTROL_PLANE_IN_VPC (true/false) and
    OPERATOR_PASSABLE_ROLES (comma-separated role ARN patterns; unset: not known)."""
    env = environment(env)
    cidrs = tuple(c.strip() for c in env.get("CONTROL_PLANE_SOURCE_CIDRS", "").split(",") if c.strip())
    roles = env.get(PASSABLE_ROLES_ENV)
    return PreflightOptions(
        source_cidrs=cidrs,
        in_vpc=env.get("CONTROL_PLANE_IN_VPC", "").lower() in ("1", "true", "yes"),
        passable_roles=None if roles is None else tuple(r.strip() for r in roles.split(",") if r.strip()),
    )
