"""The one Kubernetes adapter: its error mapping and its lazy client (no cluster needed)."""

from __future__ import annotations

import pytest

from hyperpod_control.adapters.kube import KubeAdapter, map_api_exception
from hyperpod_control.exceptions import (
    AccessDeniedError,
    CallTimedOutError,
    DependencyUnavailableError,
    InvalidInputError,
    KubernetesAccessPendingError,
    PermanentError,
    ResourceNotFoundError,
    RetryableError,
    ThrottledError,
    VersionConflictError,
)

pytestmark = pytest.mark.unit


class FakeApiException(Exception):
    def __init__(self, status: int | None, reason: str = "Reason") -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.body = ""


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (None, DependencyUnavailableError),
        (0, DependencyUnavailableError),
        (401, KubernetesAccessPendingError),
        (403, AccessDeniedError),
        (404, ResourceNotFoundError),
        (409, VersionConflictError),
        (429, ThrottledError),
        (500, DependencyUnavailableError),
        (503, DependencyUnavailableError),
        (400, InvalidInputError),
        (422, InvalidInputError),
        (418, PermanentError),
    ],
)
def test_api_exceptions_map_to_the_project_leaves(status, expected):
    mapped = map_api_exception(FakeApiException(status), resource="CRD x")
    assert type(mapped) is expected
    assert mapped.message.startswith("CRD x: ")


def test_connection_errors_and_401_are_retryable_403_is_not():
    assert isinstance(map_api_exception(ConnectionRefusedError("refused")), RetryableError)
    assert isinstance(map_api_exception(FakeApiException(401)), RetryableError)
    assert "401" in map_api_exception(FakeApiException(401)).message
    assert isinstance(map_api_exception(FakeApiException(403)), PermanentError)


def test_a_cluster_without_endpoint_or_ca_is_refused_before_kubernetes_is_touched():
    kube = KubeAdapter("eks-a", cluster={"name": "eks-a", "arn": "arn:aws:eks:us-west-2:1:cluster/eks-a"})
    with pytest.raises(InvalidInputError, match="ACTIVE"):
        kube.api_client  # noqa: B018


def test_an_injected_client_is_used_as_is():
    sentinel = object()
    assert KubeAdapter("eks-a", api_client=sentinel).api_client is sentinel


@pytest.mark.parametrize(
    ("status", "kind"),
    [(401, "unauthorized"), (403, "forbidden"), (None, "unreachable"), (503, "unreachable")],
)
def test_preflight_reads_a_refusing_api_as_a_finding(status, kind):
    from hyperpod_control.models.preflight import ClusterFacts
    from hyperpod_control.services import preflight as pf
    from hyperpod_control.services.preflight.gathering import _gather_kube

    def factory(cluster, region):
        raise map_api_exception(FakeApiException(status))

    facts = ClusterFacts(cluster_name="c", region="us-east-1", planned=False, operator="addon")
    adapters = pf.PreflightAdapters(sagemaker=None, eks=None, ec2=None, quotas=None, kube_factory=factory)
    _gather_kube(facts, adapters, {"name": "eks-a"})
    assert facts.gaps["kube.kind"] == kind and facts.kube is None


def test_timeouts_and_a_504_are_silence_not_unavailability():
    import urllib3.exceptions

    read = urllib3.exceptions.ReadTimeoutError(None, "/status", "read timed out")
    assert isinstance(map_api_exception(read), CallTimedOutError)
    wrapped = urllib3.exceptions.MaxRetryError(None, "/status", read)
    assert isinstance(map_api_exception(wrapped), CallTimedOutError)
    assert isinstance(map_api_exception(FakeApiException(504)), CallTimedOutError)
    refused = map_api_exception(ConnectionRefusedError("refused"))
    assert type(refused) is DependencyUnavailableError, "a refusal is not silence"


def test_the_supervisors_client_never_retries_a_read_that_timed_out():
    from hyperpod_control.adapters.kube.adapter import _no_timeout_retries

    retries = _no_timeout_retries()
    assert (retries.read, retries.connect, retries.total) == (0, 1, 3)
