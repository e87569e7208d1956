"""Preflight's pure checks over plain ``ClusterFacts``: each passes on a healthy cluster, fails on
the broken fact with its resource and remedy, and skips (never passes) when the fact is unknown."""

from __future__ import annotations

import pytest

from hyperpod_control.exceptions import InvalidInputError
from hyperpod_control.models.preflight import (
    AddonFact,
    AddonVersionFact,
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
    VpcEndpointFact,
)
from hyperpod_control.models.records import OperatorMode
from hyperpod_control.services import preflight as pf
from hyperpod_control.services.preflight.results import _Check

pytestmark = pytest.mark.unit

REGION = "us-west-2"
SG = "sg-nodes"
EKS_ARN = f"arn:aws:eks:{REGION}:123456789012:cluster/eks-a"
ALL_SELF = RuleFact(protocol="-1", group_ids=[SG])


def healthy(**changes) -> ClusterFacts:
    """A cluster every check passes on (serverless-relevant facts included)."""
    facts = ClusterFacts(
        cluster_name="hp-a",
        region=REGION,
        exists=True,
        cluster_arn=f"arn:aws:sagemaker:{REGION}:123456789012:cluster/abc",
        status="InService",
        orchestrator="eks",
        eks_cluster_arn=EKS_ARN,
        tags={"SageMaker": "true"},
        cluster_subnets=["subnet-a", "subnet-b"],
        cluster_security_group_ids=[SG],
        has_cluster_vpc_config=True,
        instance_groups=[
            InstanceGroupFact(
                name="workers",
                instance_type="ml.g5.8xlarge",
                count=4,
                subnets=["subnet-a", "subnet-b"],
                security_group_ids=[SG],
                image_version_status="UpToDate",
            )
        ],
        nodes=[NodeFact(instance_id="i-1", instance_group="workers", image_version_status="UpToDate")],
        eks=EksFact(
            name="eks-a",
            arn=EKS_ARN,
            status="ACTIVE",
            version="1.31",
            endpoint="https://eks.example",
            public_access_cidrs=["0.0.0.0/0"],
            authentication_mode="API_AND_CONFIG_MAP",
            security_group_ids=[SG],
            subnet_ids=["subnet-a", "subnet-b"],
        ),
        addons={
            "eks-pod-identity-agent": AddonFact(
                name="eks-pod-identity-agent", version="v1.3.8", status="ACTIVE"
            ),
            "cert-manager": AddonFact(name="cert-manager", version="v1.17.2", status="ACTIVE"),
        },
        operator_versions=[
            AddonVersionFact(version="v1.1.0", cluster_versions=["1.28", "1.29", "1.30", "1.31"]),
            AddonVersionFact(
                version="v1.2.1-eksbuild.1", cluster_versions=["1.31", "1.32"], default_for=["1.31"]
            ),
        ],
        subnets={
            sid: SubnetFact(
                subnet_id=sid,
                vpc_id="vpc-1",
                availability_zone=zone,
                cidr_block=cidr,
                available_ips=4000,
                route_table_id="rtb-1",
            )
            for sid, zone, cidr in (
                ("subnet-a", "us-west-2a", "10.0.0.0/20"),
                ("subnet-b", "us-west-2b", "10.0.16.0/20"),
            )
        },
        security_groups={
            SG: SecurityGroupFact(group_id=SG, vpc_id="vpc-1", ingress=[ALL_SELF], egress=[ALL_SELF])
        },
        vpc_endpoints=[
            VpcEndpointFact(
                endpoint_id=f"vpce-{suffix}",
                service_name=f"com.amazonaws.{REGION}.{suffix}",
                type="Gateway" if suffix == "s3" else "Interface",
                state="available",
                vpc_id="vpc-1",
                security_group_ids=[] if suffix == "s3" else [SG],
                route_table_ids=["rtb-1"] if suffix == "s3" else [],
            )
            for suffix in ("sagemaker.api", "eks-auth", "s3")
        ],
        eni_quota=QuotaFact(name="Network interfaces per Region", code="L-DF5E4CA3", value=5000, in_use=20),
        usage_quotas={
            "ml.g5.8xlarge": QuotaFact(name="ml.g5.8xlarge for cluster usage", value=16, in_use=4),
        },
        fsx=[],
        kube=KubeFacts(
            crds=list(pf.CERT_MANAGER_CRDS),
            cert_manager=[
                DeploymentFact(
                    namespace="cert-manager", name=n, replicas=1, available=1, available_condition=True
                )
                for n in ("cert-manager", "cert-manager-cainjector", "cert-manager-webhook")
            ],
            pod_identity_ready=4,
            pod_identity_desired=4,
        ),
    )
    return facts.model_copy(update=changes)


def run(check, facts: ClusterFacts, **options):
    return check(facts, PreflightOptions(**options))


