"""Installing and uninstalling a cluster's training operator: the decisions (pure functions over
plain data and models) and, beside them, the steps that apply them through the adapters.

Every step is idempotent: it reads what is there, decides, and changes only what differs, so a
second run of the workflow changes nothing and a retried step does not do its work twice.

One module per seam, each the one home of what it holds; this package re-exports the names the
handlers, hpctl, the sandbox and the tests call as ``install.<name>``:

- ``lock``: the per-cluster lock and the one-operator rule (AcquireLock, ReleaseLock);
- ``identity``: the operator's IAM execution role and its EKS Pod Identity association;
- ``addon``: the EKS add-on (version, configuration, create or update, the wait);
- ``rbac``: the access tiers' Kubernetes rules (``_TIER_RULES``), ClusterRoles and bindings;
- ``access``: the functions' access entries by tier and the installer's cluster-admin;
- ``crd``: the serverless operator's CRD and the check that an operator serves it;
- ``records``: the OPERATOR item of a finished install or uninstall, and the uninstall's plan.
"""

from __future__ import annotations

from hyperpod_control.models.install import version_key
from hyperpod_control.models.names import MANAGED_TAG
from hyperpod_control.services.install.access import (
    CLUSTER_ADMIN_POLICY,
    canonical_principal,
    control_plane_principals,
    decide_entry,
    ensure_access,
    installer_admin,
    kubernetes_functions,
    parse_kubernetes_functions,
    remove_access,
)
from hyperpod_control.services.install.addon import (
    BROKEN,
    BUSY,
    addon_state,
    choose_version,
    configuration_json,
    create_or_update_addon,
    decide_addon,
    describe_addon,
    schema_errors,
)
from hyperpod_control.services.install.common import DONE
from hyperpod_control.services.install.crd import (
    assess_operator,
    ensure_crd,
    job_crd,
    remove_crd,
    verify_operator,
)
from hyperpod_control.services.install.identity import (
    POD_IDENTITY_ACTIONS,
    POD_IDENTITY_PRINCIPAL,
    decide_association,
    ensure_execution_role,
    ensure_pod_identity_association,
    operator_policy_arn,
    partition_of,
    remove_pod_identity,
    role_name_for,
    role_name_from_arn,
    trust_policy,
    trust_problems,
)
from hyperpod_control.services.install.lock import (
    acquire_lock,
    decide_claim,
    decide_release,
    lock_holder_ended,
    release_lock,
)
from hyperpod_control.services.install.rbac import tier_binding, tier_cluster_role
from hyperpod_control.services.install.records import (
    check_jobs,
    cluster_ref,
    installed_record,
    judge_jobs,
    operator_event,
    plan_uninstall,
    put_event,
    record_change,
    record_install,
    record_uninstall,
    uninstalled_record,
)

__all__ = [
    "BROKEN",
    "BUSY",
    "CLUSTER_ADMIN_POLICY",
    "DONE",
    "MANAGED_TAG",
    "POD_IDENTITY_ACTIONS",
    "POD_IDENTITY_PRINCIPAL",
    "acquire_lock",
    "addon_state",
    "assess_operator",
    "canonical_principal",
    "check_jobs",
    "choose_version",
    "cluster_ref",
    "configuration_json",
    "control_plane_principals",
    "create_or_update_addon",
    "decide_addon",
    "decide_association",
    "decide_claim",
    "decide_entry",
    "decide_release",
    "describe_addon",
    "ensure_access",
    "ensure_crd",
    "ensure_execution_role",
    "ensure_pod_identity_association",
    "installed_record",
    "installer_admin",
    "job_crd",
    "judge_jobs",
    "kubernetes_functions",
    "lock_holder_ended",
    "operator_event",
    "operator_policy_arn",
    "parse_kubernetes_functions",
    "partition_of",
    "plan_uninstall",
    "put_event",
    "record_change",
    "record_install",
    "record_uninstall",
    "release_lock",
    "remove_access",
    "remove_crd",
    "remove_pod_identity",
    "role_name_for",
    "role_name_from_arn",
    "schema_errors",
    "tier_binding",
    "tier_cluster_role",
    "trust_policy",
    "trust_problems",
    "uninstalled_record",
    "verify_operator",
    "version_key",
]
