"""Service Quotas for SageMaker HyperPod cluster usage and the VPC ENI quota, with applied values.

moto knows only ``vpc`` default quotas. Here ``sagemaker`` has one "<instance type> for cluster
usage" quota per HyperPod instance type plus the per-cluster and account-wide instance counts,
and any quota can get an applied value (``set_quota``) that ``get_service_quota`` returns and
that HyperPod's ``create_cluster`` enforces (``ResourceLimitExceeded``, SageMaker's message).
``vpc`` keeps moto's catalogue (``L-DF5E4CA3`` "Network interfaces per Region", 5000).

As AWS documents for ``GetServiceQuota`` and ``ListServiceQuotas``: "If the applied quota value
is not available for a quota, the quota is not retrieved". Here a quota has an applied value
once ``set_quota`` gave it one; until then ``ListServiceQuotas`` omits it and ``GetServiceQuota``
answers ``NoSuchResourceException``, and only the ``...AWSDefault...`` calls know it.

The SageMaker quota codes are sandbox codes (``L-`` + 8 hex digits of the name's hash): AWS's
real codes are opaque and not published per instance type; clients should find a quota by its
``QuotaName``, as the console search the docs describe does. Default values are the sandbox's
(AWS's defaults are often 0 for accelerated instances in a new account).
"""

from __future__ import annotations

import hashlib
from typing import Any

from moto.core import DEFAULT_ACCOUNT_ID
from moto.core.responses import ActionResult

from sandbox.aws_ext._base import AwsError, drop_none, paginate

ENI_QUOTA_CODE = "L-DF5E4CA3"
PER_CLUSTER_NAME = "Maximum number of instances allowed per SageMaker HyperPod cluster"
TOTAL_NAME = "Total number of instances allowed across SageMaker HyperPod clusters"
SAGEMAKER_NAME = "Amazon SageMaker"

#: Sandbox defaults for "<type> for cluster usage".
DEFAULT_CLUSTER_USAGE = 16.0
DEFAULT_INSTANCE_COUNTS = 100.0


def quota_code(name: str) -> str:
    return "L-" + hashlib.sha1(name.encode()).hexdigest()[:8].upper()


def usage_name(instance_type: str) -> str:
    return f"{instance_type} for cluster usage"


def _instance_types() -> list[str]:
    import botocore.session

    model = botocore.session.get_session().get_service_model("sagemaker")
    return list(model.shape_for("ClusterInstanceType").enum)


_sagemaker_defaults: list[dict[str, Any]] | None = None


def _sagemaker_catalogue() -> list[dict[str, Any]]:
    global _sagemaker_defaults
    if _sagemaker_defaults is None:
        entries = [(usage_name(t), DEFAULT_CLUSTER_USAGE) for t in _instance_types()]
        entries += [(PER_CLUSTER_NAME, DEFAULT_INSTANCE_COUNTS), (TOTAL_NAME, DEFAULT_INSTANCE_COUNTS)]
        _sagemaker_defaults = [
            {
                "ServiceCode": "sagemaker",
                "ServiceName": SAGEMAKER_NAME,
                "QuotaCode": quota_code(name),
                "QuotaName": name,
                "Value": value,
                "Unit": "None",
                "Adjustable": True,
                "GlobalQuota": False,
            }
            for name, value in entries
        ]
    return _sagemaker_defaults


def _catalogue(service_code: str) -> list[dict[str, Any]]:
    if service_code == "sagemaker":
        return _sagemaker_catalogue()
    if service_code == "vpc":
        from moto.servicequotas.resources.default_quotas.vpc import VPC_DEFAULT_QUOTAS

        return [{k: v for k, v in q.items() if k != "QuotaArn"} for q in VPC_DEFAULT_QUOTAS]
    raise AwsError(
        "NoSuchResourceException",
        "This service is not available in the current Region. Choose a different Region or a different "
        "service.",
    )


def _applied(backend: Any) -> dict[tuple[str, str], float]:
    if not hasattr(backend, "ext_applied"):
        backend.ext_applied = {}
    return backend.ext_applied


