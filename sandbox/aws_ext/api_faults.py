"""Fault hook: the next N calls of an operation answer a throttling or an internal error.

Works for any operation moto handles, in process and in server mode, because it sits in
``moto.core.responses.BaseResponse.call_action``, which every service's request goes through
(services that override it call it through ``super()``). The error is serialised with the
operation's own protocol (rest-json, json, query, ec2), so the SDK parses it as it would
AWS's: ``ThrottlingException`` (HTTP 400) is retried by botocore as throttling,
``InternalFailure`` (HTTP 500) as a transient server error.

    faults.inject("DescribeAddon", times=2)                  # two ThrottlingExceptions
    faults.inject("BatchReplaceClusterNodes", error="internal", service="sagemaker")
    with faults.injected("CreateAddon", error="ServerException", status=500): ...

A fault matches the botocore operation name (``CreateAddon``; ``create_addon`` works too) and,
when given, the service (boto3 name: ``eks``, ``sagemaker``). Faults are process-wide and
consumed as they fire; ``clear()`` drops the rest.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from moto.core.exceptions import ServiceException

KINDS = {
    "throttle": ("ThrottlingException", 400, "Rate exceeded"),
    "internal": ("InternalFailure", 500, "The request processing has failed because of an unknown error."),
}


@dataclass
class Fault:
    operation: str
    code: str
    status: int
    message: str
    service: str | None = None
    remaining: int = 1
    fired: int = 0


_faults: list[Fault] = []
_lock = threading.Lock()
_installed = False


def _normalise(operation: str) -> str:
    if "_" in operation or operation[:1].islower():
        return "".join(part[:1].upper() + part[1:] for part in operation.split("_"))
    return operation


def inject(
    operation: str,
    *,
    times: int = 1,
    error: str = "throttle",
    service: str | None = None,
    status: int | None = None,
    message: str | None = None,
) -> Fault:
    """Arm a fault: the next ``times`` calls of ``operation`` fail with ``error``.

    ``error`` is ``throttle`` (ThrottlingException, 400), ``internal`` (InternalFailure, 500) or
    any error code (``ServerException``, ``RequestLimitExceeded``...; status 400 unless given).
    """
    if times < 1:
        raise ValueError("times must be at least 1")
    code, default_status, default_message = KINDS.get(error, (error, 400, f"{error} injected by the sandbox"))
    fault = Fault(
        operation=_normalise(operation),
        code=code,
        status=status or default_status,
        message=message or default_message,
        service=service,
        remaining=times,
    )
    with _lock:
        _faults.append(fault)
    return fault


@contextmanager
def injected(operation: str, **kwargs: Any) -> Iterator[Fault]:
    fault = inject(operation, **kwargs)
    try:
        yield fault
    finally:
        with _lock:
            if fault in _faults:
                _faults.remove(fault)


def clear() -> None:
    with _lock:
        _faults.clear()


def pending() -> list[Fault]:
    with _lock:
        return [f for f in _faults if f.remaining > 0]


def _take(service: str, operation: str) -> Fault | None:
    with _lock:
        for fault in _faults:
            if fault.operation == operation and fault.service in (None, service) and fault.remaining > 0:
                fault.remaining -= 1
                fault.fired += 1
                if fault.remaining == 0:
                    _faults.remove(fault)
                return fault
    return None


class _InjectedError(ServiceException):
    pass


def _respond(response: Any, operation: str, fault: Fault) -> tuple[int, dict[str, str], Any]:
    from moto.core.errors import ErrorShape
    from moto.core.serialize import get_serializer_class
    from moto.core.utils import get_service_model

    service_model = get_service_model(response.boto3_service_name)
    operation_model = service_model.operation_model(operation)
    serializer_cls = get_serializer_class(
        service_model.service_name, response.determine_response_protocol(service_model)
    )
    serializer = serializer_cls(operation_model=operation_model)
    # An ad hoc error shape: the modelled one, if any, may carry another HTTP status.
    shape = ErrorShape(
        fault.code,
        {
            "type": "structure",
            "members": {},
            "exception": True,
            "fault": fault.status >= 500,
            "error": {"code": fault.code, "httpStatusCode": fault.status, "senderFault": fault.status < 500},
        },
    )
    error = _InjectedError(fault.code, fault.message)
    serialized = serializer.MAP_TYPE()
    serializer._serialize_error_metadata(serialized, error, shape)
    result = serializer._serialized_error_to_response(
        serializer._create_default_response(), error, shape, serialized
    )
    headers = {**response.response_headers, **result["headers"]}
    return fault.status, headers, result["body"]


def install() -> None:
    global _installed
    if _installed:
        return
    from moto.core.responses import BaseResponse

    original = BaseResponse.call_action

    def call_action(self: Any) -> Any:
        if _faults:
            operation = self._get_action()
            fault = _take(self.boto3_service_name, operation) if operation else None
            if fault is not None:
                return _respond(self, operation, fault)
        return original(self)

    BaseResponse.call_action = call_action
    _installed = True
