"""The sandbox kubelet: pods run as local processes, and their status tells the truth:
exit codes and reasons, restarts under restartPolicy, the grace period on deletion, the start
delay, env and ``$(VAR)`` expansion; and no process outlives its pod or the sandbox."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from sandbox.kube.kubelet import PodAddresses, pod_phase, running_processes, should_restart
from sandbox.kube.podspec import SpecError, container_argv, container_env, expand, pod_requests
from sandbox.testing import eventually
from tests.sandbox.kube.conftest import repo_root
from tests.sandbox.kube.pods import create_pod, pod_body, pod_status, wait_gone, wait_phase

pytestmark = pytest.mark.integration


def terminated(status: dict, index: int = 0) -> dict:
    return status["containerStatuses"][index]["state"]["terminated"]


# --- pure decisions -----------------------------------------------------------------------------


@pytest.mark.unit
def test_expansion_follows_kubernetes_rules():
    env = {"A": "1", "B": "two"}
    assert expand("$(A)-$(B)", env) == "1-two"
    assert expand("$$(A) $(MISSING) $", env) == "$(A) $(MISSING) $"
    pod = {
        "metadata": {"name": "p", "namespace": "ns", "labels": {"app": "x"}},
        "spec": {"nodeName": "n"},
        "status": {"podIP": "127.0.0.9"},
    }
    container = {
        "name": "c",
        "env": [
            {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
            {"name": "URL", "value": "http://$(IP):8080/$(APP)"},
            {"name": "CFG", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "k"}}},
        ],
        "command": ["echo", "$(URL)", "$(CFG)"],
    }
    lookup = {("configmaps", "ns", "cm"): {"data": {"k": "v"}}}
    env = container_env(pod, container, lambda *key: lookup.get(key))
    assert env["URL"] == "http://127.0.0.9:8080/x"
    assert container_argv(container, env, {}) == ["echo", "http://127.0.0.9:8080/x", "v"]
    with pytest.raises(SpecError, match="needs a command"):
        container_argv({"name": "c", "image": "busybox"}, {}, {})
    assert container_argv({"name": "c", "image": "agent:1", "args": ["-x"]}, {}, {"agent": ["run"]}) == [
        "run",
        "-x",
    ]


@pytest.mark.unit
def test_requests_restart_policy_and_phase():
    pod = {
        "spec": {
            "containers": [
                {"resources": {"limits": {"cpu": "500m", "nvidia.com/gpu": 1}}},
                {"resources": {"requests": {"memory": "1Gi"}}},
            ],
            "initContainers": [{"resources": {"requests": {"cpu": "2"}}}],
        }
    }
    requests = pod_requests(pod)
    assert requests["cpu"] == 2 and requests["nvidia.com/gpu"] == 1 and requests["memory"] == 2**30
    assert (
        should_restart("OnFailure", 1)
        and not should_restart("OnFailure", 0)
        and not should_restart("Never", 1)
    )
    assert pod_phase("Never", [None], [True]) == "Running"
    assert pod_phase("OnFailure", [None], [False]) == "Running"


@pytest.mark.unit
def test_pod_addresses_skip_the_hosts_and_are_not_reused_at_once():
    addresses = PodAddresses(first="127.0.0.254", last="127.0.1.3")
    got = [addresses.allocate(f"u{i}") for i in range(3)]
    assert got == ["127.0.0.254", "127.0.1.2", "127.0.1.3"]  # .255, .0 and 127.0.1.1 skipped
    addresses.release("u0")
    assert addresses.allocate("u3") == "127.0.0.254"  # the only free one
    with pytest.raises(RuntimeError, match="no pod addresses"):
        addresses.allocate("u4")


@pytest.mark.unit
def test_two_sandboxes_on_one_host_claim_different_address_blocks():
    first, second = PodAddresses.claim(), PodAddresses.claim()
    try:
        ip1, ip2 = first.allocate("pod"), second.allocate("pod")
        assert ip1.split(".")[:2] != ip2.split(".")[:2], (ip1, ip2)
        block = ip1.split(".")[1]
        first.release_claim()
        third = PodAddresses.claim()  # the released block is free again
        assert third.allocate("pod").split(".")[1] == block
        third.release_claim()
    finally:
        first.release_claim()
        second.release_claim()


# --- container status truth ---------------------------------------------------------------------


def test_exit_codes_and_reasons(cluster, pod_ns):
    cases = {
        "ok": (["python", "-c", "pass"], 0, "Completed", "Succeeded"),
        "fails": (["sh", "-c", "exit 3"], 3, "Error", "Failed"),
        "missing": (["no-such-command-anywhere"], 128, "StartError", "Failed"),
    }
    for name, (command, *_rest) in cases.items():
        create_pod(cluster, pod_ns, pod_body(name, command, restartPolicy="Never"))
    for name, (_command, code, reason, phase) in cases.items():
        status = wait_phase(cluster, pod_ns, name, "Succeeded", "Failed")
        assert status["phase"] == phase, name
        assert terminated(status)["exitCode"] == code, name
        assert terminated(status)["reason"] == reason, name
    assert "executable file not found" in terminated(pod_status(cluster, pod_ns, "missing"))["message"]


def test_over_the_memory_limit_is_oom_killed(cluster, pod_ns):
    hog = ["python", "-c", "import time; x = bytearray(256 * 2**20); time.sleep(60)"]
    create_pod(
        cluster,
        pod_ns,
        pod_body("hog", hog, restartPolicy="Never", container={"resources": {"limits": {"memory": "64Mi"}}}),
    )
    status = wait_phase(cluster, pod_ns, "hog", "Failed")
    assert terminated(status)["reason"] == "OOMKilled"
    assert terminated(status)["exitCode"] == 137


def test_on_failure_restarts_and_counts_until_success(cluster, pod_ns):
    # fails twice, then succeeds: the attempts are counted in a file in the pod's working directory
    script = "n=$(cat n 2>/dev/null || echo 0); echo $((n+1)) > n; [ $n -ge 2 ]"
    create_pod(cluster, pod_ns, pod_body("flaky", ["sh", "-c", script], restartPolicy="OnFailure"))
    status = wait_phase(cluster, pod_ns, "flaky", "Succeeded")
    cs = status["containerStatuses"][0]
    assert cs["restartCount"] == 2
    assert cs["lastState"]["terminated"]["exitCode"] == 1
    assert cs["state"]["terminated"]["reason"] == "Completed"


def test_always_restarts_with_back_off(cluster, pod_ns):
    create_pod(cluster, pod_ns, pod_body("looping", ["sh", "-c", "exit 7"]))

    def crash_looping() -> dict | None:
        cs = ((pod_status(cluster, pod_ns, "looping") or {}).get("containerStatuses") or [{}])[0]
        return cs if cs.get("restartCount", 0) >= 2 else None

    cs = eventually(crash_looping, 20, "two restarts")
    assert cs["lastState"]["terminated"]["exitCode"] == 7
    assert pod_status(cluster, pod_ns, "looping")["phase"] == "Running"


# --- start delay, env, deletion --------------------------------------------------------------------


def test_start_delay_env_and_field_refs(cluster, pod_ns):
    env = [
        {"name": "MY_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": "MY_NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
        {"name": "MY_NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "GREETING", "value": "hello from $(MY_NODE)"},
    ]
    body = pod_body(
        "delayed",
        ["sh", "-c", "echo $(MY_IP) $MY_NS $(GREETING); echo $SANDBOX_POD_IP"],
        restartPolicy="Never",
        metadata={"annotations": {"sandbox.hyperpod.aws/start-delay-seconds": "0.5"}},
        container={"env": env},
    )
    created = time.monotonic()
    create_pod(cluster, pod_ns, body)

    def creating() -> dict | None:
        status = pod_status(cluster, pod_ns, "delayed") or {}
        states = [c["state"] for c in status.get("containerStatuses") or []]
        return (
            status if states and states[0].get("waiting", {}).get("reason") == "ContainerCreating" else None
        )

    # during the delay the kubelet reports the pod Pending, its container being created
    assert eventually(creating, 5, "ContainerCreating")["phase"] == "Pending"
    status = wait_phase(cluster, pod_ns, "delayed", "Succeeded")
    assert time.monotonic() - created >= 0.5
    node = cluster.store.get(cluster.store.rt("", "pods"), pod_ns, "delayed")["spec"]["nodeName"]
    assert status["podIP"].startswith("127.")
    from kubernetes import client

    with client.ApiClient(cluster.server.client_configuration()) as api:
        text = client.CoreV1Api(api).read_namespaced_pod_log("delayed", pod_ns)
    assert text.splitlines() == [f"{status['podIP']} {pod_ns} hello from {node}", status["podIP"]]


def test_deletion_sends_sigterm_then_sigkill_after_the_grace_period(cluster, pod_ns):
    # one pod exits on SIGTERM, one ignores it and is killed when the grace period ends
    polite = (
        "import signal, sys, time; signal.signal(signal.SIGTERM, lambda *a: sys.exit(0)); "
        "print('up', flush=True); time.sleep(600)"
    )
    stubborn = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print('up', flush=True); time.sleep(600)"
    )
    create_pod(
        cluster, pod_ns, pod_body("polite", ["python", "-c", polite], terminationGracePeriodSeconds=30)
    )
    create_pod(
        cluster, pod_ns, pod_body("stubborn", ["python", "-c", stubborn], terminationGracePeriodSeconds=1)
    )
    for name in ("polite", "stubborn"):
        wait_phase(cluster, pod_ns, name, "Running")
    for name in ("polite", "stubborn"):
        # the handlers must be installed before the SIGTERM is sent
        eventually(lambda n=name: "up" in (cluster.container_log(pod_ns, n, "main") or ""), 10, f"{name} up")
    store = cluster.store
    rt = store.rt("", "pods")
    started = time.monotonic()
    store.delete(rt, pod_ns, "polite")
    # while the kubelet stops it, the pod is Terminating: still there, with a deletionTimestamp
    assert store.get(rt, pod_ns, "polite")["metadata"]["deletionTimestamp"]
    wait_gone(cluster, pod_ns, "polite")
    assert time.monotonic() - started < 5  # it left on SIGTERM, long before its 30 s
    started = time.monotonic()
    store.delete(rt, pod_ns, "stubborn")
    wait_gone(cluster, pod_ns, "stubborn")
    assert 1.0 <= time.monotonic() - started < 5


# --- process hygiene --------------------------------------------------------------------------------

ESCAPER = textwrap.dedent(
    """
    import os, time
    # a grandchild that leaves the pod's process group and session, as daemons do
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            time.sleep(600)
        os._exit(0)
    time.sleep(600)
    """
)


def _sid(pid: int) -> int | None:
    try:
        return os.getsid(pid)
    except ProcessLookupError:  # the intermediate child exits once the grandchild is forked
        return None


def test_no_process_outlives_its_pod(cluster, pod_ns):
    create_pod(cluster, pod_ns, pod_body("escaper", ["python", "-c", ESCAPER]))
    wait_phase(cluster, pod_ns, "escaper", "Running")
    worker = cluster.pod_worker(pod_ns, "escaper")

    def daemonised() -> list[int] | None:
        # Two pids are not enough: right after the first fork, the child has not left the
        # session yet (setsid) and the grandchild does not exist. Wait for the grandchild alone.
        pids = worker.all_pids()
        main = os.getsid(pids[0]) if pids else None
        return pids if len(pids) >= 2 and any(_sid(pid) not in (None, main) for pid in pids) else None

    pids = eventually(daemonised, 10, "the daemonised grandchild")
    pids = [pid for pid in pids if _sid(pid) is not None and os.path.exists(f"/proc/{pid}")]
    sessions = {os.getsid(pid) for pid in pids}
    assert len(sessions) == 2 and os.getsid(0) not in sessions  # its own sessions, not the sandbox's
    cluster.store.delete(cluster.store.rt("", "pods"), pod_ns, "escaper", {"gracePeriodSeconds": 0})
    wait_gone(cluster, pod_ns, "escaper")
    eventually(
        lambda: not any(os.path.exists(f"/proc/{pid}") for pid in pids), 10, "every process of the pod gone"
    )


SANDBOX_PROCESS = textwrap.dedent(
    """
    import sys, time
    from sandbox.kube import KubeApiServer, hyperpod_node
    from sandbox.kube.cluster import add_node
    from sandbox.kube.runtime import KubeRuntime
    server = KubeApiServer().start()
    add_node(server.store, hyperpod_node("i-0eeeeeeeeeeeeeee1"))
    runtime = KubeRuntime(server).start()
    pods = server.store.rt("", "pods")
    server.store.create(pods, "default", {"metadata": {"name": "orphan"}, "spec": {"containers": [
        {"name": "c", "image": "x", "command": ["python", "-c", "import time; time.sleep(600)"]}]}})
    while (server.store.get(pods, "default", "orphan").get("status") or {}).get("phase") != "Running":
        time.sleep(0.02)
    print(runtime.runtime_id, flush=True)
    time.sleep(600)
    """
)


def test_no_process_outlives_a_sandbox_killed_with_sigkill():
    root = str(repo_root())
    proc = subprocess.Popen(
        [sys.executable, "-c", SANDBOX_PROCESS],
        stdout=subprocess.PIPE,
        text=True,
        cwd=root,
        env={**os.environ, "PYTHONPATH": root},
    )
    try:
        runtime_id = proc.stdout.readline().strip()  # type: ignore[union-attr]
        assert runtime_id, "the sandbox process did not start its pod"
        assert running_processes(runtime_id), "the pod's processes should run"
    finally:
        proc.send_signal(signal.SIGKILL)  # no cleanup code runs in the sandbox process
        proc.wait()
    eventually(lambda: not running_processes(runtime_id), 10, "the pod's processes gone with the sandbox")


def test_stopping_the_runtime_leaves_no_process(tmp_path):
    from sandbox.kube import KubeApiServer, hyperpod_node
    from sandbox.kube.cluster import add_node
    from sandbox.kube.runtime import KubeRuntime

    server = KubeApiServer().start()
    add_node(server.store, hyperpod_node("i-0fffffffffffffff1"))
    runtime = KubeRuntime(server, workdir=tmp_path).start()
    try:
        for i in range(3):
            create_pod(runtime, "default", pod_body(f"p{i}", ["python", "-c", ESCAPER]))
        for i in range(3):
            wait_phase(runtime, "default", f"p{i}", "Running")
        eventually(lambda: len(running_processes(runtime.runtime_id)) >= 9, 10, "pods with their daemons")
    finally:
        runtime.stop()
        server.stop()
    assert running_processes(runtime.runtime_id) == []


def test_an_image_carries_its_executables_first_on_path(cluster, pod_ns, tmp_path):
    """``image_paths``: what an image carries (the sandbox's stand-in for AWS's agent's image is
    a virtualenv's bin); an image whose directories are not on the host fails to pull."""
    tools = tmp_path / "bin"
    tools.mkdir()
    (tools / "greet").write_text("#!/bin/sh\necho hello from the image\n")
    (tools / "greet").chmod(0o755)
    paths = cluster.config.image_paths
    paths.update({"tools": [str(tools)], "gone:1": [str(tmp_path / "missing")]})
    try:
        create_pod(
            cluster,
            pod_ns,
            pod_body("tooled", ["greet"], restartPolicy="Never", container={"image": "tools:2"}),
        )
        create_pod(cluster, pod_ns, pod_body("plain", ["greet"], restartPolicy="Never"))
        create_pod(
            cluster,
            pod_ns,
            pod_body("unpulled", ["greet"], restartPolicy="Never", container={"image": "gone:1"}),
        )
        assert wait_phase(cluster, pod_ns, "tooled", "Succeeded")["phase"] == "Succeeded"
        assert (cluster.container_log(pod_ns, "tooled", "main") or "").strip() == "hello from the image"
        assert terminated(wait_phase(cluster, pod_ns, "plain", "Failed"))["reason"] == "StartError"

        def waiting() -> dict | None:
            states = [
                c["state"]
                for c in (pod_status(cluster, pod_ns, "unpulled") or {}).get("containerStatuses") or []
            ]
            return (
                states[0].get("waiting")
                if states and states[0].get("waiting", {}).get("reason") == "ErrImagePull"
                else None
            )

        assert "is not on this host" in eventually(waiting, 10, "ErrImagePull")["message"]
    finally:
        for image in ("tools", "gone:1"):
            paths.pop(image, None)
