"""Service Quotas reads: one quota by code, or by name (SageMaker's per-instance-type quotas)."""

from __future__ import annotations

from typing import Any

from hyperpod_control.adapters.aws import AwsAdapter, map_client_error


class QuotasAdapter(AwsAdapter):
    service = "service-quotas"

    def __init__(self, client: Any = None, region: str | None = None) -> None:
        super().__init__(client, region)
        self._by_service: dict[str, list[dict[str, Any]]] = {}

    def get(self, service_code: str, quota_code: str) -> dict[str, Any]:
        """The applied quota (or AWS's default where none was applied)."""
        try:
            return self.client.get_service_quota(ServiceCode=service_code, QuotaCode=quota_code)["Quota"]
        except Exception as exc:
            if (getattr(exc, "response", {}) or {}).get("Error", {}).get("Code") != "NoSuchResourceException":
                raise map_client_error(exc, resource=f"quota {service_code}/{quota_code}") from exc
        try:  # no applied value in this account: the default is what holds
            return self.client.get_aws_default_service_quota(ServiceCode=service_code, QuotaCode=quota_code)[
                "Quota"
            ]
        except Exception as exc:
            raise map_client_error(exc, resource=f"quota {service_code}/{quota_code}") from exc

    def find_by_name(self, service_code: str, name: str) -> dict[str, Any] | None:
        """A quota found by its name, as the console search the docs describe does (SageMaker's
        "<type> for cluster usage" codes are opaque and not published per instance type)."""
        wanted = name.lower()
        return next((q for q in self._list(service_code) if q.get("QuotaName", "").lower() == wanted), None)

    def _list(self, service_code: str) -> list[dict[str, Any]]:
        """Every quota of the service: AWS's defaults, with the applied values over them.
        ListServiceQuotas leaves out the quotas with no applied value (a new SageMaker quota, in
        most accounts), so the defaults are listed too."""
        if service_code not in self._by_service:
            quotas = {q["QuotaCode"]: q for q in self._pages("list_aws_default_service_quotas", service_code)}
            quotas.update({q["QuotaCode"]: q for q in self._pages("list_service_quotas", service_code)})
            self._by_service[service_code] = list(quotas.values())
        return self._by_service[service_code]

    def _pages(self, operation: str, service_code: str) -> list[dict[str, Any]]:
        quotas: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {"ServiceCode": service_code}
        try:
            while True:
                page = getattr(self.client, operation)(**kwargs)
                quotas += page.get("Quotas", [])
                if not page.get("NextToken"):
                    return quotas
                kwargs["NextToken"] = page["NextToken"]
        except Exception as exc:
            raise map_client_error(exc, resource=f"quotas of {service_code}") from exc
