"""In-memory adapters for the unit tests: one set, shared, each behaving as the real adapter does.

``FakeStore`` is ``hyperpod_control.adapters.store.Store`` over a dict: the same methods, the same
conditional writes, fresh copies on every read (as DynamoDB returns new items). ``FakeSfn`` is
``hyperpod_control.adapters.stepfunctions.StepFunctionsAdapter`` over a dict of executions,
``FakeSageMaker`` the node-health calls of ``SageMakerAdapter``. A test that needs
a fake to behave otherwise (lose a race, count its reads) subclasses it in the test, so what is
deliberate stays visible there.
"""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping
from typing import Any, Generic, TypeVar

from hyperpod_control.adapters.stepfunctions import execution_arn
from hyperpod_control.exceptions import VersionConflictError
from hyperpod_control.models.records import (
    OPERATOR_SK,
    JobEventRecord,
    JobRecord,
    NodeRecord,
    OperatorRecord,
    Record,
    cluster_pk,
    job_history_pk,
    job_sk,
    node_sk,
)

R = TypeVar("R", bound=Record)


class FakeStore:
    """The table as ``items`` (``(PK, SK)`` to record), written as ``Store`` writes it.

    ``put`` with ``expected_version=None`` creates only; with an int it replaces only the item at
    that version; either way a lost condition raises ``VersionConflictError`` and the stored item
    gets ``version`` ``expected_version + 1``. Records given to the constructor are stored as they
    are (their version is what a test read). ``puts`` counts the puts that succeeded and
    ``outcomes`` lists the node outcomes written; ``jobs``, ``nodes`` and ``events`` are views of
    ``items`` by job uid, by instance id and in write order, ``snapshot()`` all of it as JSON.
    """

    def __init__(self, *records: Record) -> None:
        self.items: dict[tuple[str, str], Record] = {}
        self.puts = 0
        self.outcomes: list[Any] = []
        for record in records:
            self.items[_key(record)] = record

    # -- views for the tests' assertions -------------------------------------------------------

    @property
    def jobs(self) -> MutableMapping[str, JobRecord]:
        return _View(self.items, JobRecord, lambda r: r.uid)

    @property
    def nodes(self) -> MutableMapping[str, NodeRecord]:
        return _View(self.items, NodeRecord, lambda r: r.instance_id)

    @property
    def events(self) -> list[JobEventRecord]:
        return [r for r in self.items.values() if isinstance(r, JobEventRecord)]

    def snapshot(self) -> dict[tuple[str, str], dict[str, Any]]:
        """The whole table as JSON, to compare before and after a step that must change nothing."""
        return {key: item.model_dump(mode="json") for key, item in self.items.items()}

    # -- generic operations (Store's) -----------------------------------------------------------

    def get(self, model: type[R], pk: str, sk: str, *, consistent: bool = True) -> R | None:
        item = self.items.get((pk, sk))
        return None if item is None else _copy(item, model)

    def put(self, record: R, *, expected_version: int | None) -> R:
        key = _key(record)
        current = self.items.get(key)
        if expected_version is None and current is not None:
            raise VersionConflictError(f"{key[0]}/{key[1]} exists")
        if expected_version is not None and (current is None or current.version != expected_version):
            raise VersionConflictError(f"{key[0]}/{key[1]} is not at version {expected_version}")
        new = record.model_copy(update={"version": (expected_version or 0) + 1}, deep=True)
        self.items[key] = new
        self.puts += 1
        return new.model_copy(deep=True)

    def query(self, model: type[R], pk: str, sk_prefix: str) -> list[R]:
        # A Query returns its items in sort-key order.
        return [
            _copy(item, model)
            for (p, s), item in sorted(self.items.items(), key=lambda kv: kv[0])
            if p == pk and s.startswith(sk_prefix)
        ]

    def delete(self, pk: str, sk: str) -> None:
        self.items.pop((pk, sk), None)

    # -- operator ------------------------------------------------------------------------------

    def get_operator(self, cluster_arn: str) -> OperatorRecord | None:
        return self.get(OperatorRecord, cluster_pk(cluster_arn), OPERATOR_SK)

    def list_operators(self) -> list[OperatorRecord]:
        return [r.model_copy(deep=True) for r in self.items.values() if isinstance(r, OperatorRecord)]

    # -- nodes ---------------------------------------------------------------------------------

    def get_node(self, cluster_arn: str, instance_id: str) -> NodeRecord | None:
        return self.get(NodeRecord, cluster_pk(cluster_arn), node_sk(instance_id))

    def list_nodes(self, cluster_arn: str) -> list[NodeRecord]:
        return self.query(NodeRecord, cluster_pk(cluster_arn), "NODE#")

    def record_node_health(self, record: NodeRecord) -> bool:
        """Store.record_node_health: only a change of status, not older than the stored one; the
        record's set fields overwrite, its unset ones keep what was stored."""
        key = _key(record)
        current = self.items.get(key)
        if current is not None and not (
            current.health_status != record.health_status
            and current.last_event_time <= record.last_event_time
        ):
            return False
        fields = record.model_dump(exclude_none=True, exclude={"version"})
        stored = current.model_dump() if current is not None else {}
        version = (current.version if current is not None else 0) + 1
        self.items[key] = NodeRecord.model_validate({**stored, **fields, "version": version})
        return True

    def record_node_outcome(self, cluster_arn: str, instance_id: str, event_id: str, outcome: Any) -> bool:
        """Store.record_node_outcome: only while the NODE item still records ``event_id``; the
        outcome's None fields are removed, ``version`` is left alone."""
        key = (cluster_pk(cluster_arn), node_sk(instance_id))
        current = self.items.get(key)
        if current is None or current.last_event_id != event_id:
            return False
        data = outcome.model_dump()
        absent = {k for k, v in data.items() if v is None}
        present = {k: v for k, v in data.items() if v is not None}
        self.items[key] = NodeRecord.model_validate({**current.model_dump(exclude=absent), **present})
        self.outcomes.append(outcome)
        return True

    # -- jobs ----------------------------------------------------------------------------------

    def get_job(self, cluster_arn: str, uid: str) -> JobRecord | None:
        return self.get(JobRecord, cluster_pk(cluster_arn), job_sk(uid))

    def list_jobs(self, cluster_arn: str) -> list[JobRecord]:
        return self.query(JobRecord, cluster_pk(cluster_arn), "JOB#")

    def add_job_event(self, event: JobEventRecord) -> JobEventRecord:
        return self.put(event, expected_version=None)

    def job_history(self, uid: str) -> list[JobEventRecord]:
        return self.query(JobEventRecord, job_history_pk(uid), "EVENT#")


