"""Inputs, outputs and facts of the install_operator and uninstall_operator workflows. No I/O.

Facts (docs/hyperpod-contract.md, "The training-operator add-on"; AWS's page "Installing the
training operator"): the add-on's name, the namespace and service account its Pod Identity
association names, the managed policy its role carries, and its configuration values, typed here
from the documented parameter table so that a bad value fails before any AWS call with the field
named.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Literal

from pydantic import Field, field_validator, model_validator

# The HyperPodPyTorchJob resource and the control plane's marks: models/names.py (no models there,
# so the fault path's handlers import them without these), re-exported here.
from hyperpod_control.models.names import JOB_CRD as JOB_CRD
from hyperpod_control.models.names import JOB_GROUP as JOB_GROUP
from hyperpod_control.models.names import JOB_KIND as JOB_KIND
from hyperpod_control.models.names import JOB_PLURAL as JOB_PLURAL
from hyperpod_control.models.names import JOB_VERSION as JOB_VERSION
from hyperpod_control.models.names import MANAGED_BY as MANAGED_BY
from hyperpod_control.models.names import MANAGED_LABEL as MANAGED_LABEL
from hyperpod_control.models.records import OperatorMode
from hyperpod_control.models.tasks import TaskModel

ADDON_NAME = "amazon-sagemaker-hyperpod-training-operator"
OPERATOR_NAMESPACE = "aws-hyperpod"
OPERATOR_SERVICE_ACCOUNT = "hp-training-operator-controller-manager"
OPERATOR_POLICY_NAME = "AmazonSageMakerHyperPodTrainingOperatorAccess"
#: The label the operator's controller Deployment (``hp-training-operator-hp-training-controller-
#: manager``) and its pods carry; the HyperPod CLI finds the operator by it.
OPERATOR_SELECTOR = "hp-training-control-plane=controller-manager"
#: Kubernetes identity of the control plane: the prefix of its groups and ClusterRoles.
CONTROL_PLANE_GROUP = "hyperpod-control-plane"
#: What each function needs in a cluster, least first. A function's role is in exactly one tier:
#: its access entry carries the group ``hyperpod-control-plane:<tier>``, bound to the ClusterRole
#: of the same name (services/install/rbac.py ``tier_cluster_role``).
ACCESS_TIERS = ("reader", "node-handler", "supervisor", "crd-owner")


def tier_group(tier: str) -> str:
    return f"{CONTROL_PLANE_GROUP}:{tier}"


EVENT_SOURCE = "hyperpod.control-plane"

#: ``v1.2.1`` or ``v1.2.1-eksbuild.1``, as DescribeAddonVersions spells them.
VERSION_PATTERN = r"^v\d+\.\d+\.\d+(-eksbuild\.\d+)?$"
ROLE_ARN_PATTERN = r"^arn:aws[a-z-]*:iam::\d{12}:role/[A-Za-z0-9_+=,.@/-]+$"
CLUSTER_NAME_PATTERN = r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$"
#: The template parameter naming the roles (besides the workflow's own) the stack may pass to EKS
#: Pod Identity; the Preflight function gets them, its own path included, in this variable.
OPERATOR_ROLE_ARNS_PARAMETER = "OperatorRoleArns"
PASSABLE_ROLES_ENV = "OPERATOR_PASSABLE_ROLES"


def _arn_segment(pattern: str) -> re.Pattern[str]:
    # IAM's wildcards: * any run of characters, ? exactly one; everything else literal.
    return re.compile(
        "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern) + r"\Z"
    )


def passable_by(role_arn: str, patterns: list[str] | tuple[str, ...]) -> str | None:
    """Pure: the first of ``patterns`` (the Resource ARNs of an iam:PassRole statement, with IAM's
    ``*`` and ``?`` wildcards) that covers ``role_arn``; None when none does, so passing the role
    would be denied. Matched segment by segment (the colon-separated parts; ``role/path/name`` is
    one), case-sensitively; a pattern that is not a role ARN covers nothing."""
    parts = role_arn.split(":", 5)
    for pattern in patterns:
        segments = pattern.split(":", 5)
        if len(segments) == len(parts) and all(
            _arn_segment(seg).match(part) for seg, part in zip(segments, parts, strict=True)
        ):
            return pattern
    return None


_QUANTITY = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$")
_SCALE = {
    None: Decimal(1),
    "m": Decimal("0.001"),
    "k": Decimal(10) ** 3,
    "M": Decimal(10) ** 6,
    "G": Decimal(10) ** 9,
    "T": Decimal(10) ** 12,
    "P": Decimal(10) ** 15,
    "E": Decimal(10) ** 18,
    "Ki": Decimal(2) ** 10,
    "Mi": Decimal(2) ** 20,
    "Gi": Decimal(2) ** 30,
    "Ti": Decimal(2) ** 40,
    "Pi": Decimal(2) ** 50,
    "Ei": Decimal(2) ** 60,
}


def parse_quantity(value: str | int | float) -> Decimal:
    """A Kubernetes quantity (``500m``, ``2``, ``4Gi``) as a number; ValueError when it is none."""
    text = str(value).strip()
    match = _QUANTITY.match(text)
    if not match:
        raise ValueError(f"{value!r} is not a Kubernetes quantity (like 500m, 2, 512Mi or 4Gi)")
    try:
        return Decimal(match.group(1)) * _SCALE[match.group(2)]
    except InvalidOperation as exc:  # pragma: no cover - the pattern admits only decimals
        raise ValueError(f"{value!r} is not a number") from exc


# -- the add-on's configuration values (the documented parameter table) --------------------------


class ResourceAmounts(TaskModel):
    cpu: str | None = Field(default=None, description="CPU quantity, e.g. 1 or 500m")
    memory: str | None = Field(default=None, description="memory quantity, e.g. 2Gi")

    @field_validator("cpu", "memory", mode="before")
    @classmethod
    def _quantity(cls, value: object) -> object:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise ValueError("must be a Kubernetes quantity string such as '1', '500m' or '2Gi'")
        parse_quantity(value)
        return str(value)


class ManagerResources(TaskModel):
    requests: ResourceAmounts | None = None
    limits: ResourceAmounts | None = None


class ControllerManager(TaskModel):
    resources: ManagerResources | None = None


class TrainingControllerManager(TaskModel):
    manager: ControllerManager | None = None
    node_selector: dict[str, str] | None = Field(
        default=None, description='node selector of the controller pods (default compute-type "HyperPod")'
    )


#: The documented defaults: requests 1 CPU / 2Gi, limits 2 CPU / 4Gi.
DEFAULT_REQUESTS = {"cpu": "1", "memory": "2Gi"}
DEFAULT_LIMITS = {"cpu": "2", "memory": "4Gi"}


class AddonConfiguration(TaskModel):
    """``configurationValues`` of the training operator add-on, typed from the documented table:
    ``hpTrainingControllerManager.manager.resources.{requests,limits}.{cpu,memory}`` and
    ``hpTrainingControllerManager.nodeSelector``. Unknown keys are refused (the add-on's schema
    refuses them too, but late, at CreateAddon)."""

    hp_training_controller_manager: TrainingControllerManager | None = None

    @model_validator(mode="after")
    def _requests_within_limits(self) -> AddonConfiguration:
        resources = (
            self.hp_training_controller_manager
            and self.hp_training_controller_manager.manager
            and self.hp_training_controller_manager.manager.resources
        )
        if not resources:
            return self
        requests = {**DEFAULT_REQUESTS, **(resources.requests.dump() if resources.requests else {})}
        limits = {**DEFAULT_LIMITS, **(resources.limits.dump() if resources.limits else {})}
        for key in ("cpu", "memory"):
            if parse_quantity(requests[key]) > parse_quantity(limits[key]):
                raise ValueError(
                    f"hpTrainingControllerManager.manager.resources.requests.{key} ({requests[key]}) exceeds "
                    f"limits.{key} ({limits[key]})"
                )
        return self


# -- workflow input ----------------------------------------------------------------------------


class InstallRequest(TaskModel):
    """Input of the ``install_operator`` workflow (the Step Functions console, ``hpctl install``,
    an EventBridge rule)."""

    cluster_name: str = Field(
        min_length=1, max_length=63, pattern=CLUSTER_NAME_PATTERN, description="the HyperPod cluster's name"
    )
    operator: OperatorMode = Field(
        default=OperatorMode.ADDON, description="addon (AWS's EKS add-on) or serverless (this project)"
    )
    addon_version: str | None = Field(
        default=None,
        pattern=VERSION_PATTERN,
        description="add-on version like v1.2.0-eksbuild.1 (default: the latest the cluster supports)",
    )
    configuration_values: AddonConfiguration | None = Field(
        default=None, description="the add-on's configuration values (hpTrainingControllerManager...)"
    )
    role_arn: str | None = Field(
        default=None,
        pattern=ROLE_ARN_PATTERN,
        description="an existing IAM role for the operator (default: the workflow creates one)",
    )

    @model_validator(mode="after")
    def _addon_fields_only_for_addon(self) -> InstallRequest:
        if self.operator is OperatorMode.SERVERLESS:
            given = [
                name
                for name, value in (
                    ("addonVersion", self.addon_version),
                    ("configurationValues", self.configuration_values),
                    ("roleArn", self.role_arn),
                )
                if value is not None
            ]
            if given:
                raise ValueError(f"{', '.join(given)} only apply to operator=addon")
        return self


class UninstallRequest(TaskModel):
    cluster_name: str = Field(
        min_length=1, max_length=63, pattern=CLUSTER_NAME_PATTERN, description="the HyperPod cluster's name"
    )
    force: bool = Field(default=False, description="uninstall even while HyperPodPytorchJobs exist")


class ClusterRef(TaskModel):
    """What Preflight (or PlanUninstall) found out about the cluster, as later steps need it."""

    model_config = TaskModel.model_config | {"extra": "ignore"}

    cluster_name: str
    cluster_arn: str
    eks_cluster_name: str
    kubernetes_version: str | None = None


class WorkflowLock(TaskModel):
    """The lock a workflow's step runs under (the workflow's ``$.lock``): the execution that took
    it and the HyperPod cluster it locked. Every step that acts on a cluster passes it, and the
    step checks it against the OPERATOR item before acting (``services/workflow_lock.py``)."""

    model_config = TaskModel.model_config | {"extra": "ignore"}

    owner: str = Field(min_length=1, description="the execution that holds the lock ($$.Execution.Id)")
    cluster_arn: str = Field(min_length=1, description="the HyperPod cluster the workflow locked")


class LockedClusterInput(TaskModel):
    """Input of a step that acts on a cluster: the cluster, and the workflow's lock on it."""

    cluster: ClusterRef
    lock: WorkflowLock = Field(description="the workflow's lock ($.lock): owner and clusterArn")


