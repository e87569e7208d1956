"""Runtime settings: the one reader of the environment that template.yaml (or the sandbox) sets.

Two kinds. The stack's settings, the same for every function, are one ``Settings`` read once and
cached (``get_settings``: a Lambda's environment does not change). A function's own variables
(template.yaml sets them on one function, or a runtime variable Lambda sets) are read each time
they are asked for: the sandbox runs every function in one process and sets each invocation's
environment before it runs, so a value cached for one function would answer for another. Each
reader takes an optional ``env`` mapping in place of the process's environment (tests).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from functools import lru_cache
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from hyperpod_control.models.node_health import NodeRepairConfig

Env = Mapping[str, str]


def environment(env: Env | None = None) -> Env:
    """Where a function's own variables are read from: ``env``, or the process's environment as it
    is at the call (readers of many variables, such as ``SupervisorConfig.from_env``, take it once)."""
    return os.environ if env is None else env


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
    def from_env(cls, env: Env | None = None) -> Settings:
        env = environment(env)
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


# -- what Lambda's runtime and botocore read ----------------------------------------------------


def aws_region(env: Env | None = None) -> str | None:
    """``AWS_REGION`` (Lambda sets it and ``AWS_DEFAULT_REGION``; local tools often only this one)."""
    return environment(env).get("AWS_REGION") or None


def any_aws_region(env: Env | None = None) -> str | None:
    """``AWS_REGION``, else ``AWS_DEFAULT_REGION`` (a shell may set only the older one)."""
    return aws_region(env) or environment(env).get("AWS_DEFAULT_REGION") or None


def aws_max_attempts(env: Env | None = None) -> int | None:
    """``AWS_MAX_ATTEMPTS``, botocore's own variable, when it is a positive whole number."""
    value = environment(env).get("AWS_MAX_ATTEMPTS", "")
    return int(value) if value.isdigit() and int(value) > 0 else None


def lambda_initialization_type(env: Env | None = None) -> str | None:
    """``AWS_LAMBDA_INITIALIZATION_TYPE``: ``provisioned-concurrency`` or ``on-demand``."""
    return environment(env).get("AWS_LAMBDA_INITIALIZATION_TYPE")


# -- observability (template.yaml Globals) ------------------------------------------------------

#: Environment variable that turns the X-Ray SDK's subsegments on ("true"); off when unset.
XRAY_SUBSEGMENTS_ENV = "XRAY_SUBSEGMENTS"


def xray_subsegments_enabled(env: Env | None = None) -> bool:
    """Whether the X-Ray SDK's subsegments are on (observability.py ``tracer``)."""
    value = environment(env).get(XRAY_SUBSEGMENTS_ENV, "false")
    return value.strip().lower() in ("1", "true", "yes", "on")


def powertools_service_name(env: Env | None = None) -> str | None:
    return environment(env).get("POWERTOOLS_SERVICE_NAME") or None


def powertools_metrics_namespace(env: Env | None = None) -> str | None:
    return environment(env).get("POWERTOOLS_METRICS_NAMESPACE") or None


# -- one function's own variables ---------------------------------------------------------------


def operator_role_prefix(env: Env | None = None) -> str:
    """Operator roles are named with this prefix; the install role may create no other."""
    return environment(env).get("OPERATOR_ROLE_PREFIX", "hyperpod-control-plane-operator-")


def operator_role_path(env: Env | None = None) -> str:
    return environment(env).get("OPERATOR_ROLE_PATH", "/hyperpod-control-plane/")


def operator_role_boundary_arn(env: Env | None = None) -> str | None:
    return environment(env).get("OPERATOR_ROLE_BOUNDARY_ARN") or None


def kubernetes_client_functions(env: Env | None = None) -> str:
    """``reader=FnA,FnB;supervisor=FnC``: the functions that call the Kubernetes API, by tier
    (parsed by services/install/access.py)."""
    return environment(env).get("KUBERNETES_CLIENT_FUNCTIONS", "")


def agent_transport(env: Env | None = None) -> str:
    """``AGENT_TRANSPORT``: ``proxy`` (the API server's pod proxy, the default) or ``direct``."""
    return environment(env).get("AGENT_TRANSPORT", "proxy")


def agent_pool_size(env: Env | None = None) -> int:
    """``AGENT_POOL_SIZE``: how many agent calls a round makes at once (default 32)."""
    return int(environment(env).get("AGENT_POOL_SIZE", 32))


def agent_proxy_qps(env: Env | None = None) -> str:
    """``AGENT_PROXY_QPS`` as written (adapters/agents.py ``proxy_qps`` reads the number)."""
    return environment(env).get("AGENT_PROXY_QPS", "")


def supervise_job_state_machine_arn(env: Env | None = None) -> str:
    """The state machine reconcile_jobs starts per job; a KeyError where it is not set."""
    return environment(env)["SUPERVISE_JOB_STATE_MACHINE_ARN"]


def job_watch_seconds(env: Env | None = None) -> float:
    """How long watch_jobs watches each cluster per invocation (``JOB_WATCH_SECONDS``, 50)."""
    return float(environment(env).get("JOB_WATCH_SECONDS", 50))


def node_repair_config(env: Env | None = None) -> NodeRepairConfig:
    """``NODE_REPAIR_*`` (functions/node_health): automatic repair and its circuit breaker."""
    # Imported here: only the node-health function needs the model.
    from hyperpod_control.models.node_health import NodeRepairConfig

    return NodeRepairConfig.from_env(environment(env))
