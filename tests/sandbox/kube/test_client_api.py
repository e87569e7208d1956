"""The real ``kubernetes`` client against the sandbox API server over HTTPS, TLS verified."""

from __future__ import annotations

import threading
import time

import pytest
from kubernetes import client, watch
from kubernetes.client.rest import ApiException

from sandbox.kube import KubeApiServer
from sandbox.kube.cluster import hyperpod_pytorch_job_crd
from sandbox.testing import eventually as wait_for
from tests.sandbox.kube.conftest import NODE_IDS

pytestmark = pytest.mark.integration

HPJ = ("sagemaker.amazonaws.com", "v1", "hyperpodpytorchjobs")


def pod(name: str, labels: dict | None = None, node: str | None = None) -> dict:
    spec: dict = {"containers": [{"name": "main", "image": "python:3.11", "command": ["sleep", "1"]}]}
    if node:
        spec["nodeName"] = node
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels or {}},
        "spec": spec,
    }


def status_of(exc: ApiException) -> dict:
    import json

    return json.loads(exc.body)


@pytest.fixture(scope="module")
def hpj_crd(kube: KubeApiServer, api: client.ApiClient) -> None:
    ext = client.ApiextensionsV1Api(api)
    ext.create_custom_resource_definition(hyperpod_pytorch_job_crd())


def test_list_and_get_every_kind(api: client.ApiClient, namespace: str) -> None:
    core, apps, rbac = client.CoreV1Api(api), client.AppsV1Api(api), client.RbacAuthorizationV1Api(api)
    ext = client.ApiextensionsV1Api(api)
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "cm"}, "data": {"a": "b"}})
    core.create_namespaced_secret(namespace, {"metadata": {"name": "s"}, "stringData": {"pw": "x"}})
    core.create_namespaced_pod(namespace, pod("p"))
    core.create_namespaced_event(
        namespace,
        {
            "metadata": {"name": "e"},
            "reason": "Test",
            "type": "Normal",
            "involvedObject": {"kind": "Pod", "name": "p", "namespace": namespace},
        },
    )
    rbac.create_namespaced_role(
        namespace,
        {"metadata": {"name": "r"}, "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]},
    )
    rbac.create_namespaced_role_binding(
        namespace,
        {
            "metadata": {"name": "rb"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "r"},
            "subjects": [{"kind": "User", "name": "u"}],
        },
    )
    names = {
        "nodes": [n.metadata.name for n in core.list_node().items],
        "namespaces": [n.metadata.name for n in core.list_namespace().items],
        "pods": [p.metadata.name for p in core.list_namespaced_pod(namespace).items],
        "events": [e.reason for e in core.list_namespaced_event(namespace).items],
        "configmaps": [c.metadata.name for c in core.list_namespaced_config_map(namespace).items],
        "secrets": [s.metadata.name for s in core.list_namespaced_secret(namespace).items],
        "serviceaccounts": [s.metadata.name for s in core.list_namespaced_service_account(namespace).items],
        "deployments": [d.metadata.name for d in apps.list_namespaced_deployment("cert-manager").items],
        "roles": [r.metadata.name for r in rbac.list_namespaced_role(namespace).items],
        "rolebindings": [r.metadata.name for r in rbac.list_namespaced_role_binding(namespace).items],
        "crds": [c.metadata.name for c in ext.list_custom_resource_definition().items],
        "daemonsets": [d.metadata.name for d in apps.list_namespaced_daemon_set("kube-system").items],
    }
    assert sorted(names["nodes"]) == [f"hyperpod-{i}" for i in NODE_IDS]
    assert {"default", "kube-system", "cert-manager", namespace} <= set(names["namespaces"])
    assert names["pods"] == ["p"] and names["events"] == ["Test"] and names["configmaps"] == ["cm"]
    assert names["secrets"] == ["s"] and names["serviceaccounts"] == ["default"]
    assert names["deployments"] == ["cert-manager", "cert-manager-cainjector", "cert-manager-webhook"]
    assert names["roles"] == ["r"] and names["rolebindings"] == ["rb"]
    assert "certificates.cert-manager.io" in names["crds"] and names["daemonsets"] == [
        "eks-pod-identity-agent"
    ]
    node = core.read_node(f"hyperpod-{NODE_IDS[0]}")
    assert node.metadata.labels["sagemaker.amazonaws.com/compute-type"] == "HyperPod"
    assert node.metadata.labels["sagemaker.amazonaws.com/node-health-status"] == "Schedulable"
    assert node.metadata.labels["node.kubernetes.io/instance-type"] == "ml.g5.8xlarge"
    assert node.status.allocatable["nvidia.com/gpu"] == "1"
    assert [c.status for c in node.status.conditions if c.type == "Ready"] == ["True"]
    assert core.read_namespaced_secret("s", namespace).data == {"pw": "eA=="}
    deploy = apps.read_namespaced_deployment("cert-manager-webhook", "cert-manager")
    assert deploy.status.available_replicas == 1


def test_errors_are_status_objects(api: client.ApiClient, namespace: str) -> None:
    core = client.CoreV1Api(api)
    with pytest.raises(ApiException) as exc:
        core.read_namespaced_pod("missing", namespace)
    body = status_of(exc.value)
    assert (exc.value.status, body["kind"], body["reason"]) == (404, "Status", "NotFound")
    assert body["message"] == 'pods "missing" not found'
    with pytest.raises(ApiException) as exc:
        core.create_namespaced_pod(namespace, {"metadata": {"name": "bad"}, "spec": {"containers": []}})
    assert exc.value.status == 422 and status_of(exc.value)["reason"] == "Invalid"
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "dup"}})
    with pytest.raises(ApiException) as exc:
        core.create_namespaced_config_map(namespace, {"metadata": {"name": "dup"}})
    assert exc.value.status == 409 and status_of(exc.value)["reason"] == "AlreadyExists"
    with pytest.raises(ApiException) as exc:
        core.list_namespaced_pod(namespace, label_selector="a in ()")
    assert exc.value.status == 400 and status_of(exc.value)["reason"] == "BadRequest"


