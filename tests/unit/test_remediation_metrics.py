"""The metrics of remediations and steps (supervise_job) and of jobs by phase (reconcile_jobs), read from the
EMF document Powertools prints: names, units, dimensions and values; and the outcome a step
returns for them stays out of the execution's state."""

from __future__ import annotations

import json

import pytest

from hyperpod_control.models.supervisor import RemediationOutcome, StepResult
from hyperpod_control.observability import emit_remediation

pytestmark = pytest.mark.unit

ARN = "arn:aws:sagemaker:us-west-2:123456789012:cluster/abcdef123456"


@pytest.fixture(autouse=True)
def _namespace(monkeypatch):
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "HyperPodControlPlane")
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "hyperpod-control-plane")
    monkeypatch.delenv("POWERTOOLS_METRICS_DISABLED", raising=False)
    # Powertools keeps one metric set per process, and a flush with metrics disabled (the other
    # unit tests' handlers) leaves what they added in it: start each test from an empty set.
    from hyperpod_control.observability import metrics

    metrics.clear_metrics()


def _emitted(capsys) -> list[dict]:
    """Every EMF document printed, as CloudWatch reads it."""
    return [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]


def _metrics(document: dict) -> dict[str, tuple[str, list[float]]]:
    (directive,) = document["_aws"]["CloudWatchMetrics"]
    return {m["Name"]: (m["Unit"], document[m["Name"]]) for m in directive["Metrics"]}


def _dimensions(document: dict) -> dict[str, str]:
    (directive,) = document["_aws"]["CloudWatchMetrics"]
    (names,) = directive["Dimensions"]
    return {name: document[name] for name in names}


def test_a_spare_swap_counts_its_decision_and_its_time_to_recover_by_cluster_action_and_fault(capsys):
    emit_remediation(ARN, RemediationOutcome(action="spare_swap", fault="node", recovery_ms=8250))
    (document,) = _emitted(capsys)
    assert document["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "HyperPodControlPlane"
    assert _metrics(document) == {
        "Remediations": ("Count", [1.0]),
        "TimeToRecover": ("Milliseconds", [8250.0]),
    }
    assert _dimensions(document) == {
        "ClusterArn": ARN,
        "Action": "spare_swap",
        "FaultKind": "node",
        "service": "hyperpod-control-plane",
    }


def test_a_refused_remediation_is_counted_with_action_fail_and_no_time_to_recover(capsys):
    emit_remediation(ARN, RemediationOutcome(action="fail", fault="pod"))
    (document,) = _emitted(capsys)
    assert _metrics(document) == {"Remediations": ("Count", [1.0])}
    assert _dimensions(document)["Action"] == "fail"
    assert _dimensions(document)["FaultKind"] == "pod"


def test_a_full_restart_is_counted_when_decided_and_timed_when_its_new_pods_run(capsys):
    decided = RemediationOutcome(action="full_job_restart", fault="node")
    emit_remediation(ARN, decided)
    emit_remediation(ARN, decided.model_copy(update={"recovery_ms": 61000, "decided": False}))
    first, second = _emitted(capsys)
    assert _metrics(first) == {"Remediations": ("Count", [1.0])}
    assert _metrics(second) == {"TimeToRecover": ("Milliseconds", [61000.0])}, "one decision, counted once"
    assert _dimensions(first) == _dimensions(second)


def test_the_handlers_other_metrics_keep_their_own_dimensions(capsys, monkeypatch):
    from aws_lambda_powertools.metrics import MetricUnit

    from hyperpod_control.observability import metrics

    monkeypatch.setattr(metrics, "namespace", "HyperPodControlPlane")  # read at import, before the fixture
    metrics.add_metric(name="JobsSeen", unit=MetricUnit.Count, value=3)
    emit_remediation(ARN, RemediationOutcome(action="in_process_restart", fault="worker", recovery_ms=5))
    metrics.flush_metrics()
    remediation, handler = _emitted(capsys)
    assert "JobsSeen" not in _metrics(remediation)
    assert _metrics(handler) == {"JobsSeen": ("Count", [3.0])}
    assert "ClusterArn" not in _dimensions(handler)


def test_the_outcome_stays_out_of_the_executions_state():
    result = StepResult(
        next="monitor", poll_seconds=30, remediation=RemediationOutcome(action="spare_swap", fault="node")
    )
    assert result.remediation is not None
    assert "remediation" not in result.dump()


def test_jobs_by_phase_names_every_phase_and_counts_a_job_without_an_item_as_new():
    from hyperpod_control.models.records import JobPhase, JobRecord
    from hyperpod_control.services.reconcile import jobs_by_phase

    def record(uid: str, phase: JobPhase) -> JobRecord:
        return JobRecord(cluster_arn=ARN, uid=uid, namespace="team-a", name=uid, phase=phase)

    records = {
        "a": record("a", JobPhase.RUNNING),
        "b": record("b", JobPhase.RUNNING),
        "c": record("c", JobPhase.FAILED),
        "gone": record("gone", JobPhase.RUNNING),  # its job was deleted: not live
    }
    counts = jobs_by_phase(records, {"a", "b", "c", "new"})
    assert counts == {
        "Pending": 1,
        "Creating": 0,
        "Running": 2,
        "Suspended": 0,
        "Completed": 0,
        "Failed": 1,
        "Observed": 0,
    }
    assert jobs_by_phase({}, {"new"}, JobPhase.OBSERVED)["Observed"] == 1


def test_jobs_by_phase_is_one_count_per_cluster_and_phase_zeros_included(capsys):
    from hyperpod_control.observability import emit_jobs_by_phase

    emit_jobs_by_phase(ARN, {"Running": 2, "Failed": 0})
    documents = _emitted(capsys)
    assert [(_dimensions(d)["Phase"], _metrics(d)) for d in documents] == [
        ("Failed", {"Jobs": ("Count", [0.0])}),
        ("Running", {"Jobs": ("Count", [2.0])}),
    ]
    assert all(_dimensions(d)["ClusterArn"] == ARN for d in documents)
    assert all(set(_dimensions(d)) == {"ClusterArn", "Phase", "service"} for d in documents)


def test_a_supervisor_step_is_timed_in_milliseconds_by_cluster_and_step(capsys):
    from hyperpod_control.observability import emit_step_duration

    emit_step_duration(ARN, "poll", 412.5)
    (document,) = _emitted(capsys)
    assert _metrics(document) == {"SupervisorStepDuration": ("Milliseconds", [412.5])}
    assert _dimensions(document) == {"ClusterArn": ARN, "Step": "poll", "service": "hyperpod-control-plane"}


def test_node_actions_are_counted_by_cluster_and_action(capsys):
    from hyperpod_control.observability import emit_node_actions

    emit_node_actions(ARN, ["cordon", "taint", "repair:Reboot"])
    emit_node_actions(ARN, [])
    documents = _emitted(capsys)
    assert [(_dimensions(d)["Action"], _metrics(d)) for d in documents] == [
        ("cordon", {"NodeActions": ("Count", [1.0])}),
        ("repair:Reboot", {"NodeActions": ("Count", [1.0])}),
        ("taint", {"NodeActions": ("Count", [1.0])}),
    ]
    assert all(set(_dimensions(d)) == {"ClusterArn", "Action", "service"} for d in documents)
