"""NodeHealthEvent: the AWS event shape parses; other sources and malformed details do not."""

from __future__ import annotations

import copy
from datetime import UTC, datetime

import pytest
from unit_support import CLUSTER_ARN, node_health_event

from hyperpod_control.exceptions import InvalidInputError
from hyperpod_control.models.events import NODE_HEALTH_DETAIL_TYPE, NodeHealthEvent
from hyperpod_control.models.records import NodeHealth
from hyperpod_control.models.validation import parse_input
from hyperpod_control.services.node_health import node_record_from_event

pytestmark = pytest.mark.unit


def test_parses_the_aws_event_shape():
    event = NodeHealthEvent.model_validate(node_health_event())

    assert event.detail_type == NODE_HEALTH_DETAIL_TYPE
    assert event.source == "aws.sagemaker"
    assert event.id == "2f1c9a4e-0000-4000-8000-000000000001"
    assert event.time == datetime(2025, 3, 4, 10, 20, 30, tzinfo=UTC)
    assert event.detail.ClusterName == "ml-cluster"
    assert event.detail.ClusterArn == CLUSTER_ARN
    assert event.detail.InstanceId == "i-0123456789abcdef0"
    assert event.detail.Tags == {"team": "ml"}
    summary = event.detail.HealthSummary
    assert summary.HealthStatus is NodeHealth.UNHEALTHY
    assert "NvidiaErrorTerminate" in summary.HealthStatusReason
    assert summary.RepairAction == "Replace"


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        ("unhealthy", NodeHealth.UNHEALTHY),
        ("UNHEALTHY", NodeHealth.UNHEALTHY),
        (" Unhealthy ", NodeHealth.UNHEALTHY),
        ("healthy", NodeHealth.HEALTHY),
        ("Healthy", NodeHealth.HEALTHY),
    ],
)
def test_health_status_casing_is_normalised(written, expected):
    event = NodeHealthEvent.model_validate(node_health_event(status=written))

    assert event.detail.HealthSummary.HealthStatus is expected


def test_an_unknown_health_status_parses_as_unknown_rather_than_being_refused():
    # Refusing it would only retry the event into the dead-letter queue; node_health records it
    # and leaves the node alone (tests/unit/test_handlers.py).
    summary = parse_input(NodeHealthEvent, node_health_event(status="Sickly")).detail.HealthSummary
    assert summary.HealthStatus == "Sickly" and not summary.known


def test_another_source_is_refused():
    with pytest.raises(InvalidInputError, match="source"):
        parse_input(NodeHealthEvent, node_health_event(source="aws.ec2"))


def test_another_detail_type_is_refused():
    event = node_health_event(**{"detail-type": "SageMaker HyperPod Cluster State Change"})

    with pytest.raises(InvalidInputError, match="detail-type"):
        parse_input(NodeHealthEvent, event)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("ClusterArn", "arn:aws:eks:us-west-2:123456789012:cluster/abc"),
        ("ClusterArn", "not-an-arn"),
        ("InstanceId", ""),
        ("ClusterName", ""),
    ],
)
def test_malformed_detail_is_refused_naming_the_field(field, value):
    event = node_health_event()
    event["detail"][field] = value

    with pytest.raises(InvalidInputError, match=field):
        parse_input(NodeHealthEvent, event)


def test_missing_health_summary_is_refused():
    event = node_health_event()
    del event["detail"]["HealthSummary"]

    with pytest.raises(InvalidInputError, match="HealthSummary"):
        parse_input(NodeHealthEvent, event)


def test_node_record_from_event_maps_fields_and_node_name():
    raw = node_health_event()
    record = node_record_from_event(NodeHealthEvent.model_validate(raw))

    assert record.cluster_arn == CLUSTER_ARN
    assert record.instance_id == "i-0123456789abcdef0"
    assert record.node_name == "hyperpod-i-0123456789abcdef0"
    assert record.health_status is NodeHealth.UNHEALTHY
    assert record.repair_action == "Replace"
    assert record.last_event_id == raw["id"]
    assert record.last_event_time == datetime(2025, 3, 4, 10, 20, 30, tzinfo=UTC)
    assert record.pk == f"CLUSTER#{CLUSTER_ARN}"
    assert record.sk == "NODE#i-0123456789abcdef0"


def test_event_time_without_zone_is_taken_as_utc():
    raw = copy.deepcopy(node_health_event(time="2025-03-04T10:20:30"))
    record = node_record_from_event(NodeHealthEvent.model_validate(raw))

    assert record.last_event_time.tzinfo is not None
    assert record.last_event_time == datetime(2025, 3, 4, 10, 20, 30, tzinfo=UTC)
