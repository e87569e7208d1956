"""Gathering: every read preflight makes, through the adapters, into one ``ClusterFacts``.

A read that fails for a reason retrying will not cure (access denied, not found, an unreachable
Kubernetes API) leaves its fact ``None`` with the reason in ``facts.gaps``, while throttling and
service errors propagate so the state machine's Retry handles them (``hpctl``, which has no such
Retry after botocore's, records them as gaps too: ``PreflightAdapters.retried_outside``). A read
that failed because AWS could not be called is in ``facts.unchecked`` as well (``unchecked_cause``):
its checks are unchecked, not skipped.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from hyperpod_control.exceptions import (
    AccessDeniedError,
    ControlPlaneError,
    CredentialsExpiredError,
    CredentialsMissingError,
    DependencyUnavailableError,
    KubernetesAccessPendingError,
    PermanentError,
    ResourceNotFoundError,
    ThrottledError,
)
from hyperpod_control.models.install import ADDON_NAME
from hyperpod_control.models.preflight import (
    ClusterFacts,
    FsxFact,
    KubeFacts,
    NodeFact,
    PreflightInput,
    QuotaFact,
    UncheckedCause,
)
from hyperpod_control.models.records import OperatorMode
from hyperpod_control.services.preflight.facts import (
    addon_fact,
    addon_version_facts,
    deployment_fact,
    eks_fact,
    facts_from_config,
    facts_from_description,
    kueue_config_from,
    parse_cluster_config,
    security_group_fact,
    subnet_facts,
    vpc_endpoint_fact,
)
from hyperpod_control.services.preflight.ports import EksReads, PreflightAdapters, SageMakerReads
from hyperpod_control.services.preflight.tables import ENI_QUOTA_CODE, KUEUE_NAMESPACE, POD_IDENTITY_AGENT

#: An FSx for Lustre DNS name in an instance group's storage config: (file system id, Region).
_FSX_DNS = re.compile(r"^(fs-[0-9a-f]+)\.fsx\.([a-z0-9-]+)\.amazonaws\.com", re.IGNORECASE)


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


def _addons(eks: EksReads, cluster: str) -> dict[str, dict[str, Any]]:
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


def _instances_in_use(sagemaker: SageMakerReads, types: list[str]) -> dict[str, int]:
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
