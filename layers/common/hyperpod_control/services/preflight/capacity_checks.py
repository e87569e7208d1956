"""Checks of room: the SageMaker cluster-usage quotas, the Region's network-interface quota and the
subnets' free addresses. The last two stay errors on an existing cluster (``REPLACEMENT_HEADROOM``):
they decide whether a replacement node, the control plane's fault remediation, can start.
"""

from __future__ import annotations

import ipaddress

from hyperpod_control.models.preflight import (
    CheckResult,
    CheckStatus,
    ClusterFacts,
    InstanceGroupFact,
    PreflightOptions,
    Severity,
)
from hyperpod_control.services.preflight.results import _Check, _node_subnets, _result
from hyperpod_control.services.preflight.tables import (
    ENI_QUOTA_CODE,
    addresses_per_instance,
    interfaces_per_instance,
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
