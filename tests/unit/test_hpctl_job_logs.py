"""hpctl jobs logs: the pod of the rank asked for, and --follow printing only what is new until
the pod stops running (the records on moto, the cluster's API a fake that answers as it would)."""

from __future__ import annotations

import io

import pytest
from unit_support import CLUSTER_ARN, TABLE

from hpctl.jobs import JobLookupError, job_logs
from hyperpod_control.models.records import JobPhase, JobRecord, OperatorMode, OperatorRecord, PodSlot

pytestmark = pytest.mark.unit


class FakeKube:
    """The two reads job_logs makes: the pod's log (growing), the pod's phase."""

    def __init__(self, logs: list[str], phases: list[str]) -> None:
        self.logs, self.phases, self.reads = logs, phases, []

    def _api(self, name: str) -> FakeKube:
        assert name == "CoreV1Api"
        return self

    def _call(self, resource: str, fn, *args, **kwargs):
        return fn(*args, **kwargs)

    def read_namespaced_pod_log(self, name: str, namespace: str, **kwargs) -> str:
        self.reads.append((name, namespace, kwargs))
        return self.logs.pop(0) if len(self.logs) > 1 else self.logs[0]

    def pods(self, namespace: str, field_selector: str = "") -> list[dict]:
        phase = self.phases.pop(0) if len(self.phases) > 1 else self.phases[0]
        return [{"metadata": {"name": field_selector.split("=", 1)[1]}, "status": {"phase": phase}}]


@pytest.fixture
def job(store, monkeypatch) -> JobRecord:
    monkeypatch.setenv("HPCTL_STACK", "unit")
    monkeypatch.setenv("HPCTL_OUTPUT_TableName", TABLE)
    store.put(
        OperatorRecord(
            cluster_arn=CLUSTER_ARN,
            cluster_name="c1",
            eks_cluster_name="eks-1",
            mode=OperatorMode.SERVERLESS,
        ),
        expected_version=None,
    )
    record = JobRecord(
        cluster_arn=CLUSTER_ARN,
        uid="u-1",
        namespace="team",
        name="tiny",
        phase=JobPhase.RUNNING,
        pods=[PodSlot(pod="tiny-0", rank=0), PodSlot(pod="tiny-2", rank=1), PodSlot(pod="tiny-3")],
    )
    store.put(record, expected_version=None)
    return record


def test_logs_reads_the_pod_holding_the_rank(job):
    kube, out = FakeKube(["step 0 loss 1.0\n"], ["Running"]), io.StringIO()

    assert job_logs("unit", "tiny", "team", rank=1, tail=5, out=out, kube=kube) == "tiny-2"
    assert out.getvalue() == "step 0 loss 1.0\n"
    assert kube.reads == [("tiny-2", "team", {"previous": False, "tail_lines": 5})]


def test_follow_prints_what_is_new_until_the_pod_stops_running(job):
    logs = ["a\n", "a\nb\n", "a\nb\nc\n"]
    kube, out = FakeKube(logs, ["Running", "Running", "Succeeded"]), io.StringIO()

    job_logs("unit", "tiny", "team", rank=0, follow=True, poll_seconds=0, out=out, kube=kube)

    assert out.getvalue() == "a\nb\nc\n"
    assert [r[0] for r in kube.reads] == ["tiny-0"] * 3


def test_a_rank_the_job_does_not_have_names_the_ranks_it_has(job):
    with pytest.raises(JobLookupError, match=r"has no rank 4; its ranks: 0 \(tiny-0\), 1 \(tiny-2\)"):
        job_logs("unit", "tiny", "team", rank=4, out=io.StringIO(), kube=FakeKube([""], ["Running"]))