def assert_failed(result, *words: str, severity: Severity = Severity.ERROR) -> None:
    assert result.status is CheckStatus.FAILED, result
    assert result.severity is severity
    assert result.remedy, "a failure names its fix"
    for word in words:
        assert word in result.message, (word, result.message)


def assert_skipped(result, *words: str) -> None:
    assert result.status is CheckStatus.SKIPPED, result
    assert result.message.startswith("not checked: ")
    for word in words:
        assert word in result.message, (word, result.message)


# -- the whole set ------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", [OperatorMode.ADDON, OperatorMode.SERVERLESS])
def test_a_healthy_cluster_fails_nothing(mode):
    results = pf.run_checks(healthy(operator=mode))
    assert len(results) == len(pf.CHECKS)
    assert [r for r in results if r.status is CheckStatus.FAILED] == []
    passed = {r.id for r in results if r.status is CheckStatus.PASSED}
    assert {"hyperpod.cluster", "eks.cluster", "access.endpoint", "network.subnet-addresses"} <= passed
    assert ("network.pod-port" in passed) == (mode is OperatorMode.SERVERLESS)
    assert ("k8s.cert-manager" in passed) == (mode is OperatorMode.ADDON)


def test_report_ok_only_without_failed_errors_and_dump_has_the_contract_keys():
    facts = healthy(tags={})
    report = pf.report_for(facts, pf.run_checks(facts))
    assert report.ok  # the tag is a warning
    dumped = report.dump()
    assert dumped["ok"] is True
    assert {"clusterName", "clusterArn", "eksClusterName", "kubernetesVersion", "results"} <= set(dumped)
    assert dumped["eksClusterName"] == "eks-a" and dumped["kubernetesVersion"] == "1.31"
    assert {"id", "severity", "status", "resource", "message", "remedy"} <= set(dumped["results"][0])

    broken = healthy(eks=healthy().eks.model_copy(update={"authentication_mode": "CONFIG_MAP"}))
    bad = pf.report_for(broken, pf.run_checks(broken))
    assert not bad.ok
    text = pf.failure_message(bad)
    assert "[access.authentication-mode]" in text and "update-cluster-config" in text and EKS_ARN in text


# -- one check at a time --------------------------------------------------------------------------


def test_hyperpod_cluster():
    assert run(pf.check_hyperpod_cluster, healthy()).status is CheckStatus.PASSED
    assert_failed(run(pf.check_hyperpod_cluster, healthy(status="Creating")), "Creating", "not InService")
    assert_failed(run(pf.check_hyperpod_cluster, healthy(orchestrator="slurm")), "slurm", "not Amazon")
    missing = healthy(exists=False, gaps={"hyperpod": "x", "hyperpod.not-found": "x"})
    assert_failed(run(pf.check_hyperpod_cluster, missing), "does not exist")
    assert_skipped(
        run(pf.check_hyperpod_cluster, healthy(exists=False, gaps={"hyperpod": "AccessDenied"})), "Access"
    )
    planned = healthy(planned=True, exists=False)
    assert run(pf.check_hyperpod_cluster, planned).status is CheckStatus.PASSED
    assert_failed(run(pf.check_hyperpod_cluster, healthy(planned=True)), "already exists")
    assert_failed(
        run(pf.check_hyperpod_cluster, healthy(planned=True, exists=False, eks_cluster_arn=None)), "Eks"
    )


def test_eks_cluster():
    assert run(pf.check_eks_cluster, healthy()).status is CheckStatus.PASSED
    eks = healthy().eks
    assert_failed(
        run(pf.check_eks_cluster, healthy(eks=eks.model_copy(update={"status": "UPDATING"}))), "UPDATING"
    )
    gone = healthy(eks=None, gaps={"eks": "gone", "eks.not-found": "gone"})
    assert_failed(run(pf.check_eks_cluster, gone), "does not exist")
    assert_skipped(
        run(pf.check_eks_cluster, healthy(eks=None, gaps={"eks": "AccessDenied x"})), "AccessDenied"
    )


def test_addon_kubernetes_version():
    check = pf.check_addon_kubernetes_version
    ok = run(check, healthy())
    assert ok.status is CheckStatus.PASSED and "v1.2.1-eksbuild.1" in ok.message  # the default for 1.31
    assert run(check, healthy(addon_version="v1.1.0")).status is CheckStatus.PASSED
    assert_failed(run(check, healthy(addon_version="v9.9.9")), "does not exist", "v1.1.0")
    old = healthy().eks.model_copy(update={"version": "1.32"})
    assert_failed(run(check, healthy(eks=old, addon_version="v1.1.0")), "runs 1.32")
    new = healthy().eks.model_copy(update={"version": "1.35"})
    assert_failed(run(check, healthy(eks=new)), "no version", "1.35")
    assert_skipped(run(check, healthy(operator=OperatorMode.SERVERLESS)), "serverless")
    assert_skipped(run(check, healthy(operator_versions=None, gaps={"addon-versions": "denied"})), "denied")