def test_stale_update_gets_409(api: client.ApiClient, namespace: str) -> None:
    core = client.CoreV1Api(api)
    created = core.create_namespaced_config_map(namespace, {"metadata": {"name": "c"}, "data": {"v": "1"}})
    created.data = {"v": "2"}
    core.replace_namespaced_config_map("c", namespace, created)
    created.data = {"v": "3"}  # still carries the old resourceVersion
    with pytest.raises(ApiException) as exc:
        core.replace_namespaced_config_map("c", namespace, created)
    assert exc.value.status == 409 and status_of(exc.value)["reason"] == "Conflict"
    assert core.read_namespaced_config_map("c", namespace).data == {"v": "2"}


def test_selectors_and_pagination_filter(api: client.ApiClient, namespace: str) -> None:
    core = client.CoreV1Api(api)
    for i in range(7):
        core.create_namespaced_pod(
            namespace,
            pod(f"p{i}", {"app": "a" if i % 2 else "b", "i": str(i)}, node=f"hyperpod-{NODE_IDS[i % 2]}"),
        )
    names = lambda items: sorted(p.metadata.name for p in items)  # noqa: E731
    assert names(core.list_namespaced_pod(namespace, label_selector="app=a").items) == ["p1", "p3", "p5"]
    assert names(core.list_namespaced_pod(namespace, label_selector="app!=a,i notin (0,2)").items) == [
        "p4",
        "p6",
    ]
    assert names(core.list_namespaced_pod(namespace, label_selector="i in (1,2),app").items) == ["p1", "p2"]
    on_node = core.list_namespaced_pod(namespace, field_selector=f"spec.nodeName=hyperpod-{NODE_IDS[1]}")
    assert names(on_node.items) == ["p1", "p3", "p5"]
    assert names(
        core.list_pod_for_all_namespaces(
            field_selector=f"metadata.namespace={namespace},status.phase=Pending,metadata.name!=p0"
        ).items
    )[:2] == ["p1", "p2"]
    seen, token, pages = [], None, 0
    while True:
        page = core.list_namespaced_pod(namespace, limit=3, _continue=token)
        pages += 1
        seen += [p.metadata.name for p in page.items]
        token = page.metadata._continue
        if not token:
            break
        assert page.metadata.remaining_item_count == 7 - len(seen)
    assert pages == 3 and seen == [f"p{i}" for i in range(7)]


