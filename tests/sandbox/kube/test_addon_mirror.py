"""When the training-operator add-on is ACTIVE the API server holds what it installs, and deleting
the add-on removes it: ``sandbox.kube.addon_mirror.AddonMirror``.

The EKS cluster is the sandbox's AWS emulation in process, on a manual clock the tests advance.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from moto import mock_aws

from sandbox import aws_ext
from sandbox.aws_ext import catalog, eks_addons
from sandbox.kube import KubeApiServer, Store
from sandbox.kube.addon_mirror import CONTROLLER, OWNER_LABEL, AddonMirror, controller_deployment, desired
from sandbox.kube.cluster import ClusterSeed, seed_cluster
from sandbox.testing import eventually
from sandbox.world import WorldOptions, build_world

pytestmark = pytest.mark.integration

EKS = "mirror-eks"
NS = catalog.OPERATOR_NAMESPACE
CRD = "hyperpodpytorchjobs.sagemaker.amazonaws.com"
GROUP, VERSION, PLURAL = "sagemaker.amazonaws.com", "v1", "hyperpodpytorchjobs"


@dataclass
class Eks:
    clock: aws_ext.ManualClock
    eks: Any
    account_id: str

    def create(self, **kwargs: Any) -> None:
        self.eks.create_addon(clusterName=EKS, addonName=catalog.TRAINING_OPERATOR, **kwargs)

    def delete(self) -> None:
        self.eks.delete_addon(clusterName=EKS, addonName=catalog.TRAINING_OPERATOR)

    def status(self) -> str:
        return self.eks.describe_addon(clusterName=EKS, addonName=catalog.TRAINING_OPERATOR)["addon"][
            "status"
        ]


@pytest.fixture(scope="module")
def world() -> Iterator[Eks]:
    clock = aws_ext.ManualClock()
    aws_ext.configure(clock)
    with mock_aws():
        built = build_world(
            lambda service: boto3.client(service, region_name="us-west-2"),
            WorldOptions(
                eks_cluster_name=EKS,
                hyperpod_cluster_name="addon-mirror-hp",
                nodes=1,
                interface_endpoints=(),
                gateway_endpoints=(),
            ),
        )
        try:
            yield Eks(clock, boto3.client("eks", region_name="us-west-2"), built.account_id)
        finally:
            aws_ext.reset()


def find(store: Store, group: str, plural: str, namespace: str | None, name: str) -> dict | None:
    return store.find(store.rt(group, plural), namespace, name)


def available(store: Store) -> str | None:
    deployment = find(store, "apps", "deployments", NS, CONTROLLER)
    if deployment is None:
        return None
    return next(
        (c["status"] for c in deployment.get("status", {}).get("conditions", []) if c["type"] == "Available"),
        None,
    )


def job(name: str) -> dict:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "HyperPodPyTorchJob",
        "metadata": {"name": name},
        "spec": {"nprocPerNode": "1", "replicaSpecs": [{"name": "pods", "replicas": 1}]},
    }


def test_addon_active_installs_the_operator_and_delete_removes_it(world: Eks) -> None:
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    server = KubeApiServer().start()
    mirror = AddonMirror(server.store, EKS, account_id=world.account_id).start()
    store = server.store
    try:
        with client.ApiClient(server.client_configuration()) as api_client:
            custom = client.CustomObjectsApi(api_client)
            world.create()
            assert world.status() == "CREATING"
            mirror.sync()
            # nothing before the add-on is ACTIVE (the manual clock has not moved)
            assert find(store, "", "namespaces", None, NS) is None
            assert find(store, "apiextensions.k8s.io", "customresourcedefinitions", None, CRD) is None

            world.clock.advance(30)  # delays.addon_create
            assert world.status() == "ACTIVE"
            eventually(lambda: available(store) == "True", 10, "the controller Deployment available")
            deployment = find(store, "apps", "deployments", NS, CONTROLLER)
            assert deployment["status"]["availableReplicas"] == deployment["status"]["readyReplicas"] == 1
            pod_spec = deployment["spec"]["template"]["spec"]
            assert pod_spec["serviceAccountName"] == catalog.OPERATOR_SERVICE_ACCOUNT
            assert "hp-training-control-plane" in deployment["spec"]["template"]["metadata"]["labels"]
            assert find(store, "", "serviceaccounts", NS, catalog.OPERATOR_SERVICE_ACCOUNT) is not None
            crd = find(store, "apiextensions.k8s.io", "customresourcedefinitions", None, CRD)
            assert crd["spec"]["names"]["kind"] == "HyperPodPyTorchJob"
            established = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
            assert established["Established"] == "True"

            # the CRD is served: a job is created and read back through the kubernetes client
            custom.create_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, job("demo"))
            got = custom.get_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, "demo")
            assert got["kind"] == "HyperPodPyTorchJob"

            # a degraded add-on (InsufficientNumberOfReplicas): the controller is not available
            eks_addons.set_health(EKS, catalog.TRAINING_OPERATOR, "DEGRADED", account_id=world.account_id)
            eventually(lambda: available(store) == "False", 10, "the controller Deployment unavailable")
            assert "availableReplicas" not in find(store, "apps", "deployments", NS, CONTROLLER)["status"]
            eks_addons.set_health(EKS, catalog.TRAINING_OPERATOR, "ACTIVE", account_id=world.account_id)
            eventually(lambda: available(store) == "True", 10, "the controller Deployment available again")

            world.delete()
            eventually(
                lambda: find(store, "apiextensions.k8s.io", "customresourcedefinitions", None, CRD) is None,
                10,
                "the CRD removed",
            )
            eventually(lambda: find(store, "", "namespaces", None, NS) is None, 10, "aws-hyperpod removed")
            assert find(store, "apps", "deployments", NS, CONTROLLER) is None
            assert find(store, "", "serviceaccounts", NS, catalog.OPERATOR_SERVICE_ACCOUNT) is None
            with pytest.raises(ApiException) as err:
                custom.create_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, job("after"))
            assert err.value.status == 404
            world.clock.advance(15)  # delays.addon_delete: the add-on itself is gone
            assert catalog.TRAINING_OPERATOR not in world.eks.list_addons(clusterName=EKS)["addons"]
    finally:
        mirror.stop()
        server.stop()


def test_configuration_values_reach_the_deployment_and_a_seeded_crd_stays(world: Eks) -> None:
    store = Store()
    try:
        # the CRD was there before the add-on (installed another way): the add-on leaves it
        seed_cluster(store, ClusterSeed(cert_manager=False, pod_identity_agent=False, hyperpod_job_crd=True))
        mirror = AddonMirror(store, EKS, account_id=world.account_id).start(background=False)
        values = {
            "hpTrainingControllerManager": {
                "manager": {"resources": {"requests": {"cpu": "3", "memory": "6Gi"}}},
                "nodeSelector": {"pool": "system"},
            }
        }
        world.create(configurationValues=json.dumps(values))
        world.clock.advance(30)
        mirror.sync()
        deployment = find(store, "apps", "deployments", NS, CONTROLLER)
        spec = deployment["spec"]["template"]["spec"]
        assert spec["nodeSelector"] == {"pool": "system"}
        assert spec["containers"][0]["resources"]["requests"] == {"cpu": "3", "memory": "6Gi"}
        assert spec["containers"][0]["resources"]["limits"] == {"cpu": "2", "memory": "4Gi"}
        crd = find(store, "apiextensions.k8s.io", "customresourcedefinitions", None, CRD)
        assert OWNER_LABEL not in (crd["metadata"].get("labels") or {})

        world.delete()
        mirror.sync()
        assert find(store, "apps", "deployments", NS, CONTROLLER) is None
        assert find(store, "apiextensions.k8s.io", "customresourcedefinitions", None, CRD) is not None
        world.clock.advance(15)
        assert mirror.applied is None
    finally:
        store.close()


def test_desired_state_per_addon_status() -> None:
    def addon(status: str, **extra: Any) -> dict:
        return {"status": status, "addonVersion": "v1.2.1-eksbuild.1", **extra}

    assert desired(None) is None
    assert desired(addon("CREATING")) is None
    assert desired(addon("CREATE_FAILED")) is None
    assert desired(addon("DELETING")) is None
    for status in ("ACTIVE", "UPDATING", "UPDATE_FAILED"):
        assert desired(addon(status)).available  # type: ignore[union-attr]
    degraded = desired(addon("DEGRADED", namespaceConfig={"namespace": "ops"}))
    assert degraded is not None and not degraded.available and degraded.namespace == "ops"
    body = controller_deployment(desired(addon("ACTIVE")))  # type: ignore[arg-type]
    spec = body["spec"]["template"]["spec"]
    assert spec["nodeSelector"] == {"sagemaker.amazonaws.com/compute-type": "HyperPod"}
    assert spec["containers"][0]["resources"]["requests"] == {"cpu": "1", "memory": "2Gi"}