def test_node_image():
    assert run(pf.check_node_image, healthy()).status is CheckStatus.PASSED
    stale = healthy(nodes=[NodeFact(instance_id="i-9", image_version_status="UpdateAvailable")])
    assert_failed(run(pf.check_node_image, stale), "i-9", severity=Severity.WARNING)
    assert "update-cluster-software" in run(pf.check_node_image, stale).remedy
    unknown = healthy(
        nodes=[NodeFact(instance_id="i-1")], instance_groups=[InstanceGroupFact(name="w", instance_type="x")]
    )
    assert_skipped(run(pf.check_node_image, unknown), "ImageVersionStatus")
    assert_skipped(run(pf.check_node_image, healthy(planned=True)), "planned")


def test_cert_manager():
    check = pf.check_cert_manager
    assert run(check, healthy()).status is CheckStatus.PASSED
    kube = healthy().kube
    no_crds = kube.model_copy(update={"crds": []})
    assert_failed(run(check, healthy(kube=no_crds)), "certificates.cert-manager.io missing")
    down = kube.model_copy(
        update={
            "cert_manager": [
                d.model_copy(update={"available": 0, "available_condition": False}) for d in kube.cert_manager
            ]
        }
    )
    assert_failed(run(check, healthy(kube=down)), "0/1 available")
    assert_failed(
        run(check, healthy(kube=kube.model_copy(update={"cert_manager": []}))), "no webhook Deployment"
    )
    # Kubernetes unreadable: the EKS add-on's ACTIVE status is evidence; without it, no verdict.
    assert run(check, healthy(kube=None, gaps={"kube": "401"})).status is CheckStatus.PASSED
    assert_skipped(run(check, healthy(kube=None, addons={}, gaps={"kube": "401 Unauthorized"})), "401")
    assert_skipped(run(check, healthy(operator=OperatorMode.SERVERLESS)), "add-on only")


def test_pod_identity_agent():
    check = pf.check_pod_identity_agent
    assert run(check, healthy()).status is CheckStatus.PASSED
    without = healthy(addons={"cert-manager": healthy().addons["cert-manager"]})
    result = run(check, without)
    assert_failed(result, "not installed")
    assert "create-addon" in result.remedy and "eks-pod-identity-agent" in result.remedy
    degraded = {
        "eks-pod-identity-agent": AddonFact(name="eks-pod-identity-agent", status="DEGRADED", issues=["X: y"])
    }
    assert_failed(run(check, healthy(addons=degraded)), "DEGRADED", "X: y")
    lagging = healthy().kube.model_copy(update={"pod_identity_ready": 1})
    assert_failed(run(check, healthy(kube=lagging)), "1/4")
    assert_skipped(run(check, healthy(addons=None, gaps={"addons": "denied"})), "denied")
    # serverless: the agents' fault pushes need it, polling does not: a warning, not an error
    serverless = run(check, healthy(operator=OperatorMode.SERVERLESS, addons=without.addons))
    assert_failed(serverless, "not installed", "push their faults", severity=Severity.WARNING)
    assert run(check, healthy(operator=OperatorMode.SERVERLESS)).status is CheckStatus.PASSED


def test_endpoint_access():
    check = pf.check_endpoint_access
    eks = healthy().eks
    assert run(check, healthy()).status is CheckStatus.PASSED
    private = healthy(
        eks=eks.model_copy(update={"endpoint_public_access": False, "endpoint_private_access": True})
    )
    assert_failed(run(check, private), "private-only")
    assert run(check, private, in_vpc=True).status is CheckStatus.PASSED
    narrow = healthy(eks=eks.model_copy(update={"public_access_cidrs": ["203.0.113.0/24"]}))
    assert_failed(run(check, narrow), "203.0.113.0/24")
    assert run(check, narrow, source_cidrs=("203.0.113.7/32",)).status is CheckStatus.PASSED
    assert_failed(run(check, narrow, source_cidrs=("198.51.100.1/32",)), "198.51.100.1/32")
    assert_skipped(run(check, healthy(eks=None, gaps={"eks": "denied"})), "denied")


def test_a_private_only_endpoint_names_the_stacks_vpc_parameters_as_the_fix():
    eks = healthy().eks.model_copy(update={"endpoint_public_access": False, "endpoint_private_access": True})
    result = run(pf.check_endpoint_access, healthy(eks=eks))
    assert "VpcSubnetIds" in result.remedy and "VpcSecurityGroupIds" in result.remedy


