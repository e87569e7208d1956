"""Preflight tells "could not check" from "does not apply": a read AWS could not be called for
(credentials, access denied, network, throttling) makes its checks ``unchecked``, which blocks an
install and exits hpctl non-zero; a fact the APIs cannot tell stays ``skipped``."""

from __future__ import annotations

import io
import json

import pytest

from hpctl import errors
from hpctl.preflight import exit_code, format_table, run_preflight
from hyperpod_control.exceptions import (
    AccessDeniedError,
    CredentialsExpiredError,
    CredentialsMissingError,
    DependencyUnavailableError,
    ResourceNotFoundError,
    ThrottledError,
)
from hyperpod_control.models.preflight import (
    CAUSE_REMEDY,
    CAUSE_TEXT,
    CheckStatus,
    PreflightInput,
    UncheckedCause,
)
from hyperpod_control.services import preflight as pf
from tests.unit.test_preflight_checks import healthy

pytestmark = pytest.mark.unit

DENIAL = (
    "User: arn:aws:sts::123456789012:assumed-role/dev/alice is not authorized to perform: "
    "sagemaker:DescribeCluster on resource: arn:aws:sagemaker:us-west-2:123456789012:cluster/c1 "
    "because no identity-based policy allows the sagemaker:DescribeCluster action"
)


class Refusing:
    """An adapter every call of which raises ``exc`` (as the real ones do once AWS is out of reach)."""

    def __init__(self, exc: Exception) -> None:
        self.exc = exc

    def __getattr__(self, name: str):
        def call(*args, **kwargs):
            raise self.exc

        return call


def adapters(exc: Exception, retried_outside: bool = True) -> pf.PreflightAdapters:
    refusing = Refusing(exc)
    return pf.PreflightAdapters(
        sagemaker=refusing,
        eks=refusing,
        ec2=refusing,
        quotas=refusing,
        fsx=refusing,
        region="us-west-2",
        retried_outside=retried_outside,
    )


CASES = [
    (CredentialsMissingError("no AWS credentials (NoCredentialsError)"), UncheckedCause.NO_CREDENTIALS, 5),
    (
        CredentialsExpiredError("AWS refused the credentials (ExpiredToken)"),
        UncheckedCause.EXPIRED_CREDENTIALS,
        6,
    ),
    (AccessDeniedError(DENIAL, remedy="grant the role"), UncheckedCause.ACCESS_DENIED, 7),
    (DependencyUnavailableError("EndpointConnectionError: no route"), UncheckedCause.UNREACHABLE, 8),
    (ThrottledError("AWS throttled the request (ThrottlingException)."), UncheckedCause.THROTTLED, 9),
]


@pytest.mark.parametrize(("exc", "cause", "code"), CASES, ids=[c[1].value for c in CASES])
def test_a_cluster_that_could_not_be_read_is_never_ready(exc, cause, code):
    request = PreflightInput(cluster_name="c1")
    report = pf.run_preflight(request, adapters(exc, retried_outside=False))

    assert {r.status for r in report.results} == {CheckStatus.UNCHECKED}
    assert {r.cause for r in report.results} == {cause}
    assert len(report.results) == len(pf.CHECKS) and not report.ok
    assert report.failures == [] and len(report.unchecked) == len(pf.CHECKS)
    first = report.results[0]
    assert first.message.startswith("could not run: ") and exc.message in first.message
    assert first.remedy == CAUSE_REMEDY[cause]
    assert "Fix: grant the role" not in first.message  # the control plane's remedy is not the caller's
    assert exit_code(report) == code

    table = format_table(report, width=100)
    summary = table.splitlines()[-1]
    assert "ready to install" not in table and "not known to be ready" in summary
    assert f"{len(pf.CHECKS)} could not run ({CAUSE_TEXT[cause]})" in summary
    assert table.count("COULD NOT RUN") == 1  # one block for the checks one failed call stopped
    text = pf.failure_message(report)
    assert f"{len(pf.CHECKS)} checks could not run" in text and "[hyperpod.cluster]" in text


@pytest.mark.parametrize(
    "exc", [ThrottledError("throttled"), DependencyUnavailableError("no route")], ids=["throttled", "network"]
)
def test_under_step_functions_a_retryable_read_propagates_to_the_states_retry(exc):
    with pytest.raises(type(exc)):
        pf.run_preflight(PreflightInput(cluster_name="c1"), adapters(exc))


def test_the_lambda_path_records_denied_and_missing_credentials_as_unchecked_too():
    report = pf.run_preflight(PreflightInput(cluster_name="c1"), adapters(AccessDeniedError(DENIAL)))
    assert not report.ok and {r.cause for r in report.results} == {UncheckedCause.ACCESS_DENIED}