# -- task inputs and outputs ---------------------------------------------------------------------


class AcquireLockInput(TaskModel):
    cluster: ClusterRef
    owner: str = Field(min_length=1, description="the execution that takes the lock")
    purpose: Literal["install", "uninstall", "upgrade"]
    request: dict = Field(default_factory=dict)


class LockOutcome(TaskModel):
    owner: str
    mode: OperatorMode
    version: int
    #: The execution whose lock was taken over: it had ended without releasing it.
    taken_over_from: str | None = None


class ReleaseLockInput(TaskModel):
    model_config = TaskModel.model_config | {"extra": "ignore"}

    cluster_arn: str | None = None
    owner: str
    succeeded: bool = False


class ReleaseOutcome(TaskModel):
    released: bool
    status: str | None = None


class EnsureRoleInput(LockedClusterInput):
    role_arn: str | None = Field(default=None, pattern=ROLE_ARN_PATTERN)


class RoleOutcome(TaskModel):
    role_arn: str
    role_name: str
    created: bool = False
    changed: list[str] = Field(default_factory=list)


class EnsureAssociationInput(LockedClusterInput):
    role_arn: str = Field(pattern=ROLE_ARN_PATTERN)


class AssociationOutcome(TaskModel):
    association_id: str
    association_arn: str | None = None
    action: Literal["created", "updated", "unchanged"]


