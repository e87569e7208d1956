"""Installing and uninstalling a cluster's training operator: the decisions (pure functions over
plain data and models) and, below them, the steps that apply them through the adapters.

Every step is idempotent: it reads what is there, decides, and changes only what differs, so a
second run of the workflow changes nothing and a retried step does not do its work twice.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from hyperpod_control.adapters.eks import EksAdapter
from hyperpod_control.adapters.iam import IamAdapter
from hyperpod_control.adapters.kube import KubeAdapter
from hyperpod_control.adapters.store import Store
from hyperpod_control.exceptions import (
    AccessDeniedError,
    AddonFailedError,
    ClusterMismatchError,
    InvalidInputError,
    KubernetesAccessPendingError,
    LockHeldError,
    OperatorConflictError,
    OperatorNotReadyError,
    PermanentError,
    ResourceNotFoundError,
    VersionConflictError,
)
from hyperpod_control.models.install import (
    ACCESS_TIERS,
    ADDON_NAME,
    CONTROL_PLANE_GROUP,
    EVENT_SOURCE,
    JOB_CRD,
    JOB_GROUP,
    JOB_KIND,
    JOB_PLURAL,
    JOB_VERSION,
    MANAGED_BY,
    MANAGED_LABEL,
    OPERATOR_NAMESPACE,
    OPERATOR_POLICY_NAME,
    OPERATOR_SELECTOR,
    OPERATOR_SERVICE_ACCOUNT,
    AccessOutcome,
    AcquireLockInput,
    AddonConfiguration,
    AddonInput,
    AddonOutcome,
    AddonState,
    AssociationOutcome,
    ClusterRef,
    CrdOutcome,
    DescribeAddonInput,
    EnsureAssociationInput,
    EnsureRoleInput,
    InstallRequest,
    JobsOutcome,
    LockOutcome,
    PlanUninstallInput,
    RecordInstallInput,
    RecordOutcome,
    RecordUninstallInput,
    ReleaseLockInput,
    ReleaseOutcome,
    RemoveAccessOutcome,
    RemoveIdentityInput,
    RemoveIdentityOutcome,
    RoleOutcome,
    UninstallPlan,
    UninstallRequest,
    VerifyOutcome,
    resolve_version,
    tier_group,
    version_key,
)
from hyperpod_control.models.job_schema import job_schema
from hyperpod_control.models.names import MANAGED_TAG as MANAGED_TAG  # re-exported
from hyperpod_control.models.records import OperatorMode, OperatorRecord, OperatorStatus, utcnow
from hyperpod_control.models.upgrade import SHOWN_JOBS
from hyperpod_control.models.validation import parse_input

POD_IDENTITY_PRINCIPAL = "pods.eks.amazonaws.com"
POD_IDENTITY_ACTIONS = ("sts:AssumeRole", "sts:TagSession")
BUSY = ("CREATING", "UPDATING", "DELETING")
BROKEN = ("CREATE_FAILED", "UPDATE_FAILED", "DEGRADED", "DELETE_FAILED")
DONE = {"create": "created", "update": "updated", "unchanged": "unchanged"}


# ============================================================== settings read from the environment


def role_prefix() -> str:
    """Operator roles are named with this prefix; the install role may create no other."""
    return os.environ.get("OPERATOR_ROLE_PREFIX", "hyperpod-control-plane-operator-")


def role_path() -> str:
    return os.environ.get("OPERATOR_ROLE_PATH", "/hyperpod-control-plane/")


def permissions_boundary() -> str | None:
    return os.environ.get("OPERATOR_ROLE_BOUNDARY_ARN") or None


def partition_of(arn: str) -> str:
    return arn.split(":")[1] if arn.startswith("arn:") else "aws"


def operator_policy_arn(partition: str = "aws") -> str:
    return f"arn:{partition}:iam::aws:policy/{OPERATOR_POLICY_NAME}"


# ============================================================== lock and the one-operator rule


def decide_claim(
    existing: OperatorRecord | None,
    cluster: ClusterRef,
    owner: str,
    mode: OperatorMode,
    purpose: str,
    holder_ended: str | None = None,
) -> OperatorRecord:
    """Pure: the OPERATOR item with the lock taken by ``owner``, or the reason it cannot be.

    ``holder_ended``: the final status of the execution that holds the lock (``lock_holder_ended``).
    A lock whose execution ended without releasing it (aborted, or stopped by its timeout: no
    Catch runs then) protects nothing: ``owner`` takes it over, and the item's ``reason`` names
    the old execution."""
    taken_over = bool(existing and existing.lock_owner and existing.lock_owner != owner and holder_ended)
    if existing is not None and existing.lock_owner and existing.lock_owner != owner and not taken_over:
        raise LockHeldError(
            f"cluster '{cluster.cluster_name}' is locked by workflow {existing.lock_owner}.",
            remedy="wait for that workflow to end (the lock is released on every path), then start again.",
        )
    if (
        purpose == "install"
        and existing is not None
        and existing.mode != mode
        and existing.status
        in (
            OperatorStatus.ACTIVE,
            OperatorStatus.INSTALLING,
        )
    ):
        raise OperatorConflictError(
            f"operator: cluster '{cluster.cluster_name}' already runs the {existing.mode.value} training "
            f"operator ({existing.status.value}); a cluster runs exactly one.",
            remedy=f"uninstall it first (hpctl uninstall --cluster {cluster.cluster_name}), or install "
            f"with operator={existing.mode.value}.",
        )
    if existing is not None and existing.eks_cluster_name not in (None, cluster.eks_cluster_name):
        # A HyperPod cluster's EKS cluster never changes: the request names another cluster's.
        raise ClusterMismatchError(
            f"cluster: HyperPod cluster '{cluster.cluster_name}' is orchestrated by EKS cluster "
            f"{existing.eks_cluster_name}, not {cluster.eks_cluster_name}; nothing was locked.",
            remedy="start the workflow with the HyperPod cluster's name only; Preflight finds its EKS "
            "cluster.",
        )
    base = existing or OperatorRecord(
        cluster_arn=cluster.cluster_arn, cluster_name=cluster.cluster_name, mode=mode
    )
    # The lock names the cluster, EKS cluster included: every later step acts on that one only
    # (services/workflow_lock.py).
    update: dict[str, Any] = {
        "lock_owner": owner,
        "last_workflow": owner,
        "eks_cluster_name": cluster.eks_cluster_name,
        "updated_at": utcnow(),
    }
    if taken_over:
        assert existing is not None
        update["reason"] = (
            f"lock taken over from workflow {existing.lock_owner}, which ended {holder_ended} "
            "without releasing it"
        )
    if purpose == "install":
        update["mode"] = mode
        if base.status is not OperatorStatus.ACTIVE or base.mode != mode:
            update["status"] = OperatorStatus.INSTALLING
    return base.model_copy(update=update)


def lock_holder_ended(owner: str | None, sfn: Any) -> str | None:
    """How the execution holding a lock ended (SUCCEEDED, FAILED, TIMED_OUT, ABORTED; DELETED when
    Step Functions no longer has it: its history expires 90 days after it ended); None while it
    runs, or when the holder is not an execution (a lock taken by hand is never taken over)."""
    if not owner or sfn is None or ":execution:" not in owner:
        return None
    status = sfn.status(owner)
    if status is None:
        return "DELETED"
    return None if status == "RUNNING" else status


def acquire_lock(request: AcquireLockInput, store: Store, eks: EksAdapter, sfn: Any = None) -> LockOutcome:
    cluster = request.cluster
    if request.purpose == "install":
        install = parse_input(InstallRequest, request.request)
        mode = install.operator
        if mode is OperatorMode.SERVERLESS and eks.describe_addon(cluster.eks_cluster_name, ADDON_NAME):
            raise OperatorConflictError(
                f"operator: EKS cluster '{cluster.eks_cluster_name}' runs the {ADDON_NAME} add-on; the "
                "serverless operator cannot run beside it.",
                remedy=f"uninstall the add-on first (hpctl uninstall --cluster {cluster.cluster_name}).",
            )
    else:
        existing = store.get_operator(cluster.cluster_arn)
        mode = existing.mode if existing else OperatorMode.ADDON
    existing = store.get_operator(cluster.cluster_arn)
    held_by = existing.lock_owner if existing is not None and existing.lock_owner != request.owner else None
    ended = lock_holder_ended(held_by, sfn)
    record = decide_claim(existing, cluster, request.owner, mode, request.purpose, holder_ended=ended)
    written = store.put(record, expected_version=existing.version if existing else None)
    return LockOutcome(
        owner=request.owner,
        mode=written.mode,
        version=written.version,
        taken_over_from=held_by if ended else None,
    )


def decide_release(existing: OperatorRecord, owner: str, succeeded: bool) -> OperatorRecord | None:
    """Pure: the item with the lock released (None: not ours, nothing to write)."""
    if existing.lock_owner != owner:
        return None
    update: dict[str, Any] = {"lock_owner": None, "updated_at": utcnow()}
    if not succeeded and existing.status is OperatorStatus.INSTALLING:
        update["status"] = OperatorStatus.FAILED
    return existing.model_copy(update=update)


def release_lock(request: ReleaseLockInput, store: Store) -> ReleaseOutcome:
    if not request.cluster_arn:
        return ReleaseOutcome(released=False)
    existing = store.get_operator(request.cluster_arn)
    if existing is None:
        return ReleaseOutcome(released=False)
    record = decide_release(existing, request.owner, request.succeeded)
    if record is None:
        return ReleaseOutcome(released=False, status=existing.status.value)
    written = store.put(record, expected_version=existing.version)
    return ReleaseOutcome(released=True, status=written.status.value)


# ============================================================== execution role


def role_name_for(cluster_name: str, prefix: str) -> str:
    """Pure: ``<prefix><cluster>``, shortened with a hash to IAM's 64 characters."""
    name = f"{prefix}{cluster_name}"
    if len(name) <= 64:
        return name
    digest = hashlib.sha256(cluster_name.encode()).hexdigest()[:8]
    return f"{name[: 64 - 9]}-{digest}"


