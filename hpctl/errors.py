"""What hpctl says when a command cannot do its work: one line with the fix, an exit code per
class of failure, never a traceback (``hpctl --debug`` shows it).

Every command reaches AWS through boto3, directly or through the control plane's adapters (which
map botocore's errors to ``hyperpod_control.exceptions``), so one classification covers both:
a raw botocore error is mapped the adapters' way first (``map_client_error``), then the class
decides the exit code and the fix. The Region is resolved here too, once, the same for every
command: ``--region``, ``AWS_REGION``, ``AWS_DEFAULT_REGION``, then the profile's ``region``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from hpctl.stack import StackNotFound
from hyperpod_control.exceptions import (
    AccessDeniedError,
    ControlPlaneError,
    CredentialsExpiredError,
    CredentialsMissingError,
    DependencyUnavailableError,
    InvalidInputError,
    RegionMissingError,
    ThrottledError,
)
from hyperpod_control.models.preflight import UncheckedCause

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_STACK_NOT_FOUND = 3
EXIT_NO_REGION = 4
EXIT_NO_CREDENTIALS = 5
EXIT_EXPIRED_CREDENTIALS = 6
EXIT_ACCESS_DENIED = 7
EXIT_UNREACHABLE = 8
EXIT_THROTTLED = 9
EXIT_INTERRUPTED = 130

#: ``hpctl --help``'s epilog; the README's hpctl section lists the same codes.
EXIT_CODES_HELP = """exit codes:
  0    done (preflight: no error failed and every check ran)
  1    the operation failed (a workflow failed, a preflight error check failed)
  2    bad usage or input
  3    the control plane's stack was not found (sam deploy, --stack or HPCTL_STACK)
  4    no AWS Region (--region, AWS_REGION, AWS_DEFAULT_REGION or the profile's region)
  5    no AWS credentials
  6    AWS refused the credentials (expired session, invalid key)
  7    access denied (the line names the action and the principal)
  8    AWS could not be reached (network, endpoint, proxy) or answered with a server error
  9    AWS throttled the calls after the retries
  130  interrupted
preflight exits 5-9 when checks could not run for that reason. --debug prints the traceback."""

#: The exit code of ``hpctl preflight`` when checks could not run, by why.
CAUSE_EXIT = {
    UncheckedCause.NO_CREDENTIALS: EXIT_NO_CREDENTIALS,
    UncheckedCause.EXPIRED_CREDENTIALS: EXIT_EXPIRED_CREDENTIALS,
    UncheckedCause.ACCESS_DENIED: EXIT_ACCESS_DENIED,
    UncheckedCause.UNREACHABLE: EXIT_UNREACHABLE,
    UncheckedCause.THROTTLED: EXIT_THROTTLED,
}

REGION_FIX = "pass --region, set AWS_REGION, or give your profile one (aws configure set region us-west-2)."
# IAM's wording in every service's denial: "User: ARN is not authorized to perform: svc:Action ...".
_DENIAL = re.compile(
    r"(?:User|Principal): (?P<principal>\S+) is not authorized to perform: (?P<action>[\w-]+:[\w*-]+)"
)


@dataclass(frozen=True)
class Failure:
    code: int
    line: str


def describe(exc: BaseException) -> Failure:
    """The one line and exit code for an exception a command raised."""
    if isinstance(exc, StackNotFound):
        return Failure(EXIT_STACK_NOT_FOUND, f"hpctl: {exc}")
    mapped = _as_control_plane_error(exc)
    if mapped is None:
        return Failure(
            EXIT_FAILED,
            f"hpctl: unexpected {type(exc).__name__}: {exc} (run again with --debug for the traceback)",
        )
    message = mapped.message
    if isinstance(mapped, RegionMissingError):
        return Failure(EXIT_NO_REGION, f"hpctl: no AWS Region is configured. Fix: {REGION_FIX}")
    if isinstance(mapped, CredentialsMissingError):
        return Failure(
            EXIT_NO_CREDENTIALS,
            f"hpctl: {_end(message)} Fix: configure credentials (AWS_PROFILE, `aws sso login`, "
            "`aws configure`, or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY), then run again.",
        )
    if isinstance(mapped, CredentialsExpiredError):
        return Failure(
            EXIT_EXPIRED_CREDENTIALS,
            f"hpctl: {_end(message)} Fix: renew them (`aws sso login`, a new session token) or use a valid "
            "access key, then run again.",
        )
    if isinstance(mapped, AccessDeniedError):
        return Failure(EXIT_ACCESS_DENIED, _denied_line(exc, message))
    if isinstance(mapped, ThrottledError):
        return Failure(
            EXIT_THROTTLED,
            f"hpctl: {_end(message)} botocore's retries did not get through. Fix: run again in a minute, or "
            "raise the API's rate quota (Service Quotas) if it stays throttled.",
        )
    if isinstance(mapped, DependencyUnavailableError) and _unreachable(exc):
        return Failure(
            EXIT_UNREACHABLE,
            f"hpctl: cannot reach AWS: {_end(message)} Fix: check the network and proxy, the Region "
            f"({os.environ.get('AWS_REGION') or 'none'}) and AWS_ENDPOINT_URL.",
        )
    if isinstance(mapped, DependencyUnavailableError):
        return Failure(
            EXIT_UNREACHABLE, f"hpctl: AWS did not answer: {_end(message)} Fix: run again in a minute."
        )
    if isinstance(mapped, InvalidInputError):
        return Failure(EXIT_USAGE, f"hpctl: {mapped}")
    return Failure(EXIT_FAILED, f"hpctl: {mapped}")


def _as_control_plane_error(exc: BaseException) -> ControlPlaneError | None:
    if isinstance(exc, ControlPlaneError):
        return exc
    try:
        from botocore.exceptions import BotoCoreError, ClientError
    except ImportError:  # pragma: no cover - boto3 is a dependency of hpctl
        return None
    if isinstance(exc, BotoCoreError | ClientError):
        from hyperpod_control.adapters.aws import map_client_error

        return map_client_error(exc)
    return None


def _denied_line(exc: BaseException, message: str) -> str:
    found = _DENIAL.search(message)
    if found:
        principal, action = found["principal"], found["action"]
    else:  # a denial without IAM's wording: name the API call, and how to find the principal
        principal = "your principal (aws sts get-caller-identity names it)"
        action = _operation(exc) or "the call"
    return (
        f"hpctl: access denied: {principal} may not call {action}. AWS said: {_end(message)} Fix: grant "
        f"{action} to {principal} in an IAM policy, or use a profile that has it."
    )


def _end(message: str) -> str:
    """``message`` as a sentence, so the fix can follow it."""
    message = message.strip()
    return message if message.endswith((".", "!", "?")) else f"{message}."


def _chain(exc: BaseException | None) -> Iterator[BaseException]:
    """``exc`` and the errors it was raised from (an adapter's error from botocore's)."""
    while exc is not None:
        yield exc
        exc = exc.__cause__


def _operation(exc: BaseException) -> str | None:
    """The API operation of the botocore error behind ``exc`` (``DescribeCluster``)."""
    return next((str(e.operation_name) for e in _chain(exc) if getattr(e, "operation_name", None)), None)


def _unreachable(exc: BaseException) -> bool:
    """No connection to the endpoint at all, not a service that failed to answer."""
    from hyperpod_control.adapters.aws import UNREACHABLE

    return any(type(e).__name__ in UNREACHABLE for e in _chain(exc))


def resolve_region(flag: str | None = None) -> str | None:
    """``--region``, ``AWS_REGION``, ``AWS_DEFAULT_REGION``, then the profile's ``region``."""
    for value in (flag, os.environ.get("AWS_REGION"), os.environ.get("AWS_DEFAULT_REGION")):
        if value:
            return value
    import botocore.session

    # The profile (AWS_PROFILE or default) from the config file; ProfileNotFound propagates.
    return botocore.session.Session().get_scoped_config().get("region") or None


def use_region(region: str) -> Callable[[], None]:
    """Put ``region`` in both variables for the command (boto3 reads only AWS_DEFAULT_REGION, the
    control plane's adapters AWS_REGION), so every client of every command uses the same Region;
    returns what puts the environment back (main() in a test process must leave it as it was)."""
    names = ("AWS_REGION", "AWS_DEFAULT_REGION")
    before = {name: os.environ.get(name) for name in names}
    os.environ.update(dict.fromkeys(names, region))

    def restore() -> None:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value

    return restore