OWN_ROLES = "arn:aws:iam::123456789012:role/hyperpod-control-plane/*"
USER_ROLE = "arn:aws:iam::123456789012:role/my-operator-role"


def test_pass_role_refuses_a_role_the_stack_may_not_pass_naming_the_parameter():
    check = pf.check_pass_role
    result = run(check, healthy(role_arn=USER_ROLE), passable_roles=(OWN_ROLES,))
    assert_failed(result, USER_ROLE, OWN_ROLES, "Pod Identity")
    assert result.resource == USER_ROLE
    assert f"OperatorRoleArns={USER_ROLE}" in result.remedy and "leave roleArn out" in result.remedy
    # The failure blocks the install: Preflight's report is not ok.
    assert not pf.report_for(healthy(), [result]).ok


def test_pass_role_admits_the_roles_the_parameter_names():
    check = pf.check_pass_role
    assert run(check, healthy(role_arn=USER_ROLE), passable_roles=(OWN_ROLES, USER_ROLE)).status is (
        CheckStatus.PASSED
    )
    wildcard = "arn:aws:iam::123456789012:role/my-*"
    assert USER_ROLE in run(check, healthy(role_arn=USER_ROLE), passable_roles=(wildcard,)).message
    own = "arn:aws:iam::123456789012:role/hyperpod-control-plane/hp-operator-c1"
    assert run(check, healthy(role_arn=own), passable_roles=(OWN_ROLES,)).status is CheckStatus.PASSED


def test_pass_role_skips_without_a_role_for_serverless_and_where_the_stack_is_unknown():
    check = pf.check_pass_role
    assert_skipped(run(check, healthy(), passable_roles=(OWN_ROLES,)), "no roleArn")
    serverless = healthy(role_arn=USER_ROLE, operator=OperatorMode.SERVERLESS)
    assert_skipped(run(check, serverless, passable_roles=(OWN_ROLES,)), "serverless")
    assert_skipped(run(check, healthy(role_arn=USER_ROLE)), "OPERATOR_PASSABLE_ROLES")


def test_options_from_env_read_the_passable_roles_and_the_vpc_placement():
    options = pf.options_from_env(
        {"OPERATOR_PASSABLE_ROLES": f"{OWN_ROLES}, {USER_ROLE}", "CONTROL_PLANE_IN_VPC": "true"}
    )
    assert options.passable_roles == (OWN_ROLES, USER_ROLE) and options.in_vpc
    unset = pf.options_from_env({})
    assert unset.passable_roles is None and not unset.in_vpc


def test_preflight_input_takes_the_installs_role_arn_and_refuses_a_malformed_one():
    request = PreflightInput.model_validate({"clusterName": "hp-a", "roleArn": USER_ROLE})
    assert request.role_arn == USER_ROLE
    with pytest.raises(ValueError, match=r"role_arn|roleArn"):
        PreflightInput.model_validate({"clusterName": "hp-a", "roleArn": "my-operator-role"})


def test_authentication_mode():
    check = pf.check_authentication_mode
    eks = healthy().eks
    assert run(check, healthy()).status is CheckStatus.PASSED
    assert (
        run(check, healthy(eks=eks.model_copy(update={"authentication_mode": "API"}))).status
        is CheckStatus.PASSED
    )
    assert_failed(
        run(check, healthy(eks=eks.model_copy(update={"authentication_mode": "CONFIG_MAP"}))), "CONFIG_MAP"
    )
    assert_skipped(
        run(check, healthy(eks=eks.model_copy(update={"authentication_mode": None}))), "accessConfig"
    )


def test_kubernetes_access():
    check = pf.check_kubernetes_access
    assert run(check, healthy()).status is CheckStatus.PASSED
    denied = healthy(kube=None, gaps={"kube": "refused (401 Unauthorized).", "kube.kind": "unauthorized"})
    result = run(check, denied)
    assert_failed(result, "401")
    assert "create-access-entry" in result.remedy
    down = healthy(kube=None, gaps={"kube": "connection refused", "kube.kind": "unreachable"})
    assert "access.endpoint" in run(check, down).remedy
    assert_skipped(run(check, healthy(kube=None)), "no Kubernetes reader")


def test_pod_port():
    check = pf.check_pod_port
    serverless = {"operator": OperatorMode.SERVERLESS}
    assert run(check, healthy(**serverless)).status is CheckStatus.PASSED
    assert_skipped(run(check, healthy()), "serverless operator")
    closed = {SG: SecurityGroupFact(group_id=SG, ingress=[], egress=[ALL_SELF])}
    assert_failed(run(check, healthy(security_groups=closed, **serverless)), "8080")
    tcp_other = {
        SG: SecurityGroupFact(
            group_id=SG,
            ingress=[RuleFact(protocol="tcp", from_port=443, to_port=443, group_ids=[SG])],
            egress=[ALL_SELF],
        )
    }
    assert_failed(run(check, healthy(security_groups=tcp_other, **serverless)), "8080")
    by_cidr = {
        SG: SecurityGroupFact(
            group_id=SG,
            ingress=[RuleFact(protocol="tcp", from_port=8000, to_port=9000, cidrs=["10.0.0.0/16"])],
            egress=[RuleFact(protocol="-1", cidrs=["0.0.0.0/0"])],
        )
    }
    assert run(check, healthy(security_groups=by_cidr, **serverless)).status is CheckStatus.PASSED
    assert_skipped(
        run(check, healthy(security_groups=None, gaps={"security-groups": "denied"}, **serverless)), "denied"
    )


