"""EKS calls of the control plane (cluster, add-ons, Pod Identity associations, access entries),
with AWS's errors mapped to the project's own. Reads of one thing that find nothing return None.

Shared by the install workflow and Preflight: add methods here rather than a second adapter.
"""

from __future__ import annotations

import json
from typing import Any

from hyperpod_control.adapters.aws import AwsAdapter, error_code, map_client_error
from hyperpod_control.exceptions import ResourceNotFoundError, VersionConflictError


def _missing(exc: Exception) -> bool:
    return error_code(exc) in ("ResourceNotFoundException", "NotFoundException")


class EksAdapter(AwsAdapter):
    service = "eks"

    def _call(self, operation: str, resource: str, **kwargs: Any) -> dict[str, Any]:
        try:
            return getattr(self.client, operation)(**kwargs)
        except Exception as exc:
            mapped = map_client_error(exc, resource=resource)
            if error_code(exc) == "ResourceInUseException":
                # EKS's "busy / exists": another writer or a change in flight. Re-read, decide again.
                mapped = VersionConflictError(f"{resource}: {mapped.message}")
            raise mapped from exc

    def _read(self, operation: str, resource: str, **kwargs: Any) -> dict[str, Any] | None:
        try:
            return getattr(self.client, operation)(**kwargs)
        except Exception as exc:
            if _missing(exc):
                return None
            raise map_client_error(exc, resource=resource) from exc

    # -- cluster ----------------------------------------------------------------------------------

    def describe_cluster(self, name: str) -> dict[str, Any]:
        found = self._read("describe_cluster", f"EKS cluster {name}", name=name)
        if found is None:
            raise ResourceNotFoundError(f"EKS cluster '{name}' does not exist in this account and region.")
        return found["cluster"]

    # -- add-ons ----------------------------------------------------------------------------------

    def list_addons(self, cluster: str) -> list[str]:
        names: list[str] = []
        kwargs: dict[str, Any] = {"clusterName": cluster}
        while True:
            page = self._call("list_addons", f"add-ons of {cluster}", **kwargs)
            names.extend(page.get("addons", []))
            if not page.get("nextToken"):
                return names
            kwargs["nextToken"] = page["nextToken"]

    def describe_addon(self, cluster: str, addon: str) -> dict[str, Any] | None:
        found = self._read("describe_addon", f"add-on {addon}", clusterName=cluster, addonName=addon)
        return found["addon"] if found else None

    def addon_versions(self, addon: str, kubernetes_version: str | None) -> list[dict[str, Any]]:
        """Every version of ``addon`` (for ``kubernetes_version`` when given), newest first."""
        kwargs: dict[str, Any] = {"addonName": addon}
        if kubernetes_version:
            kwargs["kubernetesVersion"] = kubernetes_version
        versions: list[dict[str, Any]] = []
        while True:
            page = self._call("describe_addon_versions", f"add-on {addon}", **kwargs)
            for item in page.get("addons", []):
                versions.extend(item.get("addonVersions", []))
            if not page.get("nextToken"):
                return versions
            kwargs["nextToken"] = page["nextToken"]

    def configuration_schema(self, addon: str, version: str) -> dict[str, Any]:
        found = self._call(
            "describe_addon_configuration", f"add-on {addon} {version}", addonName=addon, addonVersion=version
        )
        text = found.get("configurationSchema") or "{}"
        return json.loads(text)

    def create_addon(self, cluster: str, addon: str, **kwargs: Any) -> dict[str, Any]:
        return self._call("create_addon", f"add-on {addon}", clusterName=cluster, addonName=addon, **kwargs)[
            "addon"
        ]

    def update_addon(self, cluster: str, addon: str, **kwargs: Any) -> dict[str, Any]:
        return self._call("update_addon", f"add-on {addon}", clusterName=cluster, addonName=addon, **kwargs)[
            "update"
        ]

    def delete_addon(self, cluster: str, addon: str) -> bool:
        """False when there was nothing to delete."""
        try:
            self.client.delete_addon(clusterName=cluster, addonName=addon)
        except Exception as exc:
            if _missing(exc):
                return False
            if error_code(exc) == "ResourceInUseException":
                raise VersionConflictError(f"add-on {addon} is changing; deleting it again later.") from exc
            raise map_client_error(exc, resource=f"add-on {addon}") from exc
        return True

    # -- Pod Identity -----------------------------------------------------------------------------

    def find_association(self, cluster: str, namespace: str, service_account: str) -> dict[str, Any] | None:
        """The association of (namespace, service account), described (roleArn included)."""
        page = self._call(
            "list_pod_identity_associations",
            f"pod identity associations of {cluster}",
            clusterName=cluster,
            namespace=namespace,
            serviceAccount=service_account,
        )
        for summary in page.get("associations", []):
            described = self._read(
                "describe_pod_identity_association",
                f"pod identity association {summary['associationId']}",
                clusterName=cluster,
                associationId=summary["associationId"],
            )
            if described is not None:
                return described["association"]
        return None

    def create_association(
        self, cluster: str, namespace: str, service_account: str, role_arn: str, tags: dict[str, str]
    ) -> dict[str, Any]:
        return self._call(
            "create_pod_identity_association",
            f"pod identity association {namespace}/{service_account}",
            clusterName=cluster,
            namespace=namespace,
            serviceAccount=service_account,
            roleArn=role_arn,
            tags=tags,
        )["association"]

    def update_association(self, cluster: str, association_id: str, role_arn: str) -> dict[str, Any]:
        return self._call(
            "update_pod_identity_association",
            f"pod identity association {association_id}",
            clusterName=cluster,
            associationId=association_id,
            roleArn=role_arn,
        )["association"]

    def delete_association(self, cluster: str, association_id: str) -> bool:
        try:
            self.client.delete_pod_identity_association(clusterName=cluster, associationId=association_id)
        except Exception as exc:
            if _missing(exc):
                return False
            raise map_client_error(exc, resource=f"pod identity association {association_id}") from exc
        return True

    # -- access entries ---------------------------------------------------------------------------

    def list_associated_access_policies(self, cluster: str, principal_arn: str) -> list[dict[str, Any]]:
        found = self._read(
            "list_associated_access_policies",
            f"access policies of {principal_arn}",
            clusterName=cluster,
            principalArn=principal_arn,
        )
        return (found or {}).get("associatedAccessPolicies", [])

    def associate_access_policy(self, cluster: str, principal_arn: str, policy_arn: str) -> None:
        self._call(
            "associate_access_policy",
            f"access policy of {principal_arn}",
            clusterName=cluster,
            principalArn=principal_arn,
            policyArn=policy_arn,
            accessScope={"type": "cluster"},
        )

    def disassociate_access_policy(self, cluster: str, principal_arn: str, policy_arn: str) -> None:
        """Idempotent: a policy (or entry) already gone is what was asked for."""
        self._read(
            "disassociate_access_policy",
            f"access policy of {principal_arn}",
            clusterName=cluster,
            principalArn=principal_arn,
            policyArn=policy_arn,
        )

    def describe_access_entry(self, cluster: str, principal_arn: str) -> dict[str, Any] | None:
        found = self._read(
            "describe_access_entry",
            f"access entry {principal_arn}",
            clusterName=cluster,
            principalArn=principal_arn,
        )
        return found["accessEntry"] if found else None

    def create_access_entry(
        self, cluster: str, principal_arn: str, groups: list[str], tags: dict[str, str] | None = None
    ) -> dict[str, Any]:
        return self._call(
            "create_access_entry",
            f"access entry {principal_arn}",
            clusterName=cluster,
            principalArn=principal_arn,
            type="STANDARD",
            kubernetesGroups=groups,
            tags=tags or {},
        )["accessEntry"]

    def update_access_entry(self, cluster: str, principal_arn: str, groups: list[str]) -> dict[str, Any]:
        return self._call(
            "update_access_entry",
            f"access entry {principal_arn}",
            clusterName=cluster,
            principalArn=principal_arn,
            kubernetesGroups=groups,
        )["accessEntry"]

    def delete_access_entry(self, cluster: str, principal_arn: str) -> bool:
        try:
            self.client.delete_access_entry(clusterName=cluster, principalArn=principal_arn)
        except Exception as exc:
            if _missing(exc):
                return False
            raise map_client_error(exc, resource=f"access entry {principal_arn}") from exc
        return True