class AddonInput(LockedClusterInput):
    addon_version: str | None = Field(default=None, pattern=VERSION_PATTERN)
    configuration_values: AddonConfiguration | None = None


class AddonOutcome(TaskModel):
    addon_version: str
    action: Literal["created", "updated", "unchanged"]
    status: str


class DescribeAddonInput(LockedClusterInput):
    #: True while waiting for a delete: "gone" is then the goal, not an error.
    expect_gone: bool = False


class AddonState(TaskModel):
    status: str
    addon_version: str | None = None
    done: bool
    issues: list[str] = Field(default_factory=list)


class ClusterTaskInput(LockedClusterInput):
    """Steps that need only the cluster (VerifyOperator, DeleteAddon)."""


class VerifyOutcome(TaskModel):
    deployment: str
    namespace: str
    available_replicas: int
    crd: str
    established: bool


class AccessOutcome(TaskModel):
    principals: list[str]
    created: list[str] = Field(default_factory=list)
    cluster_role: str
    binding: str


class CrdOutcome(TaskModel):
    name: str
    action: Literal["created", "updated", "unchanged", "deleted", "absent"]


class InstalledOperator(TaskModel):
    """What the mode's branch installed (the workflow's ``$.installed``)."""

    operator: OperatorMode
    addon_version: str | None = None
    role_arn: str | None = None
    association_id: str | None = None


