"""Who may reach a serverless job's pods: the NetworkPolicy the supervisor makes per job (plain
data), the AgentAllowedCidrs it is built from, CreatePods making it before the pods (and carrying
on, with a Warning, where RBAC does not allow it), and the ClusterRole rule that allows it."""

from __future__ import annotations

from typing import Any

import pytest

from hyperpod_control.exceptions import AccessDeniedError, InvalidInputError
from hyperpod_control.models.agent import AGENT_PORT
from hyperpod_control.models.job import parse_job
from hyperpod_control.models.names import JOB_LABEL, UID_LABEL
from hyperpod_control.models.supervisor import StepInput, SupervisedJob
from hyperpod_control.services import install
from hyperpod_control.services.supervision import agent_cidrs, build_network_policy, build_pod
from hyperpod_control.services.supervisor import Supervisor, SupervisorConfig, create_pods, new_job_record
from tests.fakes import FakeStore

pytestmark = pytest.mark.unit

ARN = "arn:aws:sagemaker:us-west-2:123456789012:cluster/abcdef123456"
UID = "5f1c0d2e-0000-4000-8000-000000000001"


def job_obj(name: str = "llama", uid: str = UID) -> dict[str, Any]:
    return {
        "apiVersion": "sagemaker.amazonaws.com/v1",
        "kind": "HyperPodPyTorchJob",
        "metadata": {"name": name, "namespace": "team-a", "uid": uid, "generation": 1},
        "spec": {
            "nprocPerNode": "1",
            "replicaSpecs": [
                {
                    "name": "pod",
                    "replicas": 2,
                    "spares": 1,
                    "template": {"spec": {"containers": [{"name": "t", "image": "train:1"}]}},
                }
            ],
        },
    }