def trust_policy(account_id: str, eks_cluster_arn: str) -> dict[str, Any]:
    """Pure: EKS Pod Identity's trust policy, limited to this cluster.

    AWS's documented policy also lists ``eks-auth:AssumeRoleForPodIdentity``: that action belongs to the
    node side (the node role calls it on the Pod Identity Agent's behalf, and the managed
    AmazonEKSWorkerNodePolicy grants it); in a role's trust policy it grants nothing, so it is
    left out, as EKS's own Pod Identity documentation does.
    """
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "AllowEksAuthToAssumeRoleForPodIdentity",
                "Effect": "Allow",
                "Principal": {"Service": POD_IDENTITY_PRINCIPAL},
                "Action": list(POD_IDENTITY_ACTIONS),
                "Condition": {
                    "StringEquals": {"aws:SourceAccount": account_id},
                    "ArnEquals": {"aws:SourceArn": eks_cluster_arn},
                },
            }
        ],
    }


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value] if value is not None else []


def trust_problems(document: dict[str, Any]) -> list[str]:
    """Pure: what keeps EKS Pod Identity from using a role with this trust policy ([] if nothing)."""
    needed = set(POD_IDENTITY_ACTIONS)
    for statement in _as_list(document.get("Statement")):
        if statement.get("Effect") != "Allow":
            continue
        principal = statement.get("Principal") or {}
        services = _as_list(principal.get("Service")) if isinstance(principal, dict) else []
        if POD_IDENTITY_PRINCIPAL not in services:
            continue
        for action in _as_list(statement.get("Action")):
            if action in ("sts:*", "*"):
                needed.clear()
            needed.discard(action)
    if not needed:
        return []
    return [f"its trust policy does not allow {POD_IDENTITY_PRINCIPAL} to {' and '.join(sorted(needed))}"]


