"""``AddonMirror``: what the training-operator EKS add-on installs, in the sandbox API server.

    mirror = AddonMirror(server.store, "sandbox-eks", region="us-west-2").start()
    ...
    mirror.stop()

When the emulated add-on ``amazon-sagemaker-hyperpod-training-operator``
(``sandbox/aws_ext/eks_addons.py``) is installed, the API server holds what the real add-on
puts in the cluster (docs/hyperpod-contract.md, "The training-operator add-on"):

- the namespace (``aws-hyperpod``, or the add-on's ``namespaceConfig``);
- the service account ``hp-training-operator-controller-manager`` (the one Pod Identity
  associations name);
- the controller Deployment ``hp-training-operator-hp-training-controller-manager``, labelled
  ``hp-training-control-plane`` (the selector the HyperPod CLI finds the operator's pods by), its
  resources and nodeSelector from the add-on's configuration values (defaults from the schema);
  its status says 1 replica ready and available (``Available`` True). No pod runs for it: the
  sandbox has no Deployment controller and the operator's job logic is not emulated;
- the HyperPodPyTorchJob CRD (sagemaker.amazonaws.com/v1 ``hyperpodpytorchjobs``, from
  ``sandbox.kube.cluster.hyperpod_pytorch_job_crd``), which the store marks Established, so
  ``CustomObjectsApi`` serves the kind.

Add-on status -> cluster: ACTIVE, UPDATING, UPDATE_FAILED: installed and available; DEGRADED:
installed, the Deployment unavailable (0 ready, ``Available`` False, as the add-on's
InsufficientNumberOfReplicas health issue says); CREATING, CREATE_FAILED: nothing yet; DELETING
or gone: removed (the CRD's deletion removes every HyperPodPyTorchJob, as upstream's does).
Only objects the mirror created (label ``sandbox.hyperpod.aws/addon``) are removed: a CRD or
namespace that was there before the add-on (``ClusterSeed(hyperpod_job_crd=True)``) stays.
``delete_addon --preserve`` is not modelled (the emulation does not record it).

Add-on transitions are applied when the add-on is read, so the mirror reads it every ``poll``
wall seconds, from moto's backend directly (``eks_addons.read_addon``): through the EKS API it
would consume faults a test armed with ``aws_ext.api_faults`` for the code under test. It writes
only when what should be installed changes, and retries a write the store refused (a namespace
still Terminating after a quick delete and re-create) on the next poll.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import threading
from dataclasses import dataclass
from typing import Any

from moto.core import DEFAULT_ACCOUNT_ID

from sandbox.aws_ext import catalog, eks_addons
from sandbox.kube.cluster import hyperpod_pytorch_job_crd
from sandbox.kube.store import ApiError, Store

log = logging.getLogger("sandbox.kube.addon_mirror")

OWNER_LABEL = "sandbox.hyperpod.aws/addon"
CONTROLLER = "hp-training-operator-hp-training-controller-manager"
CONTROL_PLANE_LABEL = "hp-training-control-plane"
INSTALLED = ("ACTIVE", "UPDATING", "UPDATE_FAILED", "DEGRADED")
DEFAULT_REQUESTS = {"cpu": "1", "memory": "2Gi"}
DEFAULT_LIMITS = {"cpu": "2", "memory": "4Gi"}
DEFAULT_NODE_SELECTOR = {"sagemaker.amazonaws.com/compute-type": "HyperPod"}


@dataclass(frozen=True)
class Installed:
    """What the cluster should hold for an installed add-on."""

    namespace: str
    version: str
    available: bool
    configuration: str | None


def desired(addon: dict[str, Any] | None) -> Installed | None:
    """Pure: the add-on as ``describe_addon`` returns it (None: gone) -> what should be installed."""
    if addon is None or addon.get("status") not in INSTALLED:
        return None
    return Installed(
        namespace=(addon.get("namespaceConfig") or {}).get("namespace") or catalog.OPERATOR_NAMESPACE,
        version=addon.get("addonVersion", ""),
        available=addon["status"] != "DEGRADED",
        configuration=addon.get("configurationValues") or None,
    )


def controller_deployment(installed: Installed, addon_name: str = catalog.TRAINING_OPERATOR) -> dict:
    """Pure: the controller Deployment (spec only) for ``installed``."""
    values: dict[str, Any] = {}
    if installed.configuration:
        with contextlib.suppress(catalog.ConfigurationError, ValueError):
            parsed = catalog.parse_configuration(installed.configuration)
            values = (parsed or {}).get("hpTrainingControllerManager") or {}
    resources = (values.get("manager") or {}).get("resources") or {}
    selector = {CONTROL_PLANE_LABEL: "controller-manager", "app.kubernetes.io/name": "hp-training-operator"}
    labels = {**selector, OWNER_LABEL: addon_name, "app.kubernetes.io/version": installed.version}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": CONTROLLER, "namespace": installed.namespace, "labels": labels},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": selector},
            "template": {
                "metadata": {"labels": selector},
                "spec": {
                    "serviceAccountName": catalog.OPERATOR_SERVICE_ACCOUNT,
                    "nodeSelector": {str(k): str(v) for k, v in (values.get("nodeSelector") or {}).items()}
                    or dict(DEFAULT_NODE_SELECTOR),
                    "containers": [
                        {
                            "name": "manager",
                            "image": f"sandbox/hp-training-operator:{installed.version}",
                            "resources": {
                                "requests": {**DEFAULT_REQUESTS, **_quantities(resources.get("requests"))},
                                "limits": {**DEFAULT_LIMITS, **_quantities(resources.get("limits"))},
                            },
                        }
                    ],
                },
            },
        },
    }


def _quantities(pair: Any) -> dict[str, str]:
    return {k: str(v) for k, v in (pair or {}).items() if k in ("cpu", "memory")}


def deployment_status(generation: int, available: bool) -> dict:
    """Pure: a one-replica Deployment's status, available or not (no pod behind either)."""
    if available:
        counts = {"replicas": 1, "readyReplicas": 1, "availableReplicas": 1, "updatedReplicas": 1}
        condition = ("True", "MinimumReplicasAvailable", "Deployment has minimum availability.")
    else:
        counts = {"replicas": 1, "updatedReplicas": 1, "unavailableReplicas": 1}
        condition = ("False", "MinimumReplicasUnavailable", "Deployment does not have minimum availability.")
    return {
        "observedGeneration": generation,
        **counts,
        "conditions": [
            {"type": "Available", "status": condition[0], "reason": condition[1], "message": condition[2]},
            {
                "type": "Progressing",
                "status": "True",
                "reason": "NewReplicaSetAvailable",
                "message": f'ReplicaSet "{CONTROLLER}" has successfully progressed.',
            },
        ],
    }


