"""Checks that the control plane may act on the cluster and reach it: the roleArn it may pass to
EKS Pod Identity, the EKS endpoint that admits its calls, access entries, its read of the
Kubernetes API, and (serverless operator) the API server's path to the agents' port. ``_admits``
and ``_sends`` judge a path through security groups; the VPC-endpoint check uses them too.
"""

from __future__ import annotations

import ipaddress

from hyperpod_control.models.agent import AGENT_PORT
from hyperpod_control.models.install import OPERATOR_ROLE_ARNS_PARAMETER, PASSABLE_ROLES_ENV, passable_by
from hyperpod_control.models.preflight import (
    CheckResult,
    ClusterFacts,
    PreflightOptions,
    SecurityGroupFact,
    Severity,
)
from hyperpod_control.models.records import OperatorMode
from hyperpod_control.services.preflight.results import _Check, _eks_name


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
    groups: dict[str, SecurityGroupFact],
    target_ids: list[str],
    source_ids: list[str],
    source_cidrs: list[str],
    port: int,
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
    groups: dict[str, SecurityGroupFact],
    source_ids: list[str],
    target_ids: list[str],
    target_cidrs: list[str],
    port: int,
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
