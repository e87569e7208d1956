"""The DynamoDB store: one table, records in and out, every decision-changing write conditional.

Keys are ``PK``/``SK`` (docs/hyperpod-contract.md, "Data model"). ``version`` guards optimistic
concurrency: ``put`` with ``expected_version=None`` creates an item only if it does not exist;
with an int it replaces the item only if nobody has written since that version was read. A lost
race raises ``VersionConflictError`` (retryable: re-read, decide again).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, TypeVar

from hyperpod_control.adapters.aws import AwsAdapter, map_client_error
from hyperpod_control.adapters.items import pack_pods, unpack_pods
from hyperpod_control.exceptions import VersionConflictError
from hyperpod_control.models.records import (
    OPERATOR_SK,
    OPERATORS_INDEX,
    OPERATORS_INDEX_KEY,
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


def _serializer():
    from boto3.dynamodb.types import TypeDeserializer, TypeSerializer

    return TypeSerializer(), TypeDeserializer()


class Store(AwsAdapter):
    service = "dynamodb"

    def __init__(self, table_name: str, client: Any = None) -> None:
        super().__init__(client)
        self.table_name = table_name
        self._ser, self._de = _serializer()

    # -- encoding -------------------------------------------------------------------------------

    def _to_item(self, record: Record, **extra: Any) -> dict[str, Any]:
        data = record.model_dump(mode="json", exclude_none=True)
        if isinstance(record, JobRecord):  # its pod table compressed when large (adapters/items.py)
            data = pack_pods(data)
        data.update(PK=record.pk, SK=record.sk, **record.index_keys(), **extra)  # type: ignore[attr-defined]
        return {k: self._ser.serialize(v) for k, v in data.items()}

    def _from_item(self, model: type[R], item: dict[str, Any]) -> R:
        data = unpack_pods({k: self._de.deserialize(v) for k, v in item.items()})
        # DynamoDB numbers come back as Decimal; pydantic coerces them per field.
        return model.model_validate(data)

    # -- generic operations ---------------------------------------------------------------------

    def get(self, model: type[R], pk: str, sk: str, *, consistent: bool = True) -> R | None:
        try:
            resp = self.client.get_item(
                TableName=self.table_name,
                Key={"PK": {"S": pk}, "SK": {"S": sk}},
                ConsistentRead=consistent,
            )
        except Exception as exc:  # botocore ClientError and connection errors alike
            raise map_client_error(exc, resource=f"{self.table_name} {pk}/{sk}") from exc
        item = resp.get("Item")
        return self._from_item(model, item) if item else None

    def put(self, record: R, *, expected_version: int | None) -> R:
        """Write ``record`` as version ``expected_version + 1`` (or 1 for a new item)."""
        new = record.model_copy(update={"version": (expected_version or 0) + 1})
        if expected_version is None:
            condition = "attribute_not_exists(PK)"
            values: dict[str, Any] = {}
        else:
            condition = "version = :expected"
            values = {":expected": {"N": str(expected_version)}}
        kwargs: dict[str, Any] = {
            "TableName": self.table_name,
            "Item": self._to_item(new),
            "ConditionExpression": condition,
        }
        if values:
            kwargs["ExpressionAttributeValues"] = values
        try:
            self.client.put_item(**kwargs)
        except Exception as exc:
            raise map_client_error(exc, resource=f"{new.pk}/{new.sk}") from exc  # type: ignore[attr-defined]
        return new

    def query(self, model: type[R], pk: str, sk_prefix: str) -> list[R]:
        items: list[R] = []
        kwargs: dict[str, Any] = {
            "TableName": self.table_name,
            "KeyConditionExpression": "PK = :pk AND begins_with(SK, :prefix)",
            "ExpressionAttributeValues": {":pk": {"S": pk}, ":prefix": {"S": sk_prefix}},
        }
        while True:
            try:
                resp = self.client.query(**kwargs)
            except Exception as exc:
                raise map_client_error(exc, resource=f"{self.table_name} {pk}") from exc
            items.extend(self._from_item(model, it) for it in resp.get("Items", []))
            if "LastEvaluatedKey" not in resp:
                return items
            kwargs["ExclusiveStartKey"] = resp["LastEvaluatedKey"]

    def delete(self, pk: str, sk: str) -> None:
        """Remove one item (idempotent: a missing item is not an error)."""
        try:
            self.client.delete_item(TableName=self.table_name, Key={"PK": {"S": pk}, "SK": {"S": sk}})
        except Exception as exc:
            raise map_client_error(exc, resource=f"{self.table_name} {pk}/{sk}") from exc

    # -- operator -------------------------------------------------------------------------------

    def get_operator(self, cluster_arn: str) -> OperatorRecord | None:
        return self.get(OperatorRecord, cluster_pk(cluster_arn), OPERATOR_SK)

    def list_operators(self) -> list[OperatorRecord]:
        """Every registered cluster: a Query of the sparse ``Operators`` index, which holds the
        OPERATOR items only, so its cost does not grow with the table's history. The index is
        eventually consistent: a cluster registered a moment ago may be missing from one call."""
        records: list[OperatorRecord] = []
        kwargs: dict[str, Any] = {
            "TableName": self.table_name,
            "IndexName": OPERATORS_INDEX,
            "KeyConditionExpression": "#key = :key",
            "ExpressionAttributeNames": {"#key": OPERATORS_INDEX_KEY},
            "ExpressionAttributeValues": {":key": {"S": OPERATOR_SK}},
        }
        while True:
            try:
                resp = self.client.query(**kwargs)
            except Exception as exc:
                raise map_client_error(exc, resource=f"{self.table_name}/index/{OPERATORS_INDEX}") from exc
            records.extend(self._from_item(OperatorRecord, it) for it in resp.get("Items", []))
            if "LastEvaluatedKey" not in resp:
                return records
            kwargs["ExclusiveStartKey"] = resp["LastEvaluatedKey"]

    # -- nodes ----------------------------------------------------------------------------------

    def get_node(self, cluster_arn: str, instance_id: str) -> NodeRecord | None:
        return self.get(NodeRecord, cluster_pk(cluster_arn), node_sk(instance_id))

    def list_nodes(self, cluster_arn: str) -> list[NodeRecord]:
        return self.query(NodeRecord, cluster_pk(cluster_arn), "NODE#")

    def record_node_health(self, record: NodeRecord) -> bool:
        """Store a node's new health if it changes the status and is newer than what we saw.

        HyperPod may send one change several times, each copy with its own event id, so the id
        cannot deduplicate; the condition on status and event time does. Event times have one
        second's resolution, so a change in the same second as the last one still counts (a node
        failed and healed within a second); a duplicate has the same status and never does.
        Returns False when the event changed nothing (a duplicate, or an older event arriving late).
        """
        fields = record.model_dump(mode="json", exclude_none=True, exclude={"version"})
        names = {f"#{k}": k for k in fields}
        values = {f":{k}": self._ser.serialize(v) for k, v in fields.items()}
        values[":event_ms"] = {"N": str(_epoch_ms(record.last_event_time))}
        values[":one"] = {"N": "1"}
        values[":zero"] = {"N": "0"}
        assignments = ", ".join(f"#{k} = :{k}" for k in fields)
        try:
            self.client.update_item(
                TableName=self.table_name,
                Key={"PK": {"S": record.pk}, "SK": {"S": record.sk}},
                UpdateExpression=(
                    f"SET {assignments}, event_ms = :event_ms, version = if_not_exists(version, :zero) + :one"
                ),
                ConditionExpression=(
                    "attribute_not_exists(PK) OR (#health_status <> :health_status AND event_ms <= :event_ms)"
                ),
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
            )
        except Exception as exc:
            mapped = map_client_error(exc, resource=f"{record.pk}/{record.sk}")
            if isinstance(mapped, VersionConflictError):
                return False
            raise mapped from exc
        return True

    def record_node_outcome(self, cluster_arn: str, instance_id: str, event_id: str, outcome: Any) -> bool:
        """Write what node_health did about the change of ``event_id`` onto the NODE item.

        ``outcome`` is a pydantic model (``models.node_health.NodeOutcome``): its fields are set,
        its None fields removed. Conditional on the item still recording that event, so a newer
        change's outcome is never overwritten by an older one. ``version`` is left alone: it
        counts health changes, and this annotates one. Returns False when a newer event won.
        """
        data = outcome.model_dump(mode="json")
        present = {k: v for k, v in data.items() if v is not None}
        absent = [k for k, v in data.items() if v is None]
        names = {f"#{k}": k for k in data}
        names["#last_event_id"] = "last_event_id"
        values = {f":{k}": self._ser.serialize(v) for k, v in present.items()}
        values[":event_id"] = {"S": event_id}
        expression = "SET " + ", ".join(f"#{k} = :{k}" for k in present)
        if absent:
            expression += " REMOVE " + ", ".join(f"#{k}" for k in absent)
        pk, sk = cluster_pk(cluster_arn), node_sk(instance_id)
        try:
            self.client.update_item(
                TableName=self.table_name,
                Key={"PK": {"S": pk}, "SK": {"S": sk}},
                UpdateExpression=expression,
                ConditionExpression="#last_event_id = :event_id",
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
            )
        except Exception as exc:
            mapped = map_client_error(exc, resource=f"{pk}/{sk}")
            if isinstance(mapped, VersionConflictError):
                return False
            raise mapped from exc
        return True

    # -- jobs -----------------------------------------------------------------------------------

    def get_job(self, cluster_arn: str, uid: str) -> JobRecord | None:
        return self.get(JobRecord, cluster_pk(cluster_arn), job_sk(uid))

    def list_jobs(self, cluster_arn: str) -> list[JobRecord]:
        return self.query(JobRecord, cluster_pk(cluster_arn), "JOB#")

    def add_job_event(self, event: JobEventRecord) -> JobEventRecord:
        """One history entry (its id is new, so the put never conflicts)."""
        return self.put(event, expected_version=None)

    def job_history(self, uid: str) -> list[JobEventRecord]:
        return self.query(JobEventRecord, job_history_pk(uid), "EVENT#")


def _epoch_ms(value: datetime) -> int:
    # Compared as a number: ISO strings with and without fractions do not sort by time.
    return int(value.timestamp() * 1000)