class AddonMirror:
    """Keep ``store`` in line with the training-operator add-on of EKS cluster ``cluster_name``."""

    def __init__(
        self,
        store: Store,
        cluster_name: str,
        *,
        region: str = "us-west-2",
        account_id: str = DEFAULT_ACCOUNT_ID,
        addon_name: str = catalog.TRAINING_OPERATOR,
        poll: float = 0.05,
    ) -> None:
        self.store = store
        self.cluster_name = cluster_name
        self.region = region
        self.account_id = account_id
        self.addon_name = addon_name
        self.poll = poll
        #: what the store holds now (None: nothing of the add-on's)
        self.applied: Installed | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self, background: bool = True) -> AddonMirror:
        """Apply the add-on's present state, then follow it in a thread (``background=False``:
        only when ``sync()`` is called)."""
        self.sync()
        if background:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="kube-addon-mirror", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def __enter__(self) -> AddonMirror:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        while not self._stop.wait(self.poll):
            try:
                self.sync()
            except Exception:  # keep following the add-on; the next poll tries again
                log.exception("add-on mirror for %s/%s", self.cluster_name, self.addon_name)

    def sync(self) -> None:
        """Read the add-on (its due transitions happen now) and bring the store in line."""
        addon = eks_addons.read_addon(
            self.cluster_name, self.addon_name, region=self.region, account_id=self.account_id
        )
        wanted = desired(addon)
        with self._lock:
            if wanted == self.applied:
                return
            try:
                if wanted is None:
                    self._remove()
                else:
                    if self.applied is not None and self.applied.namespace != wanted.namespace:
                        self._remove()
                    self._install(wanted)
            except ApiError as exc:
                log.debug("add-on mirror: store refused a write, retrying on the next poll: %s", exc)
                return
            self.applied = wanted

    # -- store writes ---------------------------------------------------------------------------

    def _labels(self) -> dict[str, str]:
        return {OWNER_LABEL: self.addon_name}

    def _ensure(self, group: str, plural: str, namespace: str | None, body: dict) -> dict:
        rt = self.store.rt(group, plural)
        try:
            return self.store.create(rt, namespace, body)
        except ApiError as exc:
            if exc.code != 409:
                raise
        current = self.store.get(rt, namespace, body["metadata"]["name"])
        if current["metadata"].get("deletionTimestamp"):
            # going away (a delete moments ago): create it again once it is gone
            raise ApiError(409, "AlreadyExists", f"{plural} {body['metadata']['name']} is being deleted")
        return current

    def _install(self, wanted: Installed) -> None:
        ns = wanted.namespace
        self._ensure("", "namespaces", None, {"metadata": {"name": ns, "labels": self._labels()}})
        self._ensure(
            "",
            "serviceaccounts",
            ns,
            {
                "metadata": {
                    "name": catalog.OPERATOR_SERVICE_ACCOUNT,
                    "namespace": ns,
                    "labels": self._labels(),
                }
            },
        )
        crd = hyperpod_pytorch_job_crd()
        crd["metadata"]["labels"] = {**crd["metadata"].get("labels", {}), **self._labels()}
        self._ensure("apiextensions.k8s.io", "customresourcedefinitions", None, crd)

        rt = self.store.rt("apps", "deployments")
        body = controller_deployment(wanted, self.addon_name)
        current = self._ensure("apps", "deployments", ns, copy.deepcopy(body))

        def respec(obj: dict) -> dict:
            obj["metadata"]["labels"] = body["metadata"]["labels"]
            obj["spec"] = {**obj.get("spec", {}), **body["spec"]}
            return obj

        if current["spec"].get("template") != body["spec"]["template"]:
            current = self.store.patch(rt, ns, CONTROLLER, respec)
        generation = current["metadata"].get("generation", 1)

        def status(obj: dict) -> dict:
            obj["status"] = deployment_status(generation, wanted.available)
            return obj

        self.store.patch(rt, ns, CONTROLLER, status, "status")

    def _remove(self) -> None:
        ns = self.applied.namespace if self.applied is not None else catalog.OPERATOR_NAMESPACE
        for group, plural, namespace, name in (
            # the CRD first: its deletion removes every HyperPodPyTorchJob, in any namespace
            (
                "apiextensions.k8s.io",
                "customresourcedefinitions",
                None,
                "hyperpodpytorchjobs.sagemaker.amazonaws.com",
            ),
            ("apps", "deployments", ns, CONTROLLER),
            ("", "serviceaccounts", ns, catalog.OPERATOR_SERVICE_ACCOUNT),
            ("", "namespaces", None, ns),
        ):
            rt = self.store.rt(group, plural)
            obj = self.store.find(rt, namespace, name)
            if obj is None or (obj["metadata"].get("labels") or {}).get(OWNER_LABEL) != self.addon_name:
                continue  # not there, or not the add-on's: someone else installed it
            with contextlib.suppress(ApiError):
                self.store.delete(rt, namespace, name)
