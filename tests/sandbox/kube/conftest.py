"""Fixtures for the sandbox API server tests: one server per module, clients verifying its CA."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sandbox.kube import KubeApiServer, hyperpod_node, seed_cluster
from sandbox.kube.cluster import add_node

NODE_IDS = ["i-0aaaaaaaaaaaaaaa1", "i-0aaaaaaaaaaaaaaa2"]


@pytest.fixture(scope="module")
def kube() -> Iterator[KubeApiServer]:
    server = KubeApiServer().start()
    for instance_id in NODE_IDS:
        add_node(server.store, hyperpod_node(instance_id, "ml.g5.8xlarge"))
    seed_cluster(server.store)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def api(kube: KubeApiServer) -> Iterator[object]:
    from kubernetes import client

    with client.ApiClient(kube.client_configuration()) as api_client:
        yield api_client


@pytest.fixture(scope="module")
def kubectl(
    kube: KubeApiServer, tmp_path_factory: pytest.TempPathFactory
) -> Callable[..., subprocess.CompletedProcess]:
    from sandbox.kube.tools import ensure_kubectl

    binary = ensure_kubectl()
    config = tmp_path_factory.mktemp("kube") / "config"
    kube.kubeconfig(config)
    env = {**os.environ, "KUBECONFIG": str(config), "HOME": str(config.parent)}

    def run(*args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run(
            [str(binary), *args], env=env, input=input, capture_output=True, text=True, timeout=60
        )
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
        return result

    return run


@pytest.fixture
def namespace(kube: KubeApiServer, request: pytest.FixtureRequest) -> str:
    """A fresh namespace per test, so tests in one module do not see each other's objects."""
    name = (
        "t-"
        + request.node.name.lower().replace("_", "-")[:40].strip("-")
        + f"-{int(time.time() * 1000) % 100000}"
    )
    kube.store.create(kube.store.rt("", "namespaces"), None, {"metadata": {"name": name}})
    return name


def repo_root() -> Path:
    return Path(__file__).resolve().parents[3]


# --- pods that run ------------------------------------------------------------------------------

GPU_NODE_IDS = ["i-0bbbbbbbbbbbbbbb1", "i-0bbbbbbbbbbbbbbb2", "i-0bbbbbbbbbbbbbbb3"]


@pytest.fixture(scope="module")
def cluster() -> Iterator[object]:
    """A fresh API server with three ml.g5.8xlarge nodes (1 GPU each) and a KubeRuntime on it."""
    from sandbox.kube.runtime import KubeRuntime

    server = KubeApiServer().start()
    for instance_id in GPU_NODE_IDS:
        add_node(server.store, hyperpod_node(instance_id, "ml.g5.8xlarge"))
    runtime = KubeRuntime(server, restart_backoff=0.2).start()
    yield runtime
    runtime.stop()
    server.stop()


@pytest.fixture(scope="module")
def core(cluster: object) -> Iterator[object]:
    """A kubernetes CoreV1Api on the ``cluster`` fixture's server."""
    from kubernetes import client

    with client.ApiClient(cluster.server.client_configuration()) as api_client:  # type: ignore[attr-defined]
        yield client.CoreV1Api(api_client)


@pytest.fixture
def pod_ns(cluster: object, request: pytest.FixtureRequest) -> str:
    """A fresh namespace per test on the ``cluster`` fixture's server."""
    store = cluster.store  # type: ignore[attr-defined]
    name = (
        "p-"
        + request.node.name.lower().replace("_", "-")[:40].strip("-")
        + f"-{int(time.time() * 1000) % 100000}"
    )
    store.create(store.rt("", "namespaces"), None, {"metadata": {"name": name}})
    return name
