"""Quota reads as Service Quotas answers them: ListServiceQuotas leaves out every quota with no
applied value, so a quota is found among AWS's defaults, with an applied value over its default."""

from __future__ import annotations

from typing import Any

import pytest

from hyperpod_control.adapters.quotas import QuotasAdapter

pytestmark = pytest.mark.unit

P5 = "ml.p5.48xlarge for cluster usage"
G5 = "ml.g5.8xlarge for cluster usage"


class FakeQuotas:
    def __init__(self, applied: list[dict[str, Any]], defaults: list[dict[str, Any]]) -> None:
        self.pages = {"list_service_quotas": applied, "list_aws_default_service_quotas": defaults}

    def list_service_quotas(self, ServiceCode: str, NextToken: str | None = None) -> dict[str, Any]:
        return {"Quotas": self.pages["list_service_quotas"]}

    def list_aws_default_service_quotas(
        self, ServiceCode: str, NextToken: str | None = None
    ) -> dict[str, Any]:
        quotas = self.pages["list_aws_default_service_quotas"]
        # two pages, as Service Quotas pages its lists
        return {"Quotas": quotas[:1], "NextToken": "2"} if NextToken is None else {"Quotas": quotas[1:]}


def quota(code: str, name: str, value: float) -> dict[str, Any]:
    return {"ServiceCode": "sagemaker", "QuotaCode": code, "QuotaName": name, "Value": value}


def test_a_quota_with_no_applied_value_is_found_among_the_defaults():
    adapter = QuotasAdapter(FakeQuotas([], [quota("L-1", P5, 0.0), quota("L-2", G5, 4.0)]))
    assert adapter.find_by_name("sagemaker", P5) == quota("L-1", P5, 0.0)
    assert adapter.find_by_name("sagemaker", G5.upper()) == quota("L-2", G5, 4.0)


def test_an_applied_value_wins_over_the_default():
    adapter = QuotasAdapter(
        FakeQuotas([quota("L-1", P5, 16.0)], [quota("L-1", P5, 0.0), quota("L-2", G5, 4.0)])
    )
    assert adapter.find_by_name("sagemaker", P5)["Value"] == 16.0
    assert adapter.find_by_name("sagemaker", "no such quota") is None