def role_name_from_arn(arn: str) -> str:
    return arn.rsplit("/", 1)[-1]


def ensure_execution_role(request: EnsureRoleInput, iam: IamAdapter, eks: EksAdapter) -> RoleOutcome:
    cluster = request.cluster
    eks_cluster = eks.describe_cluster(cluster.eks_cluster_name)
    account = eks_cluster["arn"].split(":")[4]
    policy_arn = operator_policy_arn(partition_of(eks_cluster["arn"]))
    if request.role_arn:  # the user's role: validated, never changed
        name = role_name_from_arn(request.role_arn)
        role = iam.get_role(name)
        if role is None:
            raise InvalidInputError(
                f"roleArn: IAM role {request.role_arn} does not exist.",
                remedy="name an existing role, or leave roleArn out and the workflow creates one.",
            )
        if role["Arn"] != request.role_arn:
            # The stack's iam:PassRole (and Preflight's check of it) match the ARN as given; the
            # association would carry the real one, path included.
            raise InvalidInputError(
                f"roleArn: {request.role_arn} names IAM role {name}, whose ARN is {role['Arn']}.",
                remedy=f"give the role's ARN with its path: {role['Arn']}.",
            )
        problems = trust_problems(role["AssumeRolePolicyDocument"])
        if policy_arn not in iam.attached_policies(name):
            problems.append(f"it does not have the managed policy {OPERATOR_POLICY_NAME} attached")
        if problems:
            raise InvalidInputError(
                f"roleArn: IAM role {request.role_arn} cannot serve the training operator: "
                + "; ".join(problems)
                + ".",
                remedy=f"allow {POD_IDENTITY_PRINCIPAL} sts:AssumeRole and sts:TagSession in its trust "
                f"policy and attach {policy_arn}, or leave roleArn out.",
            )
        return RoleOutcome(role_arn=role["Arn"], role_name=name)

    name = role_name_for(cluster.cluster_name, role_prefix())
    trust = trust_policy(account, eks_cluster["arn"])
    role = iam.get_role(name)
    changed: list[str] = []
    created = False
    if role is None:
        role = iam.create_role(
            name,
            trust,
            description=f"HyperPod training operator of {cluster.cluster_name} (EKS Pod Identity)",
            tags={MANAGED_TAG: MANAGED_BY, "hyperpod-cluster": cluster.cluster_name},
            boundary_arn=permissions_boundary(),
            path=role_path(),
        )
        created = True
        changed.append("role")
    elif role["AssumeRolePolicyDocument"] != trust:
        iam.update_trust(name, trust)
        changed.append("trust")
    if policy_arn not in iam.attached_policies(name):
        iam.attach_policy(name, policy_arn)
        changed.append("policy")
    return RoleOutcome(role_arn=role["Arn"], role_name=name, created=created, changed=changed)


# ============================================================== Pod Identity association


def decide_association(existing: dict[str, Any] | None, role_arn: str) -> str:
    """Pure: ``create``, ``update`` (another role) or ``unchanged``. An association an add-on owns
    (declared inline in the add-on) is refused: the workflow keeps it standalone, because inline
    ones break when a version stops supporting Pod Identity in the add-on call (v1.2.1-eksbuild.1)."""
    if existing is None:
        return "create"
    if existing.get("ownerArn"):
        raise PermanentError(
            f"the Pod Identity association {existing.get('associationId')} of {OPERATOR_NAMESPACE}/"
            f"{OPERATOR_SERVICE_ACCOUNT} is owned by {existing['ownerArn']} (declared inline in the add-on).",
            remedy="update the add-on with an empty podIdentityAssociations list, then run the install "
            "again; it creates a standalone association.",
        )
    return "unchanged" if existing.get("roleArn") == role_arn else "update"


def ensure_pod_identity_association(request: EnsureAssociationInput, eks: EksAdapter) -> AssociationOutcome:
    cluster = request.cluster.eks_cluster_name
    existing = eks.find_association(cluster, OPERATOR_NAMESPACE, OPERATOR_SERVICE_ACCOUNT)
    action = decide_association(existing, request.role_arn)
    if action == "create":
        found = eks.create_association(
            cluster, OPERATOR_NAMESPACE, OPERATOR_SERVICE_ACCOUNT, request.role_arn, {MANAGED_TAG: MANAGED_BY}
        )
    elif action == "update":
        assert existing is not None
        found = eks.update_association(cluster, existing["associationId"], request.role_arn)
    else:
        assert existing is not None
        found = existing
    return AssociationOutcome(
        association_id=found["associationId"],
        association_arn=found.get("associationArn"),
        action=DONE[action],
    )


# ============================================================== the add-on


def choose_version(requested: str | None, available: Iterable[str], kubernetes_version: str | None) -> str:
    """Pure: the requested version if the cluster supports it, else the latest one it supports."""
    versions = sorted(set(available), key=version_key, reverse=True)
    if not versions:
        raise InvalidInputError(
            f"addonVersion: no version of {ADDON_NAME} supports Kubernetes {kubernetes_version}.",
            remedy="upgrade the EKS cluster to a Kubernetes version the add-on supports.",
        )
    if requested is None:
        return versions[0]
    resolved = resolve_version(requested, versions)
    if resolved is None:
        raise InvalidInputError(
            f"addonVersion: {requested} is not a version of {ADDON_NAME} for Kubernetes "
            f"{kubernetes_version}; available: {', '.join(versions)}.",
            remedy="pick one of the available versions, or leave addonVersion out for the latest.",
        )
    return resolved


