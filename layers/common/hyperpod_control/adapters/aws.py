"""AWS clients built lazily, once per process, and AWS errors mapped to the project's own.

Handlers never build clients at import time (cold start, and tests inject their own). The
factory honours ``AWS_ENDPOINT_URL`` through botocore itself, so the same code reaches AWS or the
sandbox's moto server.
"""

from __future__ import annotations

import threading
from typing import Any

from hyperpod_control.exceptions import (
    AccessDeniedError,
    ControlPlaneError,
    CredentialsExpiredError,
    CredentialsMissingError,
    DependencyUnavailableError,
    InvalidInputError,
    PermanentError,
    RegionMissingError,
    ResourceNotFoundError,
    ThrottledError,
    VersionConflictError,
)
from hyperpod_control.settings import aws_max_attempts, aws_region, lambda_initialization_type

_lock = threading.Lock()
_clients: dict[tuple[str, str | None], Any] = {}
#: One boto3 session per process: each session loads botocore's JSON (the endpoints, the retry
#: rules, each service's model) anew, a cost every client built from a fresh session paid again.
_session: Any = None

_THROTTLING = {
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "TooManyRequestsException",
    "RequestLimitExceeded",
    "ProvisionedThroughputExceededException",
    "RequestThrottled",
    "SlowDown",
}
# SageMaker's cluster APIs answer ``ResourceNotFound`` (no "Exception" suffix).
_NOT_FOUND = {
    "ResourceNotFoundException",
    "ResourceNotFound",
    "NoSuchEntity",
    "NotFoundException",
    "NoSuchKey",
}
_DENIED = {"AccessDenied", "AccessDeniedException", "UnauthorizedOperation"}
# botocore found nothing to sign with (these are exception class names: no request was sent).
_NO_CREDENTIALS = {
    "NoCredentialsError",
    "PartialCredentialsError",
    "CredentialRetrievalError",
    "ProfileNotFound",
}
# AWS refused the signature's credentials (expired session, unknown or deleted key, skewed clock),
# or botocore could not refresh an SSO session (class names).
_BAD_CREDENTIALS = {
    "ExpiredToken",
    "ExpiredTokenException",
    "RequestExpired",
    "InvalidClientTokenId",
    "UnrecognizedClientException",
    "InvalidSignatureException",
    "SignatureDoesNotMatch",
    "AuthFailure",
    "InvalidAccessKeyId",
    "TokenRetrievalError",
    "UnauthorizedSSOTokenError",
    "SSOTokenLoadError",
}
#: No connection to the endpoint at all (botocore class names): the network or the endpoint's address
#: is at fault, not the service. Still DependencyUnavailableError: the ASL retriers name that class
#: exactly, and a Lambda's network blip is worth their retry.
UNREACHABLE = frozenset(
    {"EndpointConnectionError", "ConnectTimeoutError", "ProxyConnectionError", "SSLError"}
)
_INVALID = {"ValidationException", "InvalidParameterException", "InvalidParameterValue"}


AWS_CONNECT_TIMEOUT_S = 5
AWS_READ_TIMEOUT_S = 15
AWS_RETRIES = 5


def _attempts() -> dict[str, int]:
    """Five retries (botocore's ``max_attempts`` counts retries), or AWS_MAX_ATTEMPTS attempts in all."""
    attempts = aws_max_attempts()
    if attempts is not None:
        return {"total_max_attempts": attempts}
    return {"max_attempts": AWS_RETRIES}


def get_client(service: str, region: str | None = None) -> Any:
    """A cached boto3 client; boto3 clients are thread-safe once built, sessions are not."""
    key = (service, region)
    client = _clients.get(key)
    if client is None:
        with _lock:
            client = _clients.get(key)
            if client is None:
                from botocore.config import Config

                client = _shared_session().client(
                    service,
                    # Lambda sets both variables; local tools often only AWS_REGION.
                    region_name=region or aws_region(),
                    # botocore waits 60 s to connect and 60 s to read by default: five such
                    # attempts outlast any Lambda Timeout here. AWS APIs answer in milliseconds.
                    config=Config(
                        connect_timeout=AWS_CONNECT_TIMEOUT_S,
                        read_timeout=AWS_READ_TIMEOUT_S,
                        # AWS_MAX_ATTEMPTS, botocore's own variable, still bounds them (this
                        # Config would override it): a person's hpctl run, or a test, asks fewer.
                        retries={"mode": "adaptive", **_attempts()},
                    ),
                )
                _clients[key] = client
    return client