def test_vpc_endpoints():
    check = pf.check_vpc_endpoints
    assert run(check, healthy()).status is CheckStatus.PASSED
    result = run(check, healthy(vpc_endpoints=[]))
    assert_failed(result, "sagemaker.api", "eks-auth")
    assert "create-vpc-endpoint" in result.remedy
    only_sm = [e for e in healthy().vpc_endpoints if "eks-auth" not in e.service_name]
    failed = run(check, healthy(vpc_endpoints=only_sm))
    assert_failed(failed, "eks-auth")
    assert "sagemaker.api" not in failed.message
    closed = {SG: SecurityGroupFact(group_id=SG, ingress=[], egress=[ALL_SELF])}
    assert_failed(run(check, healthy(security_groups=closed)), "HTTPS")
    nat = {k: v.model_copy(update={"default_route": "nat"}) for k, v in healthy().subnets.items()}
    assert run(check, healthy(subnets=nat, vpc_endpoints=[])).status is CheckStatus.PASSED
    tgw = {k: v.model_copy(update={"default_route": "tgw-1"}) for k, v in healthy().subnets.items()}
    assert_skipped(run(check, healthy(subnets=tgw, vpc_endpoints=[])), "tgw-1")
    assert_skipped(run(check, healthy(vpc_endpoints=None, gaps={"vpc-endpoints": "denied"})), "denied")


def test_s3_endpoint_is_a_second_seed_check():
    check = pf.check_s3_endpoint
    assert run(check, healthy()).status is CheckStatus.PASSED
    no_s3 = [e for e in healthy().vpc_endpoints if not e.service_name.endswith(".s3")]
    assert_failed(run(check, healthy(vpc_endpoints=no_s3)), "S3", severity=Severity.WARNING)
    assert_failed(run(check, healthy(vpc_endpoints=no_s3, planned=True)), "S3", severity=Severity.ERROR)
    other_table = [e.model_copy(update={"route_table_ids": ["rtb-other"]}) for e in healthy().vpc_endpoints]
    assert_failed(run(check, healthy(vpc_endpoints=other_table)), "subnet-a", severity=Severity.WARNING)


def test_sagemaker_tag():
    check = pf.check_sagemaker_tag
    assert run(check, healthy()).status is CheckStatus.PASSED
    result = run(check, healthy(tags={"team": "ml"}))
    assert_failed(result, "SageMaker: true", severity=Severity.WARNING)
    assert "add-tags" in result.remedy
    assert "Tags" in run(check, healthy(tags={}, planned=True)).remedy
    assert_skipped(run(check, healthy(tags=None, gaps={"tags": "denied"})), "denied")


def test_cluster_usage_quota():
    check = pf.check_cluster_usage_quota
    assert run(check, healthy()).status is CheckStatus.PASSED
    low = {"ml.g5.8xlarge": QuotaFact(name="ml.g5.8xlarge for cluster usage", value=2, in_use=4)}
    assert_failed(run(check, healthy(usage_quotas=low)), "is 2, 4 in use", severity=Severity.WARNING)
    # planned: the request comes on top of what other clusters use
    tight = {"ml.g5.8xlarge": QuotaFact(name="ml.g5.8xlarge for cluster usage", value=6, in_use=3)}
    assert_failed(run(check, healthy(usage_quotas=tight, planned=True)), "7 needed", severity=Severity.ERROR)
    unknown = {"ml.g5.8xlarge": QuotaFact(name="ml.g5.8xlarge for cluster usage")}
    assert_skipped(run(check, healthy(usage_quotas=unknown)), "ml.g5.8xlarge for cluster usage")
    assert_skipped(run(check, healthy(usage_quotas=None, gaps={"cluster-usage": "denied"})), "denied")