def configuration_json(config: AddonConfiguration | None) -> str | None:
    """Pure: the add-on's ``configurationValues`` string (None when nothing is configured)."""
    if config is None:
        return None
    data = config.dump()
    return json.dumps(data, sort_keys=True, separators=(",", ":")) if data else None


_TYPES = {
    "object": dict,
    "string": str,
    "integer": int,
    "number": (int, float),
    "boolean": bool,
    "array": list,
}


def schema_errors(value: Any, schema: dict[str, Any], path: str = "configurationValues") -> list[str]:
    """Pure: where ``value`` breaks the add-on's JSON schema (the subset EKS schemas use: type,
    properties, additionalProperties, pattern, enum), each error naming its path."""
    errors: list[str] = []
    types = _as_list(schema.get("type"))
    if types and not any(
        isinstance(value, _TYPES[t]) and not (t in ("integer", "number") and isinstance(value, bool))
        for t in types
        if t in _TYPES
    ):
        return [f"{path}: must be {' or '.join(types)}"]
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{path}: must be one of {schema['enum']}")
    if isinstance(value, str) and "pattern" in schema and not re.search(schema["pattern"], value):
        errors.append(f"{path}: {value!r} does not match {schema['pattern']}")
    if (
        isinstance(value, (int, float))
        and "pattern" in schema
        and not re.search(schema["pattern"], str(value))
    ):
        errors.append(f"{path}: {value!r} does not match {schema['pattern']}")
    if isinstance(value, dict):
        properties = schema.get("properties") or {}
        extra = schema.get("additionalProperties", True)
        for key, item in value.items():
            where = f"{path}.{key}"
            if key in properties:
                errors.extend(schema_errors(item, properties[key], where))
            elif extra is False:
                errors.append(f"{where}: is not a configuration value of {ADDON_NAME}")
            elif isinstance(extra, dict):
                errors.extend(schema_errors(item, extra, where))
    return errors


def decide_addon(existing: dict[str, Any] | None, version: str, config: str | None) -> str:
    """Pure: ``create``, ``update`` or ``unchanged`` (busy: the wait that follows sees it through)."""
    if existing is None:
        return "create"
    status = existing.get("status", "")
    if status in BUSY:
        if status == "DELETING":
            raise VersionConflictError(f"{ADDON_NAME} is being deleted; installing it again once it is gone.")
        return "unchanged"
    current = existing.get("configurationValues") or None
    same_config = _parsed(current) == _parsed(config)
    if existing.get("addonVersion") == version and same_config and status not in BROKEN:
        return "unchanged"
    return "update"


def _parsed(values: str | None) -> Any:
    if not values:
        return None
    try:
        return json.loads(values)
    except ValueError:
        return values


def create_or_update_addon(request: AddonInput, eks: EksAdapter) -> AddonOutcome:
    cluster = request.cluster
    available = [
        v["addonVersion"]
        for v in eks.addon_versions(ADDON_NAME, cluster.kubernetes_version)
        if "addonVersion" in v
    ]
    version = choose_version(request.addon_version, available, cluster.kubernetes_version)
    config = configuration_json(request.configuration_values)
    if config is not None:
        errors = schema_errors(json.loads(config), eks.configuration_schema(ADDON_NAME, version))
        if errors:
            raise InvalidInputError(
                f"configurationValues: not accepted by {ADDON_NAME} {version}: {'; '.join(errors)}.",
                remedy="use the keys of the add-on's parameter table (aws eks describe-addon-configuration).",
            )
    existing = eks.describe_addon(cluster.eks_cluster_name, ADDON_NAME)
    action = decide_addon(existing, version, config)
    # The association stays standalone (EnsurePodIdentityAssociation): never podIdentityAssociations here.
    params: dict[str, Any] = {"addonVersion": version, "resolveConflicts": "OVERWRITE"}
    if action == "create":
        if config is not None:
            params["configurationValues"] = config
        params["tags"] = {MANAGED_TAG: MANAGED_BY}
        found = eks.create_addon(cluster.eks_cluster_name, ADDON_NAME, **params)
        status = found.get("status", "CREATING")
    elif action == "update":
        params["configurationValues"] = config or ""
        eks.update_addon(cluster.eks_cluster_name, ADDON_NAME, **params)
        status = "UPDATING"
    else:
        assert existing is not None
        status = existing.get("status", "ACTIVE")
        version = existing.get("addonVersion", version)
    return AddonOutcome(addon_version=version, action=DONE[action], status=status)


def addon_state(addon: dict[str, Any] | None, expect_gone: bool) -> AddonState:
    """Pure: where the add-on is; a failed or degraded one ends the wait with its health issues."""
    if addon is None:
        if expect_gone:
            return AddonState(status="GONE", done=True)
        raise ResourceNotFoundError(f"the {ADDON_NAME} add-on disappeared while the workflow waited for it.")
    status = addon.get("status", "UNKNOWN")
    issues = [
        f"{i.get('code', 'Issue')}: {i.get('message', '')}".strip()
        for i in (addon.get("health") or {}).get("issues", [])
    ]
    if status in BROKEN:
        raise AddonFailedError(
            f"the {ADDON_NAME} add-on is {status}: "
            + ("; ".join(issues) or "no health issue reported")
            + ".",
            remedy="fix what the health issues name (aws eks describe-addon), then run the install again.",
        )
    done = (status == "ACTIVE") and not expect_gone
    return AddonState(status=status, addon_version=addon.get("addonVersion"), done=done, issues=issues)