def test_only_the_checks_over_an_unreadable_fact_are_unchecked():
    reason = "subnet-a: " + DENIAL.replace("sagemaker:DescribeCluster", "ec2:DescribeSubnets")
    facts = healthy(
        subnets=None, gaps={"subnets": reason}, unchecked={"subnets": UncheckedCause.ACCESS_DENIED}
    )
    results = {r.id: r for r in pf.run_checks(facts)}

    unchecked = {i for i, r in results.items() if r.status is CheckStatus.UNCHECKED}
    assert "network.subnet-addresses" in unchecked and "network.s3-endpoint" in unchecked
    assert results["hyperpod.cluster"].status is CheckStatus.PASSED
    assert results["network.subnet-addresses"].message == f"could not run: {reason}"
    assert all(results[i].cause is UncheckedCause.ACCESS_DENIED for i in unchecked)

    # The same gap as something the APIs cannot tell: skipped, and the cluster is still ready.
    answered = healthy(subnets=None, gaps={"subnets": reason})
    report = pf.report_for(answered, pf.run_checks(answered))
    assert {r.status for r in report.results} <= {CheckStatus.PASSED, CheckStatus.SKIPPED}
    assert report.ok and exit_code(report) == 0
    assert format_table(report).endswith("skipped: ready to install.")


def test_a_missing_cluster_is_a_finding_not_an_unchecked_one():
    missing = ResourceNotFoundError("Cluster c1 not found")
    report = pf.run_preflight(PreflightInput(cluster_name="c1"), adapters(missing, retried_outside=False))
    hyperpod = next(r for r in report.results if r.id == "hyperpod.cluster")
    assert hyperpod.status is CheckStatus.FAILED
    assert report.unchecked == [] and exit_code(report) == 1


def test_hpctl_preflight_json_carries_the_cause_and_exits_with_its_code():
    out = io.StringIO()
    exc = CredentialsMissingError("HyperPod cluster c1: no AWS credentials (NoCredentialsError)")
    code = run_preflight("c1", output="json", adapters=adapters(exc), out=out)  # hpctl retries no more
    dumped = json.loads(out.getvalue())
    assert code == errors.EXIT_NO_CREDENTIALS and dumped["ok"] is False
    assert {(r["status"], r["cause"]) for r in dumped["results"]} == {("unchecked", "no-credentials")}


def test_a_denial_names_the_action_and_the_principal():
    failure = errors.describe(AccessDeniedError(f"HyperPod cluster c1: {DENIAL}", remedy="r"))
    assert failure.code == errors.EXIT_ACCESS_DENIED
    assert failure.line.startswith(
        "hpctl: access denied: arn:aws:sts::123456789012:assumed-role/dev/alice may not call "
        "sagemaker:DescribeCluster."
    )
    assert "Fix: grant sagemaker:DescribeCluster to arn:aws:sts::123456789012:assumed-role/dev/alice" in (
        failure.line
    )
    assert "\n" not in failure.line


def test_a_denial_without_iams_wording_names_the_api_call():
    from botocore.exceptions import ClientError

    error = ClientError({"Error": {"Code": "AccessDeniedException", "Message": "denied"}}, "ListClusters")
    failure = errors.describe(error)
    assert failure.code == errors.EXIT_ACCESS_DENIED
    assert "may not call ListClusters" in failure.line and "aws sts get-caller-identity" in failure.line


def test_every_exit_code_is_distinct_and_documented():
    codes = [v for k, v in vars(errors).items() if k.startswith("EXIT_") and isinstance(v, int)]
    assert len(codes) == len(set(codes))
    for code in codes:
        assert f"\n  {code} " in errors.EXIT_CODES_HELP, code


def test_an_unreachable_endpoint_and_a_server_error_share_a_code_but_not_a_line():
    from botocore.exceptions import ClientError, EndpointConnectionError

    from hyperpod_control.adapters.aws import map_client_error

    refused = EndpointConnectionError(endpoint_url="http://127.0.0.1:9/")
    try:  # as an adapter raises it: the project's class, from botocore's
        raise map_client_error(refused, resource="table t") from refused
    except DependencyUnavailableError as exc:
        unreachable = errors.describe(exc)
    server = errors.describe(
        ClientError(
            {"Error": {"Code": "InternalFailure"}, "ResponseMetadata": {"HTTPStatusCode": 500}}, "Query"
        )
    )
    assert unreachable.code == server.code == errors.EXIT_UNREACHABLE
    assert unreachable.line.startswith("hpctl: cannot reach AWS: table t: EndpointConnectionError")
    assert server.line.startswith("hpctl: AWS did not answer: InternalFailure")
