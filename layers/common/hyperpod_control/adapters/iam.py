"""IAM calls of the install workflow: the operator's execution role, its trust and its policy."""

from __future__ import annotations

import json
import urllib.parse
from typing import Any

from hyperpod_control.adapters.aws import AwsAdapter, error_code, map_client_error


def _document(value: Any) -> dict[str, Any]:
    """IAM returns policy documents URL-encoded (boto3 decodes them; some emulators do not)."""
    if isinstance(value, dict):
        return value
    text = urllib.parse.unquote(value) if isinstance(value, str) and value.startswith("%7B") else value
    return json.loads(text or "{}")


class IamAdapter(AwsAdapter):
    service = "iam"

    def get_role(self, name: str) -> dict[str, Any] | None:
        """The role with its trust policy as a dict and its tags, or None."""
        try:
            role = self.client.get_role(RoleName=name)["Role"]
        except Exception as exc:
            if error_code(exc) == "NoSuchEntity":
                return None
            raise map_client_error(exc, resource=f"IAM role {name}") from exc
        role["AssumeRolePolicyDocument"] = _document(role.get("AssumeRolePolicyDocument"))
        if "Tags" not in role:
            try:
                role["Tags"] = self.client.list_role_tags(RoleName=name).get("Tags", [])
            except Exception as exc:
                raise map_client_error(exc, resource=f"IAM role {name}") from exc
        return role

    def create_role(
        self,
        name: str,
        trust: dict[str, Any],
        *,
        description: str,
        tags: dict[str, str],
        boundary_arn: str | None,
        path: str = "/",
    ) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "RoleName": name,
            "Path": path,
            "AssumeRolePolicyDocument": json.dumps(trust),
            "Description": description,
            "Tags": [{"Key": k, "Value": v} for k, v in sorted(tags.items())],
        }
        if boundary_arn:
            kwargs["PermissionsBoundary"] = boundary_arn
        try:
            return self.client.create_role(**kwargs)["Role"]
        except Exception as exc:
            raise map_client_error(exc, resource=f"IAM role {name}") from exc

    def update_trust(self, name: str, trust: dict[str, Any]) -> None:
        try:
            self.client.update_assume_role_policy(RoleName=name, PolicyDocument=json.dumps(trust))
        except Exception as exc:
            raise map_client_error(exc, resource=f"IAM role {name}") from exc

    def attached_policies(self, name: str) -> list[str]:
        arns: list[str] = []
        kwargs: dict[str, Any] = {"RoleName": name}
        while True:
            try:
                page = self.client.list_attached_role_policies(**kwargs)
            except Exception as exc:
                raise map_client_error(exc, resource=f"IAM role {name}") from exc
            arns.extend(p["PolicyArn"] for p in page.get("AttachedPolicies", []))
            if not page.get("IsTruncated"):
                return arns
            kwargs["Marker"] = page["Marker"]

    def attach_policy(self, name: str, policy_arn: str) -> None:
        try:
            self.client.attach_role_policy(RoleName=name, PolicyArn=policy_arn)
        except Exception as exc:
            raise map_client_error(exc, resource=f"IAM role {name}") from exc

    def detach_policy(self, name: str, policy_arn: str) -> None:
        try:
            self.client.detach_role_policy(RoleName=name, PolicyArn=policy_arn)
        except Exception as exc:
            if error_code(exc) == "NoSuchEntity":
                return
            raise map_client_error(exc, resource=f"IAM role {name}") from exc

    def delete_role(self, name: str) -> bool:
        try:
            self.client.delete_role(RoleName=name)
        except Exception as exc:
            if error_code(exc) == "NoSuchEntity":
                return False
            raise map_client_error(exc, resource=f"IAM role {name}") from exc
        return True
