"""What a HyperPod node-health event means for the NODE item."""

from __future__ import annotations

from datetime import datetime

from hyperpod_control.models.events import NodeHealthEvent
from hyperpod_control.models.records import NodeRecord


def node_record_from_event(event: NodeHealthEvent) -> NodeRecord:
    """Pure: the NODE item an event asks for (the store decides whether it changes anything)."""
    detail = event.detail
    summary = detail.HealthSummary
    return NodeRecord(
        cluster_arn=detail.ClusterArn,
        instance_id=detail.InstanceId,
        health_status=summary.HealthStatus,
        health_reason=summary.HealthStatusReason,
        repair_action=summary.RepairAction or "None",
        last_event_time=_aware(event.time),
        last_event_id=event.id,
    )


def _aware(value: datetime) -> datetime:
    from datetime import UTC

    return value if value.tzinfo else value.replace(tzinfo=UTC)
