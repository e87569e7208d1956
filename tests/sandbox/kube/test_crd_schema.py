"""The API server prunes and validates custom objects against their CRD's schema, as
kube-apiserver does; the HyperPodPyTorchJob schema (one, for AWS's add-on CRD and the serverless
operator's) refuses at admission what the control plane could not run."""

from __future__ import annotations

import copy
import json

import pytest

from hyperpod_control.models.job_schema import MAX_REPLICAS, job_schema
from hyperpod_control.services.install import job_crd
from sandbox.kube import KubeApiServer
from sandbox.kube.cluster import hyperpod_pytorch_job_crd
from sandbox.kube.schema import prune_and_validate
from sandbox.workloads import tiny_job

pytestmark = pytest.mark.integration


def job(name: str = "train", **spec_changes) -> dict:
    manifest = tiny_job(name, replicas=2, spares=1, steps=10, ckpt_dir="/tmp/ckpt")
    manifest["spec"]["replicaSpecs"][0].update(spec_changes)
    return manifest


@pytest.mark.unit
def test_both_crds_carry_the_one_job_schema():
    served = [v for v in job_crd()["spec"]["versions"] if v["storage"]]
    addon = [v for v in hyperpod_pytorch_job_crd()["spec"]["versions"] if v["storage"]]
    assert served[0]["schema"]["openAPIV3Schema"] == addon[0]["schema"]["openAPIV3Schema"] == job_schema()


@pytest.mark.unit
@pytest.mark.parametrize(
    ("change", "field", "says"),
    [
        ({"replicas": "two"}, "spec.replicaSpecs[0].replicas", 'must be of type integer: "string"'),
        ({"replicas": 0}, "spec.replicaSpecs[0].replicas", "should be greater than or equal to 1"),
        (
            {"replicas": 100000},
            "spec.replicaSpecs[0].replicas",
            f"should be less than or equal to {MAX_REPLICAS}",
        ),
        ({"spares": -1}, "spec.replicaSpecs[0].spares", "should be greater than or equal to 0"),
    ],
)
def test_the_job_schema_names_the_field_and_the_rule(change, field, says):
    obj = job(**change)
    causes = prune_and_validate(job_schema(), obj)
    assert [f for f, _ in causes] == [field]
    assert says in causes[0][1]


@pytest.mark.unit
def test_unknown_fields_are_pruned_where_the_schema_does_not_keep_them():
    obj = job()
    obj["spec"]["replicaSpecs"][0]["colour"] = "blue"
    obj["spec"]["runPolicy"]["retries"] = 3
    obj["spec"]["replicaSpecs"][0]["template"]["spec"]["futureField"] = True  # a PodTemplateSpec: kept
    obj["status"] = {"podSets": [{"name": "main", "count": 3}], "masterPort": "23456"}  # status: kept
    assert prune_and_validate(job_schema(), obj) == []
    assert "colour" not in obj["spec"]["replicaSpecs"][0] and "retries" not in obj["spec"]["runPolicy"]
    assert obj["spec"]["replicaSpecs"][0]["template"]["spec"]["futureField"] is True
    assert obj["status"]["podSets"] == [{"name": "main", "count": 3}]


@pytest.mark.unit
def test_aws_status_types_are_enforced():
    obj = job()
    obj["status"] = {
        "masterPort": 23456,
        "jobPods": ["train-0"],
        "latestFaultyPodInstanceList": {"faultyRankList": [1]},
    }
    fields = sorted(f for f, _ in prune_and_validate(job_schema(), obj))
    assert fields == [
        "status.jobPods[0]",
        "status.latestFaultyPodInstanceList.faultyRankList[0]",
        "status.masterPort",
    ]


@pytest.fixture(scope="module", params=["serverless", "addon"])
def server(request):
    """An API server with the serverless operator's CRD, or AWS's add-on CRD as the sandbox has it."""
    server = KubeApiServer().start()
    crds = server.store.rt("apiextensions.k8s.io", "customresourcedefinitions")
    server.store.create(
        crds, None, job_crd() if request.param == "serverless" else hyperpod_pytorch_job_crd()
    )
    yield server
    server.stop()


def _create(server, body: dict):
    from kubernetes import client

    with client.ApiClient(server.client_configuration()) as api:
        return client.CustomObjectsApi(api).create_namespaced_custom_object(
            "sagemaker.amazonaws.com", "v1", "default", "hyperpodpytorchjobs", body
        )


@pytest.mark.parametrize(
    ("name", "change", "field"),
    [
        ("wrong-type", {"replicas": "two"}, "spec.replicaSpecs[0].replicas"),
        ("zero", {"replicas": 0}, "spec.replicaSpecs[0].replicas"),
        ("too-many", {"replicas": 100000}, "spec.replicaSpecs[0].replicas"),
        ("x" * 70, {}, "metadata.name"),
    ],
)
def test_an_invalid_job_is_refused_at_admission_with_the_field_path(server, name, change, field):
    from kubernetes.client.exceptions import ApiException

    with pytest.raises(ApiException) as refused:
        _create(server, job(name, **change))
    assert refused.value.status == 422
    body = json.loads(refused.value.body)
    assert body["reason"] == "Invalid" and field in body["message"]
    assert [c["field"] for c in body["details"]["causes"]] == [field]


def test_an_unknown_field_is_pruned_and_the_job_otherwise_kept(server):
    body = job("pruned")
    body["spec"]["replicaSpecs"][0]["colour"] = "blue"
    created = _create(server, copy.deepcopy(body))
    assert "colour" not in created["spec"]["replicaSpecs"][0]
    assert created["spec"]["replicaSpecs"][0]["replicas"] == 2


def test_kubectl_apply_shows_the_refusal_with_the_field_path(server, tmp_path):
    """What a user sees: kubectl apply of an invalid job fails with the API server's message."""
    import subprocess

    import yaml

    from sandbox.kube.tools import ensure_kubectl

    config = tmp_path / "config"
    server.kubeconfig(config)
    manifest = tmp_path / "job.yaml"
    manifest.write_text(yaml.safe_dump(job("kubectl-zero", replicas=0)))
    env = {"KUBECONFIG": str(config), "HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [str(ensure_kubectl()), "apply", "-f", str(manifest)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode != 0
    assert "spec.replicaSpecs[0].replicas" in out.stderr and "greater than or equal to 1" in out.stderr
