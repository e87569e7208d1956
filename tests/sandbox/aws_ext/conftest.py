"""Fixtures for the moto extensions: every test runs in process (unit) and over HTTP (integration).

``aws`` is parametrised: ``process`` starts ``mock_aws`` for the test; ``server`` talks to one
ThreadedMotoServer on 127.0.0.1 for the session, reset after each test. Sandbox time is a
manual clock the test advances, so no test sleeps. Clients do not retry, so an injected fault
reaches the test instead of being absorbed by botocore.
"""

from __future__ import annotations

import json
import urllib.request
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from botocore.config import Config

from sandbox import aws_ext

REGION = "us-west-2"
ACCOUNT = "123456789012"
NO_RETRIES = Config(retries={"mode": "standard", "total_max_attempts": 1})


@dataclass
class Aws:
    mode: str
    clock: aws_ext.ManualClock
    endpoint_url: str | None

    def client(self, service: str, config: Config = NO_RETRIES) -> Any:
        return _session().client(service, region_name=REGION, endpoint_url=self.endpoint_url, config=config)


_sessions: list[boto3.session.Session] = []


def _session() -> boto3.session.Session:
    # One session for the run: a new one parses each service's JSON model again (EC2's is large).
    if not _sessions:
        _sessions.append(boto3.session.Session())
    return _sessions[0]


@pytest.fixture(scope="session")
def moto_server():
    from moto.server import ThreadedMotoServer

    # Routes first: the server builds a service's URL map on that service's first request.
    aws_ext.install()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture(
    params=[
        pytest.param("process", marks=pytest.mark.unit),
        pytest.param("server", marks=pytest.mark.integration),
    ]
)
def aws(request, monkeypatch):
    for key, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
    }.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    aws_ext.install()
    clock = aws_ext.ManualClock()
    aws_ext.configure(clock)
    if request.param == "process":
        from moto import mock_aws

        with mock_aws():
            yield Aws("process", clock, None)
    else:
        url = request.getfixturevalue("moto_server")
        try:
            yield Aws("server", clock, url)
        finally:
            urllib.request.urlopen(urllib.request.Request(f"{url}/moto-api/reset", method="POST"), timeout=10)
    aws_ext.reset()


def code(excinfo: pytest.ExceptionInfo) -> str:
    return excinfo.value.response["Error"]["Code"]


def status(excinfo: pytest.ExceptionInfo) -> int:
    return excinfo.value.response["ResponseMetadata"]["HTTPStatusCode"]


def make_vpc(aws: Aws, cidr: str = "10.0.0.0/16", subnet: str = "10.0.0.0/20") -> tuple[str, str]:
    ec2 = aws.client("ec2")
    vpc = ec2.create_vpc(CidrBlock=cidr)["Vpc"]["VpcId"]
    subnet_id = ec2.create_subnet(VpcId=vpc, CidrBlock=subnet, AvailabilityZone="us-west-2a")["Subnet"][
        "SubnetId"
    ]
    return vpc, subnet_id


def make_eks(
    aws: Aws, name: str = "eks1", version: str = "1.31", mode: str | None = "API_AND_CONFIG_MAP", **vpc: Any
) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "name": name,
        "version": version,
        "roleArn": f"arn:aws:iam::{ACCOUNT}:role/eks",
        "resourcesVpcConfig": {"subnetIds": vpc.pop("subnetIds", []), **vpc},
    }
    if mode:
        kwargs["accessConfig"] = {"authenticationMode": mode}
    return aws.client("eks").create_cluster(**kwargs)["cluster"]


def operator_values(**resources: Any) -> str:
    return json.dumps({"hpTrainingControllerManager": {"manager": {"resources": resources}}})
