"""The elastic decisions (services/elastic.py) as plain data: the sizes an elasticPolicy allows,
the scale-down instead of a full restart, when and how far a job grows back."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from hyperpod_control.models.job import HyperPodPytorchJob
from hyperpod_control.models.job_faults import JobFault
from hyperpod_control.models.records import JobRecord, PodSlot
from hyperpod_control.services import elastic
from hyperpod_control.services.remediation import Action

pytestmark = pytest.mark.unit

NOW = datetime(2026, 3, 4, 12, 0, 0, tzinfo=UTC)
ARN = "arn:aws:sagemaker:us-west-2:123456789012:cluster/aaaaaaaaaaaa"


def hpjob(
    replicas: int = 3, spares: int = 0, elastic_policy: dict | None = None, **run: Any
) -> HyperPodPytorchJob:
    spec: dict[str, Any] = {
        "replicaSpecs": [{"name": "workers", "replicas": replicas, "spares": spares, "template": {}}],
        "runPolicy": run,
    }
    if elastic_policy is not None:
        spec["elasticPolicy"] = elastic_policy
    return HyperPodPytorchJob.model_validate({"metadata": {"name": "llama", "uid": "u1"}, "spec": spec})


def record(ranks: int = 3, spares: int = 0, **update: Any) -> JobRecord:
    pods = [PodSlot(pod=f"llama-{r}", rank=r, node=f"node-{r}", ip=f"10.0.0.{r + 1}") for r in range(ranks)]
    pods += [
        PodSlot(pod=f"llama-{ranks + i}", node=f"spare-node-{i}", ip=f"10.0.1.{i + 1}") for i in range(spares)
    ]
    base = JobRecord(cluster_arn=ARN, uid="u1", namespace="team-a", name="llama", nnodes=ranks, pods=pods)
    return base.model_copy(update=update)


def lost(rank: int, kind: str = "node") -> JobFault:
    return JobFault(
        kind=kind, reason=f"rank {rank}: node gone", pod=f"llama-{rank}", node=f"node-{rank}", rank=rank
    )


# ============================================================== allowed sizes


def test_without_an_elastic_policy_the_only_size_is_replicas():
    assert elastic.allowed_sizes(hpjob(3)) == [3]
    assert not elastic.is_elastic(hpjob(3))


def test_sizes_run_from_min_to_max_by_the_increment_step():
    job = hpjob(4, elastic_policy={"minReplicas": 2, "maxReplicas": 8, "replicaIncrementStep": 2})
    assert elastic.allowed_sizes(job) == [2, 4, 6, 8]


def test_discrete_values_are_the_only_sizes_within_min_and_max():
    job = hpjob(
        4, elastic_policy={"minReplicas": 2, "maxReplicas": 8, "replicaDiscreteValues": [8, 1, 4, 16]}
    )
    assert elastic.allowed_sizes(job) == [4, 8]


def test_max_defaults_to_the_replica_specs_max_replicas_then_to_replicas():
    spec = {"name": "w", "replicas": 2, "maxReplicas": 5, "template": {}}
    job = HyperPodPytorchJob.model_validate(
        {"spec": {"replicaSpecs": [spec], "elasticPolicy": {"minReplicas": 1}}}
    )
    assert elastic.max_size(job) == 5 and elastic.allowed_sizes(job) == [1, 2, 3, 4, 5]
    assert elastic.max_size(hpjob(3, elastic_policy={"minReplicas": 1})) == 3


# ============================================================== scale down on loss


def test_a_lost_rank_without_spares_shrinks_to_the_healthy_pods():
    job = hpjob(3, elastic_policy={"minReplicas": 2, "maxReplicas": 3})
    decision = elastic.scale_down([lost(2)], record(), job, ready_spares=set())
    assert decision is not None and decision.action is Action.SCALE_DOWN
    assert decision.nnodes == 2 and decision.delete_pods == ["llama-2"]
    assert "from 3 to 2 ranks" in decision.reason and "node gone" in decision.reason


def test_without_an_elastic_policy_there_is_no_scale_down():
    assert elastic.scale_down([lost(2)], record(), hpjob(3), ready_spares=set()) is None


def test_below_min_replicas_the_full_restart_stands():
    job = hpjob(3, elastic_policy={"minReplicas": 3, "maxReplicas": 3})
    assert elastic.scale_down([lost(2)], record(), job, ready_spares=set()) is None
    job = hpjob(3, elastic_policy={"minReplicas": 2, "maxReplicas": 3})
    assert elastic.scale_down([lost(1), lost(2)], record(), job, ready_spares=set()) is None


def test_a_size_that_breaks_the_discrete_values_is_not_chosen():
    job = hpjob(4, elastic_policy={"minReplicas": 2, "maxReplicas": 4, "replicaDiscreteValues": [2, 4]})
    decision = elastic.scale_down([lost(3)], record(4), job, ready_spares=set())
    assert decision is not None and decision.nnodes == 2, "3 healthy pods, but 3 is not allowed"
    only_four = hpjob(4, elastic_policy={"minReplicas": 2, "maxReplicas": 4, "replicaDiscreteValues": [4]})
    assert elastic.scale_down([lost(3)], record(4), only_four, ready_spares=set()) is None


def test_the_increment_step_is_respected():
    job = hpjob(6, elastic_policy={"minReplicas": 2, "maxReplicas": 6, "replicaIncrementStep": 2})
    decision = elastic.scale_down([lost(5)], record(6), job, ready_spares=set())
    assert decision is not None and decision.nnodes == 4


def test_a_ready_spare_counts_among_the_healthy_pods():
    job = hpjob(4, spares=1, elastic_policy={"minReplicas": 2, "maxReplicas": 4})
    decision = elastic.scale_down([lost(2), lost(3)], record(4, spares=1), job, ready_spares={"llama-4"})
    assert decision is not None and decision.nnodes == 3


def test_worker_faults_never_shrink_the_job():
    job = hpjob(3, elastic_policy={"minReplicas": 1, "maxReplicas": 3})
    assert elastic.scale_down([lost(1, kind="worker")], record(), job, ready_spares=set()) is None


def test_resize_keeps_rank_zero_and_the_rank_order_and_leaves_the_extra_pods_standing_by():
    slots = elastic.resize_slots(record(4), 2, {"llama-1"})
    assert {s.pod: s.rank for s in slots} == {"llama-0": 0, "llama-2": 1, "llama-3": None}


def test_resize_up_gives_the_new_ranks_to_the_standing_pods_by_index():
    current = record(2, spares=2)
    slots = elastic.resize_slots(current, 3, set())
    assert {s.pod: s.rank for s in slots} == {"llama-0": 0, "llama-1": 1, "llama-2": 2, "llama-3": None}


# ============================================================== scale up


def node(name: str, health: str = "Schedulable", **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": {"sagemaker.amazonaws.com/node-health-status": health}},
        "spec": spec,
        "status": {"conditions": [{"type": "Ready", "status": "True"}]},
    }


def test_free_nodes_are_healthy_schedulable_and_hold_no_pod_of_the_job():
    nodes = [
        node("a"),
        node("b"),
        node("c", health="UnschedulablePendingReplacement"),
        node("d", unschedulable=True),
        node("e", taints=[{"key": "x", "effect": "NoSchedule"}]),
        node("f"),
    ]
    pods = {"llama-0": {"spec": {"nodeName": "a"}}}
    assert elastic.free_nodes(nodes, pods) == ["b", "f"]


def test_the_job_grows_towards_max_with_the_room_there_is():
    job = hpjob(3, elastic_policy={"minReplicas": 1, "maxReplicas": 4})
    assert elastic.grow_target(record(2), job, free=1) == 3
    assert elastic.grow_target(record(2), job, free=5) == 4
    assert elastic.grow_target(record(2), job, free=0) is None
    assert elastic.grow_target(record(4), job, free=3) is None


def test_growth_respects_the_discrete_values():
    job = hpjob(4, elastic_policy={"minReplicas": 2, "maxReplicas": 6, "replicaDiscreteValues": [2, 4, 6]})
    assert elastic.grow_target(record(2), job, free=1) is None, "3 is not an allowed size"
    assert elastic.grow_target(record(2), job, free=3) == 4


def test_an_idle_pod_beyond_the_reserved_spares_counts_as_room():
    job = hpjob(3, elastic_policy={"minReplicas": 1, "maxReplicas": 3})
    assert elastic.grow_target(record(2, spares=1), job, free=0) == 3


def test_scale_up_waits_for_the_snooze_after_the_last_restart():
    job = hpjob(
        3,
        elastic_policy={"minReplicas": 2, "maxReplicas": 3},
        restartPolicy={"scaleUpSnoozeTimeInSeconds": 60},
    )
    recent = record(2, restart_times=[NOW - timedelta(seconds=30)])
    assert not elastic.scale_up_open(recent, job, NOW)
    assert elastic.scale_up_open(recent, job, NOW + timedelta(seconds=31))
    resized = record(2, last_resize_at=NOW)
    assert not elastic.scale_up_open(resized, job, NOW + timedelta(seconds=59))


def test_no_scale_up_at_max_or_without_an_elastic_policy():
    job = hpjob(3, elastic_policy={"minReplicas": 2, "maxReplicas": 3})
    assert not elastic.scale_up_open(record(3), job, NOW)
    assert not elastic.scale_up_open(record(2), hpjob(3), NOW)


def test_a_scale_up_expires_after_the_scaling_timeout():
    job = hpjob(3, elastic_policy={"minReplicas": 2, "maxReplicas": 3, "scalingTimeoutInSeconds": 120})
    scaling = {"target": 3, "since": NOW.isoformat(), "pods": ["llama-3"]}
    assert not elastic.scaling_expired(scaling, job, NOW + timedelta(seconds=120))
    assert elastic.scaling_expired(scaling, job, NOW + timedelta(seconds=121))
    assert elastic.scale_up_ready(scaling, {"llama-3"}) and not elastic.scale_up_ready(scaling, set())


def test_scaling_status_uses_the_crd_names_and_splits_the_target_over_the_replica_specs():
    spec = {"name": "a", "replicas": 2, "template": {}}
    job = HyperPodPytorchJob.model_validate(
        {"spec": {"replicaSpecs": [spec, {**spec, "name": "b"}], "elasticPolicy": {"minReplicas": 1}}}
    )
    status = elastic.scaling_status(job, 3, "2026-03-04T12:00:00Z", faulty=True, pods_scaled=1)
    assert status["targetReplicas"] == {"a": 2, "b": 1}
    assert status["isFaultyPodScaleDown"] is True and status["consecutiveScalingFailures"] == 0
    assert set(status) == {
        "targetReplicas",
        "lastUpdated",
        "lastScalingTime",
        "lastRestartTime",
        "podsScaled",
        "isFaultyPodScaleDown",
        "consecutiveScalingFailures",
    }


# ============================================================== several replica specs


def test_each_replica_spec_builds_its_own_pods_ranks_first_in_entry_order_then_spares():
    from hyperpod_control.models.names import ROLE_LABEL
    from hyperpod_control.services.supervision import build_pod

    def entry(name: str, replicas: int, spares: int) -> dict[str, Any]:
        container = {"name": "trainer", "image": f"img-{name}"}
        return {
            "name": name,
            "replicas": replicas,
            "spares": spares,
            "template": {"spec": {"containers": [container]}},
        }

    job = HyperPodPytorchJob.model_validate(
        {
            "metadata": {"name": "mix", "uid": "u1"},
            "spec": {"replicaSpecs": [entry("a", 1, 1), entry("b", 2, 0)]},
        }
    )
    roles = [job.replica_spec_at(i).name for i in range(5)]
    assert roles == ["a", "b", "b", "a", "a"], "ranks a, b, b; a's spare; beyond: the first entry"
    pods = [build_pod(job, i) for i in range(4)]
    assert [p["metadata"]["labels"][ROLE_LABEL] for p in pods] == ["a", "b", "b", "a"]
    assert [p["spec"]["containers"][0]["image"] for p in pods] == ["img-a", "img-b", "img-b", "img-a"]
    recreated = build_pod(job, 7, position=1)  # a full restart's second pod
    assert recreated["spec"]["containers"][0]["image"] == "img-b"


# ============================================================== hpctl jobs describe


def test_describe_shows_the_size_over_time_from_the_history():
    from hpctl.jobs import size_timeline
    from hyperpod_control.models.records import JobEventRecord

    def event(kind: str, seconds: int, **details: Any) -> JobEventRecord:
        return JobEventRecord(
            uid="u1",
            event_id=f"e{seconds}",
            at=NOW + timedelta(seconds=seconds),
            cluster_arn=ARN,
            namespace="team-a",
            name="llama",
            kind=kind,
            message=kind,
            details=details,
        )

    events = [
        event(
            "Resized", 60, direction="ScaledDown", reason="node lost", duration_ms=900, **{"from": 3, "to": 2}
        ),
        event("Started", 0, ranks={"0": "a", "1": "b", "2": "c"}),
        event("Remediated", 59),
        event(
            "Resized", 120, direction="ScaledUp", reason="capacity", duration_ms=1500, **{"from": 2, "to": 3}
        ),
    ]
    sizes = size_timeline(events)
    assert [(s["ranks"], s["durationMs"]) for s in sizes] == [(3, None), (2, 900), (3, 1500)]
    assert sizes[1]["change"] == "ScaledDown from 3: node lost" and sizes[0]["at"] == "2026-03-04T12:00:00Z"