def test_eni_quota():
    check = pf.check_eni_quota
    assert run(check, healthy()).status is CheckStatus.PASSED
    full = QuotaFact(name="n", code="L-DF5E4CA3", value=3, in_use=16)
    # An error on an existing cluster too: without an interface for a replacement node the control
    # plane's fault remediation (node replacement) cannot work.
    result = run(check, healthy(eni_quota=full))
    assert_failed(result, "is 3 with 16 in use", "replacing a node needs 1 more", severity=Severity.ERROR)
    assert "cannot replace a faulty node" in result.message and "at least 17" in result.remedy
    edge = QuotaFact(name="n", code="L-DF5E4CA3", value=17, in_use=16)  # exactly one interface left
    assert run(check, healthy(eni_quota=edge)).status is CheckStatus.PASSED
    p5 = [
        InstanceGroupFact(
            name="gpu", instance_type="ml.p5.48xlarge", count=4, subnets=["subnet-a"], security_group_ids=[SG]
        )
    ]
    some = QuotaFact(name="n", code="L-DF5E4CA3", value=100, in_use=10)
    assert_failed(
        run(check, healthy(eni_quota=some, planned=True, instance_groups=p5)), "128", severity=Severity.ERROR
    )
    assert_skipped(run(check, healthy(eni_quota=None, gaps={"eni-quota": "denied"})), "denied")


def test_second_seed_severity_on_existing_and_planned_clusters():
    """The cluster-creation checks (``SECOND_SEED``; AWS's page "Prerequisites for using SageMaker
    HyperPod") are errors for a planned cluster; for an existing one only the ENI quota and
    the subnet's addresses stay errors (room for a replacement node), the rest are warnings."""
    headroom = {"quotas.network-interfaces", "network.subnet-addresses"}
    assert headroom < pf.SECOND_SEED
    for check_id in sorted(pf.SECOND_SEED):
        existing = _Check(healthy(), check_id, Severity.ERROR).fail("r", "m", "fix")
        planned = _Check(healthy(planned=True), check_id, Severity.ERROR).fail("r", "m", "fix")
        expected = Severity.ERROR if check_id in headroom else Severity.WARNING
        assert (existing.severity, planned.severity) == (expected, Severity.ERROR), check_id
        assert existing.blocking is (check_id in headroom)


def test_subnet_addresses():
    check = pf.check_subnet_addresses
    assert run(check, healthy()).status is CheckStatus.PASSED
    small = {
        k: v.model_copy(update={"cidr_block": "10.0.0.0/28", "available_ips": 11})
        for k, v in healthy().subnets.items()
    }
    result = run(check, healthy(subnets=small))
    # Existing cluster: no room for one replacement node (30 addresses per ml.g5.8xlarge, estimated)
    # is an error, since node replacement is the control plane's fault remediation.
    assert_failed(
        result, "11 free, 30 needed by a replacement node", "11 usable, 120 needed", severity=Severity.ERROR
    )
    assert "cannot replace a faulty node" in result.message and "estimated" in result.message
    # Room to replace a node but not for the target counts: a scaling concern, so only a warning.
    tight = {
        k: v.model_copy(update={"cidr_block": "10.0.0.0/25", "available_ips": 30}) for k, v in small.items()
    }
    five = [healthy().instance_groups[0].model_copy(update={"count": 5})]
    result = run(check, healthy(subnets=tight, instance_groups=five))
    assert_failed(result, "target counts", "123 usable, 150 needed", severity=Severity.WARNING)
    assert run(check, healthy(subnets=tight)).status is CheckStatus.PASSED  # 4 x 30 fit in 123
    one_short = {k: v.model_copy(update={"available_ips": 29}) for k, v in tight.items()}
    assert_failed(run(check, healthy(subnets=one_short)), "29 free, 30 needed", severity=Severity.ERROR)
    p5 = [InstanceGroupFact(name="gpu", instance_type="ml.p5.48xlarge", count=50, subnets=["subnet-a"])]
    big = healthy(instance_groups=p5, planned=True)
    assert_failed(run(check, big), "4050 needed", severity=Severity.ERROR)  # 50 x 81, the documented figure
    assert "estimated" not in run(check, big).message
    assert pf.addresses_per_instance("ml.p5.48xlarge", "slurm") == (32, True)
    assert_skipped(run(check, healthy(subnets=None, gaps={"subnets": "denied"})), "denied")


def test_override_vpc_config():
    check = pf.check_override_vpc_config
    assert run(check, healthy()).status is CheckStatus.PASSED
    group = healthy().instance_groups[0]
    bad = group.model_copy(
        update={"override_subnets": [f"subnet-{i}" for i in range(17)], "override_security_group_ids": []}
    )
    result = run(check, healthy(instance_groups=[bad], planned=True))
    assert_failed(result, "has 17 (1 to 16 allowed)", "has 0 (1 to 5 allowed)", severity=Severity.ERROR)
    fine = group.model_copy(update={"override_subnets": ["subnet-a"], "override_security_group_ids": [SG]})
    assert run(check, healthy(instance_groups=[fine])).status is CheckStatus.PASSED
    slurm = healthy(instance_groups=[fine], orchestrator="slurm", has_cluster_vpc_config=False, planned=True)
    assert_failed(run(check, slurm), "cluster-level VpcConfig")
    assert_failed(run(check, healthy(has_cluster_vpc_config=False, planned=True)), "no VpcConfig")


