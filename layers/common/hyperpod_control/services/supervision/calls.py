"""What the supervisor says to the agents at a start, as pure functions: ranks assigned
(``assign_ranks``), the rendezvous port of each restart (``master_port``), and every agent's
``/start`` (``start_calls``), the whole IP table or only the ranks whose IP changed since the
table the agent holds (``held_table``).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from hyperpod_control.adapters.agents import AgentCall, SharedJson
from hyperpod_control.exceptions import InvalidInputError
from hyperpod_control.models.agent import AgentAnswer, RankIp, StartRequest
from hyperpod_control.models.job import HyperPodPytorchJob
from hyperpod_control.models.records import JobRecord, PodSlot
from hyperpod_control.services.supervision.pods import pod_index

MASTER_PORT = 23456


#: What differs between the agents' /start bodies of one round.
PER_AGENT_START_FIELDS = ("rank", "spare")


def master_port(fault_count: int) -> int:
    """Pure: the rendezvous port of a restart. Each restart moves to the next port, so the new
    rank-0 store never races the old one's socket still closing on the same pod."""
    return MASTER_PORT + fault_count % 100


def ip_version_at(moment: datetime) -> str:
    """The ``ipVersion`` of an IP table made at ``moment``: a timestamp, to the microsecond so two
    starts in one second never share a version (agents compare it to the version they hold)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def rank_ips_mode(text: str) -> Literal["changed", "full"]:
    """``AGENT_RANK_IPS``: ``changed`` (the default) or ``full``."""
    mode = text.strip().lower() or "changed"
    if mode not in ("changed", "full"):
        raise InvalidInputError(
            f"AGENT_RANK_IPS: {text!r} is neither 'changed' nor 'full'.",
            remedy="set 'changed' (a restart sends agents only the ranks whose IP changed) or 'full'.",
        )
    return mode  # type: ignore[return-value]


def assign_ranks(slots: list[PodSlot], nnodes: int) -> list[PodSlot]:
    """Pure: ranks 0..nnodes-1 to the first ``nnodes`` pods by index, the rest are spares. A slot
    that already holds a rank keeps it (a retried StartAgents must not reshuffle)."""
    if any(s.rank is not None for s in slots):
        return slots
    ordered = sorted(slots, key=lambda s: pod_index(s.pod))
    return [s.model_copy(update={"rank": i if i < nnodes else None}) for i, s in enumerate(ordered)]


def spares_held(answers: dict[str, AgentAnswer]) -> set[str]:
    """Pure: the pods whose ``/status`` says their agent holds a spare's workers
    (``AgentStatus.holds_spares``): only those get a ``/start`` with ``spare: true``."""
    return {pod for pod, a in answers.items() if a.ok and a.status is not None and a.status.holds_spares()}


def start_calls(
    record: JobRecord,
    job: HyperPodPytorchJob,
    ip_version: str,
    spares_held: Collection[str] = (),
    held: HeldTable | None = None,
) -> list[AgentCall]:
    """Pure: the ``/start`` of every pod: ranks with the IP table, and the spares in
    ``spares_held`` (those whose agents hold a spare's workers, ``AgentStatus.holds_spares``)
    flagged spare. The agent requires a rank below nnodes even of a spare; a spare's is only a
    placeholder (it runs no workers until a later /start or /update promotes it), and the JOB item
    records it as a spare. Other spares get no ``/start`` at all: they stay READY until promoted
    (AWS's process-restart agent ignores ``spare`` and would run workers with the placeholder).

    An agent that holds the table of ``held`` (the job's previous start) gets only the ranks whose
    IP changed since (``rankIps`` empty when none did: the agent keeps its table and takes the new
    ``ipVersion``), every other agent the whole table; without ``held`` every agent gets it all.

    Only ``rank`` and ``spare`` differ between the agents: the rest (the IP table above all) is
    built and validated once, each call's body shares its values, and ``SharedJson`` serialises
    them once for the round (twice with ``held``: the whole table and the changed ranks)."""
    ranked = record.ranked()
    rank_ips = [RankIp(rank=s.rank or 0, ip=s.ip or "") for s in ranked]
    rules = [r.dump() for r in job.spec.run_policy.log_monitoring_configuration or []]
    calls = []
    for standby, slot in enumerate(s for s in record.spare_pods() if s.pod in spares_held):
        calls.append((slot, standby % max(record.nnodes, 1), True))
    calls = [(s, s.rank or 0, False) for s in ranked] + calls
    base = StartRequest(
        rank=0,
        nnodes=record.nnodes,
        faultCount=record.fault_count,
        master_addr=record.master_addr or "",
        master_port=master_port(record.fault_count),
        spare=False,
        ipVersion=ip_version,
        rankIps=rank_ips,
        log_monitoring_configuration=rules,
        progress=record.progress,
    ).body()
    shared = SharedJson({k: v for k, v in base.items() if k not in PER_AGENT_START_FIELDS})
    bodies = {False: (base, shared)}
    if held is not None:
        changed = {**base, "rankIps": [r.model_dump() for r in rank_ips if held.ips.get(r.rank) != r.ip]}
        bodies[True] = (changed, SharedJson({k: changed[k] for k in shared.keys}))
    out = []
    for slot, rank, spare in calls:
        body, keys = bodies[held is not None and slot.pod in held.pods]
        out.append(
            AgentCall(
                pod=slot.pod,
                method="POST",
                path="/start",
                ip=slot.ip,
                namespace=record.namespace,
                body={**body, "rank": rank, "spare": spare},
                shared=keys,
            )
        )
    return out


@dataclass(frozen=True)
class HeldTable:
    """The IP table of the job's previous start and the pods whose agents hold it: what a
    ``/start`` may leave out (``start_calls``). The agent merges a ``rankIps`` into the table it
    holds ("first call full, later calls only the changed ranks") and reports the table's version
    as ``ipversion``."""

    version: str
    ips: dict[int, str]
    pods: frozenset[str]


def held_table(record: JobRecord, answers: dict[str, AgentAnswer]) -> HeldTable | None:
    """Pure: the table ``record`` was last started with (its ``ip_version``) and the agents whose
    ``/status`` in ``answers`` reports holding that version. An agent that reports another version
    or none (a new pod, a restarted container that lost its table) is not among them and gets the
    whole table again."""
    if not record.ip_version:
        return None
    pods = frozenset(
        pod
        for pod, answer in answers.items()
        if answer.ok and answer.status is not None and answer.status.ipversion == record.ip_version
    )
    return HeldTable(record.ip_version, {s.rank or 0: s.ip or "" for s in record.ranked()}, pods)
