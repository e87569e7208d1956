"""Fixtures of the unit suite: moto in process, fake credentials, a Lambda context, handler loading."""

from __future__ import annotations

import sys
from types import ModuleType

import pytest
from unit_support import REGION, TABLE, FakeContext, create_table, load_app

from hyperpod_control.adapters import aws
from hyperpod_control.settings import get_settings


@pytest.fixture
def context() -> FakeContext:
    return FakeContext()


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch):
    """Fake credentials, us-west-2, the table's name; no endpoint override; Powertools quiet."""
    for name in (
        "AWS_ENDPOINT_URL",
        "AWS_PROFILE",
        "AWS_ENDPOINT_URL_DYNAMODB",
        "AWS_ENDPOINT_URL_SAGEMAKER",
    ):
        monkeypatch.delenv(name, raising=False)
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SECURITY_TOKEN": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_REGION": REGION,
        "AWS_DEFAULT_REGION": REGION,
        "TABLE_NAME": TABLE,
        "POWERTOOLS_TRACE_DISABLED": "true",
        "POWERTOOLS_METRICS_DISABLED": "true",
        "POWERTOOLS_METRICS_NAMESPACE": "HyperPodControlUnit",
        "POWERTOOLS_SERVICE_NAME": "hyperpod-control-unit",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    aws.reset_clients()
    get_settings.cache_clear()
    yield env
    aws.reset_clients()
    get_settings.cache_clear()


@pytest.fixture
def moto_aws(aws_env):
    """moto in process for the test's duration, with the project's table created."""
    from moto import mock_aws

    with mock_aws():
        create_table()
        yield aws_env


@pytest.fixture
def ddb(moto_aws):
    """A low-level DynamoDB client on the mocked account (the same kind the Store uses)."""
    return aws.get_client("dynamodb")


@pytest.fixture
def store(moto_aws):
    from hyperpod_control.adapters.store import Store

    return Store(TABLE)


@pytest.fixture
def app_loader():
    loaded: list[str] = []

    def load(function: str) -> ModuleType:
        module = load_app(function)
        loaded.append(module.__name__)
        return module

    yield load
    for name in loaded:
        sys.modules.pop(name, None)
