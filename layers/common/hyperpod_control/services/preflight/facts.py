"""Preflight's facts from API responses: pure functions from what SageMaker, EKS, EC2 and
Kubernetes return (plain dicts), or from a planned CreateCluster request, to the ``ClusterFacts``
models the checks read. Nothing here calls an API, so each is tested with plain data.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from hyperpod_control.exceptions import InvalidInputError
from hyperpod_control.models.preflight import (
    AddonFact,
    AddonVersionFact,
    ClusterFacts,
    DeploymentFact,
    EksFact,
    InstanceGroupFact,
    PlannedCluster,
    PlannedVpcConfig,
    RuleFact,
    SecurityGroupFact,
    SubnetFact,
    VpcEndpointFact,
)
from hyperpod_control.models.validation import describe_errors
from hyperpod_control.services.preflight.tables import KUEUE_CONFIG_KEY


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
