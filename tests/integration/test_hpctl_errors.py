"""hpctl as a new user meets it: the real entry point in another process, configured only by its
environment. No Region, no credentials, refused credentials, access denied, no network, a missing
stack, throttling: each ends in one line naming what failed and the fix, with an exit code of its
own (hpctl/errors.py), never a traceback; and preflight never says "ready" when it could not check.

The no-Region, no-credentials and no-network cases run without a sandbox (an empty HOME, no AWS
variables; the endpoint a closed loopback port); the others against a sandbox whose fault hook
makes AWS answer as it would (AccessDeniedException with IAM's wording, ThrottlingException).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from hpctl import errors
from sandbox import Sandbox, SandboxConfig
from sandbox.aws_ext import api_faults
from sandbox.world import WorldOptions

pytestmark = pytest.mark.integration

#: The console script `pip install` made (pyproject's [project.scripts]), as a user runs it.
HPCTL = shutil.which("hpctl", path=str(Path(sys.executable).parent)) or "hpctl"
#: Every command that talks to AWS, with arguments that would otherwise be valid.
AWS_COMMANDS = [
    ["status", "--cluster", "my-hyperpod"],
    ["jobs"],
    ["jobs", "describe", "train"],
    ["preflight", "--cluster", "my-hyperpod"],
    ["register", "--cluster", "my-hyperpod", "--mode", "addon", "--no-wait"],
    ["install", "--cluster", "my-hyperpod", "--no-wait"],
    ["uninstall", "--cluster", "my-hyperpod", "--no-wait"],
    ["upgrade", "--cluster", "my-hyperpod", "--dry-run"],
    ["addon", "versions", "--cluster", "my-hyperpod"],
    ["dlq", "show"],
    ["dlq", "redrive"],
    ["unlock", "--cluster", "my-hyperpod"],
]
IDS = [" ".join(c[:2]) for c in AWS_COMMANDS]
DENIAL = (
    "User: arn:aws:sts::123456789012:assumed-role/developer/alice is not authorized to perform: "
    "sagemaker:DescribeCluster on resource: arn:aws:sagemaker:us-west-2:123456789012:cluster/{name} "
    "because no identity-based policy allows the sagemaker:DescribeCluster action"
)


def run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([HPCTL, *args], env=env, capture_output=True, text=True, timeout=120)


def assert_one_line(done: subprocess.CompletedProcess, code: int, *words: str) -> str:
    """Exit ``code``, no traceback, and stderr one line holding each of ``words`` and a fix."""
    assert "Traceback" not in done.stderr + done.stdout, done.stderr
    assert done.returncode == code, (done.returncode, done.stderr, done.stdout[-2000:])
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hpctl"), done.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert "Fix: " in lines[0]
    return lines[0]


@pytest.fixture
def bare(tmp_path: Path) -> dict[str, str]:
    """A new user's shell: no AWS variables, no ~/.aws, no instance metadata to fall back on."""
    return {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "AWS_CONFIG_FILE": str(tmp_path / "config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",
        "HPCTL_STACK": "",
    }


# -- without a sandbox ------------------------------------------------------------------------------


@pytest.mark.parametrize("args", AWS_COMMANDS, ids=IDS)
def test_no_region_is_one_line_for_every_command(bare, args):
    assert_one_line(run(args, bare), errors.EXIT_NO_REGION, "no AWS Region", "--region", "AWS_REGION")


@pytest.mark.parametrize("args", AWS_COMMANDS, ids=IDS)
def test_no_credentials_is_one_line_for_every_command(bare, args):
    done = run(args, {**bare, "AWS_REGION": "us-west-2"})
    if args[0] == "preflight":  # it prints its checks, each one that could not run
        assert done.returncode == errors.EXIT_NO_CREDENTIALS and "Traceback" not in done.stderr
        assert "ready to install" not in done.stdout
        assert "could not run (no AWS credentials): not known to be ready" in done.stdout
        return
    assert_one_line(done, errors.EXIT_NO_CREDENTIALS, "no AWS credentials", "aws sso login")


def test_the_region_comes_from_the_profile_last(bare, tmp_path):
    (tmp_path / "config").write_text("[default]\nregion = eu-west-1\n")
    # The profile's Region reached: the call went as far as credentials.
    assert_one_line(run(["status", "--cluster", "c"], bare), errors.EXIT_NO_CREDENTIALS)
    done = run(["--debug", "status", "--cluster", "c"], {**bare, "AWS_PROFILE": "nope"})
    assert done.returncode != 0 and "Traceback" in done.stderr and "ProfileNotFound" in done.stderr


def test_debug_prints_the_traceback(bare):
    done = run(["jobs", "--debug"], bare)
    assert done.returncode != 0 and "Traceback" in done.stderr and "RegionMissingError" in done.stderr


def test_preflight_with_no_credentials_is_never_ready_in_json_either(bare):
    done = run(
        ["preflight", "--cluster", "x", "--output", "json"], {**bare, "AWS_DEFAULT_REGION": "us-west-2"}
    )
    assert done.returncode == errors.EXIT_NO_CREDENTIALS, done.stderr
    import json

    report = json.loads(done.stdout)
    assert report["ok"] is False
    assert {(r["status"], r["cause"]) for r in report["results"]} == {("unchecked", "no-credentials")}


@pytest.mark.parametrize(
    "args", [["status", "--cluster", "c"], ["jobs"], ["preflight", "--cluster", "c"]], ids=lambda a: a[0]
)
def test_an_unreachable_endpoint_is_one_line(bare, args):
    env = {
        **bare,
        "AWS_REGION": "us-west-2",
        "AWS_ACCESS_KEY_ID": "AKIAEXAMPLE",
        "AWS_SECRET_ACCESS_KEY": "secret",
        # Port 9 (discard) is closed on loopback: refused at once; one attempt, no retry waits.
        "AWS_ENDPOINT_URL": "http://127.0.0.1:9",
        "AWS_MAX_ATTEMPTS": "1",
    }
    done = run(args, env)
    if args[0] == "preflight":
        assert done.returncode == errors.EXIT_UNREACHABLE and "Traceback" not in done.stderr, done.stderr
        assert "ready to install" not in done.stdout and "could not run (AWS did not answer" in done.stdout
        assert "EndpointConnectionError" in done.stdout
        return
    assert_one_line(
        done, errors.EXIT_UNREACHABLE, "cannot reach AWS", "http://127.0.0.1:9", "AWS_ENDPOINT_URL"
    )


# -- against a sandbox --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sb() -> Iterator[Sandbox]:
    config = SandboxConfig(
        server=True, world=WorldOptions(nodes=1), kube=True, pods=False, parameters={"LogLevel": "ERROR"}
    )
    with Sandbox(config) as sandbox:
        yield sandbox


@pytest.fixture
def sandbox_env(sb: Sandbox) -> Iterator[dict[str, str]]:
    yield {**os.environ, **sb.env, "AWS_MAX_ATTEMPTS": "2", "AWS_RETRY_MODE": "standard"}
    api_faults.clear()


def test_jobs_status_and_preflight_honour_aws_region(sb, sandbox_env):
    # The sandbox's resources are in us-west-2; AWS_DEFAULT_REGION points elsewhere, AWS_REGION wins.
    env = {**sandbox_env, "AWS_REGION": sb.config.region, "AWS_DEFAULT_REGION": "eu-central-1"}
    env = {k: v for k, v in env.items() if not k.startswith("HPCTL_OUTPUT_")}  # the stack read too
    name = sb.world.hyperpod_cluster_name
    for args in (["jobs"], ["status", "--cluster", name], ["preflight", "--cluster", name]):
        done = run(args, env)
        assert done.returncode == 0, (args, done.stderr, done.stdout[-2000:])
        assert "Traceback" not in done.stderr
    assert "ready to install" in done.stdout
    # --region comes before both variables.
    flipped = {**env, "AWS_REGION": "eu-central-1"}
    assert run(["--region", sb.config.region, "status", "--cluster", name], flipped).returncode == 0
    assert run(["status", "--cluster", name, "--region", sb.config.region], flipped).returncode == 0
    assert_one_line(run(["status", "--cluster", name], flipped), errors.EXIT_STACK_NOT_FOUND, "eu-central-1")


def test_a_missing_stack_is_its_own_exit_code(sandbox_env):
    done = run(["--stack", "not-deployed", "jobs"], sandbox_env)
    assert_one_line(done, errors.EXIT_STACK_NOT_FOUND, "stack not-deployed does not exist", "sam deploy")


@pytest.mark.parametrize("args", [["status"], ["preflight"]], ids=lambda a: a[0])
def test_access_denied_names_the_action_and_the_principal(sb, sandbox_env, args):
    name = sb.world.hyperpod_cluster_name
    message = DENIAL.format(name=name)
    with api_faults.injected(
        "DescribeCluster", service="sagemaker", error="AccessDeniedException", message=message, times=5
    ):
        done = run([*args, "--cluster", name], sandbox_env)
    if args[0] == "preflight":
        assert done.returncode == errors.EXIT_ACCESS_DENIED and "Traceback" not in done.stderr, done.stderr
        assert "ready to install" not in done.stdout
        assert "could not run (access denied)" in done.stdout.splitlines()[-1]
        assert "sagemaker:DescribeCluster" in done.stdout and "assumed-role/developer/alice" in done.stdout
        return
    assert_one_line(
        done,
        errors.EXIT_ACCESS_DENIED,
        "access denied: arn:aws:sts::123456789012:assumed-role/developer/alice may not call "
        "sagemaker:DescribeCluster",
    )


def test_refused_credentials_are_one_line(sb, sandbox_env):
    with api_faults.injected(
        "DescribeCluster",
        service="sagemaker",
        error="ExpiredTokenException",
        message="The security token included in the request is expired",
        times=5,
    ):
        done = run(["status", "--cluster", sb.world.hyperpod_cluster_name], sandbox_env)
    assert_one_line(done, errors.EXIT_EXPIRED_CREDENTIALS, "ExpiredTokenException", "aws sso login")


@pytest.mark.parametrize(
    ("args", "operation", "service"),
    [
        (["status", "--cluster", "{name}"], "DescribeCluster", "sagemaker"),
        (["jobs"], "Query", "dynamodb"),
        (["preflight", "--cluster", "{name}"], "DescribeCluster", "sagemaker"),
    ],
    ids=["status", "jobs", "preflight"],
)
def test_throttling_after_the_retries_is_one_line(sb, sandbox_env, args, operation, service):
    args = [a.format(name=sb.world.hyperpod_cluster_name) for a in args]
    with api_faults.injected(operation, service=service, times=10) as fault:  # more than any retry budget
        done = run(args, sandbox_env)
    assert fault.fired >= 2, "botocore retried before giving up"
    if args[0] == "preflight":
        assert done.returncode == errors.EXIT_THROTTLED and "Traceback" not in done.stderr, done.stderr
        assert "ready to install" not in done.stdout
        assert "could not run (AWS throttled the calls after the retries)" in done.stdout
        return
    assert_one_line(done, errors.EXIT_THROTTLED, "ThrottlingException", "run again")


def test_the_install_workflow_stops_in_preflight_when_its_checks_could_not_run(sb):
    # The Preflight function's own role is refused DescribeCluster: the workflow must not go on as
    # if the cluster were ready, and says why it stopped.
    name = sb.world.hyperpod_cluster_name
    denial = DENIAL.replace("assumed-role/developer/alice", "assumed-role/PreflightRole/preflight")
    with api_faults.injected(
        "DescribeCluster",
        service="sagemaker",
        error="AccessDeniedException",
        message=denial.format(name=name),
        times=50,
    ):
        outcome = sb.run_execution("InstallOperatorStateMachine", {"clusterName": name}, timeout=90)
    assert outcome.status == "FAILED"
    assert outcome.error == "PreflightUncheckedError", (outcome.error, outcome.cause)
    states = outcome.states_entered()
    assert outcome.assigned("failedStep") == "Preflight"
    assert "AcquireLock" not in states and "EnsureAccess" not in states
    assert "checks could not run" in outcome.cause and "[hyperpod.cluster]" in outcome.cause
    assert "sagemaker:DescribeCluster" in outcome.cause
