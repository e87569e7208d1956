"""map_client_error: each AWS error lands in the exception class the workflows' Retry/Catch expect."""

from __future__ import annotations

import pytest
from botocore.exceptions import (
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    NoRegionError,
    ProfileNotFound,
    ReadTimeoutError,
    TokenRetrievalError,
)

from hyperpod_control.adapters.aws import error_code, map_client_error
from hyperpod_control.exceptions import (
    AccessDeniedError,
    CredentialsExpiredError,
    CredentialsMissingError,
    DependencyUnavailableError,
    InvalidInputError,
    PermanentError,
    RegionMissingError,
    ResourceNotFoundError,
    RetryableError,
    ThrottledError,
    VersionConflictError,
)

pytestmark = pytest.mark.unit


def client_error(code: str, message: str = "something happened", status: int = 400) -> ClientError:
    return ClientError(
        {
            "Error": {"Code": code, "Message": message},
            "ResponseMetadata": {"HTTPStatusCode": status, "RequestId": "req-1"},
        },
        "SomeOperation",
    )


@pytest.mark.parametrize(
    "code",
    [
        "Throttling",
        "ThrottlingException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "ProvisionedThroughputExceededException",
        "SlowDown",
    ],
)
def test_throttling_is_retryable(code):
    mapped = map_client_error(client_error(code), resource="table t")

    assert type(mapped) is ThrottledError
    assert isinstance(mapped, RetryableError)
    assert code in str(mapped)
    assert "table t" in str(mapped)


def test_conditional_check_failure_is_a_version_conflict():
    mapped = map_client_error(client_error("ConditionalCheckFailedException"))

    assert type(mapped) is VersionConflictError
    assert isinstance(mapped, RetryableError)


@pytest.mark.parametrize("code", ["ResourceNotFoundException", "NoSuchEntity", "NotFoundException"])
def test_not_found_is_permanent(code):
    mapped = map_client_error(client_error(code, "Requested resource not found"), resource="cluster c")

    assert type(mapped) is ResourceNotFoundError
    assert isinstance(mapped, PermanentError)
    assert "Requested resource not found" in str(mapped)
    assert "cluster c" in str(mapped)


@pytest.mark.parametrize("code", ["AccessDenied", "AccessDeniedException", "UnauthorizedOperation"])
def test_access_denied_carries_a_remedy(code):
    mapped = map_client_error(client_error(code, "User is not authorized to perform dynamodb:PutItem", 403))

    assert type(mapped) is AccessDeniedError
    assert isinstance(mapped, PermanentError)
    assert mapped.remedy
    assert "dynamodb:PutItem" in str(mapped)
    assert "Fix:" in str(mapped)


@pytest.mark.parametrize("code", ["ValidationException", "InvalidParameterException"])
def test_validation_is_invalid_input(code):
    mapped = map_client_error(client_error(code, "1 validation error detected"))

    assert type(mapped) is InvalidInputError
    assert "1 validation error detected" in str(mapped)


@pytest.mark.parametrize("status", [500, 502, 503])
def test_server_errors_are_retryable(status):
    mapped = map_client_error(client_error("InternalServerError", "oops", status))

    assert type(mapped) is DependencyUnavailableError
    assert isinstance(mapped, RetryableError)
    assert "InternalServerError" in str(mapped)


@pytest.mark.parametrize(
    "exc",
    [
        EndpointConnectionError(endpoint_url="https://dynamodb.us-west-2.amazonaws.com"),
        ConnectTimeoutError(endpoint_url="https://dynamodb.us-west-2.amazonaws.com"),
    ],
)
def test_connection_errors_are_retryable(exc):
    mapped = map_client_error(exc, resource="table t")

    assert type(mapped) is DependencyUnavailableError
    assert "table t" in str(mapped) and "dynamodb.us-west-2.amazonaws.com" in str(mapped)


def test_a_read_timeout_is_retryable_too():
    mapped = map_client_error(ReadTimeoutError(endpoint_url="https://eks.us-west-2.amazonaws.com"))

    assert type(mapped) is DependencyUnavailableError


@pytest.mark.parametrize(
    "exc", [NoCredentialsError(), ProfileNotFound(profile="work")], ids=["no-credentials", "no-profile"]
)
def test_missing_credentials_are_permanent_with_a_remedy(exc):
    mapped = map_client_error(exc, resource="cluster c")

    assert type(mapped) is CredentialsMissingError
    assert isinstance(mapped, PermanentError)
    assert "cluster c: no AWS credentials" in str(mapped) and type(exc).__name__ in str(mapped)
    assert mapped.remedy


@pytest.mark.parametrize(
    "exc",
    [
        client_error("ExpiredToken", "The security token included in the request is expired", 403),
        client_error("ExpiredTokenException", "The security token included in the request is expired", 403),
        client_error("UnrecognizedClientException", "The security token included in the request is invalid."),
        client_error("InvalidClientTokenId", "The security token included in the request is invalid.", 403),
        TokenRetrievalError(provider="sso", error_msg="Token has expired and refresh failed"),
    ],
    ids=lambda e: getattr(e, "response", {}).get("Error", {}).get("Code") or type(e).__name__,
)
def test_refused_credentials_are_their_own_class_not_access_denied(exc):
    mapped = map_client_error(exc)

    assert type(mapped) is CredentialsExpiredError
    assert not isinstance(mapped, AccessDeniedError)
    assert "AWS refused the credentials" in str(mapped)


def test_no_region_is_its_own_class():
    mapped = map_client_error(NoRegionError())

    assert type(mapped) is RegionMissingError
    assert "AWS_REGION" in str(mapped)


def test_another_4xx_is_permanent_not_retryable():
    mapped = map_client_error(client_error("LimitExceededException", "too many clusters", 400))

    assert type(mapped) is PermanentError
    assert not isinstance(mapped, RetryableError)
    assert "LimitExceededException" in str(mapped)
    assert "too many clusters" in str(mapped)


def test_error_code_reads_client_errors_only():
    assert error_code(client_error("SlowDown")) == "SlowDown"
    assert error_code(ValueError("x")) is None
