"""Checks of the cluster's network and placement (AWS's "Prerequisites for using SageMaker
HyperPod"): the interface and S3 endpoints that subnets without an internet route need,
OverrideVpcConfig's limits, EFA's security groups, one Region for every resource, FSx in the nodes'
Availability Zone, and IPv6 subnets on an IPv4 cluster.
"""

from __future__ import annotations

from hyperpod_control.models.preflight import CheckResult, ClusterFacts, PreflightOptions, Severity
from hyperpod_control.services.preflight.access_checks import _admits
from hyperpod_control.services.preflight.results import _Check, _eks_name, _node_groups, _node_subnets
from hyperpod_control.services.preflight.tables import EFA_TYPES, OPERATOR_ENDPOINTS


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


def _vpcs(facts: ClusterFacts) -> str:
    """The endpoint checks' resource: the VPCs of the subnets found, else the cluster."""
    return (
        ", ".join(dict.fromkeys(s.vpc_id for s in (facts.subnets or {}).values() if s.vpc_id))
        or facts.cluster_name
    )


def check_vpc_endpoints(facts: ClusterFacts, options: PreflightOptions) -> CheckResult:
    cid, sev = "network.vpc-endpoints", Severity.ERROR
    c = _Check(facts, cid, sev)
    resource = _vpcs(facts)
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
    resource = _vpcs(facts)
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
