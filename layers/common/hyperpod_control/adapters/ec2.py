"""Network reads preflight needs: subnets, route tables, security groups, VPC endpoints, ENI count,
and (beside them, since what matters about them is their subnets) FSx file systems."""

from __future__ import annotations

from typing import Any

from hyperpod_control.adapters.aws import AwsAdapter, error_code, map_client_error

#: Error codes EC2 answers when one of several ids named in a Describe call does not exist.
_MISSING = {
    "InvalidSubnetID.NotFound",
    "InvalidGroup.NotFound",
    "InvalidGroupId.Malformed",
    "InvalidSubnetID.Malformed",
}


def _pages(call: Any, key: str, **kwargs: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    while True:
        page = call(**kwargs)
        items += page.get(key, [])
        token = page.get("NextToken")
        if not token:
            return items
        kwargs["NextToken"] = token


class Ec2Adapter(AwsAdapter):
    service = "ec2"

    def _by_id(self, call: str, key: str, id_param: str, ids: list[str]) -> tuple[list, list]:
        """Describe ``ids`` one call per id when a batch call fails on a missing one, so that one
        wrong id does not hide the others; returns (found, missing ids)."""
        if not ids:
            return [], []
        try:
            return _pages(getattr(self.client, call), key, **{id_param: ids}), []
        except Exception as exc:
            if error_code(exc) not in _MISSING:
                raise map_client_error(exc, resource=", ".join(ids)) from exc
        found, missing = [], []
        for one in ids:
            try:
                found += getattr(self.client, call)(**{id_param: [one]}).get(key, [])
            except Exception as exc:
                if error_code(exc) not in _MISSING:
                    raise map_client_error(exc, resource=one) from exc
                missing.append(one)
        return found, missing

    def subnets(self, ids: list[str]) -> tuple[list[dict[str, Any]], list[str]]:
        return self._by_id("describe_subnets", "Subnets", "SubnetIds", ids)

    def security_groups(self, ids: list[str]) -> tuple[list[dict[str, Any]], list[str]]:
        return self._by_id("describe_security_groups", "SecurityGroups", "GroupIds", ids)

    def route_tables(self, vpc_id: str) -> list[dict[str, Any]]:
        try:
            return _pages(
                self.client.describe_route_tables,
                "RouteTables",
                Filters=[{"Name": "vpc-id", "Values": [vpc_id]}],
            )
        except Exception as exc:
            raise map_client_error(exc, resource=f"route tables of {vpc_id}") from exc

    def vpc_endpoints(self, vpc_id: str) -> list[dict[str, Any]]:
        try:
            return _pages(
                self.client.describe_vpc_endpoints,
                "VpcEndpoints",
                Filters=[{"Name": "vpc-id", "Values": [vpc_id]}],
            )
        except Exception as exc:
            raise map_client_error(exc, resource=f"VPC endpoints of {vpc_id}") from exc

    def count_network_interfaces(self) -> int:
        """ENIs in this Region: what the "Network interfaces per Region" quota counts."""
        try:
            count, kwargs = 0, {"MaxResults": 1000}
            while True:
                page = self.client.describe_network_interfaces(**kwargs)
                count += len(page.get("NetworkInterfaces", []))
                if not page.get("NextToken"):
                    return count
                kwargs["NextToken"] = page["NextToken"]
        except Exception as exc:
            raise map_client_error(exc, resource="network interfaces") from exc


class FsxAdapter(AwsAdapter):
    service = "fsx"

    def file_systems(self, ids: list[str]) -> list[dict[str, Any]]:
        if not ids:
            return []
        found = []
        for one in ids:  # one by one: a deleted file system must not hide the others
            try:
                found += self.client.describe_file_systems(FileSystemIds=[one]).get("FileSystems", [])
            except Exception as exc:
                if error_code(exc) != "FileSystemNotFound":
                    raise map_client_error(exc, resource=one) from exc
        return found