#: What Lambda sets AWS_LAMBDA_INITIALIZATION_TYPE to when it initializes an environment for
#: provisioned concurrency, ahead of any invocation (on demand: "on-demand").
PROVISIONED_INIT = "provisioned-concurrency"


def prewarm_when_provisioned(*services: str, kube: bool = False) -> bool:
    """Under provisioned concurrency, do at init what a first invocation would do on demand: build
    ``services``' clients (the cache ``get_client`` reads) and, with ``kube``, import the
    Kubernetes client, so a provisioned environment answers its first event as fast as its
    hundredth. On demand it does nothing (True only when it warmed): there the import stays small
    and the work waits for the invocation that needs it (README, Performance)."""
    if lambda_initialization_type() != PROVISIONED_INIT:
        return False
    for service in services:
        get_client(service)
    if kube:
        # The module only: a cluster's client is built with its token (signed by the regional STS
        # client, warmed here too) when an invocation first talks to that cluster.
        import kubernetes.client  # noqa: F401

        get_client("sts", aws_region())
    return True


class AwsAdapter:
    """Base of the AWS adapters: a client injected (tests), or built on first use, never at import."""

    service: str = ""

    def __init__(self, client: Any = None, region: str | None = None) -> None:
        self._client = client
        self._region = region

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = get_client(self.service, self._region)
        return self._client


def _shared_session() -> Any:
    """The process's boto3 session (the caller holds ``_lock``: sessions are not thread-safe)."""
    global _session
    if _session is None:
        import boto3  # deferred: 190 ms that handlers without AWS calls never pay

        _session = boto3.session.Session()
    return _session


def session_credentials() -> Any:
    """The credentials the process's clients sign with (None: none found), resolved once per
    session and refreshed by botocore when they are temporary."""
    with _lock:
        return _shared_session().get_credentials()


def reset_clients() -> None:
    """Forget cached clients and the session (tests that switch endpoints or credentials call this)."""
    global _session
    with _lock:
        _clients.clear()
        _session = None


def error_code(exc: BaseException) -> str | None:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return response.get("Error", {}).get("Code")
    return None


def map_client_error(exc: Exception, *, resource: str = "") -> ControlPlaneError:
    """Translate a botocore error into the exception class a retry policy understands."""
    code = error_code(exc) or type(exc).__name__
    message = (getattr(exc, "response", {}) or {}).get("Error", {}).get("Message") or str(exc)
    subject = f"{resource}: " if resource else ""
    if code in _THROTTLING:
        return ThrottledError(f"{subject}AWS throttled the request ({code}).")
    if code == "ConditionalCheckFailedException":
        return VersionConflictError(f"{subject}a concurrent writer changed the item.")
    if code in _NOT_FOUND:
        return ResourceNotFoundError(f"{subject}{message}")
    if code in _DENIED:
        return AccessDeniedError(
            f"{subject}{message}",
            remedy="grant the control plane's role this permission (see template.yaml policies).",
        )
    if code in _NO_CREDENTIALS:
        return CredentialsMissingError(
            f"{subject}no AWS credentials ({code}): {message}",
            remedy="give the caller credentials (environment, profile, SSO login or an instance role).",
        )
    if code in _BAD_CREDENTIALS:
        return CredentialsExpiredError(
            f"{subject}AWS refused the credentials ({code}): {message}",
            remedy="renew them (aws sso login, a new session token) or use a valid access key.",
        )
    if code == "NoRegionError":
        return RegionMissingError(f"{subject}no AWS Region is configured.", remedy="set AWS_REGION.")
    if code in _INVALID:
        return InvalidInputError(f"{subject}{message}")
    status = (getattr(exc, "response", {}) or {}).get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
    if status >= 500 or code in UNREACHABLE | {"ConnectionClosedError", "ReadTimeoutError"}:
        return DependencyUnavailableError(f"{subject}{code}: {message}")
    # Any other 4xx is a request AWS will refuse again; do not burn the retry budget on it.
    return PermanentError(f"{subject}AWS refused the request ({code}): {message}")