def describe_addon(request: DescribeAddonInput, eks: EksAdapter) -> AddonState:
    return addon_state(eks.describe_addon(request.cluster.eks_cluster_name, ADDON_NAME), request.expect_gone)


# ============================================================== Kubernetes: verify, access, CRD


def _condition(obj: dict[str, Any], kind: str) -> bool:
    return any(
        c.get("type") == kind and c.get("status") == "True"
        for c in (obj.get("status") or {}).get("conditions") or []
    )


def assess_operator(deployments: list[dict[str, Any]], crd: dict[str, Any] | None) -> VerifyOutcome:
    """Pure: the operator works when its controller Deployment is available and its CRD Established."""
    if not deployments:
        raise OperatorNotReadyError(
            f"no controller Deployment ({OPERATOR_SELECTOR}) in namespace {OPERATOR_NAMESPACE} yet."
        )
    deployment = deployments[0]
    name = deployment["metadata"]["name"]
    available = int((deployment.get("status") or {}).get("availableReplicas") or 0)
    if available < 1 or not _condition(deployment, "Available"):
        raise OperatorNotReadyError(f"Deployment {OPERATOR_NAMESPACE}/{name} has no available replica yet.")
    if crd is None:
        raise OperatorNotReadyError(f"CRD {JOB_CRD} is not installed yet.")
    if not _condition(crd, "Established"):
        raise OperatorNotReadyError(f"CRD {JOB_CRD} is not Established yet.")
    return VerifyOutcome(
        deployment=name,
        namespace=OPERATOR_NAMESPACE,
        available_replicas=available,
        crd=JOB_CRD,
        established=True,
    )


def verify_operator(kube: KubeAdapter) -> VerifyOutcome:
    return assess_operator(
        kube.deployments(OPERATOR_NAMESPACE, label_selector=OPERATOR_SELECTOR), kube.crd(JOB_CRD)
    )


def _labels() -> dict[str, str]:
    return {MANAGED_LABEL: MANAGED_BY}


#: What every tier may read: jobs, their pods and logs, nodes, and what preflight inspects (the
#: operator's and cert-manager's Deployments, the Pod Identity Agent, Kueue's configuration, the
#: PersistentVolumes naming FSx file systems, the CRDs).
_READ_RULES: list[dict[str, Any]] = [
    {"apiGroups": [JOB_GROUP], "resources": [JOB_PLURAL], "verbs": ["get", "list", "watch"]},
    {"apiGroups": [""], "resources": ["pods", "nodes"], "verbs": ["get", "list", "watch"]},
    {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},
    {"apiGroups": [""], "resources": ["configmaps", "persistentvolumes"], "verbs": ["get", "list"]},
    {"apiGroups": ["apps"], "resources": ["deployments", "daemonsets"], "verbs": ["get", "list"]},
    {
        "apiGroups": ["apiextensions.k8s.io"],
        "resources": ["customresourcedefinitions"],
        "verbs": ["get", "list"],
    },
]
_EVENTS_RULE = {"apiGroups": ["", "events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch"]}
#: What each tier may do beyond reading.
_TIER_RULES: dict[str, list[dict[str, Any]]] = {
    "reader": [],
    # node_health: cordon and label a faulty node, say why on it.
    "node-handler": [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["patch"]}, _EVENTS_RULE],
    # the serverless supervisor and the upgrade's drain/resubmit: run HyperPodPyTorchJobs, create
    # and remove their pods, reach the agents through the pod proxy, record events.
    "supervisor": [
        {
            "apiGroups": [JOB_GROUP],
            "resources": [JOB_PLURAL, f"{JOB_PLURAL}/status"],
            "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"],
        },
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["create", "delete"]},
        {"apiGroups": [""], "resources": ["pods/proxy"], "verbs": ["get", "create"]},
        # Each serverless job's NetworkPolicy (who may reach its agents' port), made with the pods.
        {
            "apiGroups": ["networking.k8s.io"],
            "resources": ["networkpolicies"],
            "verbs": ["get", "create", "patch"],
        },
        _EVENTS_RULE,
    ],
    # job_crd: own the one CRD (create cannot be limited to a name in RBAC; the other verbs are).
    "crd-owner": [
        {
            "apiGroups": ["apiextensions.k8s.io"],
            "resources": ["customresourcedefinitions"],
            "verbs": ["create"],
        },
        {
            "apiGroups": ["apiextensions.k8s.io"],
            "resources": ["customresourcedefinitions"],
            "resourceNames": [JOB_CRD],
            "verbs": ["update", "patch", "delete"],
        },
    ],
}


def tier_cluster_role(tier: str) -> dict[str, Any]:
    """Pure: the ClusterRole of one access tier: reading, plus what that tier's functions do."""
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": tier_group(tier), "labels": _labels()},
        "rules": [*_READ_RULES, *_TIER_RULES[tier]],
    }


def tier_binding(tier: str) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": tier_group(tier), "labels": _labels()},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": tier_group(tier)},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": tier_group(tier)}],
    }


