"""The supervisor's Kubernetes Events (what ``kubectl describe`` shows): what it writes, and which
answers of the API server it keeps going after (a refused or absent Events API, said once; a
throttled or unavailable API server) and which it does not (a body the API server rejects)."""

from __future__ import annotations

from typing import Any

import pytest
from test_supervisor import job

from hyperpod_control.exceptions import (
    AccessDeniedError,
    InvalidInputError,
    ResourceNotFoundError,
    ThrottledError,
)
from hyperpod_control.services.supervisor import EVENT_SOURCE_COMPONENT, Supervisor
from hyperpod_control.services.supervisor import reporting as supervisor
from hyperpod_control.services.supervisor.reporting import k8s_event as _k8s_event

pytestmark = pytest.mark.unit


class Kube:
    def __init__(self, error: Exception | None = None) -> None:
        self.error = error
        self.events: list[tuple[str, dict[str, Any]]] = []

    def create_event(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        self.events.append((namespace, body))
        if self.error is not None:
            raise self.error
        return body


@pytest.fixture(autouse=True)
def _fresh(monkeypatch):
    monkeypatch.setattr(supervisor, "_EVENTS_REFUSED", set())


def _warnings(caplog) -> list[dict[str, Any]]:
    """The warnings logged, each with its extra keys, as the JSON log line has them."""
    return [
        {"message": r.getMessage(), **{k: getattr(r, k) for k in ("namespace", "reason", "error")}}
        for r in caplog.records
        if r.levelname == "WARNING"
    ]


def _sup(kube: Kube) -> Supervisor:
    return Supervisor(store=None, kube=kube, agents=None)


def test_the_event_names_the_job_so_that_kubectl_describe_shows_it():
    kube = Kube()
    message = "The fault of reason NodeFault was remediated in 8250 milliseconds (spare_swap)"
    _k8s_event(_sup(kube), job(), "Normal", "Running", message)
    [(namespace, body)] = kube.events
    assert namespace == "team-a"
    assert body["involvedObject"] == {
        "apiVersion": "sagemaker.amazonaws.com/v1",
        "kind": "HyperPodPyTorchJob",
        "name": "llama",
        "namespace": "team-a",
        "uid": "5f1c0d2e-0000-4000-8000-000000000001",
    }
    assert (body["type"], body["reason"], body["message"]) == ("Normal", "Running", message)
    assert body["source"] == {"component": EVENT_SOURCE_COMPONENT}
    assert body["metadata"] == {"generateName": "llama.", "namespace": "team-a"}


@pytest.mark.parametrize(
    "error",
    [
        AccessDeniedError("Event in team-a: forbidden by Kubernetes RBAC (403): events is forbidden"),
        ResourceNotFoundError("Event in team-a: not found (404)."),
    ],
)
def test_refused_or_absent_events_are_said_once_and_the_step_goes_on(error, caplog):
    kube = Kube(error)
    sup = _sup(kube)
    _k8s_event(sup, job(), "Warning", "NodeFault", "Found unhealthy node ip-10-0-0-1: NotReady")
    _k8s_event(sup, job(), "Normal", "Running", "remediated")
    assert len(kube.events) == 2, "each Event is tried"
    [warning] = _warnings(caplog)
    assert "kubectl describe will not show" in warning["message"]
    assert (warning["namespace"], warning["reason"]) == ("team-a", "NodeFault")
    assert str(error) in warning["error"]


def test_a_throttled_api_server_is_logged_each_time_and_the_step_goes_on(caplog):
    kube = Kube(ThrottledError("Event in team-a: the Kubernetes API asked us to slow down (429)."))
    _k8s_event(_sup(kube), job(), "Normal", "Running", "remediated")
    _k8s_event(_sup(kube), job(), "Normal", "Running", "remediated")
    warnings = _warnings(caplog)
    assert len(warnings) == 2 and all("busy or unavailable" in w["message"] for w in warnings)


def test_an_event_the_api_server_rejects_fails_the_step():
    kube = Kube(InvalidInputError("Event in team-a: invalid (422): message too long"))
    with pytest.raises(InvalidInputError, match="422"):
        _k8s_event(_sup(kube), job(), "Normal", "Running", "remediated")
