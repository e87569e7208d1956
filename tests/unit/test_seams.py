"""The seams the services act through are Protocols listing the calls they make; the production
adapters must offer each of those calls with the same parameters. A method renamed or a parameter
changed on one side fails here rather than as an AttributeError in a Lambda (tests pass fakes, so
nothing else would notice)."""

from __future__ import annotations

import inspect
from typing import Protocol

import pytest

from hyperpod_control.adapters.agents import AgentClient
from hyperpod_control.adapters.eks import EksAdapter
from hyperpod_control.adapters.kube import KubeAdapter
from hyperpod_control.adapters.sagemaker import SageMakerAdapter
from hyperpod_control.adapters.stepfunctions import StepFunctionsAdapter
from hyperpod_control.adapters.store import Store
from hyperpod_control.services.node_health import NodeKube, NodeRepairs, NodeStore
from hyperpod_control.services.node_jobs import JobFaultStore, JobPodsKube, Waker
from hyperpod_control.services.supervisor.context import (
    AgentCaller,
    PodIdentity,
    SegmentStarter,
    SupervisorKube,
    SupervisorStore,
)

pytestmark = pytest.mark.unit

SEAMS = [
    (SupervisorStore, Store),
    (SupervisorKube, KubeAdapter),
    (AgentCaller, AgentClient),
    (SegmentStarter, StepFunctionsAdapter),
    (PodIdentity, EksAdapter),
    (NodeStore, Store),
    (NodeKube, KubeAdapter),
    (NodeRepairs, SageMakerAdapter),
    (JobFaultStore, Store),
    (JobPodsKube, KubeAdapter),
    (Waker, StepFunctionsAdapter),
]


def _calls(protocol: type) -> dict[str, inspect.Signature]:
    """The methods a Protocol lists, its bases' included."""
    found: dict[str, inspect.Signature] = {}
    for klass in reversed(protocol.__mro__):
        if klass in (object, Protocol) or not getattr(klass, "_is_protocol", False):
            continue
        for name, member in vars(klass).items():
            if inspect.isfunction(member) and not name.startswith("_"):
                found[name] = inspect.signature(member)
    return found


def _shape(signature: inspect.Signature) -> list[tuple[str, inspect._ParameterKind, bool]]:
    return [(p.name, p.kind, p.default is inspect.Parameter.empty) for p in signature.parameters.values()]


@pytest.mark.parametrize(("protocol", "adapter"), SEAMS, ids=lambda t: t.__name__)
def test_the_adapter_offers_every_call_the_seam_lists(protocol, adapter):
    calls = _calls(protocol)
    assert calls, f"{protocol.__name__} lists no call"
    for name, wanted in calls.items():
        method = getattr(adapter, name, None)
        assert callable(method), f"{adapter.__name__} has no {name}, which {protocol.__name__} lists"
        assert _shape(inspect.signature(method)) == _shape(wanted), (
            f"{adapter.__name__}.{name}{inspect.signature(method)} is not {protocol.__name__}.{name}{wanted}"
        )


def test_the_check_tells_a_renamed_parameter_and_reads_the_bases():
    class Seam(JobFaultStore, Protocol):
        def get_node(self, cluster_arn: str, node_id: str) -> None: ...

    assert {"get_job", "put", "add_job_event", "get_node"} <= set(_calls(Seam))
    assert _shape(inspect.signature(Store.get_node)) != _shape(_calls(Seam)["get_node"])