def test_watch_sees_added_modified_deleted(api: client.ApiClient, namespace: str) -> None:
    core = client.CoreV1Api(api)
    start = core.list_namespaced_pod(namespace).metadata.resource_version
    events: list[tuple[str, str]] = []
    w = watch.Watch()

    def consume() -> None:
        for ev in w.stream(core.list_namespaced_pod, namespace, resource_version=start, timeout_seconds=20):
            events.append((ev["type"], ev["object"].metadata.name))
            if ev["type"] == "DELETED":
                w.stop()

    t = threading.Thread(target=consume)
    t.start()
    core.create_namespaced_pod(namespace, pod("watched"))
    core.patch_namespaced_pod("watched", namespace, {"metadata": {"labels": {"x": "y"}}})
    core.delete_namespaced_pod("watched", namespace)
    t.join(timeout=20)
    assert not t.is_alive()
    assert events == [("ADDED", "watched"), ("MODIFIED", "watched"), ("DELETED", "watched")]


def test_hyperpod_job_round_trips_with_status_and_watch(
    api: client.ApiClient, hpj_crd: None, namespace: str
) -> None:
    co = client.CustomObjectsApi(api)
    job = {
        "apiVersion": "sagemaker.amazonaws.com/v1",
        "kind": "HyperPodPyTorchJob",
        "metadata": {"name": "train", "labels": {"team": "a"}},
        "spec": {
            "nprocPerNode": "1",
            "replicaSpecs": [{"name": "pod", "replicas": 2, "template": {}}],
            "runPolicy": {"jobMaxRetryCount": 3},
        },
    }
    start = co.list_namespaced_custom_object(*HPJ[:2], namespace, HPJ[2])["metadata"]["resourceVersion"]
    created = co.create_namespaced_custom_object(*HPJ[:2], namespace, HPJ[2], job)
    assert created["metadata"]["generation"] == 1 and created["kind"] == "HyperPodPyTorchJob"
    status = {
        "conditions": [
            {
                "type": "Created",
                "status": "True",
                "reason": "Created",
                "message": "",
                "lastTransitionTime": "2026-01-01T00:00:00Z",
            }
        ],
        "restartCount": 0,
    }
    co.patch_namespaced_custom_object_status(*HPJ[:2], namespace, HPJ[2], "train", {"status": status})
    got = co.get_namespaced_custom_object(*HPJ[:2], namespace, HPJ[2], "train")
    assert got["status"] == status and got["spec"] == job["spec"] and got["metadata"]["generation"] == 1
    # a status written through the main resource is ignored, as upstream
    got["status"] = {"restartCount": 99}
    replaced = co.replace_namespaced_custom_object(*HPJ[:2], namespace, HPJ[2], "train", got)
    assert replaced["status"] == status  # and, nothing else changing, a no-op: same version, no event
    assert replaced["metadata"]["resourceVersion"] == got["metadata"]["resourceVersion"]
    listed = co.list_namespaced_custom_object(*HPJ[:2], namespace, HPJ[2], label_selector="team=a")
    assert [i["metadata"]["name"] for i in listed["items"]] == ["train"]
    seen = []
    w = watch.Watch()
    for ev in w.stream(
        co.list_namespaced_custom_object,
        *HPJ[:2],
        namespace,
        HPJ[2],
        resource_version=start,
        timeout_seconds=10,
    ):
        seen.append(ev["type"])
        if len(seen) == 2:
            w.stop()
    assert seen == ["ADDED", "MODIFIED"]
    co.delete_namespaced_custom_object(*HPJ[:2], namespace, HPJ[2], "train")
    with pytest.raises(ApiException) as exc:
        co.get_namespaced_custom_object(*HPJ[:2], namespace, HPJ[2], "train")
    assert exc.value.status == 404