def _key(record: Record) -> tuple[str, str]:
    return record.pk, record.sk  # type: ignore[attr-defined]


def _copy(item: Record, model: type[R]) -> R:
    """What a read returns: a new record, parsed as ``model`` as Store parses the item."""
    return item.model_copy(deep=True) if isinstance(item, model) else model.model_validate(item.model_dump())


class _View(MutableMapping, Generic[R]):
    """The items of one kind by a field of theirs; writes go to the table under the record's key."""

    def __init__(self, items: dict[tuple[str, str], Record], model: type[R], name: Any) -> None:
        self._items, self._model, self._name = items, model, name

    def _find(self, name: str) -> tuple[str, str]:
        for key, item in self._items.items():
            if isinstance(item, self._model) and self._name(item) == name:
                return key
        raise KeyError(name)

    def __getitem__(self, name: str) -> R:
        return self._items[self._find(name)]  # type: ignore[return-value]

    def __setitem__(self, name: str, record: R) -> None:
        assert self._name(record) == name, f"{record!r} is not {name}"
        self._items[_key(record)] = record

    def __delitem__(self, name: str) -> None:
        del self._items[self._find(name)]

    def __iter__(self) -> Iterator[str]:
        return iter([self._name(item) for item in self._items.values() if isinstance(item, self._model)])

    def __len__(self) -> int:
        return sum(isinstance(item, self._model) for item in self._items.values())


class FakeSfn:
    """``StepFunctionsAdapter`` over a dict of executions (ARN to status; None or absent: Step
    Functions has no such execution). An execution it starts is RUNNING until a test says
    otherwise, and ``stop`` aborts only a running one, as the adapter reports. ``wake`` answers
    ``answer`` (False: a stale token) or raises ``error``. Every call is logged: ``starts``,
    ``stops``, ``asked`` (status reads) and ``woken`` (token, output)."""

    def __init__(
        self,
        statuses: dict[str, str | None] | None = None,
        *,
        answer: bool = True,
        error: Exception | None = None,
    ) -> None:
        self.statuses: dict[str, str | None] = dict(statuses or {})
        self.answer, self.error = answer, error
        self.starts: list[tuple[str, str, dict[str, Any]]] = []
        self.stops: list[str] = []
        self.asked: list[str] = []
        self.woken: list[tuple[str, dict[str, Any]]] = []

    def start_execution(self, state_machine_arn: str, name: str, payload: dict[str, Any]) -> str:
        arn = execution_arn(state_machine_arn, name)
        self.starts.append((state_machine_arn, name, payload))
        self.statuses.setdefault(arn, "RUNNING")
        return arn

    def status(self, arn: str) -> str | None:
        self.asked.append(arn)
        return self.statuses.get(arn)

    def stop(self, arn: str, cause: str) -> bool:
        self.stops.append(arn)
        if self.statuses.get(arn) == "RUNNING":
            self.statuses[arn] = "ABORTED"
            return True
        return False

    def wake(self, token: str, output: dict[str, Any]) -> bool:
        self.woken.append((token, output))
        if self.error is not None:
            raise self.error
        return self.answer


class FakeSageMaker:
    """``SageMakerAdapter``'s node-health calls for one HyperPod cluster on the EKS cluster
    ``eks_arn``, whose NodeRecovery is ``recovery``. ``batch_repair_nodes`` logs each request in
    ``calls`` and answers every node successful, or raises ``fail`` (the call failing as a whole)."""

    def __init__(
        self,
        recovery: str = "None",
        fail: Exception | None = None,
        eks_arn: str = "arn:aws:eks:us-west-2:123456789012:cluster/ml-eks",
    ) -> None:
        self.recovery, self.fail, self.eks_arn = recovery, fail, eks_arn
        self.calls: list[tuple[str, list[str]]] = []

    def describe_cluster(self, name: str) -> dict[str, Any]:
        return {"NodeRecovery": self.recovery, "Orchestrator": {"Eks": {"ClusterArn": self.eks_arn}}}

    def batch_repair_nodes(self, cluster: str, action: str, node_ids: list[str]) -> dict[str, list[Any]]:
        self.calls.append((action, node_ids))
        if self.fail is not None:
            raise self.fail
        return {"Successful": node_ids, "Failed": []}
