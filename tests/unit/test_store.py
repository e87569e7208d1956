"""Store on moto's DynamoDB: optimistic concurrency, node-health deduplication, pagination."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from unit_support import CLUSTER_ARN, TABLE

from hyperpod_control.exceptions import VersionConflictError
from hyperpod_control.models.records import (
    NodeHealth,
    NodeRecord,
    OperatorMode,
    OperatorRecord,
    OperatorStatus,
    cluster_pk,
)

pytestmark = pytest.mark.unit

T0 = datetime(2025, 3, 4, 10, 0, 0, tzinfo=UTC)


def operator(arn: str = CLUSTER_ARN, **kw) -> OperatorRecord:
    kw.setdefault("mode", OperatorMode.ADDON)
    return OperatorRecord(cluster_arn=arn, cluster_name=arn.rsplit("/", 1)[1], **kw)


def node(status: NodeHealth, when: datetime, event_id: str = "e-1", instance: str = "i-0abc") -> NodeRecord:
    return NodeRecord(
        cluster_arn=CLUSTER_ARN,
        instance_id=instance,
        health_status=status,
        health_reason=f"reason at {when.isoformat()}",
        last_event_time=when,
        last_event_id=event_id,
    )


def raw_item(ddb, pk: str, sk: str) -> dict:
    return ddb.get_item(TableName=TABLE, Key={"PK": {"S": pk}, "SK": {"S": sk}}, ConsistentRead=True)["Item"]


# -- put / get ----------------------------------------------------------------------------------


def test_create_writes_version_1_and_reads_back(store):
    written = store.put(operator(addon_version="v1.2.0"), expected_version=None)
    read = store.get_operator(CLUSTER_ARN)

    assert written.version == 1
    assert read is not None
    assert read.version == 1
    assert read.mode is OperatorMode.ADDON
    assert read.status is OperatorStatus.REGISTERED
    assert read.addon_version == "v1.2.0"
    assert read.updated_at == written.updated_at


def test_second_create_is_a_version_conflict(store):
    store.put(operator(), expected_version=None)

    with pytest.raises(VersionConflictError):
        store.put(operator(mode=OperatorMode.SERVERLESS), expected_version=None)
    assert store.get_operator(CLUSTER_ARN).mode is OperatorMode.ADDON


def test_update_with_current_version_increments_it(store):
    first = store.put(operator(), expected_version=None)
    second = store.put(first.model_copy(update={"status": OperatorStatus.ACTIVE}), expected_version=1)

    assert second.version == 2
    read = store.get_operator(CLUSTER_ARN)
    assert read.version == 2
    assert read.status is OperatorStatus.ACTIVE


def test_stale_version_is_a_conflict_and_leaves_the_item_unchanged(store, ddb):
    first = store.put(operator(), expected_version=None)
    store.put(first.model_copy(update={"status": OperatorStatus.INSTALLING}), expected_version=1)
    before = raw_item(ddb, cluster_pk(CLUSTER_ARN), "OPERATOR")

    with pytest.raises(VersionConflictError):
        store.put(
            first.model_copy(update={"status": OperatorStatus.FAILED, "reason": "lost"}), expected_version=1
        )

    assert raw_item(ddb, cluster_pk(CLUSTER_ARN), "OPERATOR") == before
    read = store.get_operator(CLUSTER_ARN)
    assert read.version == 2
    assert read.status is OperatorStatus.INSTALLING
    assert read.reason is None


def test_update_of_a_missing_item_is_a_conflict(store):
    with pytest.raises(VersionConflictError):
        store.put(operator(), expected_version=3)
    assert store.get_operator(CLUSTER_ARN) is None


def test_get_of_a_missing_item_is_none(store):
    assert store.get_operator(CLUSTER_ARN) is None
    assert store.get_node(CLUSTER_ARN, "i-none") is None


# -- record_node_health -------------------------------------------------------------------------


def test_first_health_event_is_stored(store):
    assert store.record_node_health(node(NodeHealth.UNHEALTHY, T0, "e-1")) is True

    stored = store.get_node(CLUSTER_ARN, "i-0abc")
    assert stored.version == 1
    assert stored.health_status is NodeHealth.UNHEALTHY
    assert stored.last_event_id == "e-1"
    assert stored.last_event_time == T0
    assert stored.node_name == "hyperpod-i-0abc"


def test_same_status_again_with_a_newer_time_is_a_duplicate(store):
    store.record_node_health(node(NodeHealth.UNHEALTHY, T0, "e-1"))

    # AWS may send one change several times, each copy with its own id.
    assert store.record_node_health(node(NodeHealth.UNHEALTHY, T0 + timedelta(seconds=5), "e-2")) is False

    stored = store.get_node(CLUSTER_ARN, "i-0abc")
    assert stored.version == 1
    assert stored.last_event_id == "e-1"
    assert stored.last_event_time == T0


def test_older_event_with_a_different_status_arrives_late_and_changes_nothing(store):
    store.record_node_health(node(NodeHealth.UNHEALTHY, T0, "e-2"))

    assert store.record_node_health(node(NodeHealth.HEALTHY, T0 - timedelta(minutes=1), "e-1")) is False

    stored = store.get_node(CLUSTER_ARN, "i-0abc")
    assert stored.health_status is NodeHealth.UNHEALTHY
    assert stored.version == 1
    assert stored.last_event_id == "e-2"


def test_newer_different_status_is_stored_and_increments_version(store):
    store.record_node_health(node(NodeHealth.UNHEALTHY, T0, "e-1"))

    assert store.record_node_health(node(NodeHealth.HEALTHY, T0 + timedelta(minutes=3), "e-2")) is True

    stored = store.get_node(CLUSTER_ARN, "i-0abc")
    assert stored.health_status is NodeHealth.HEALTHY
    assert stored.version == 2
    assert stored.last_event_id == "e-2"
    assert stored.last_event_time == T0 + timedelta(minutes=3)

    # And back again: a third change is a third version.
    assert store.record_node_health(node(NodeHealth.UNHEALTHY, T0 + timedelta(minutes=9), "e-3")) is True
    assert store.get_node(CLUSTER_ARN, "i-0abc").version == 3


def test_a_change_within_the_same_second_is_recorded(store):
    # EventBridge times have one-second resolution: a node failed and healed within one second
    # must end Healthy, while a duplicate of the heal changes nothing.
    store.record_node_health(node(NodeHealth.UNHEALTHY, T0, "e-1"))

    assert store.record_node_health(node(NodeHealth.HEALTHY, T0, "e-2")) is True
    assert store.record_node_health(node(NodeHealth.HEALTHY, T0, "e-3")) is False
    stored = store.get_node(CLUSTER_ARN, "i-0abc")
    assert stored.health_status is NodeHealth.HEALTHY and stored.version == 2


def test_fractional_seconds_order_by_time_not_by_text(store):
    # As ISO text "…:00.5+00:00" sorts after "…:00.25+00:00" but also after "…:01+00:00"; time must win.
    half = T0 + timedelta(milliseconds=500)
    quarter = T0 + timedelta(milliseconds=250)
    next_second = T0 + timedelta(seconds=1)

    assert store.record_node_health(node(NodeHealth.UNHEALTHY, half, "e-half")) is True
    # 0.25 s is older than 0.5 s: a late event.
    assert store.record_node_health(node(NodeHealth.HEALTHY, quarter, "e-quarter")) is False
    assert store.get_node(CLUSTER_ARN, "i-0abc").health_status is NodeHealth.UNHEALTHY
    # A whole second (no fraction in its text) is newer than 0.5 s.
    assert store.record_node_health(node(NodeHealth.HEALTHY, next_second, "e-next")) is True
    stored = store.get_node(CLUSTER_ARN, "i-0abc")
    assert stored.health_status is NodeHealth.HEALTHY
    assert stored.last_event_time == next_second


def test_a_whole_second_is_older_than_the_same_second_and_a_half(store):
    # As text, "…T10:00:00Z" sorts after "…T10:00:00.500000Z" ('Z' > '.'); as time it is older.
    assert (
        store.record_node_health(node(NodeHealth.UNHEALTHY, T0 + timedelta(milliseconds=500), "e-2")) is True
    )

    assert store.record_node_health(node(NodeHealth.HEALTHY, T0, "e-1")) is False
    assert store.get_node(CLUSTER_ARN, "i-0abc").health_status is NodeHealth.UNHEALTHY


def test_changes_within_one_second_keep_their_order(store):
    assert (
        store.record_node_health(node(NodeHealth.UNHEALTHY, T0 + timedelta(milliseconds=250), "e-1")) is True
    )

    assert store.record_node_health(node(NodeHealth.HEALTHY, T0 + timedelta(milliseconds=750), "e-2")) is True
    assert store.get_node(CLUSTER_ARN, "i-0abc").health_status is NodeHealth.HEALTHY


def test_nodes_are_kept_per_instance(store):
    assert store.record_node_health(node(NodeHealth.UNHEALTHY, T0, "e-1", instance="i-1")) is True
    assert store.record_node_health(node(NodeHealth.UNHEALTHY, T0, "e-2", instance="i-2")) is True

    assert {n.instance_id for n in store.list_nodes(CLUSTER_ARN)} == {"i-1", "i-2"}


# -- listing and pagination ---------------------------------------------------------------------

BIG = "x" * 20_000  # ~20 KB per item: 1 MB query/scan pages fill after about 50 items


def test_list_nodes_reads_every_page(store, ddb):
    count = 120
    for i in range(count):
        record = node(NodeHealth.UNHEALTHY, T0, f"e-{i}", instance=f"i-{i:04d}")
        store.put(record.model_copy(update={"health_reason": BIG}), expected_version=None)
    # Another cluster's nodes and the cluster's OPERATOR item are not nodes of this cluster.
    store.put(operator(), expected_version=None)
    other = "arn:aws:sagemaker:us-west-2:123456789012:cluster/other"
    store.record_node_health(node(NodeHealth.HEALTHY, T0, "o-1").model_copy(update={"cluster_arn": other}))

    first_page = ddb.query(
        TableName=TABLE,
        KeyConditionExpression="PK = :pk AND begins_with(SK, :p)",
        ExpressionAttributeValues={":pk": {"S": cluster_pk(CLUSTER_ARN)}, ":p": {"S": "NODE#"}},
    )
    assert "LastEvaluatedKey" in first_page  # the test really spans several pages

    nodes = store.list_nodes(CLUSTER_ARN)
    assert sorted(n.instance_id for n in nodes) == [f"i-{i:04d}" for i in range(count)]
    assert all(n.cluster_arn == CLUSTER_ARN for n in nodes)


def test_list_operators_reads_every_page_and_only_operators(store, ddb):
    count = 110
    arns = [f"arn:aws:sagemaker:us-west-2:123456789012:cluster/c{i:04d}" for i in range(count)]
    for arn in arns:
        store.put(operator(arn, reason=BIG), expected_version=None)
    store.record_node_health(node(NodeHealth.UNHEALTHY, T0, "e-1"))

    first_page = ddb.scan(TableName=TABLE)
    assert "LastEvaluatedKey" in first_page

    operators = store.list_operators()
    assert sorted(o.cluster_arn for o in operators) == arns
    assert all(isinstance(o, OperatorRecord) for o in operators)


def test_list_operators_queries_the_sparse_index_and_never_scans(store, ddb):
    """Listing clusters runs every minute and on every job event: its cost must not grow with the
    table's history (nodes, jobs, 90 days of events), so it reads the Operators index only."""
    store.put(operator(), expected_version=None)
    for i in range(30):
        store.record_node_health(node(NodeHealth.UNHEALTHY, T0, f"e-{i}", instance=f"i-{i:04d}"))
    calls: list[str] = []
    store.client.meta.events.register("before-call.dynamodb.*", lambda model, **_: calls.append(model.name))

    assert [o.cluster_arn for o in store.list_operators()] == [CLUSTER_ARN]
    assert calls == ["Query"]
    # Only OPERATOR items are in the index: the nodes never reach it.
    indexed = ddb.scan(TableName=TABLE, IndexName="Operators")["Items"]
    assert [item["SK"]["S"] for item in indexed] == ["OPERATOR"]
