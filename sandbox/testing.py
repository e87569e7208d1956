"""Helpers for tests that drive the sandbox: wait on a condition, never on a fixed sleep."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def eventually(
    check: Callable[[], T], timeout: float = 20.0, what: str = "condition", interval: float | None = None
) -> T:
    """Poll ``check`` until it returns something truthy; raise AssertionError after ``timeout``.
    Backs off from 10 ms to 250 ms, or polls every ``interval`` s (a time measured with it is then
    late by at most ``interval``)."""
    deadline = time.monotonic() + timeout
    delay = interval or 0.01
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(delay)
        if interval is None:
            delay = min(delay * 2, 0.25)


def client_as(sb: Any, service: str, role_arn: str, session_name: str = "test") -> Any:
    """A boto3 client of the sandbox acting as ``role_arn`` (its credentials from the sandbox's
    STS), for a test that must call as a given principal: the agents' pushes, say, which the
    control plane's bus takes from its agent role only."""
    import boto3

    creds = sb.client("sts").assume_role(RoleArn=role_arn, RoleSessionName=session_name)["Credentials"]
    return boto3.session.Session(
        aws_access_key_id=creds["AccessKeyId"],
        aws_secret_access_key=creds["SecretAccessKey"],
        aws_session_token=creds["SessionToken"],
        region_name=sb.config.region,
    ).client(service, endpoint_url=sb.endpoint_url)