def job_crd() -> dict[str, Any]:
    """Pure: the HyperPodPyTorchJob CRD the serverless operator serves (same group, version and
    kind as AWS's operator, so job manifests move between the two unchanged)."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": JOB_CRD, "labels": _labels()},
        "spec": {
            "group": JOB_GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": JOB_KIND,
                "plural": JOB_PLURAL,
                "singular": JOB_KIND.lower(),
                "listKind": f"{JOB_KIND}List",
                "shortNames": ["hyperpodpytorchjob", "hpj"],
            },
            "versions": [
                {
                    "name": JOB_VERSION,
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": job_schema()},
                    "subresources": {"status": {}},
                }
            ],
        },
    }


def _ours(group: str) -> bool:
    return group == CONTROL_PLANE_GROUP or group.startswith(f"{CONTROL_PLANE_GROUP}:")


def decide_entry(existing: dict[str, Any] | None, tier: str) -> tuple[str, list[str]]:
    """Pure: (``create`` | ``update`` | ``unchanged``, groups) for a control-plane principal of
    ``tier``: its entry carries that tier's group and no other of the control plane's."""
    group = tier_group(tier)
    if existing is None:
        return "create", [group]
    current = list(existing.get("kubernetesGroups") or [])
    wanted = [g for g in current if not _ours(g)] + [group]
    if sorted(current) == sorted(wanted):
        return "unchanged", current
    if existing.get("type", "STANDARD") != "STANDARD":
        raise PermanentError(
            f"access entry {existing.get('principalArn')} is of type {existing.get('type')}; it cannot carry "
            "Kubernetes groups.",
            remedy="delete it, then run the install again.",
        )
    return "update", wanted


CLUSTER_ADMIN_POLICY = "arn:aws:eks::aws:cluster-access-policy/AmazonEKSClusterAdminPolicy"


def canonical_principal(arn: str) -> str:
    """Pure: the IAM principal an STS caller ARN stands for, as access entries name it:
    ``arn:aws:sts::1:assumed-role/R/session`` -> ``arn:aws:iam::1:role/R``; a user stays a user
    (some STS emulations answer ``sts::...:user/x``; IAM spells it ``iam::``)."""
    match = re.match(r"^arn:(aws[a-z-]*):(?:iam|sts)::(\d{12}):([a-z-]+)/(.+)$", arn)
    if not match:
        return arn
    partition, account, kind, rest = match.groups()
    if kind == "assumed-role":
        return f"arn:{partition}:iam::{account}:role/{rest.split('/')[0]}"
    if kind in ("role", "user"):
        return f"arn:{partition}:iam::{account}:{kind}/{rest}"
    return arn


@contextmanager
def installer_admin(
    cluster: ClusterRef, principal: str, eks: EksAdapter, *, keep: bool = True
) -> Iterator[None]:
    """Cluster-admin for the installer's own role only while it writes or deletes RBAC (Kubernetes'
    escalation rule: it must hold what it grants), removed again however the block ends. Its entry
    stays, without any policy or group, unless ``keep`` is False (removing the control plane's
    access: then the entry goes too, when the block succeeded)."""
    name = cluster.eks_cluster_name
    if eks.describe_access_entry(name, principal) is None:
        eks.create_access_entry(name, principal, [], {MANAGED_TAG: MANAGED_BY})
    eks.associate_access_policy(name, principal, CLUSTER_ADMIN_POLICY)
    try:
        yield
    except AccessDeniedError as exc:
        # EKS applies a new association within seconds: a 403 now is that delay, retried.
        raise KubernetesAccessPendingError(
            f"the installer's cluster-admin access on {name} is not applied yet: {exc}"
        ) from exc
    else:
        if not keep:
            eks.delete_access_entry(name, principal)  # its policy goes with it
    finally:
        eks.disassociate_access_policy(name, principal, CLUSTER_ADMIN_POLICY)


def ensure_access(
    cluster: ClusterRef, principals: dict[str, list[str]], eks: EksAdapter, kube: KubeAdapter
) -> AccessOutcome:
    """Each tier's principals get their tier's group; each tier its ClusterRole and binding. The
    caller holds cluster-admin meanwhile (``installer_admin``)."""
    created: list[str] = []
    for tier, members in principals.items():
        for principal in members:
            existing = eks.describe_access_entry(cluster.eks_cluster_name, principal)
            action, groups = decide_entry(existing, tier)
            if action == "create":
                eks.create_access_entry(
                    cluster.eks_cluster_name, principal, groups, {MANAGED_TAG: MANAGED_BY}
                )
                created.append(principal)
            elif action == "update":
                eks.update_access_entry(cluster.eks_cluster_name, principal, groups)
    for tier in ACCESS_TIERS:
        kube.apply_cluster_role(tier_cluster_role(tier))
        kube.apply_cluster_role_binding(tier_binding(tier))
    # The single ClusterRole every function shared before the tiers: gone with its power.
    kube.delete_cluster_role_binding(CONTROL_PLANE_GROUP)
    kube.delete_cluster_role(CONTROL_PLANE_GROUP)
    return AccessOutcome(
        principals=[p for members in principals.values() for p in members],
        created=created,
        cluster_role=",".join(tier_group(t) for t in ACCESS_TIERS),
        binding=",".join(tier_group(t) for t in ACCESS_TIERS),
    )


def remove_access(
    cluster: ClusterRef, principals: dict[str, list[str]], eks: EksAdapter, kube: KubeAdapter
) -> RemoveAccessOutcome:
    removed: list[str] = []
    for principal in [p for members in principals.values() for p in members]:
        existing = eks.describe_access_entry(cluster.eks_cluster_name, principal)
        if existing is None:
            continue
        groups = [g for g in existing.get("kubernetesGroups") or [] if not _ours(g)]
        if groups == list(existing.get("kubernetesGroups") or []):
            continue
        if (existing.get("tags") or {}).get(MANAGED_TAG) == MANAGED_BY or not (
            groups or eks.list_associated_access_policies(cluster.eks_cluster_name, principal)
        ):
            eks.delete_access_entry(cluster.eks_cluster_name, principal)
        else:  # someone else's entry that we only added our group to
            eks.update_access_entry(cluster.eks_cluster_name, principal, groups)
        removed.append(principal)
    for name in [CONTROL_PLANE_GROUP, *(tier_group(t) for t in ACCESS_TIERS)]:
        kube.delete_cluster_role_binding(name)
        kube.delete_cluster_role(name)
    return RemoveAccessOutcome(removed_entries=removed, rbac_removed=True)


def ensure_crd(kube: KubeAdapter) -> CrdOutcome:
    action = kube.apply_crd(job_crd())
    crd = kube.crd(JOB_CRD)
    if crd is None or not _condition(crd, "Established"):
        raise OperatorNotReadyError(f"CRD {JOB_CRD} is not Established yet.")
    return CrdOutcome(name=JOB_CRD, action=action)  # type: ignore[arg-type]


def remove_crd(kube: KubeAdapter) -> CrdOutcome:
    crd = kube.crd(JOB_CRD)
    if crd is None:
        return CrdOutcome(name=JOB_CRD, action="absent")
    if (crd["metadata"].get("labels") or {}).get(MANAGED_LABEL) != MANAGED_BY:
        return CrdOutcome(name=JOB_CRD, action="unchanged")  # not ours (the add-on's, or a user's)
    kube.delete_crd(JOB_CRD)
    return CrdOutcome(name=JOB_CRD, action="deleted")


# ============================================================== record


def installed_record(existing: OperatorRecord, request: RecordInstallInput) -> OperatorRecord:
    """Pure: the OPERATOR item of a finished install (the lock stays with its owner until
    ReleaseLock)."""
    if existing.lock_owner != request.owner:
        raise VersionConflictError(
            f"the lock on {request.cluster.cluster_name} is held by {existing.lock_owner}, "
            f"not {request.owner}."
        )
    installed = request.installed
    addon = installed.operator is OperatorMode.ADDON
    return existing.model_copy(
        update={
            "mode": installed.operator,
            "status": OperatorStatus.ACTIVE,
            "eks_cluster_name": request.cluster.eks_cluster_name,
            "addon_version": installed.addon_version if addon else None,
            "role_arn": installed.role_arn if addon else None,
            "association_id": installed.association_id if addon else None,
            "last_workflow": request.owner,
            "reason": None,
            "updated_at": utcnow(),
        }
    )


def operator_event(detail_type: str, record: OperatorRecord, bus: str) -> dict[str, Any]:
    """Pure: the EventBridge entry announcing an operator change on the stack's bus."""
    return {
        "Source": EVENT_SOURCE,
        "DetailType": detail_type,
        "Resources": [record.cluster_arn],
        "EventBusName": bus,
        "Detail": json.dumps(
            {
                "clusterName": record.cluster_name,
                "clusterArn": record.cluster_arn,
                "mode": record.mode.value,
                "status": record.status.value,
                "addonVersion": record.addon_version,
                "roleArn": record.role_arn,
                "associationId": record.association_id,
                "execution": record.last_workflow,
            }
        ),
    }


