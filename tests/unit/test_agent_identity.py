"""The agents' identity: CreatePods associates the job's service account with the agent role (EKS
Pod Identity) before any pod exists, never touches a user's association of that account, and
never lets a failure to associate keep the pods from being created."""

from __future__ import annotations

from typing import Any

import pytest

from hyperpod_control.exceptions import AccessDeniedError, ThrottledError
from hyperpod_control.models.job import parse_job
from hyperpod_control.models.records import JobRecord
from hyperpod_control.models.supervisor import StepInput, SupervisedJob
from hyperpod_control.services.install import MANAGED_TAG
from hyperpod_control.services.supervision import decide_agent_association, service_account
from hyperpod_control.services.supervisor import Supervisor, SupervisorConfig, create_pods
from tests.fakes import FakeStore

pytestmark = pytest.mark.unit

ARN = "arn:aws:sagemaker:us-west-2:123456789012:cluster/abcdef123456"
UID = "5f1c0d2e-0000-4000-8000-000000000002"
ROLE = "arn:aws:iam::123456789012:role/hp-AgentPodRole-ABC"
BUS = "arn:aws:events:us-west-2:123456789012:event-bus/hp-events"


def job_obj(pod_spec_extra: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "sagemaker.amazonaws.com/v1",
        "kind": "HyperPodPyTorchJob",
        "metadata": {"name": "llama", "namespace": "team-a", "uid": UID, "generation": 1},
        "spec": {
            "nprocPerNode": "1",
            "replicaSpecs": [
                {
                    "name": "pod",
                    "replicas": 2,
                    "template": {
                        "spec": {
                            "containers": [{"name": "trainer", "image": "train:1", "command": ["run"]}],
                            **(pod_spec_extra or {}),
                        }
                    },
                }
            ],
        },
    }


class FakeKube:
    def __init__(self, obj: dict[str, Any], log: list[str]) -> None:
        self.obj, self.log = obj, log

    def custom_object(self, *args: Any) -> dict[str, Any]:
        return self.obj

    def pods(self, namespace: str, label_selector: str = "") -> list[dict]:
        return []

    def ensure_network_policy(self, namespace: str, body: dict) -> dict:
        return body  # the job's NetworkPolicy, where the supervisor makes one: not this test's

    def create_pod(self, namespace: str, body: dict) -> dict:
        self.log.append(f"pod {body['metadata']['name']}")
        return body


class FakeEks:
    """EksAdapter's Pod Identity calls, over one cluster's associations."""

    def __init__(self, log: list[str], existing: dict | None = None, error: Exception | None = None) -> None:
        self.log, self.error = log, error
        self.associations = [existing] if existing else []

    def find_association(self, cluster: str, namespace: str, account: str) -> dict | None:
        if self.error is not None:
            raise self.error
        return next(
            (a for a in self.associations if (a["namespace"], a["serviceAccount"]) == (namespace, account)),
            None,
        )

    def create_association(self, cluster: str, namespace: str, account: str, role: str, tags: dict) -> dict:
        self.log.append(f"associate {cluster} {namespace}/{account} -> {role} {tags}")
        found = {"namespace": namespace, "serviceAccount": account, "roleArn": role, "associationId": "a-1"}
        self.associations.append(found)
        return found


def run_create_pods(
    eks: FakeEks, log: list[str], obj: dict | None = None, role: str | None = ROLE
) -> FakeStore:
    store = FakeStore(JobRecord(cluster_arn=ARN, uid=UID, namespace="team-a", name="llama"))
    sup = Supervisor(
        store=store,
        kube=FakeKube(obj or job_obj(), log),
        agents=None,
        config=SupervisorConfig(event_bus=BUS, agent_role_arn=role),
        eks=eks,
        eks_cluster="eks-1",
    )
    ref = SupervisedJob(cluster_arn=ARN, namespace="team-a", name="llama", uid=UID)
    assert create_pods(StepInput(job=ref), sup).next == "wait"
    return store


def test_the_service_account_is_the_templates_or_default():
    assert service_account(parse_job(job_obj())) == "default"
    assert service_account(parse_job(job_obj({"serviceAccountName": "trainer"}))) == "trainer"
    assert service_account(parse_job(job_obj({"serviceAccount": "legacy"}))) == "legacy"


def test_an_association_is_created_only_where_there_is_none():
    assert decide_agent_association(None, ROLE) == "create"
    assert decide_agent_association({"roleArn": ROLE}, ROLE) == "ours"
    other = "arn:aws:iam::123456789012:role/team-a-s3-access"
    assert decide_agent_association({"roleArn": other}, ROLE) == "foreign"


def test_create_pods_associates_the_service_account_before_the_first_pod():
    log: list[str] = []
    store = run_create_pods(FakeEks(log), log, job_obj({"serviceAccountName": "trainer"}))
    assert log == [
        f"associate eks-1 team-a/trainer -> {ROLE} {{'{MANAGED_TAG}': 'hyperpod-control-plane'}}",
        "pod llama-0",
        "pod llama-1",
    ]
    assert [e.kind for e in store.events] == ["AgentIdentity", "PodsCreated"]


def test_an_existing_association_to_the_agent_role_is_reused():
    log: list[str] = []
    existing = {"namespace": "team-a", "serviceAccount": "default", "roleArn": ROLE, "associationId": "a-0"}
    store = run_create_pods(FakeEks(log, existing), log)
    assert log == ["pod llama-0", "pod llama-1"]
    assert [e.kind for e in store.events] == ["PodsCreated"]


def test_a_users_association_of_the_account_is_left_alone_and_the_history_says_pushes_will_fail():
    log: list[str] = []
    theirs = "arn:aws:iam::123456789012:role/team-a-s3-access"
    existing = {"namespace": "team-a", "serviceAccount": "default", "roleArn": theirs, "associationId": "a-0"}
    eks = FakeEks(log, existing)
    store = run_create_pods(eks, log)
    assert log == ["pod llama-0", "pod llama-1"], "no association changed or added"
    assert eks.associations == [existing]
    note = store.events[0]
    assert note.kind == "AgentIdentity" and theirs in note.message and "polling" in note.message


def test_pods_are_created_when_the_association_is_refused():
    log: list[str] = []
    denied = AccessDeniedError("not authorized to perform: eks:ListPodIdentityAssociations")
    store = run_create_pods(FakeEks(log, error=denied), log)
    assert log == ["pod llama-0", "pod llama-1"]
    assert "eks:ListPodIdentityAssociations" in store.events[0].message


def test_a_throttled_lookup_fails_the_step_for_the_state_machine_to_retry():
    log: list[str] = []
    with pytest.raises(ThrottledError):
        run_create_pods(FakeEks(log, error=ThrottledError("Rate exceeded")), log)
    assert log == [], "no pod before the association is decided"


def test_without_an_agent_role_nothing_is_associated():
    log: list[str] = []
    run_create_pods(FakeEks(log), log, role=None)
    assert log == ["pod llama-0", "pod llama-1"]


def test_the_role_and_the_bus_come_from_the_environment():
    config = SupervisorConfig.from_env({"AGENT_EVENT_BUS": BUS, "AGENT_POD_ROLE_ARN": ROLE})
    assert (config.event_bus, config.agent_role_arn) == (BUS, ROLE)
    assert SupervisorConfig.from_env({}).agent_role_arn is None
