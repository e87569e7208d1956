"""The ``KubeAdapter``: one EKS cluster's Kubernetes API, reached with an EKS token (auth.py), its
failures mapped to the project's exceptions (errors.py). Reads return the API's JSON as plain dicts
(camelCase keys, as the server sends them); writes create, or replace when the stored object
differs (apply.py), or delete.

The ``kubernetes`` package is imported on first use only (it costs a cold start about half a
second; handlers that never reach a cluster never pay for it), and tests inject an ``ApiClient`` of
their own.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

from hyperpod_control.adapters.kube.apply import contains, differs, merged_for_replace
from hyperpod_control.adapters.kube.auth import TOKEN_LIFETIME_S, ca_file, eks_token
from hyperpod_control.adapters.kube.errors import is_connection_error, map_api_exception
from hyperpod_control.deadline import Deadline
from hyperpod_control.exceptions import (
    ControlPlaneError,
    InvalidInputError,
    ResourceNotFoundError,
    VersionConflictError,
    WatchExpiredError,
)
from hyperpod_control.models.names import JOB_GROUP, JOB_PLURAL, JOB_VERSION

REQUEST_TIMEOUT = (5, 20)  # connect, read: a private-only endpoint must not hang a Lambda
CONNECTION_POOL_SIZE = 32
#: Items per page of a list (kubectl's default chunk size).
LIST_PAGE = 500


CLIENT_RETRIES = 3


def _no_timeout_retries() -> Any:
    """The client's retries without a retry of a read that timed out (connect: once)."""
    from urllib3.util.retry import Retry

    return Retry(total=CLIENT_RETRIES, connect=1, read=0, redirect=0, status=0, other=0, backoff_factor=0.2)


