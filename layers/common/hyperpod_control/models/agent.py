"""The wire protocol of the agent in every training pod (``hyperpodrun``), as the supervisor
speaks it: the ``/status`` answer and the ``/start`` and ``/stop`` bodies (hyperpod-facts 1.4).

Field names are the agent's own, mixed case included (``faultCount`` beside ``master_addr``):
AWS's agent and ours read exactly these.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

AGENT_PORT = 8080


class AgentState(StrEnum):
    INIT = "init"
    READY = "ready"
    RUNNING = "running"
    COMPLETED = "completed"
    FAULTED = "faulted"
    STOPPING = "stopping"
    SHUTDOWN = "shutdown"


class AgentStatus(BaseModel):
    """``GET /status``. Unknown keys are kept out; a newer agent may add some."""

    # Schema built on first use, not at import (cold start: README, Performance).
    model_config = ConfigDict(extra="ignore", populate_by_name=True, defer_build=True)

    status: AgentState
    reason: str | None = None
    message: str | None = None
    restart_mode: str | None = Field(default=None, alias="restartMode")
    progress: dict[str, Any] | None = None
    assigned_rank: str | None = None
    spare: str | None = None
    ipversion: str | None = None
    agent_version: str | None = None
    transitions: dict[str, str] = Field(default_factory=dict)


class RankIp(BaseModel):
    model_config = ConfigDict(defer_build=True)

    rank: int
    ip: str


class StartRequest(BaseModel):
    """``POST /start``: the group rank, the world, the master, the IP table, the rules."""

    model_config = ConfigDict(populate_by_name=True, defer_build=True)

    rank: int
    nnodes: int
    fault_count: int = Field(alias="faultCount")
    master_addr: str
    master_port: int
    spare: bool = False
    ip_version: str | None = Field(default=None, alias="ipVersion")
    rank_ips: list[RankIp] = Field(default_factory=list, alias="rankIps")
    log_monitoring_configuration: list[dict[str, Any]] = Field(default_factory=list)
    progress: dict[str, Any] | None = None

    def body(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class StopRequest(BaseModel):
    model_config = ConfigDict(defer_build=True)

    restart_mode: str = "process_level_restart"
    is_graceful: bool | None = None
    timeout: int | None = None

    def body(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)


class AgentAnswer(BaseModel):
    """What one call to one agent gave: the parsed answer, or why there is none."""

    model_config = ConfigDict(defer_build=True)

    pod: str
    ok: bool
    status: AgentStatus | None = None
    error: str | None = None
    #: The failure is the pod's (gone, not running) rather than the network's or the API server's.
    pod_gone: bool = False
    #: No answer within the call's timeout: the agent (or its node) is silent.
    silent: bool = False