class RecordInstallInput(LockedClusterInput):
    owner: str
    installed: InstalledOperator


class RecordOutcome(TaskModel):
    cluster_arn: str
    mode: OperatorMode
    status: str
    addon_version: str | None = None
    role_arn: str | None = None
    association_id: str | None = None
    event_id: str | None = None


class UninstallPlan(TaskModel):
    cluster: ClusterRef
    mode: OperatorMode
    role_arn: str | None = None
    association_id: str | None = None
    addon_version: str | None = None
    force: bool = False

    def dump(self) -> dict:
        # Keep the nulls: the workflow's JSONPaths name these fields whether or not they are set.
        return self.model_dump(mode="json", by_alias=True)


class PlanUninstallInput(TaskModel):
    model_config = TaskModel.model_config | {"extra": "ignore"}

    cluster_name: str = Field(min_length=1, max_length=63, pattern=CLUSTER_NAME_PATTERN)
    force: bool = False


class CheckJobsInput(LockedClusterInput):
    force: bool = False


class JobsOutcome(TaskModel):
    count: int
    #: The first ``SHOWN_JOBS`` (namespace/name, sorted); ``count`` counts them all.
    jobs: list[str] = Field(default_factory=list)


class RemoveIdentityInput(LockedClusterInput):
    role_arn: str | None = None
    association_id: str | None = None


class RemoveIdentityOutcome(TaskModel):
    association_deleted: bool
    role_deleted: bool
    role_kept_reason: str | None = None


class RemoveAccessOutcome(TaskModel):
    removed_entries: list[str] = Field(default_factory=list)
    rbac_removed: bool


class RecordUninstallInput(LockedClusterInput):
    owner: str
    mode: OperatorMode


class ClusterActionInput(LockedClusterInput):
    """Steps that ensure or remove one thing in the cluster (EnsureAccess/RemoveAccess,
    EnsureCRD/RemoveCRD): one function each, so one role holds the rights for both ways."""

    action: Literal["ensure", "remove"] = "ensure"


# -- add-on versions ------------------------------------------------------------------------------

_VERSION_NUMBERS = re.compile(r"\d+")


def version_key(version: str) -> tuple[int, ...]:
    """Pure: ``v1.2.1-eksbuild.1`` -> (1, 2, 1, 1); numeric order, not string order."""
    return tuple(int(n) for n in _VERSION_NUMBERS.findall(version))


def resolve_version(requested: str, versions: list[str]) -> str | None:
    """Pure: the add-on version a user means. Every EKS add-on version carries a build suffix
    (``v1.1.2-eksbuild.1``) that people leave out: ``v1.1.2`` is the newest build of it. None when
    there is no such version."""
    if requested in versions:
        return requested
    builds = [v for v in versions if v.split("-eksbuild.", 1)[0] == requested]
    return max(builds, key=version_key) if builds else None