def test_efa_security_groups():
    check = pf.check_efa_security_groups
    assert run(check, healthy()).status is CheckStatus.PASSED
    no_self = {SG: SecurityGroupFact(group_id=SG, ingress=[], egress=[])}
    result = run(check, healthy(security_groups=no_self, planned=True))
    assert_failed(result, "inbound", "outbound", severity=Severity.ERROR)
    open_egress = {
        SG: SecurityGroupFact(
            group_id=SG, ingress=[ALL_SELF], egress=[ALL_SELF, RuleFact(cidrs=["0.0.0.0/0"])]
        )
    }
    assert_failed(run(check, healthy(security_groups=open_egress)), "0.0.0.0/0", severity=Severity.WARNING)
    cpu = [InstanceGroupFact(name="cpu", instance_type="ml.m5.xlarge", count=1, security_group_ids=[SG])]
    assert_skipped(run(check, healthy(instance_groups=cpu)), "no EFA-capable")


def test_single_region():
    check = pf.check_single_region
    assert run(check, healthy()).status is CheckStatus.PASSED
    elsewhere = healthy(eks_cluster_arn=EKS_ARN.replace(REGION, "eu-west-1"))
    assert_failed(run(check, elsewhere), "eu-west-1", severity=Severity.WARNING)
    assert_failed(run(check, healthy(missing_subnets=["subnet-zz"], planned=True)), "subnet-zz")
    far = [FsxFact(file_system_id="fs-1", region="us-east-1")]
    assert_failed(run(check, healthy(fsx=far, planned=True)), "fs-1", severity=Severity.ERROR)
    assert_skipped(
        run(check, healthy(subnets=None, security_groups=None, gaps={"subnets": "denied"})), "denied"
    )


def test_fsx_zone():
    check = pf.check_fsx_zone
    assert_skipped(run(check, healthy()), "no FSx")
    near = [
        FsxFact(file_system_id="fs-1", availability_zones=["us-west-2a"], referenced_by="PersistentVolume pv")
    ]
    assert run(check, healthy(fsx=near)).status is CheckStatus.PASSED
    far = [
        FsxFact(file_system_id="fs-1", availability_zones=["us-west-2c"], referenced_by="PersistentVolume pv")
    ]
    assert_failed(run(check, healthy(fsx=far)), "us-west-2c", severity=Severity.WARNING)
    assert_skipped(run(check, healthy(fsx=None, gaps={"fsx": "denied"})), "denied")


def test_ipv6():
    check = pf.check_ipv6
    assert run(check, healthy()).status is CheckStatus.PASSED
    v6 = {
        k: v.model_copy(update={"ipv6_cidr_blocks": ["2600:1f14::/64"]}) for k, v in healthy().subnets.items()
    }
    assert_failed(run(check, healthy(subnets=v6, planned=True)), "IPv4", severity=Severity.WARNING)
    eks6 = healthy().eks.model_copy(update={"ip_family": "ipv6"})
    assert run(check, healthy(subnets=v6, eks=eks6)).status is CheckStatus.PASSED


def test_kueue_external_frameworks():
    check = pf.check_kueue
    assert_skipped(run(check, healthy()), "neither task governance nor Kueue")
    kueue_crds = [*pf.CERT_MANAGER_CRDS, "workloads.kueue.x-k8s.io"]
    with_gvk = healthy().kube.model_copy(
        update={
            "crds": kueue_crds,
            "kueue_config": {"integrations": {"externalFrameworks": [pf.HYPERPOD_JOB_GVK]}},
            "kueue_config_source": "ConfigMap kueue-system/kueue-manager-config",
        }
    )
    assert run(check, healthy(kube=with_gvk)).status is CheckStatus.PASSED
    without = with_gvk.model_copy(update={"kueue_config": {"integrations": {"externalFrameworks": []}}})
    assert_failed(run(check, healthy(kube=without)), pf.HYPERPOD_JOB_GVK)
    no_config = with_gvk.model_copy(update={"kueue_config": None})
    assert_skipped(run(check, healthy(kube=no_config)), "controller_manager_config.yaml")
    governance = {
        **healthy().addons,
        pf.TASK_GOVERNANCE: AddonFact(name=pf.TASK_GOVERNANCE, version="v1.3.0-eksbuild.1"),
    }
    assert_skipped(run(check, healthy(addons=governance, kube=None, gaps={"kube": "401"})), "401")


