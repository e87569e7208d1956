"""Settings from the environment that template.yaml sets."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from unit_support import REPO_ROOT

from hyperpod_control.settings import Settings, get_settings
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