def _quota(backend: Any, service_code: str, quota: dict[str, Any], applied: bool) -> dict[str, Any]:
    region, account = backend.region_name, backend.account_id
    value = quota["Value"]
    if applied:
        value = _applied(backend).get((service_code, quota["QuotaCode"]), value)
        arn = f"arn:aws:servicequotas:{region}:{account}:{service_code}/{quota['QuotaCode']}"
    else:
        arn = f"arn:aws:servicequotas:{region}::{service_code}/{quota['QuotaCode']}"
    return {**quota, "Value": float(value), "QuotaArn": arn}


def _find(service_code: str, code: str) -> dict[str, Any]:
    found = next((q for q in _catalogue(service_code) if q["QuotaCode"] == code), None)
    if found is None:
        raise AwsError(
            "NoSuchResourceException",
            f"QuotaCode: the quota {code} does not exist for service {service_code}.",
        )
    return found


# -- Python API (the world builder, tests, the HyperPod emulation) ----------------------------


def backend_for(account_id: str = DEFAULT_ACCOUNT_ID, region: str = "us-west-2") -> Any:
    from moto.servicequotas.models import servicequotas_backends

    return servicequotas_backends[account_id][region]


def set_quota(
    service_code: str,
    quota: str,
    value: float,
    *,
    region: str = "us-west-2",
    account_id: str = DEFAULT_ACCOUNT_ID,
) -> str:
    """Apply ``value`` to a quota given by code or name; returns its code."""
    entry = next((q for q in _catalogue(service_code) if quota in (q["QuotaCode"], q["QuotaName"])), None)
    if entry is None:
        raise KeyError(f"no quota {quota!r} in service {service_code}")
    _applied(backend_for(account_id, region))[(service_code, entry["QuotaCode"])] = float(value)
    return entry["QuotaCode"]


def value(service_code: str, quota_name: str, *, region: str, account_id: str) -> float:
    entry = next(q for q in _catalogue(service_code) if q["QuotaName"] == quota_name)
    return _quota(backend_for(account_id, region), service_code, entry, applied=True)["Value"]


# -- responses ----------------------------------------------------------------------------------


def get_service_quota(self: Any) -> ActionResult:
    service, code = self._get_param("ServiceCode"), self._get_param("QuotaCode")
    found = _find(service, code)
    if (service, code) not in _applied(self.backend):
        raise AwsError(
            "NoSuchResourceException",
            f"The request failed because the specified quota {code} has no applied value.",
        )
    return ActionResult({"Quota": _quota(self.backend, service, found, applied=True)})


def get_aws_default_service_quota(self: Any) -> ActionResult:
    service, code = self._get_param("ServiceCode"), self._get_param("QuotaCode")
    return ActionResult({"Quota": _quota(self.backend, service, _find(service, code), applied=False)})


def _list(self: Any, applied: bool) -> ActionResult:
    service = self._get_param("ServiceCode")
    catalogue = _catalogue(service)
    if applied:  # only the quotas with an applied value
        catalogue = [q for q in catalogue if (service, q["QuotaCode"]) in _applied(self.backend)]
    quotas = [_quota(self.backend, service, q, applied) for q in catalogue]
    if applied and self._get_param("QuotaCode"):
        quotas = [q for q in quotas if q["QuotaCode"] == self._get_param("QuotaCode")]
    page, token = paginate(quotas, self._get_param("MaxResults"), self._get_param("NextToken"))
    return ActionResult(drop_none({"Quotas": page, "NextToken": token}))


def list_service_quotas(self: Any) -> ActionResult:
    return _list(self, applied=True)


def list_aws_default_service_quotas(self: Any) -> ActionResult:
    return _list(self, applied=False)


def install() -> None:
    from moto.servicequotas.responses import ServiceQuotasResponse

    # The model-driven parser (moto reads the raw JSON body for these otherwise).
    original_init = ServiceQuotasResponse.__init__

    def __init__(self: Any) -> None:
        original_init(self)
        self.automated_parameter_parsing = True

    ServiceQuotasResponse.__init__ = __init__
    for fn in (
        get_service_quota,
        get_aws_default_service_quota,
        list_service_quotas,
        list_aws_default_service_quotas,
    ):
        setattr(ServiceQuotasResponse, fn.__name__, fn)
