"""Checks of the cluster and what runs on it (AWS's page "Installing the training operator"):
the HyperPod and EKS clusters, the add-on's Kubernetes versions, the node image, cert-manager, the
Pod Identity Agent, the SageMaker tag, Kueue's external frameworks and the task-governance add-on.
Each is a pure function of the facts and the options, returning one ``CheckResult``.
"""

from __future__ import annotations

from hyperpod_control.models.install import ADDON_NAME, version_key
from hyperpod_control.models.preflight import (
    CheckResult,
    ClusterFacts,
    DeploymentFact,
    PreflightOptions,
    Severity,
)
from hyperpod_control.models.records import OperatorMode
from hyperpod_control.services.preflight.results import _Check, _eks_name
from hyperpod_control.services.preflight.tables import (
    CERT_MANAGER,
    CERT_MANAGER_COMPONENTS,
    CERT_MANAGER_CRDS,
    HYPERPOD_JOB_GVK,
    KUEUE_CONFIG_KEY,
    KUEUE_NAMESPACE,
    POD_IDENTITY_AGENT,
    TASK_GOVERNANCE,
    TASK_GOVERNANCE_MIN,
)


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