def test_policy_admits_the_job_to_itself_and_the_control_plane_to_the_agent_port_only():
    job = parse_job(job_obj())
    policy = build_network_policy(job, ("10.0.0.0/16", "fd00:10::/56"))
    selector = {"matchLabels": {JOB_LABEL: "llama", UID_LABEL: UID}}
    assert policy == {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {
            "name": "llama-network-policy",
            "namespace": "team-a",
            "labels": {JOB_LABEL: "llama", UID_LABEL: UID},
            "ownerReferences": [
                {
                    "apiVersion": "sagemaker.amazonaws.com/v1",
                    "kind": "HyperPodPyTorchJob",
                    "name": "llama",
                    "uid": UID,
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": {
            "podSelector": selector,
            "policyTypes": ["Ingress"],  # egress (S3, the bus) untouched
            "ingress": [
                {"from": [{"podSelector": selector}]},  # every port, between the job's pods
                {
                    "from": [{"ipBlock": {"cidr": "10.0.0.0/16"}}, {"ipBlock": {"cidr": "fd00:10::/56"}}],
                    "ports": [{"protocol": "TCP", "port": AGENT_PORT}],
                },
            ],
        },
    }
    # The selector picks exactly the pods the supervisor builds (spares included) and no others.
    for index in range(3):
        labels = build_pod(job, index)["metadata"]["labels"]
        assert all(labels.get(k) == v for k, v in selector["matchLabels"].items())
    assert build_pod(job, 0)["metadata"]["ownerReferences"] == policy["metadata"]["ownerReferences"]
    other = build_pod(parse_job(job_obj(uid="another-uid")), 0)["metadata"]["labels"]
    assert other[UID_LABEL] != selector["matchLabels"][UID_LABEL]


def test_without_configured_cidrs_the_agent_port_admits_every_source_and_the_rest_stays_closed():
    ingress = build_network_policy(parse_job(job_obj()))["spec"]["ingress"]
    assert ingress[1] == {"ports": [{"protocol": "TCP", "port": AGENT_PORT}]}  # no "from": any source
    assert "ports" not in ingress[0] and [p for p in ingress[0]["from"]] == [
        {"podSelector": {"matchLabels": {JOB_LABEL: "llama", UID_LABEL: UID}}}
    ]


def test_agent_allowed_cidrs_are_parsed_and_a_bad_one_names_the_parameter():
    assert agent_cidrs("") == ()
    assert agent_cidrs(" 10.0.0.0/16 , ,fd00:10:0::/56") == ("10.0.0.0/16", "fd00:10::/56")
    assert agent_cidrs("10.0.0.5") == ("10.0.0.5/32",)  # one address: written as Kubernetes needs it
    for bad in ("10.0.0.1/16", "10.0.0.0/33", "ten/8"):
        with pytest.raises(InvalidInputError, match="AgentAllowedCidrs") as exc:
            agent_cidrs(f"10.1.0.0/16,{bad}")
        assert bad in exc.value.message and "subnets" in exc.value.remedy
    config = SupervisorConfig.from_env({"AGENT_ALLOWED_CIDRS": "192.168.0.0/20"})
    assert config.agent_cidrs == ("192.168.0.0/20",)
    assert SupervisorConfig.from_env({}).agent_cidrs == ()


def test_the_supervisor_tier_may_get_create_and_patch_network_policies_and_no_more():
    def rules(tier: str) -> list[dict[str, Any]]:
        role = install.tier_cluster_role(tier)
        return [r for r in role["rules"] if "networkpolicies" in r["resources"]]

    assert rules("supervisor") == [
        {
            "apiGroups": ["networking.k8s.io"],
            "resources": ["networkpolicies"],
            "verbs": ["get", "create", "patch"],
        }
    ]
    assert not [tier for tier in ("reader", "node-handler", "crd-owner") if rules(tier)]


# ============================================================== CreatePods


class Kube:
    def __init__(self, refuse_policy: bool = False) -> None:
        self.calls: list[tuple[str, str]] = []
        self.policies: list[dict[str, Any]] = []
        self.k8s_events: list[dict[str, Any]] = []
        self.refuse_policy = refuse_policy

    def custom_object(self, *args: Any) -> dict[str, Any]:
        return job_obj()

    def pods(self, namespace: str, *, label_selector: str = "") -> list[dict[str, Any]]:
        return []

    def ensure_network_policy(self, namespace: str, body: dict[str, Any]) -> str:
        self.calls.append(("policy", body["metadata"]["name"]))
        if self.refuse_policy:
            raise AccessDeniedError(
                "NetworkPolicy team-a/llama-network-policy: forbidden by Kubernetes RBAC (403)"
            )
        self.policies.append(body)
        return "created"

    def create_pod(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(("pod", body["metadata"]["name"]))
        return body

    def create_event(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        self.k8s_events.append(body)
        return body


def _create(kube: Kube, cidrs: tuple[str, ...] = ()) -> FakeStore:
    ref = SupervisedJob(cluster_arn=ARN, namespace="team-a", name="llama", uid=UID)
    store = FakeStore(new_job_record(ref).model_copy(update={"version": 1}))
    sup = Supervisor(store=store, kube=kube, agents=None, config=SupervisorConfig(agent_cidrs=cidrs))
    assert create_pods(StepInput(job=ref), sup).next == "wait"
    return store


def test_create_pods_makes_the_policy_before_any_pod():
    kube = Kube()
    store = _create(kube, ("10.0.0.0/16",))
    assert kube.calls == [
        ("policy", "llama-network-policy"),
        ("pod", "llama-0"),
        ("pod", "llama-1"),
        ("pod", "llama-2"),
    ]
    assert kube.policies[0]["spec"]["ingress"][1]["from"] == [{"ipBlock": {"cidr": "10.0.0.0/16"}}]
    [created] = [e for e in store.events if e.kind == "PodsCreated"]
    assert created.details["network_policy"] == "llama-network-policy"


def test_where_rbac_refuses_the_policy_the_pods_are_made_and_a_warning_says_how_to_fix_it():
    kube = Kube(refuse_policy=True)
    store = _create(kube)
    assert [c[0] for c in kube.calls] == ["policy", "pod", "pod", "pod"]
    [warning] = kube.k8s_events
    assert (warning["type"], warning["reason"]) == ("Warning", "NetworkPolicyNotCreated")
    assert "Re-run the operator install" in warning["message"] and "8080" in warning["message"]
    assert [e.kind for e in store.events] == ["NetworkPolicyNotCreated", "PodsCreated"]
    assert store.events[1].details["network_policy"] is None