class KubeAdapter:
    """One EKS cluster's Kubernetes API: the reads preflight and the install workflow make, and the
    install workflow's writes (create, or replace when the stored object differs; delete).

    ``cluster`` is an EKS DescribeCluster ``cluster`` object already read; without it the cluster is
    described through ``eks`` on first use. ``api_client`` replaces the client built from it (tests).
    """

    def __init__(
        self,
        cluster_name: str,
        *,
        eks: Any = None,
        cluster: dict[str, Any] | None = None,
        region: str | None = None,
        session: Any = None,
        api_client: Any = None,
        deadline: Deadline | None = None,
        retry_timeouts: bool = True,
    ) -> None:
        self.cluster_name = cluster_name
        #: Every request's timeout is bounded by it (the supervisor passes its invocation's).
        self.deadline = deadline or Deadline()
        #: Whether the client retries a request that timed out. The supervisor says no: a timeout
        #: is an answer there (a dead node's connections hang), and retrying it inside the agent
        #: client's and the state machine's retries would multiply the wait. Fast failures (a
        #: refused connection, an API server's 429/5xx with Retry-After on reads) are retried.
        self.retry_timeouts = retry_timeouts
        self._eks = eks
        self._cluster = cluster
        arn_region = ((cluster or {}).get("arn") or "::::").split(":")[3]
        self._region = region or arn_region or None
        self._session = session
        self._api_client = api_client
        self._injected = api_client is not None
        self._token_at = 0.0
        self._lock = threading.Lock()

    @property
    def eks(self) -> Any:
        if self._eks is None:
            from hyperpod_control.adapters.eks import EksAdapter

            self._eks = EksAdapter()
        return self._eks

    @property
    def api_client(self) -> Any:
        with self._lock:
            if self._api_client is not None and (
                self._injected or time.monotonic() - self._token_at < TOKEN_LIFETIME_S
            ):
                return self._api_client
            if self._cluster is None:
                self._cluster = self.eks.describe_cluster(self.cluster_name)
            endpoint = self._cluster.get("endpoint")
            ca_data = (self._cluster.get("certificateAuthority") or {}).get("data")
            if not (endpoint and ca_data and self.cluster_name):
                raise InvalidInputError(
                    f"the EKS cluster {self.cluster_name} reports no endpoint or certificate authority yet.",
                    remedy="wait until the EKS cluster is ACTIVE.",
                )
            from kubernetes import client  # deferred: most handlers never talk to Kubernetes

            cfg = client.Configuration()
            cfg.host = endpoint
            cfg.ssl_ca_cert = ca_file(ca_data)
            cfg.verify_ssl = True
            cfg.api_key = {"authorization": eks_token(self.cluster_name, self._region, self._session)}
            cfg.api_key_prefix = {"authorization": "Bearer"}
            # A workflow step retries on its own (Step Functions Retry): few retries here, but
            # reads honour an API server's Retry-After on 429/5xx as client-go does.
            cfg.retries = CLIENT_RETRIES if self.retry_timeouts else _no_timeout_retries()
            cfg.client_go_retries = True
            # The supervisor talks to every agent of a job at once from a thread pool
            # (AGENT_POOL_SIZE); one kept-alive connection per thread, none opened twice.
            cfg.connection_pool_maxsize = CONNECTION_POOL_SIZE
            self._api_client = client.ApiClient(cfg)
            self._token_at = time.monotonic()
            return self._api_client

    def close(self) -> None:
        if self._api_client is not None:
            self._api_client.close()

    def __enter__(self) -> KubeAdapter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _api(self, name: str) -> Any:
        from kubernetes import client

        return getattr(client, name)(self.api_client)

    def _call(
        self, resource: str, fn: Any, *args: Any, missing_ok: bool = False, raw: bool = False, **kwargs: Any
    ) -> Any:
        """``fn(*args, **kwargs)`` with a request timeout, its result as plain JSON; a 404 is None
        when ``missing_ok``, every other failure a project exception. ``raw`` reads the answer's
        JSON as sent, skipping the client's typed models: for big lists (a 512-pod job's pods) the
        models cost seconds."""
        timeout = self.deadline.bounded(REQUEST_TIMEOUT, resource)
        try:
            if raw:
                response = fn(*args, _request_timeout=timeout, _preload_content=False, **kwargs)
                data = response.data if hasattr(response, "data") else response.read()
                return json.loads(data) if data else None
            result = fn(*args, _request_timeout=timeout, **kwargs)
        except ControlPlaneError:
            raise
        except Exception as exc:
            from kubernetes.client.exceptions import ApiException

            # ApiException has subclasses per status (NotFoundException, ...) in recent clients.
            if isinstance(exc, ApiException) or is_connection_error(exc):
                mapped = map_api_exception(exc, resource=resource)
                if missing_ok and isinstance(mapped, ResourceNotFoundError):
                    return None
                raise mapped from exc
            raise
        return self.api_client.sanitize_for_serialization(result) if result is not None else None

    def _items(self, found: Any) -> list[dict[str, Any]]:
        return list((found or {}).get("items") or [])

    # -- reads ---------------------------------------------------------------------------------

    def crd_names(self) -> list[str]:
        ext = self._api("ApiextensionsV1Api")
        found = self._call("CustomResourceDefinitions", ext.list_custom_resource_definition)
        return [item["metadata"]["name"] for item in self._items(found)]

    def crd(self, name: str) -> dict[str, Any] | None:
        ext = self._api("ApiextensionsV1Api")
        return self._call(f"CRD {name}", ext.read_custom_resource_definition, name, missing_ok=True)

    def deployments(self, namespace: str | None = None, label_selector: str = "") -> list[dict[str, Any]]:
        """Deployments of ``namespace`` (every namespace when None) matching ``label_selector``."""
        apps = self._api("AppsV1Api")
        if namespace:
            found = self._call(
                f"Deployments in {namespace}",
                apps.list_namespaced_deployment,
                namespace,
                label_selector=label_selector,
            )
        else:
            found = self._call(
                "Deployments", apps.list_deployment_for_all_namespaces, label_selector=label_selector
            )
        return self._items(found)

    def daemon_set(self, namespace: str, name: str) -> dict[str, Any] | None:
        apps = self._api("AppsV1Api")
        return self._call(
            f"DaemonSet {namespace}/{name}", apps.read_namespaced_daemon_set, name, namespace, missing_ok=True
        )

    def config_maps(self, namespace: str) -> list[dict[str, Any]]:
        core = self._api("CoreV1Api")
        found = self._call(
            f"ConfigMaps in {namespace}", core.list_namespaced_config_map, namespace, missing_ok=True
        )
        return self._items(found)

    def persistent_volumes(self) -> list[dict[str, Any]]:
        core = self._api("CoreV1Api")
        return self._items(self._call("PersistentVolumes", core.list_persistent_volume))

    def custom_objects(self, group: str, version: str, plural: str) -> list[dict[str, Any]]:
        """Every object of a custom kind in every namespace; [] when the kind is not served."""
        api = self._api("CustomObjectsApi")
        found = self._call(
            f"{plural}.{group}", api.list_cluster_custom_object, group, version, plural, missing_ok=True
        )
        return self._items(found)

    def custom_object(
        self, group: str, version: str, plural: str, namespace: str, name: str
    ) -> dict[str, Any] | None:
        api = self._api("CustomObjectsApi")
        return self._call(
            f"{plural}.{group} {namespace}/{name}",
            api.get_namespaced_custom_object,
            group,
            version,
            namespace,
            plural,
            name,
            missing_ok=True,
        )

    def create_custom_object(
        self, group: str, version: str, plural: str, namespace: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        api = self._api("CustomObjectsApi")
        name = body["metadata"]["name"]
        return self._call(
            f"{plural}.{group} {namespace}/{name}",
            api.create_namespaced_custom_object,
            group,
            version,
            namespace,
            plural,
            body,
        )

    def delete_custom_object(self, group: str, version: str, plural: str, namespace: str, name: str) -> bool:
        """Delete one custom object; False when it was already gone."""
        api = self._api("CustomObjectsApi")
        found = self._call(
            f"{plural}.{group} {namespace}/{name}",
            api.delete_namespaced_custom_object,
            group,
            version,
            namespace,
            plural,
            name,
            missing_ok=True,
        )
        return found is not None

    def list_jobs(self) -> tuple[list[dict[str, Any]], str | None]:
        """Every HyperPodPyTorchJob and the list's resourceVersion (where a watch starts)."""
        custom = self._api("CustomObjectsApi")
        found = self._call(
            "HyperPodPyTorchJobs",
            custom.list_cluster_custom_object,
            JOB_GROUP,
            JOB_VERSION,
            JOB_PLURAL,
            raw=True,
        )
        return self._items(found), ((found or {}).get("metadata") or {}).get("resourceVersion")

    def watch_jobs(self, resource_version: str, seconds: int) -> Iterator[tuple[str, dict[str, Any]]]:
        """(type, object) of each change to a HyperPodPyTorchJob after ``resource_version``, for up
        to ``seconds`` (the server ends the watch then); BOOKMARK events carry only a newer
        resourceVersion. A version the server no longer has raises ``WatchExpiredError``."""
        from kubernetes import watch
        from kubernetes.client.exceptions import ApiException

        custom = self._api("CustomObjectsApi")
        timeout = self.deadline.bounded((REQUEST_TIMEOUT[0], seconds + 10), "HyperPodPyTorchJobs watch")
        stream = watch.Watch().stream(
            custom.list_cluster_custom_object,
            JOB_GROUP,
            JOB_VERSION,
            JOB_PLURAL,
            resource_version=resource_version,
            timeout_seconds=seconds,
            allow_watch_bookmarks=True,
            _request_timeout=timeout,
        )
        try:
            for event in stream:
                yield event["type"], event["raw_object"]
        except ApiException as exc:
            if exc.status == 410:
                raise WatchExpiredError(f"resourceVersion {resource_version} expired: list again.") from exc
            raise map_api_exception(exc, resource="HyperPodPyTorchJobs watch") from exc
        except ControlPlaneError:
            raise
        except Exception as exc:
            if is_connection_error(exc):
                raise map_api_exception(exc, resource="HyperPodPyTorchJobs watch") from exc
            raise

    def nodes(self, label_selector: str = "") -> list[dict[str, Any]]:
        """Every Node (the supervisor reads their readiness, taints and health labels each round)."""
        core = self._api("CoreV1Api")
        return self._pages("Nodes", core.list_node, label_selector=label_selector)

    def _pages(self, resource: str, fn: Any, *args: Any, **kwargs: Any) -> list[dict[str, Any]]:
        """Every item of a list, ``LIST_PAGE`` at a time (``limit``/``continue``, as kubectl lists):
        the API server serves a 4,096-pod job's list in pages instead of one 10 MB answer built in
        its memory, and each page's request is bounded by the deadline on its own."""
        items: list[dict[str, Any]] = []
        token = None
        while True:
            page = self._call(resource, fn, *args, raw=True, limit=LIST_PAGE, _continue=token, **kwargs)
            items.extend(self._items(page))
            token = ((page or {}).get("metadata") or {}).get("continue")
            if not token:
                return items

    def node(self, name: str) -> dict[str, Any] | None:
        """One Node; None when the cluster has no such node (a replaced instance's is deleted)."""
        core = self._api("CoreV1Api")
        return self._call(f"Node {name}", core.read_node, name, missing_ok=True)

    # -- node marks (node_health: cordon, taint, label) ------------------------------------------

    def patch_node(self, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        """A JSON merge patch (RFC 7386) of one Node: lists (taints) are replaced whole, ``None``
        removes a key. Put ``metadata.resourceVersion`` in the patch to make it conditional: a
        concurrent writer then makes it fail with ``VersionConflictError`` (re-read, patch again)."""
        core = self._api("CoreV1Api")
        return self._call(
            f"Node {name}", core.patch_node, name, patch, _content_type="application/merge-patch+json"
        )

    # -- writes (create, or replace when the stored object differs) ------------------------------

    def apply_crd(self, body: dict[str, Any]) -> str:
        ext = self._api("ApiextensionsV1Api")
        name = body["metadata"]["name"]
        return self._apply(
            f"CRD {name}",
            ext.read_custom_resource_definition,
            ext.create_custom_resource_definition,
            ext.replace_custom_resource_definition,
            body,
        )

    def apply_cluster_role(self, body: dict[str, Any]) -> str:
        rbac = self._api("RbacAuthorizationV1Api")
        return self._apply(
            f"ClusterRole {body['metadata']['name']}",
            rbac.read_cluster_role,
            rbac.create_cluster_role,
            rbac.replace_cluster_role,
            body,
        )

    def apply_cluster_role_binding(self, body: dict[str, Any]) -> str:
        rbac = self._api("RbacAuthorizationV1Api")
        return self._apply(
            f"ClusterRoleBinding {body['metadata']['name']}",
            rbac.read_cluster_role_binding,
            rbac.create_cluster_role_binding,
            rbac.replace_cluster_role_binding,
            body,
        )

    def _apply(self, resource: str, read: Any, create: Any, replace: Any, body: dict[str, Any]) -> str:
        """``read(name)``, then ``create(body)`` or ``replace(name, body)``: created/unchanged/updated."""
        name = body["metadata"]["name"]
        current = self._call(resource, read, name, missing_ok=True)
        if current is None:
            self._call(resource, create, body)
            return "created"
        if not differs(current, body):
            return "unchanged"
        self._call(resource, replace, name, merged_for_replace(current, body))
        return "updated"

    def delete_crd(self, name: str) -> bool:
        ext = self._api("ApiextensionsV1Api")
        return self._delete(f"CRD {name}", ext.delete_custom_resource_definition, name)

    def delete_cluster_role(self, name: str) -> bool:
        rbac = self._api("RbacAuthorizationV1Api")
        return self._delete(f"ClusterRole {name}", rbac.delete_cluster_role, name)

    def delete_cluster_role_binding(self, name: str) -> bool:
        rbac = self._api("RbacAuthorizationV1Api")
        return self._delete(f"ClusterRoleBinding {name}", rbac.delete_cluster_role_binding, name)

    def _delete(self, resource: str, delete: Any, name: str) -> bool:
        """True when the object was there to delete."""
        return self._call(resource, delete, name, missing_ok=True) is not None

    # -- pods, events and job status (the serverless supervisor) ---------------------------------

    def pods(
        self, namespace: str | None = None, *, label_selector: str = "", field_selector: str = ""
    ) -> list[dict[str, Any]]:
        """Pods of ``namespace`` (every namespace when None) matching the selectors, in pages."""
        core = self._api("CoreV1Api")
        kwargs = {"label_selector": label_selector, "field_selector": field_selector}
        if namespace:
            return self._pages(f"Pods in {namespace}", core.list_namespaced_pod, namespace, **kwargs)
        return self._pages("Pods", core.list_pod_for_all_namespaces, **kwargs)

    def create_pod(self, namespace: str, body: dict[str, Any]) -> dict[str, Any] | None:
        """Create a pod; None when one of that name exists already (a retried step)."""
        core = self._api("CoreV1Api")
        name = body["metadata"]["name"]
        try:
            return self._call(f"Pod {namespace}/{name}", core.create_namespaced_pod, namespace, body)
        except VersionConflictError:  # 409 AlreadyExists
            return None

    def ensure_network_policy(self, namespace: str, body: dict[str, Any]) -> str:
        """Create a NetworkPolicy, or bring the one of that name to ``body`` (a retried step, a
        changed configuration): created/unchanged/updated. A JSON merge patch, so only get, create
        and patch are needed (the control plane's ClusterRole grants those)."""
        net = self._api("NetworkingV1Api")
        name = body["metadata"]["name"]
        resource = f"NetworkPolicy {namespace}/{name}"
        try:
            self._call(resource, net.create_namespaced_network_policy, namespace, body)
            return "created"
        except VersionConflictError:  # 409 AlreadyExists
            pass
        current = self._call(resource, net.read_namespaced_network_policy, name, namespace, missing_ok=True)
        if current is None:  # deleted since the 409 (its owner's garbage collection)
            self._call(resource, net.create_namespaced_network_policy, namespace, body)
            return "created"
        # The owner counts too: a policy of that name left by a deleted job must become this job's.
        owners = (current.get("metadata") or {}).get("ownerReferences")
        if not differs(current, body) and contains(owners, body["metadata"]["ownerReferences"]):
            return "unchanged"
        patch = {
            "metadata": {k: body["metadata"][k] for k in ("labels", "ownerReferences")},
            "spec": body["spec"],
        }
        self._call(
            resource,
            net.patch_namespaced_network_policy,
            name,
            namespace,
            patch,
            _content_type="application/merge-patch+json",
        )
        return "updated"

    def delete_pod(self, namespace: str, name: str, grace_period_seconds: int | None = None) -> bool:
        """Delete one pod; False when it was already gone."""
        core = self._api("CoreV1Api")
        kwargs = {} if grace_period_seconds is None else {"grace_period_seconds": grace_period_seconds}
        found = self._call(
            f"Pod {namespace}/{name}", core.delete_namespaced_pod, name, namespace, missing_ok=True, **kwargs
        )
        return found is not None

    def patch_custom_object_status(
        self,
        group: str,
        version: str,
        plural: str,
        namespace: str,
        name: str,
        status: dict[str, Any],
        resource_version: str | None = None,
    ) -> dict[str, Any] | None:
        """A JSON merge patch of one custom object's status subresource; None when the object is gone.
        With ``resource_version``, only if the object is still at it (else ``VersionConflictError``):
        a merge patch replaces a list such as ``conditions`` whole, so a writer whose read is stale
        would put back what another writer changed since."""
        api = self._api("CustomObjectsApi")
        body: dict[str, Any] = {"status": status}
        if resource_version:
            body["metadata"] = {"resourceVersion": resource_version}
        return self._call(
            f"{plural}.{group} {namespace}/{name} status",
            api.patch_namespaced_custom_object_status,
            group,
            version,
            namespace,
            plural,
            name,
            body,
            missing_ok=True,
            _content_type="application/merge-patch+json",
        )

    def create_event(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        """A core/v1 Event (what ``kubectl describe`` shows under Events)."""
        core = self._api("CoreV1Api")
        return self._call(f"Event in {namespace}", core.create_namespaced_event, namespace, body)

    def pod_proxy(
        self,
        namespace: str,
        pod: str,
        port: int,
        method: str,
        path: str,
        body: Any = None,
        *,
        timeout: tuple[float, float] = REQUEST_TIMEOUT,
    ) -> Any:
        """``method`` ``path`` on the pod's ``port`` through the API server's pod proxy; the answer's
        JSON (None when empty). The generated client's proxy calls take no request body, so this
        goes through ``ApiClient.call_api`` with the same authentication (kubernetes >= 37's API).
        ``body`` may be JSON already serialised (bytes): sent unchanged."""
        resource = f"Pod {namespace}/{pod}:{port}{path}"
        timeout = self.deadline.bounded(timeout, resource)
        api = self.api_client
        try:
            method_, url, headers, payload, _ = api.param_serialize(
                method=method,
                resource_path=f"/api/v1/namespaces/{namespace}/pods/{pod}:{port}/proxy{path}",
                header_params={"Content-Type": "application/json", "Accept": "application/json"},
                body=None if isinstance(body, bytes) else body,
                auth_settings=["BearerToken"],
            )
            if isinstance(body, bytes):
                # Already JSON (a /start shares its serialised rank table with every agent's):
                # the generated client would json.dumps it again, so it goes out as it is, on the
                # client's own connection pool and with its headers (what call_api does for a POST).
                import urllib3

                response = api.rest_client.pool_manager.request(
                    method_,
                    url,
                    body=body,
                    headers=headers,
                    timeout=urllib3.Timeout(connect=timeout[0], read=timeout[1]),
                    preload_content=False,
                )
                raw = response.data
            else:
                response = api.call_api(
                    method_, url, header_params=headers, body=payload, _request_timeout=timeout
                )
                raw = response.read()
            if response.status >= 400:
                from kubernetes.client.exceptions import ApiException

                raise ApiException(
                    status=response.status, reason=response.reason, body=raw.decode(errors="replace")
                )
        except ControlPlaneError:
            raise
        except Exception as exc:
            from kubernetes.client.exceptions import ApiException

            if isinstance(exc, ApiException) or is_connection_error(exc):
                mapped = map_api_exception(exc, resource=resource)
                detail = (getattr(exc, "body", None) or "")[:500]
                if detail and isinstance(mapped, InvalidInputError):
                    # The agent's own 422 detail names the refused field: keep it in the message.
                    mapped = InvalidInputError(f"{mapped.message} {detail}")
                raise mapped from exc
            raise
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            return raw.decode(errors="replace")
