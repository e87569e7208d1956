"""Runtime settings, read from the environment that template.yaml (or the sandbox) sets."""

from __future__ import annotations

import os
from functools import lru_cache

from pydantic import BaseModel, ConfigDict, Field


class Settings(BaseModel):
    # Schema built on first use, not at import (cold start: README, Performance).
    model_config = ConfigDict(frozen=True, defer_build=True)

    table_name: str = Field(min_length=3)
    region: str = "us-east-1"
    event_bus_name: str = "default"
    #: Seconds a remediation EVENT item lives before DynamoDB's TTL removes it.
    event_ttl_seconds: int = 90 * 24 * 3600
    #: Endpoint override; set by the sandbox (AWS_ENDPOINT_URL), unset on AWS.
    endpoint_url: str | None = None
    #: The stack's bucket for job manifests while an upgrade deletes and resubmits them.
    snapshot_bucket: str | None = None

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        return cls(
            table_name=env.get("TABLE_NAME", ""),
            region=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1",
            event_bus_name=env.get("EVENT_BUS_NAME", "default"),
            # EVENT_TTL_SECONDS (seconds) overrides the template's EVENT_RETENTION_DAYS (days).
            event_ttl_seconds=int(
                env.get("EVENT_TTL_SECONDS") or int(env.get("EVENT_RETENTION_DAYS", 90)) * 24 * 3600
            ),
            endpoint_url=env.get("AWS_ENDPOINT_URL") or None,
            snapshot_bucket=env.get("SNAPSHOT_BUCKET") or None,
        )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Settings of this process; cached because a Lambda's environment does not change."""
    return Settings.from_env()
