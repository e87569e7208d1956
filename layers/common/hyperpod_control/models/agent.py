"""The wire protocol of the agent in every training pod (``hyperpodrun``), as the supervisor
speaks it: the ``/status`` answer and the ``/start`` and ``/stop`` bodies
(docs/hyperpod-contract.md, "Agent protocol").

Field names are the agent's own, mixed case included (``faultCount`` beside ``master_addr``):
AWS's agent and ours read exactly these. Values are read as either agent writes them: AWS's
``hyperpod-elastic-agent`` answers ``assigned_rank`` and ``spare`` as strings (``"0"``, ``"True"``),
a JSON number or boolean is taken as well.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

AGENT_PORT = 8080
#: ``restartMode`` of an agent that restarts its workers in process (AWS's ``--inprocess-restart``
#: agent, ours with the same flag); a process-restart agent says ``process_level_restart``.
IN_PROCESS_RESTART = "in_process_restart"


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
    assigned_rank: int | None = None
    spare: bool | None = None
    ipversion: str | None = None
    agent_version: str | None = None
    transitions: dict[str, str] = Field(default_factory=dict)
    #: This project's agent says it keeps a spare's workers from running (``"True"``); AWS's agent
    #: has no such key (its process-restart agent ignores ``spare``, README "The agent").
    holds_spares_flag: bool | None = Field(default=None, alias="holds_spares")

    @field_validator("assigned_rank", mode="before")
    @classmethod
    def _rank(cls, value: Any) -> Any:
        if isinstance(value, str):
            return int(value) if value.strip().lstrip("-").isdigit() else None
        return value

    @field_validator("spare", "holds_spares_flag", mode="before")
    @classmethod
    def _flag(cls, value: Any) -> Any:
        if isinstance(value, str):
            return {"true": True, "1": True, "false": False, "0": False}.get(value.strip().lower())
        return value

    def holds_spares(self) -> bool:
        """Whether ``/start`` with ``spare: true`` keeps this agent's workers from running until a
        later ``/start`` promotes it: this project's agent (``holds_spares``) and any agent that
        restarts in process (AWS's in-process-restart agent holds spares at its barrier). AWS's
        process-restart agent ignores ``spare`` (its ``handle_spare_update`` does nothing) and would
        start workers with the placeholder rank, so its spares get no ``/start`` until promoted."""
        return bool(self.holds_spares_flag) or self.restart_mode == IN_PROCESS_RESTART

    def runs_workers(self) -> bool:
        """RUNNING with workers of its own: not a spare standing by in an agent that holds it."""
        return self.status is AgentState.RUNNING and not (self.holds_spares() and self.spare)

    def describe(self) -> str:
        """The agent as a reason names it: its version and restart mode."""
        return f"agent {self.agent_version or 'of unknown version'}, {self.restart_mode or 'no restartMode'}"


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
