"""SageMaker HyperPod calls the control plane makes, with errors mapped to the project's own."""

from __future__ import annotations

from typing import Any

from hyperpod_control.adapters.aws import AwsAdapter, error_code, map_client_error
from hyperpod_control.exceptions import ResourceNotFoundError


class SageMakerAdapter(AwsAdapter):
    service = "sagemaker"

    def describe_cluster(self, name: str) -> dict[str, Any]:
        try:
            return self.client.describe_cluster(ClusterName=name)
        except Exception as exc:
            # SageMaker documents ResourceNotFound for a missing cluster; older endpoints (and moto)
            # answered ValidationException "Could not find cluster": both mean the same.
            code = error_code(exc)
            if code == "ResourceNotFound" or (
                code == "ValidationException" and "could not find" in str(exc).lower()
            ):
                raise ResourceNotFoundError(
                    f"HyperPod cluster '{name}' does not exist in this account and region.",
                    remedy="check the cluster name with `aws sagemaker list-clusters`.",
                ) from exc
            raise map_client_error(exc, resource=f"HyperPod cluster {name}") from exc

    def list_cluster_nodes(self, name: str) -> list[dict[str, Any]]:
        nodes: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {"ClusterName": name}
        while True:
            try:
                resp = self.client.list_cluster_nodes(**kwargs)
            except Exception as exc:
                raise map_client_error(exc, resource=f"HyperPod cluster {name}") from exc
            nodes.extend(resp.get("ClusterNodeSummaries", []))
            token = resp.get("NextToken")
            if not token:
                return nodes
            kwargs["NextToken"] = token

    def batch_repair_nodes(self, cluster: str, action: str, node_ids: list[str]) -> dict[str, list[Any]]:
        """``BatchRebootClusterNodes`` (action "Reboot") or ``BatchReplaceClusterNodes`` ("Replace")
        for ``node_ids``, 25 per call (the API's limit); the calls' ``Successful`` ids and ``Failed``
        entries (NodeId, ErrorCode, Message) merged. A call that fails as a whole raises."""
        from hyperpod_control.models.node_health import REPAIR_BATCH_SIZE

        operations = {"Reboot": "batch_reboot_cluster_nodes", "Replace": "batch_replace_cluster_nodes"}
        if action not in operations:
            raise ValueError(f"unknown repair action {action!r}; expected one of {sorted(operations)}")
        merged: dict[str, list[Any]] = {"Successful": [], "Failed": []}
        for start in range(0, len(node_ids), REPAIR_BATCH_SIZE):
            batch = node_ids[start : start + REPAIR_BATCH_SIZE]
            try:
                resp = getattr(self.client, operations[action])(ClusterName=cluster, NodeIds=batch)
            except Exception as exc:
                raise map_client_error(
                    exc, resource=f"{action} of {batch} in HyperPod cluster {cluster}"
                ) from exc
            merged["Successful"] += resp.get("Successful", [])
            merged["Failed"] += resp.get("Failed", [])
        return merged

    def list_tags(self, arn: str) -> dict[str, str]:
        tags: dict[str, str] = {}
        kwargs: dict[str, Any] = {"ResourceArn": arn}
        while True:
            try:
                resp = self.client.list_tags(**kwargs)
            except Exception as exc:
                raise map_client_error(exc, resource=f"tags of {arn}") from exc
            tags.update({t["Key"]: t.get("Value", "") for t in resp.get("Tags", [])})
            token = resp.get("NextToken")
            if not token:
                return tags
            kwargs["NextToken"] = token

    def list_cluster_names(self) -> list[str]:
        names: list[str] = []
        kwargs: dict[str, Any] = {}
        while True:
            try:
                resp = self.client.list_clusters(**kwargs)
            except Exception as exc:
                raise map_client_error(exc, resource="HyperPod clusters") from exc
            names += [c["ClusterName"] for c in resp.get("ClusterSummaries", [])]
            token = resp.get("NextToken")
            if not token:
                return names
            kwargs["NextToken"] = token
