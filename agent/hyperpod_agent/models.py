"""The bodies of the control requests (``/start``, ``/update``, ``/stop``), parsed and validated.

Field names are the HyperPod elastic agent's wire names (``faultCount``, ``master_addr``,
``rankIps``...), mixed case included. Validation collects every error before refusing, and each
error names the field and what would be accepted, in FastAPI's 422 shape, so a control plane
written for the AWS agent reads our errors unchanged. Standard library only: the agent keeps its
dependencies to torch.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Any

from .errors import RequestValidationError

MAX_RANK = 100_000  # the IP table is a list indexed by rank; HyperPod refuses ranks above this

LOG_RULE_OPERATORS = ("gt", "lt", "eq", "gteq", "lteq")


class _Errors:
    def __init__(self) -> None:
        self.items: list[dict] = []

    def add(self, loc: list, msg: str, kind: str = "value_error") -> None:
        self.items.append({"loc": ["body", *loc], "msg": msg, "type": kind})

    def raise_if_any(self) -> None:
        if self.items:
            raise RequestValidationError(self.items)


def _int(body: dict, name: str, errs: _Errors, *, required: bool, minimum: int | None = 0) -> int | None:
    if name not in body or body[name] is None:
        if required:
            errs.add([name], f"field required: '{name}' (an integer)", "missing")
        return None
    value = body[name]
    if isinstance(value, bool) or not isinstance(value, int):
        errs.add([name], f"'{name}' must be an integer, got {type(value).__name__} {value!r}", "int_type")
        return None
    if minimum is not None and value < minimum:
        errs.add([name], f"'{name}' must be >= {minimum}, got {value}")
        return None
    return value


@dataclass(frozen=True)
class LogRule:
    """One rule of ``runPolicy.logMonitoringConfiguration`` (see hyperpod_agent.logmon)."""

    name: str
    pattern: re.Pattern
    start_cutoff_s: float | None = None
    recurring_s: float | None = None
    stop_pattern: re.Pattern | None = None
    threshold: float | None = None
    operator: str | None = None
    datapoints: int = 1
    fault_on_match: bool = False


def _number(rule: dict, key: str, loc: list, errs: _Errors) -> float | None:
    value = rule.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        errs.add([*loc, key], f"'{key}' must be a non-negative number of seconds/units, got {value!r}")
        return None
    return float(value)


def _regex(rule: dict, key: str, loc: list, errs: _Errors, *, required: bool) -> re.Pattern | None:
    value = rule.get(key)
    if value is None:
        if required:
            errs.add([*loc, key], f"field required: '{key}' (a regular expression)", "missing")
        return None
    if not isinstance(value, str):
        errs.add([*loc, key], f"'{key}' must be a string regular expression")
        return None
    try:
        return re.compile(value)
    except re.error as exc:
        errs.add([*loc, key], f"'{key}' is not a valid regular expression: {exc}")
        return None


def parse_log_rules(raw: Any, errs: _Errors) -> list[LogRule]:
    loc = ["log_monitoring_configuration"]
    if raw is None:
        return []
    if not isinstance(raw, list):
        errs.add(loc, "must be a list of rules ({name, logPattern, ...})", "list_type")
        return []
    rules: list[LogRule] = []
    for i, rule in enumerate(raw):
        rloc = [*loc, i]
        if not isinstance(rule, dict):
            errs.add(rloc, "each rule must be an object with at least 'name' and 'logPattern'", "dict_type")
            continue
        name = rule.get("name")
        if not isinstance(name, str) or not name:
            errs.add([*rloc, "name"], "field required: 'name' (a non-empty string used in LogHang_<name>)")
        pattern = _regex(rule, "logPattern", rloc, errs, required=True)
        stop = _regex(rule, "stopPattern", rloc, errs, required=False)
        start_cutoff = _number(rule, "expectedStartCutOffInSeconds", rloc, errs)
        recurring = _number(rule, "expectedRecurringFrequencyInSeconds", rloc, errs)
        threshold = _number(rule, "metricThreshold", rloc, errs) if "metricThreshold" in rule else None
        operator = rule.get("operator")
        if threshold is not None and operator not in LOG_RULE_OPERATORS:
            allowed = ", ".join(LOG_RULE_OPERATORS)
            errs.add([*rloc, "operator"], f"'operator' must be one of {allowed} when metricThreshold is set")
        datapoints = rule.get("metricEvaluationDataPoints", 1)
        if isinstance(datapoints, bool) or not isinstance(datapoints, int) or datapoints < 1:
            errs.add([*rloc, "metricEvaluationDataPoints"], "must be an integer >= 1")
            datapoints = 1
        fault = rule.get("faultOnMatch", False)
        if not isinstance(fault, bool):
            errs.add([*rloc, "faultOnMatch"], "must be true or false")
            fault = False
        if pattern is not None and isinstance(name, str) and name:
            rules.append(
                LogRule(
                    name=name,
                    pattern=pattern,
                    start_cutoff_s=start_cutoff,
                    recurring_s=recurring,
                    stop_pattern=stop,
                    threshold=threshold,
                    operator=operator,
                    datapoints=datapoints,
                    fault_on_match=fault,
                )
            )
    return rules


def _same_host(a: str, b: str) -> bool:
    """Whether two addresses name the same host: IPs compared as IPs (``fd00::1`` is
    ``fd00:0::1``), anything else as text."""
    try:
        return ipaddress.ip_address(a.strip()) == ipaddress.ip_address(b.strip())
    except ValueError:
        return a.strip() == b.strip()


def master_outside(master_addr: str, ips: list[str], errs: _Errors | None = None) -> None:
    """``master_addr`` is none of the job's pod IPs ``ips`` (the whole table): added to ``errs``,
    or raised (422) without it."""
    if any(_same_host(master_addr, ip) for ip in ips):
        return
    collected = errs or _Errors()
    collected.add(
        ["master_addr"],
        f"'master_addr' {master_addr!r} is not one of the job's pod IPs in 'rankIps'; "
        "the rendezvous host must be a pod of the job (rank 0's IP)",
    )
    if errs is None:
        collected.raise_if_any()


@dataclass(frozen=True)
class RankIp:
    rank: int
    ip: str


@dataclass(frozen=True)
class StartRequest:
    """``POST /start`` and ``POST /update`` (``progress`` is only read on /start)."""

    rank: int
    nnodes: int
    fault_count: int
    master_addr: str
    master_port: int
    log_rules: list[LogRule] | None = None  # None: field absent, keep the rules the agent has
    ip_version: str | None = None
    rank_ips: list[RankIp] = field(default_factory=list)
    #: ``rankIps`` was sent (even empty): with ``ipVersion``, the table the agent holds takes
    #: these ranks and that version ("first call full, later calls only the changed ranks").
    rank_ips_sent: bool = False
    worker_data: Any = None
    spare: bool = False
    progress: dict | None = None


def parse_start(body: Any, *, with_progress: bool = True) -> StartRequest:
    errs = _Errors()
    if not isinstance(body, dict):
        fields = "rank, nnodes, faultCount, master_addr, master_port"
        errs.add([], f"request body must be a JSON object with {fields}", "dict_type")
        errs.raise_if_any()
    rank = _int(body, "rank", errs, required=True)
    nnodes = _int(body, "nnodes", errs, required=True, minimum=1)
    fault_count = _int(body, "faultCount", errs, required=True)
    if rank is not None and rank > MAX_RANK:
        errs.add(["rank"], f"'rank' must be <= {MAX_RANK}, got {rank}")
    if rank is not None and nnodes is not None and rank >= nnodes:
        errs.add(["rank"], f"'rank' ({rank}) must be < 'nnodes' ({nnodes}): it is the pod's group rank")

    master_addr = body.get("master_addr")
    if master_addr is None:
        errs.add(["master_addr"], "field required: 'master_addr' (rank 0 pod's address)", "missing")
    elif not isinstance(master_addr, str):
        errs.add(["master_addr"], "'master_addr' must be a string")
    elif not master_addr.strip():
        # HyperPod's own wording, which control planes may match on.
        errs.add(["master_addr"], "Empty master_addr received from operator")

    master_port: int | None = None
    raw_port = body.get("master_port")
    if raw_port is None:
        errs.add(["master_port"], "field required: 'master_port' (an integer or a numeric string)", "missing")
    elif isinstance(raw_port, bool):
        errs.add(["master_port"], "'master_port' must be an integer or a numeric string")
    elif isinstance(raw_port, int):
        master_port = raw_port
    elif isinstance(raw_port, str):
        # HyperPod coerces strings; an empty string becomes 0 (let the workers pick the default).
        if raw_port.strip() == "":
            master_port = 0
        elif raw_port.strip().isdigit():
            master_port = int(raw_port)
        else:
            errs.add(["master_port"], f"'master_port' must be numeric, got {raw_port!r}")
    else:
        errs.add(["master_port"], "'master_port' must be an integer or a numeric string")
    if master_port is not None and not 0 <= master_port <= 65535:
        errs.add(["master_port"], f"'master_port' must be in 0..65535, got {master_port}")
        master_port = None

    log_rules = (
        parse_log_rules(body.get("log_monitoring_configuration"), errs)
        if "log_monitoring_configuration" in body
        else None
    )

    ip_version = body.get("ipVersion")
    if ip_version is not None and not isinstance(ip_version, str):
        errs.add(["ipVersion"], "'ipVersion' must be a string (the IP table's version or timestamp)")

    rank_ips: list[RankIp] = []
    raw_ips = body.get("rankIps")
    if raw_ips is not None:
        if not isinstance(raw_ips, list):
            errs.add(["rankIps"], "'rankIps' must be a list of {rank, ip}")
        else:
            for i, item in enumerate(raw_ips):
                if (
                    not isinstance(item, dict)
                    or isinstance(item.get("rank"), bool)
                    or not isinstance(item.get("rank"), int)
                    or not 0 <= item["rank"] <= MAX_RANK
                    or not isinstance(item.get("ip"), str)
                ):
                    errs.add(["rankIps", i], f"each entry must be {{rank: 0..{MAX_RANK}, ip: string}}")
                else:
                    rank_ips.append(RankIp(item["rank"], item["ip"]))
            # The port has no authentication: without this, anyone who can reach it could point the
            # workers at a rendezvous host of their own. Checked once the whole table is readable;
            # a table of only the changed ranks is checked against the merged one (master_outside).
            if (
                nnodes is not None
                and len({r.rank for r in rank_ips}) >= nnodes
                and len(rank_ips) == len(raw_ips)
                and isinstance(master_addr, str)
                and master_addr.strip()
            ):
                master_outside(master_addr, [r.ip for r in rank_ips], errs)

    spare_raw = body.get("spare", False)
    spare = False
    if spare_raw is None:
        spare = False
    elif isinstance(spare_raw, bool):
        spare = spare_raw
    elif isinstance(spare_raw, int) and spare_raw in (0, 1):
        spare = bool(spare_raw)
    else:
        errs.add(["spare"], "'spare' must be true/false or 0/1")

    progress = None
    if with_progress and body.get("progress") is not None:
        progress = body["progress"]
        if not isinstance(progress, dict) or not all(
            isinstance(v, dict) and "progressCount" in v for v in progress.values()
        ):
            errs.add(["progress"], "'progress' must be {prefix: {progressData: path, progressCount: step}}")
            progress = None

    errs.raise_if_any()
    assert rank is not None and nnodes is not None and fault_count is not None and master_port is not None
    return StartRequest(
        rank=rank,
        nnodes=nnodes,
        fault_count=fault_count,
        master_addr=master_addr,
        master_port=master_port,
        log_rules=log_rules,
        ip_version=ip_version,
        rank_ips=rank_ips,
        rank_ips_sent=isinstance(raw_ips, list),
        worker_data=body.get("worker_data"),
        spare=spare,
        progress=progress,
    )


RESTART_MODES = ("in_process_restart", "process_level_restart", "job_level_restart", "local_prl")


@dataclass(frozen=True)
class StopRequest:
    restart_mode: str = "ipr"
    is_graceful: bool | None = None
    timeout: int | None = None


def parse_stop(body: Any) -> StopRequest:
    if body is None or body == {}:
        return StopRequest()
    errs = _Errors()
    if not isinstance(body, dict):
        errs.add([], "request body must be empty or a JSON object {restart_mode, is_graceful, timeout}")
        errs.raise_if_any()
    mode = body.get("restart_mode", "ipr")
    if mode is None:
        mode = "ipr"
    if not isinstance(mode, str):
        errs.add(["restart_mode"], f"'restart_mode' must be a string, one of {', '.join(RESTART_MODES)}")
    graceful = body.get("is_graceful")
    if graceful is not None and not isinstance(graceful, bool):
        errs.add(["is_graceful"], "'is_graceful' must be true, false or null")
    timeout = _int(body, "timeout", errs, required=False)
    errs.raise_if_any()
    return StopRequest(restart_mode=mode, is_graceful=graceful, timeout=timeout)