def put_event(events: Any, entry: dict[str, Any]) -> str | None:
    from hyperpod_control.adapters.aws import map_client_error

    try:
        result = events.put_events(Entries=[entry])
    except Exception as exc:
        raise map_client_error(exc, resource=f"event bus {entry['EventBusName']}") from exc
    failed = [e for e in result.get("Entries", []) if e.get("ErrorCode")]
    if failed or result.get("FailedEntryCount"):
        from hyperpod_control.exceptions import DependencyUnavailableError

        raise DependencyUnavailableError(f"EventBridge refused the event: {failed}")
    return (result.get("Entries") or [{}])[0].get("EventId")


def record_change(
    store: Store, events: Any, bus: str, cluster_arn: str, detail_type: str, change: Any
) -> RecordOutcome:
    """Write ``change(OPERATOR item)`` conditionally on its version and announce it on the bus."""
    existing = store.get_operator(cluster_arn)
    if existing is None:
        raise VersionConflictError(f"no OPERATOR item for {cluster_arn}; the lock was lost.")
    record = store.put(change(existing), expected_version=existing.version)
    event_id = put_event(events, operator_event(detail_type, record, bus))
    return RecordOutcome(
        cluster_arn=record.cluster_arn,
        mode=record.mode,
        status=record.status.value,
        addon_version=record.addon_version,
        role_arn=record.role_arn,
        association_id=record.association_id,
        event_id=event_id,
    )


def record_install(request: RecordInstallInput, store: Store, events: Any, bus: str) -> RecordOutcome:
    return record_change(
        store,
        events,
        bus,
        request.cluster.cluster_arn,
        "Operator Installed",
        lambda existing: installed_record(existing, request),
    )


# ============================================================== uninstall


def cluster_ref(cluster_name: str, described: dict[str, Any]) -> ClusterRef:
    """Pure: the HyperPod cluster (DescribeCluster's answer) as the workflows' steps name it."""
    eks_arn = ((described.get("Orchestrator") or {}).get("Eks") or {}).get("ClusterArn")
    if not eks_arn:
        raise InvalidInputError(f"clusterName: HyperPod cluster '{cluster_name}' is not orchestrated by EKS.")
    return ClusterRef(
        cluster_name=cluster_name,
        cluster_arn=described["ClusterArn"],
        eks_cluster_name=eks_arn.rsplit("/", 1)[-1],
    )


def plan_uninstall(request: PlanUninstallInput, sagemaker: Any, store: Store) -> UninstallPlan:
    parse_input(UninstallRequest, request.dump())
    cluster = cluster_ref(request.cluster_name, sagemaker.describe_cluster(request.cluster_name))
    record = store.get_operator(cluster.cluster_arn)
    if record is None or record.status is OperatorStatus.REGISTERED:
        raise InvalidInputError(
            f"clusterName: no training operator is installed on '{request.cluster_name}' by this "
            "control plane.",
            remedy="nothing to uninstall.",
        )
    return UninstallPlan(
        cluster=cluster,
        mode=record.mode,
        role_arn=record.role_arn,
        association_id=record.association_id,
        addon_version=record.addon_version,
        force=request.force,
    )