def test_task_governance_version():
    check = pf.check_task_governance
    assert_skipped(run(check, healthy()), "not installed")

    def with_version(v):
        return healthy(
            addons={pf.TASK_GOVERNANCE: AddonFact(name=pf.TASK_GOVERNANCE, version=v, status="ACTIVE")}
        )

    assert_failed(run(check, with_version("v1.2.0-eksbuild.1")), "v1.2.0-eksbuild.1")
    assert run(check, with_version("v1.3.0-eksbuild.1")).status is CheckStatus.PASSED
    assert run(check, with_version("v1.10.0-eksbuild.1")).status is CheckStatus.PASSED  # numeric, not text


# -- input, planned configs, fact builders ---------------------------------------------------------


def test_input_aliases_defaults_and_bad_fields():
    req = PreflightInput.model_validate({"clusterName": "hp-a"})
    assert req.operator is OperatorMode.ADDON and req.cluster_config is None
    with pytest.raises(ValueError, match=r"addonVersion|addon_version"):
        PreflightInput.model_validate({"clusterName": "hp-a", "addonVersion": "latest"})
    with pytest.raises(ValueError):
        PreflightInput.model_validate({"clusterName": "hp-a", "operator": "both"})


def test_planned_config_parsing_and_name_mismatch():
    config = {
        "ClusterName": "hp-new",
        "InstanceGroups": [
            {
                "InstanceGroupName": "gpu",
                "InstanceType": "ml.p5.48xlarge",
                "InstanceCount": 2,
                "OverrideVpcConfig": {"Subnets": ["subnet-x"], "SecurityGroupIds": [SG]},
                "InstanceStorageConfigs": [
                    {"FsxLustreConfig": {"DnsName": "fs-0abc.fsx.us-west-2.amazonaws.com", "MountName": "m"}}
                ],
            }
        ],
        "VpcConfig": {"Subnets": ["subnet-a"], "SecurityGroupIds": [SG]},
        "Orchestrator": {"Eks": {"ClusterArn": EKS_ARN}},
        "Tags": [{"Key": "SageMaker", "Value": "true"}],
    }
    facts = ClusterFacts(cluster_name="hp-new", region=REGION, planned=True)
    pf.facts_from_config(facts, pf.parse_cluster_config(config, "hp-new"))
    group = facts.instance_groups[0]
    assert (group.subnets, group.override_subnets, group.count) == (["subnet-x"], ["subnet-x"], 2)
    assert facts.eks_cluster_arn == EKS_ARN and facts.tags == {"SageMaker": "true"}
    assert group.fsx_dns_names == ["fs-0abc.fsx.us-west-2.amazonaws.com"]
    with pytest.raises(InvalidInputError, match="ClusterName"):
        pf.parse_cluster_config(config, "other")
    with pytest.raises(InvalidInputError, match="InstanceGroups"):
        pf.parse_cluster_config({"InstanceGroups": []}, "hp-new")


def test_subnet_routes_from_explicit_or_main_table():
    tables = [
        {"RouteTableId": "rtb-main", "VpcId": "vpc-1", "Associations": [{"Main": True}], "Routes": []},
        {
            "RouteTableId": "rtb-pub",
            "VpcId": "vpc-1",
            "Associations": [{"SubnetId": "subnet-pub"}],
            "Routes": [{"DestinationCidrBlock": "0.0.0.0/0", "GatewayId": "igw-1", "State": "active"}],
        },
        {
            "RouteTableId": "rtb-nat",
            "VpcId": "vpc-1",
            "Associations": [{"SubnetId": "subnet-nat"}],
            "Routes": [{"DestinationCidrBlock": "0.0.0.0/0", "NatGatewayId": "nat-1", "State": "active"}],
        },
    ]
    subnets = [
        {"SubnetId": s, "VpcId": "vpc-1", "CidrBlock": "10.0.0.0/24"}
        for s in ("subnet-pub", "subnet-nat", "subnet-iso")
    ]
    facts = pf.subnet_facts(subnets, tables)
    assert facts["subnet-pub"].default_route == "igw"
    assert facts["subnet-nat"].default_route == "nat"
    assert (facts["subnet-iso"].default_route, facts["subnet-iso"].route_table_id) == (None, "rtb-main")


def test_report_model_counts_only_failed_errors():
    from hyperpod_control.models.preflight import CheckResult

    warn = CheckResult(id="a", severity=Severity.WARNING, status=CheckStatus.FAILED, message="m", remedy="r")
    skip = CheckResult(id="b", severity=Severity.ERROR, status=CheckStatus.SKIPPED, message="m")
    err = CheckResult(id="c", severity=Severity.ERROR, status=CheckStatus.FAILED, message="m", remedy="r")
    assert PreflightReport(cluster_name="x", operator=OperatorMode.ADDON, results=[warn, skip]).ok
    assert not PreflightReport(cluster_name="x", operator=OperatorMode.ADDON, results=[warn, err]).ok
