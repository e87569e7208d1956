"""``KubeRuntime``: makes the sandbox API server's pods run.

    server = KubeApiServer().start()
    runtime = KubeRuntime(server, start_delay=0.0).start()   # scheduler, a kubelet per node, proxy
    ...
    runtime.stop()                                           # every pod process is gone after this
    server.stop()

It owns the scheduler (``scheduler.py``), one kubelet per Node (``kubelet.py``; nodes added
later get one, a deleted node's pods are removed as upstream's pod garbage collector does), the
pod proxy and log subresources (``proxy.py``), and the lifeline pipe every container's shim
watches, so that no pod process outlives this process even if it is SIGKILLed. While it runs,
the store deletes bound pods gracefully (the kubelets finish the deletion).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import threading
import uuid
from pathlib import Path
from typing import Any

from sandbox.kube import proxy
from sandbox.kube.apiserver import KubeApiServer
from sandbox.kube.kubelet import Kubelet, KubeletConfig, PodAddresses, PodWorker, default_base_env
from sandbox.kube.scheduler import PodScheduler
from sandbox.kube.store import ApiError

log = logging.getLogger("sandbox.kube.runtime")

#: What a node may give its pods of AWS: where AWS is and which Region (instance metadata).
NODE_AWS_ENV = frozenset({"AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION", "AWS_REGION"})


class KubeRuntime:
    def __init__(
        self,
        server: KubeApiServer,
        *,
        start_delay: float = 0.0,
        restart_backoff: float = 10.0,
        image_entrypoints: dict[str, list[str]] | None = None,
        image_paths: dict[str, list[str]] | None = None,
        workdir: str | os.PathLike[str] | None = None,
        stop_grace: float = 0.0,
        aws_env: dict[str, str] | None = None,
        pod_identity: Any = None,
    ) -> None:
        """``start_delay``: seconds each pod waits before its containers start (image pull and
        container start; a pod's ``sandbox.hyperpod.aws/start-delay-seconds`` annotation wins);
        ``restart_backoff``: crash-loop back-off base (10 s on a real kubelet);
        ``image_entrypoints``: image -> entrypoint for containers without a command;
        ``image_paths``: image -> directories first on its containers' PATH (what it carries);
        ``stop_grace``: seconds ``stop()`` gives pods between SIGTERM and SIGKILL;
        ``aws_env``: what a node gives every pod of AWS (``AWS_ENDPOINT_URL``, the Region; never
        credentials, which pods get from EKS Pod Identity only); ``pod_identity``: the nodes' Pod
        Identity Agent (``pod_identity.PodIdentityAgent``)."""
        leaked = sorted(set(aws_env or {}) - NODE_AWS_ENV)
        if leaked:
            raise ValueError(
                f"aws_env: {', '.join(leaked)} must not reach pods (allowed: {sorted(NODE_AWS_ENV)})"
            )
        self.aws_env = dict(aws_env or {})
        self.pod_identity = pod_identity
        self.server = server
        self.store = server.store
        self.stop_grace = stop_grace
        self.runtime_id = uuid.uuid4().hex
        self._own_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="sandbox-pods-"))
        self._lifeline_r, self._lifeline_w = -1, -1
        self._settings = {
            "start_delay": start_delay,
            "restart_backoff": restart_backoff,
            "image_entrypoints": dict(image_entrypoints or {}),
            "image_paths": dict(image_paths or {}),
        }
        self.addresses = PodAddresses.claim()
        self.config: KubeletConfig | None = None
        self.scheduler = PodScheduler(self.store)
        self.kubelets: dict[str, Kubelet] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._node_thread: threading.Thread | None = None
        self._previous_graceful = self.store.graceful_pods

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> KubeRuntime:
        # only this process holds the write end: the shims see end-of-file when it is gone
        self._lifeline_r, self._lifeline_w = os.pipe()
        os.set_inheritable(self._lifeline_r, False)
        if not self.addresses.claimed:  # started again after a stop
            self.addresses = PodAddresses.claim()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config = KubeletConfig(
            workdir=self.workdir,
            addresses=self.addresses,
            lifeline_fd=self._lifeline_r,
            runtime_id=self.runtime_id,
            base_env={**default_base_env(self.server.host, self.server.port), **self.aws_env},
            pod_identity=self.pod_identity,
            **self._settings,  # type: ignore[arg-type]
        )
        self.store.graceful_pods = True
        proxy.install(self.server, self)
        self.scheduler.start()
        for node in self.store.list(self.store.rt("", "nodes"), None).items:
            self._add_node(node["metadata"]["name"])
        self._stop.clear()
        self._node_thread = threading.Thread(target=self._watch_nodes, name="kube-runtime-nodes", daemon=True)
        self._node_thread.start()
        return self

    def stop(self) -> None:
        """Stop scheduling and every pod; nothing this runtime started is left running."""
        self._stop.set()
        self.scheduler.stop()
        if self._node_thread is not None:
            self._node_thread.join(timeout=5)
            self._node_thread = None
        with self._lock:
            kubelets = list(self.kubelets.values())
            self.kubelets.clear()
        threads = [threading.Thread(target=k.stop, args=(self.stop_grace,), daemon=True) for k in kubelets]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=self.stop_grace + 30)
        proxy.uninstall(self.server)
        self.store.graceful_pods = self._previous_graceful
        for fd in (self._lifeline_w, self._lifeline_r):
            if fd >= 0:
                # closing the write end is what tells any shim still alive to kill its container
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._lifeline_r = self._lifeline_w = -1
        self.addresses.release_claim()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> KubeRuntime:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- nodes ------------------------------------------------------------------------------------

    def _add_node(self, name: str) -> Kubelet:
        assert self.config is not None, "runtime not started"
        with self._lock:
            kubelet = self.kubelets.get(name)
            if kubelet is None:
                kubelet = Kubelet(self.store, name, self.config).start()
                self.kubelets[name] = kubelet
            return kubelet

    def _remove_node(self, name: str) -> None:
        with self._lock:
            kubelet = self.kubelets.pop(name, None)
        if kubelet is not None:
            kubelet.fail()  # the instance is gone, and every process with it
        # upstream's pod GC: pods bound to a node that no longer exists are deleted at once
        rt = self.store.rt("", "pods")
        for pod in self.store.list(rt, None).items:
            if (pod.get("spec") or {}).get("nodeName") == name:
                with contextlib.suppress(ApiError):
                    self.store.delete(
                        rt, pod["metadata"]["namespace"], pod["metadata"]["name"], {"gracePeriodSeconds": 0}
                    )

    def _watch_nodes(self) -> None:
        rt = self.store.rt("", "nodes")
        rv = self.store.resource_version
        while not self._stop.is_set():
            try:
                for type_, node in self.store.watch(rt, None, (), (), rv, self._stop):
                    rv = node["metadata"]["resourceVersion"]
                    name = node["metadata"]["name"]
                    if type_ == "ADDED":
                        self._add_node(name)
                    elif type_ == "DELETED":
                        self._remove_node(name)
            except ApiError:
                rv = self.store.resource_version

    def kubelet(self, node: str) -> Kubelet:
        with self._lock:
            kubelet = self.kubelets.get(node)
        if (
            kubelet is None
            and self.config is not None
            and not self._stop.is_set()
            and self.store.find(self.store.rt("", "nodes"), None, node) is not None
        ):
            # a Node just created: the node watch may not have started its kubelet yet, and a
            # fault (or a repair mirrored from SageMaker) can come before it does
            kubelet = self._add_node(node)
        if kubelet is None:
            raise LookupError(f"no node {node!r} in the sandbox cluster (nodes: {sorted(self.kubelets)})")
        return kubelet

    # -- pods -------------------------------------------------------------------------------------

    def pod_worker(self, namespace: str, name: str) -> PodWorker:
        pod = self.store.get(self.store.rt("", "pods"), namespace, name)
        node = (pod.get("spec") or {}).get("nodeName")
        if not node:
            raise LookupError(f"pod {namespace}/{name} is not scheduled")
        return self.kubelet(node).worker(namespace, name)

    def container_log(self, namespace: str, name: str, container: str, previous: bool = False) -> str | None:
        """A container's output so far (None before it first started)."""
        try:
            worker = self.pod_worker(namespace, name)
        except LookupError:
            return None
        path = worker.dir / (f"{container}.previous.log" if previous else f"{container}.log")
        try:
            return path.read_text(errors="replace")
        except FileNotFoundError:
            return None