def test_deleting_an_owner_removes_its_dependents(
    api: client.ApiClient, hpj_crd: None, namespace: str
) -> None:
    co, core = client.CustomObjectsApi(api), client.CoreV1Api(api)
    owner = co.create_namespaced_custom_object(
        *HPJ[:2],
        namespace,
        HPJ[2],
        {
            "apiVersion": "sagemaker.amazonaws.com/v1",
            "kind": "HyperPodPyTorchJob",
            "metadata": {"name": "owner"},
            "spec": {},
        },
    )
    ref = {
        "apiVersion": "sagemaker.amazonaws.com/v1",
        "kind": "HyperPodPyTorchJob",
        "name": "owner",
        "uid": owner["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }
    for i in range(3):
        body = pod(f"worker-{i}", {"HPJob": "owner"})
        body["metadata"]["ownerReferences"] = [ref]
        core.create_namespaced_pod(namespace, body)
    core.create_namespaced_pod(namespace, pod("bystander"))
    co.delete_namespaced_custom_object(*HPJ[:2], namespace, HPJ[2], "owner")
    wait_for(
        lambda: not core.list_namespaced_pod(namespace, label_selector="HPJob=owner").items,
        what="dependent pods collected",
    )
    assert [p.metadata.name for p in core.list_namespaced_pod(namespace).items] == ["bystander"]


def test_fault_hook_answers_500_then_429(kube: KubeApiServer, api: client.ApiClient, namespace: str) -> None:
    core = client.CoreV1Api(api)
    kube.faults.inject("list", "pods", count=1, status=500)
    with pytest.raises(ApiException) as exc:
        core.list_namespaced_pod(namespace)
    assert exc.value.status == 500 and status_of(exc.value)["reason"] == "InternalError"
    assert core.list_namespaced_pod(namespace).items == []  # the fault is used up
    # urllib3 (under the kubernetes client) honours Retry-After on 429 by itself, as client-go does;
    # two faults leave it one retry short of the default three, so it succeeds after two waits
    kube.faults.inject("list", "pods", count=2, status=429, retry_after=1)
    started = time.monotonic()
    assert core.list_namespaced_pod(namespace).items == []
    assert time.monotonic() - started >= 2.0
    kube.faults.inject("get", "configmaps", count=1, status=429, retry_after=1)
    with client.ApiClient(kube.client_configuration()) as no_retry:
        no_retry.rest_client.pool_manager.connection_pool_kw["retries"] = False
        with pytest.raises(ApiException) as exc:
            client.CoreV1Api(no_retry).read_namespaced_config_map("any", namespace)
    assert exc.value.status == 429 and exc.value.headers["Retry-After"] == "1"
    assert status_of(exc.value)["details"]["retryAfterSeconds"] == 1


def test_unauthenticated_and_bad_tokens_get_401(kube: KubeApiServer) -> None:
    with (
        client.ApiClient(kube.client_configuration(token="not-the-token")) as bad,
        pytest.raises(ApiException) as exc,
    ):
        client.CoreV1Api(bad).list_namespace()
    assert exc.value.status == 401 and status_of(exc.value)["reason"] == "Unauthorized"


def test_a_jobs_network_policy_is_created_kept_updated_validated_and_goes_with_the_job(
    api: client.ApiClient, hpj_crd: None, namespace: str
) -> None:
    """KubeAdapter.ensure_network_policy against the sandbox: created with the server's defaults,
    unchanged when asked again, patched when the CIDRs change, refused (422) with a bad CIDR, and
    collected with its job. Stored only: the sandbox does not enforce it."""
    import copy

    from hyperpod_control.adapters.kube import KubeAdapter
    from hyperpod_control.exceptions import InvalidInputError
    from hyperpod_control.models.job import parse_job
    from hyperpod_control.services.supervision import build_network_policy

    co, net = client.CustomObjectsApi(api), client.NetworkingV1Api(api)
    container = {"name": "t", "image": "train:1"}
    obj = co.create_namespaced_custom_object(
        *HPJ[:2],
        namespace,
        HPJ[2],
        {
            "apiVersion": "sagemaker.amazonaws.com/v1",
            "kind": "HyperPodPyTorchJob",
            "metadata": {"name": "isolated"},
            "spec": {
                "nprocPerNode": "1",
                "replicaSpecs": [
                    {"name": "pod", "replicas": 2, "template": {"spec": {"containers": [container]}}}
                ],
            },
        },
    )
    job = parse_job(obj)
    adapter = KubeAdapter("sandbox", api_client=api)
    body = build_network_policy(job, ("10.0.0.0/16",))
    name = body["metadata"]["name"]
    assert adapter.ensure_network_policy(namespace, body) == "created"
    stored = api.sanitize_for_serialization(net.read_namespaced_network_policy(name, namespace))
    assert stored["spec"]["ingress"][1]["from"] == [{"ipBlock": {"cidr": "10.0.0.0/16"}}]
    assert stored["metadata"]["ownerReferences"][0]["uid"] == obj["metadata"]["uid"]
    assert adapter.ensure_network_policy(namespace, body) == "unchanged"
    assert adapter.ensure_network_policy(namespace, build_network_policy(job, ("10.1.0.0/16",))) == "updated"
    stored = api.sanitize_for_serialization(net.read_namespaced_network_policy(name, namespace))
    assert stored["spec"]["ingress"][1]["from"] == [{"ipBlock": {"cidr": "10.1.0.0/16"}}]

    # kube-apiserver's defaults and validation.
    bare = copy.deepcopy(body)
    bare["metadata"] = {"name": "bare"}
    del bare["spec"]["policyTypes"], bare["spec"]["ingress"][1]["ports"][0]["protocol"]
    created = api.sanitize_for_serialization(net.create_namespaced_network_policy(namespace, bare))
    assert created["spec"]["policyTypes"] == ["Ingress"]
    assert created["spec"]["ingress"][1]["ports"] == [{"protocol": "TCP", "port": 8080}]
    bad = copy.deepcopy(body)
    bad["metadata"] = {"name": "bad"}
    bad["spec"]["ingress"][1]["from"] = [{"ipBlock": {"cidr": "10.0.0.0"}}, {}]
    bad["spec"]["ingress"][1]["ports"] = [{"protocol": "ICMP", "port": 70000}]
    with pytest.raises(ApiException) as exc:
        net.create_namespaced_network_policy(namespace, bad)
    assert exc.value.status == 422
    causes = {c["field"] for c in status_of(exc.value)["details"]["causes"]}
    assert causes == {
        "spec.ingress[1].from[0].ipBlock.cidr",
        "spec.ingress[1].from[1]",
        "spec.ingress[1].ports[0].protocol",
        "spec.ingress[1].ports[0].port",
    }
    with pytest.raises(InvalidInputError, match="422"):
        adapter.ensure_network_policy(namespace, bad)

    co.delete_namespaced_custom_object(*HPJ[:2], namespace, HPJ[2], "isolated")
    wait_for(
        lambda: [p.metadata.name for p in net.list_namespaced_network_policy(namespace).items] == ["bare"],
        what="the job's NetworkPolicy collected with it",
    )


def test_the_adapter_lists_pods_and_nodes_in_pages_with_selectors(
    api: client.ApiClient, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """KubeAdapter.pods and .nodes follow ``continue`` until the last page (a 4,096-pod job's pods
    come 500 at a time), the label selector applied by the server."""
    from hyperpod_control.adapters.kube import KubeAdapter
    from hyperpod_control.adapters.kube import adapter as kube_module

    core = client.CoreV1Api(api)
    container = {"name": "t", "image": "train:1"}
    for i in range(5):
        labels = {"HPJob": "paged"} if i < 4 else {"HPJob": "other"}
        core.create_namespaced_pod(
            namespace,
            {"metadata": {"name": f"paged-{i}", "labels": labels}, "spec": {"containers": [container]}},
        )
    monkeypatch.setattr(kube_module, "LIST_PAGE", 3)
    adapter = KubeAdapter("sandbox", api_client=api)
    pages: list[dict] = []
    call = adapter._call

    def counted(resource, fn, *args, **kwargs):
        pages.append({k: kwargs.get(k) for k in ("limit", "_continue", "label_selector")})
        return call(resource, fn, *args, **kwargs)

    monkeypatch.setattr(adapter, "_call", counted)
    pods = adapter.pods(namespace, label_selector="HPJob=paged")
    assert sorted(p["metadata"]["name"] for p in pods) == [f"paged-{i}" for i in range(4)]
    assert [p["limit"] for p in pages] == [3, 3]
    assert pages[0]["_continue"] is None and pages[1]["_continue"]
    assert {p["label_selector"] for p in pages} == {"HPJob=paged"}
    # as upstream, a selected list's remaining count is unknown: left unset
    first = core.list_namespaced_pod(namespace, label_selector="HPJob=paged", limit=3)
    assert first.metadata._continue and first.metadata.remaining_item_count is None
    pages.clear()
    monkeypatch.setattr(kube_module, "LIST_PAGE", 1)
    assert len(adapter.nodes()) == len(NODE_IDS) == len(pages)  # the last page says no more
