"""Settings from the environment that template.yaml sets."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from unit_support import REPO_ROOT

from hyperpod_control.settings import (
    Settings,
    agent_transport,
    aws_max_attempts,
    get_settings,
    job_watch_seconds,
    kubernetes_client_functions,
    operator_role_boundary_arn,
    operator_role_path,
    operator_role_prefix,
    supervise_job_state_machine_arn,
)
from sandbox.template import Resolver, load_template

pytestmark = pytest.mark.unit


def test_from_env_reads_the_template_variables():
    settings = Settings.from_env(
        {
            "TABLE_NAME": "hp-table",
            "AWS_REGION": "eu-west-1",
            "AWS_DEFAULT_REGION": "us-east-2",
            "EVENT_BUS_NAME": "hp-bus",
            "EVENT_TTL_SECONDS": "3600",
            "AWS_ENDPOINT_URL": "http://127.0.0.1:5000",
        }
    )

    assert settings.table_name == "hp-table"
    assert settings.region == "eu-west-1"
    assert settings.event_bus_name == "hp-bus"
    assert settings.event_ttl_seconds == 3600
    assert settings.endpoint_url == "http://127.0.0.1:5000"


def test_defaults():
    settings = Settings.from_env({"TABLE_NAME": "hp-table", "AWS_DEFAULT_REGION": "us-east-2"})

    assert settings.region == "us-east-2"
    assert settings.event_bus_name == "default"
    assert settings.event_ttl_seconds == 90 * 86400
    assert settings.endpoint_url is None


def test_missing_table_name_is_refused():
    with pytest.raises(ValidationError, match="table_name"):
        Settings.from_env({})


def test_get_settings_is_cached_until_cleared(aws_env, monkeypatch):
    assert get_settings().table_name == aws_env["TABLE_NAME"]
    monkeypatch.setenv("TABLE_NAME", "other-table")
    assert get_settings().table_name == aws_env["TABLE_NAME"]
    get_settings.cache_clear()
    assert get_settings().table_name == "other-table"


def test_template_sets_event_ttl_to_the_retention_days_in_seconds():
    template = load_template(REPO_ROOT / "template.yaml")
    days = template["Parameters"]["EventRetentionDays"]["Default"]
    variable = template["Globals"]["Function"]["Environment"]["Variables"]["EVENT_RETENTION_DAYS"]

    value = Resolver(template, pseudo={}, parameters={"EventRetentionDays": days}).resolve(variable)
    settings = Settings.from_env({"TABLE_NAME": "table", "EVENT_RETENTION_DAYS": str(value)})

    assert settings.event_ttl_seconds == int(days) * 86400


def test_a_functions_own_variables_are_read_on_each_call(monkeypatch):
    # The sandbox runs every function in one process and sets each invocation's environment
    # before it runs: a value cached for one function would answer for the next.
    for prefix, functions, transport in (
        ("stack-a-operator-", "reader=FnA", "proxy"),
        ("stack-b-operator-", "supervisor=FnB", "direct"),
    ):
        monkeypatch.setenv("OPERATOR_ROLE_PREFIX", prefix)
        monkeypatch.setenv("KUBERNETES_CLIENT_FUNCTIONS", functions)
        monkeypatch.setenv("AGENT_TRANSPORT", transport)
        read = (operator_role_prefix(), kubernetes_client_functions(), agent_transport())
        assert read == (prefix, functions, transport)


def test_a_functions_own_variables_have_the_templates_defaults():
    assert operator_role_prefix({}) == "hyperpod-control-plane-operator-"
    assert operator_role_path({}) == "/hyperpod-control-plane/"
    assert operator_role_boundary_arn({"OPERATOR_ROLE_BOUNDARY_ARN": ""}) is None
    assert agent_transport({}) == "proxy"
    assert job_watch_seconds({}) == 50
    assert job_watch_seconds({"JOB_WATCH_SECONDS": "20"}) == 20
    with pytest.raises(KeyError, match="SUPERVISE_JOB_STATE_MACHINE_ARN"):
        supervise_job_state_machine_arn({})


@pytest.mark.parametrize(
    ("value", "attempts"), [("3", 3), ("1", 1), ("0", None), ("-2", None), ("three", None), ("", None)]
)
def test_aws_max_attempts_is_a_positive_whole_number_or_nothing(value, attempts):
    assert aws_max_attempts({"AWS_MAX_ATTEMPTS": value}) == attempts


def test_the_agents_transport_follows_agent_transport(monkeypatch):
    from hyperpod_control import wiring
    from hyperpod_control.adapters.agents import DirectTransport, ProxyTransport

    kube = object()
    monkeypatch.delenv("AGENT_TRANSPORT", raising=False)
    proxied = wiring.agent_client(kube)
    assert isinstance(proxied.transport, ProxyTransport) and proxied.transport.kube is kube
    monkeypatch.setenv("AGENT_TRANSPORT", "direct")
    assert isinstance(wiring.agent_client(kube).transport, DirectTransport)


def test_the_store_is_the_stacks_table(aws_env):
    from hyperpod_control import wiring

    assert wiring.store().table_name == aws_env["TABLE_NAME"]