def judge_jobs(jobs: list[dict[str, Any]], force: bool) -> JobsOutcome:
    """Pure: refuse an uninstall while jobs exist, unless forced (their CRD goes, and they with it)."""
    names = sorted(f"{j['metadata'].get('namespace', 'default')}/{j['metadata']['name']}" for j in jobs)
    if names and not force:
        from hyperpod_control.exceptions import JobsRunningError

        shown = ", ".join(names[:10]) + (f" and {len(names) - 10} more" if len(names) > 10 else "")
        raise JobsRunningError(
            f"force: {len(names)} HyperPodPytorchJob(s) still exist: {shown}; uninstalling the operator "
            "deletes them.",
            remedy="delete or finish them first, or uninstall with force (hpctl uninstall --force).",
        )
    # A forced uninstall of a 2,000-job cluster: the names stay under Step Functions' 256 KiB.
    return JobsOutcome(count=len(names), jobs=names[:SHOWN_JOBS])


def check_jobs(kube: KubeAdapter, force: bool) -> JobsOutcome:
    return judge_jobs(kube.custom_objects(JOB_GROUP, JOB_VERSION, JOB_PLURAL), force)


def remove_pod_identity(
    request: RemoveIdentityInput, eks: EksAdapter, iam: IamAdapter
) -> RemoveIdentityOutcome:
    cluster = request.cluster.eks_cluster_name
    deleted_association = False
    existing = eks.find_association(cluster, OPERATOR_NAMESPACE, OPERATOR_SERVICE_ACCOUNT)
    if existing is not None and (existing.get("tags") or {}).get(MANAGED_TAG) == MANAGED_BY:
        deleted_association = eks.delete_association(cluster, existing["associationId"])
    elif request.association_id and existing and existing["associationId"] == request.association_id:
        deleted_association = eks.delete_association(cluster, request.association_id)
    if not request.role_arn:
        return RemoveIdentityOutcome(association_deleted=deleted_association, role_deleted=False)
    name = role_name_from_arn(request.role_arn)
    role = iam.get_role(name)
    tags = {t["Key"]: t["Value"] for t in (role or {}).get("Tags", [])}
    if role is None:
        return RemoveIdentityOutcome(association_deleted=deleted_association, role_deleted=False)
    if tags.get(MANAGED_TAG) != MANAGED_BY or not name.startswith(role_prefix()):
        return RemoveIdentityOutcome(
            association_deleted=deleted_association,
            role_deleted=False,
            role_kept_reason=f"role {name} was not created by the control plane; it is left as it is.",
        )
    for policy in iam.attached_policies(name):
        iam.detach_policy(name, policy)
    return RemoveIdentityOutcome(association_deleted=deleted_association, role_deleted=iam.delete_role(name))


def uninstalled_record(existing: OperatorRecord, owner: str) -> OperatorRecord:
    if existing.lock_owner != owner:
        raise VersionConflictError(
            f"the lock on {existing.cluster_name} is held by {existing.lock_owner}, not {owner}."
        )
    return existing.model_copy(
        update={
            "status": OperatorStatus.REGISTERED,
            "addon_version": None,
            "role_arn": None,
            "association_id": None,
            "last_workflow": owner,
            "reason": None,
            "updated_at": utcnow(),
        }
    )


def record_uninstall(request: RecordUninstallInput, store: Store, events: Any, bus: str) -> RecordOutcome:
    existing = store.get_operator(request.cluster.cluster_arn)
    if existing is None:
        raise VersionConflictError(f"no OPERATOR item for {request.cluster.cluster_arn}; the lock was lost.")
    record = store.put(uninstalled_record(existing, request.owner), expected_version=existing.version)
    event_id = put_event(events, operator_event("Operator Uninstalled", record, bus))
    return RecordOutcome(
        cluster_arn=record.cluster_arn, mode=record.mode, status=record.status.value, event_id=event_id
    )


# ============================================================== who the control plane is in a cluster


def control_plane_principals(functions: dict[str, list[str]], lambda_client: Any) -> dict[str, list[str]]:
    """The IAM roles of the functions that call the Kubernetes API (their access entries), by tier."""
    from hyperpod_control.adapters.aws import map_client_error

    roles: dict[str, list[str]] = {}
    for tier, names in functions.items():
        for name in names:
            try:
                role = lambda_client.get_function_configuration(FunctionName=name)["Role"]
            except Exception as exc:
                raise map_client_error(exc, resource=f"function {name}") from exc
            if role not in roles.setdefault(tier, []):
                roles[tier].append(role)
    return roles


def parse_kubernetes_functions(value: str) -> dict[str, list[str]]:
    """Pure: ``reader=FnA,FnB;supervisor=FnC`` (KUBERNETES_CLIENT_FUNCTIONS) -> tiers' functions."""
    tiers: dict[str, list[str]] = {}
    for part in filter(None, (p.strip() for p in value.split(";"))):
        tier, sep, names = part.partition("=")
        if not sep or tier.strip() not in ACCESS_TIERS:
            raise PermanentError(
                f"KUBERNETES_CLIENT_FUNCTIONS: {part!r} is not <tier>=<function,...> with a tier of "
                f"{', '.join(ACCESS_TIERS)}.",
                remedy="fix the variable in template.yaml (ClusterAccessFunction).",
            )
        tiers.setdefault(tier.strip(), []).extend(n.strip() for n in names.split(",") if n.strip())
    return tiers


def kubernetes_functions() -> dict[str, list[str]]:
    return parse_kubernetes_functions(os.environ.get("KUBERNETES_CLIENT_FUNCTIONS", ""))
