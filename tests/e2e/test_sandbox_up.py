"""`hpctl sandbox up` as a user runs it: foreground, env file, reachable, Ctrl-C leaves nothing."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from hpctl.errors import EXIT_UNREACHABLE
from sandbox.testing import eventually

pytestmark = pytest.mark.e2e

HPCTL = [sys.executable, "-m", "hpctl.cli"]


def _read_env(path: Path) -> dict[str, str]:
    import shlex

    env = {}
    for line in path.read_text().splitlines():
        key, _, value = line.partition("=")
        env[key] = shlex.split(value)[0] if value else ""
    return env


def out_nodes(env: dict[str, str]) -> list[str]:
    code = (
        "import boto3,os; sm=boto3.client('sagemaker'); "
        "print(' '.join(n['InstanceId'] for n in sm.list_cluster_nodes("
        "ClusterName=os.environ['HYPERPOD_CLUSTER_NAME'])['ClusterNodeSummaries']))"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    return out.stdout.split()


def _port_open(url: str) -> bool:
    host, port = url.removeprefix("http://").split(":")
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, int(port))) == 0


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM])
def test_sandbox_up_serves_until_signalled(tmp_path, stop_signal):
    env_file = tmp_path / "sandbox.env"
    proc = subprocess.Popen(
        [*HPCTL, "sandbox", "up", "--env-file", str(env_file), "--nodes", "3"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={k: v for k, v in os.environ.items() if k != "AWS_ENDPOINT_URL"},
    )
    try:
        eventually(env_file.exists, timeout=90, what="the env file")
        env = _read_env(env_file)
        for key in (
            "AWS_ENDPOINT_URL",
            "AWS_DEFAULT_REGION",
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "HPCTL_OUTPUT_TableName",
            "HPCTL_OUTPUT_RegisterClusterStateMachineArn",
            "HYPERPOD_CLUSTER_NAME",
        ):
            assert env.get(key), f"{key} missing from the env file"
        assert env["AWS_ENDPOINT_URL"].startswith("http://127.0.0.1:")

        # Plain boto3, configured by nothing but that environment.
        client_env = {**os.environ, **env}
        code = (
            "import boto3,sys; "
            "sm=boto3.client('sagemaker'); "
            "print(len(sm.list_cluster_nodes(ClusterName=sys.argv[1])['ClusterNodeSummaries']))"
        )
        out = subprocess.run(
            [sys.executable, "-c", code, env["HYPERPOD_CLUSTER_NAME"]],
            env=client_env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == "3"

        # The Kubernetes API of the world's EKS cluster, through the written kubeconfig.
        assert env.get("EKS_CLUSTER_NAME") and Path(env["KUBECONFIG"]).is_file()
        code = (
            "from kubernetes import client, config; config.load_kube_config(); "
            "print(sorted(n.metadata.name for n in client.CoreV1Api().list_node().items))"
        )
        out = subprocess.run(
            [sys.executable, "-c", code], env=client_env, capture_output=True, text=True, timeout=60
        )
        assert out.returncode == 0, out.stderr
        assert out.stdout.count("hyperpod-i-") == 3

        # hpctl itself, with the same environment, against the same sandbox.
        reg = subprocess.run(
            [*HPCTL, "register", "--cluster", env["HYPERPOD_CLUSTER_NAME"], "--mode", "serverless"],
            env=client_env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert reg.returncode == 0, reg.stderr
        assert '"status": "SUCCEEDED"' in reg.stdout
        assert "CheckCluster" in reg.stderr  # progress: each state as it is entered

        # Fault injection from another process: fail a node, see node_health record it.
        node = "hyperpod-" + out_nodes(client_env)[0]
        fault = subprocess.run(
            [*HPCTL, "sandbox", "fail-node", node, "--times", "2"],
            env=client_env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert fault.returncode == 0, fault.stderr
        assert len(json.loads(fault.stdout)) == 2  # two event ids: one change, sent twice

        def recorded():
            st = subprocess.run(
                [*HPCTL, "status", "--cluster", env["HYPERPOD_CLUSTER_NAME"]],
                env=client_env,
                capture_output=True,
                text=True,
                timeout=60,
            )
            nodes = json.loads(st.stdout)["nodes"] if st.returncode == 0 else []
            return [n for n in nodes if n["health_status"] == "Unhealthy"]

        [unhealthy] = eventually(recorded, timeout=60, what="node_health to record the failed node")
        assert "hyperpod-" + unhealthy["instance_id"] == node and unhealthy["version"] == 1
        bad = subprocess.run(
            [*HPCTL, "sandbox", "fail-node", "node-1"],
            env=client_env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert bad.returncode == 2 and "hyperpod-i-" in bad.stderr
    finally:
        proc.send_signal(stop_signal)
        output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, output
    assert "stopped" in output
    assert not _port_open(env["AWS_ENDPOINT_URL"]), "moto still listening after stop"
    assert not Path(env["KUBECONFIG"]).exists(), "the temporary kubeconfig outlived the sandbox"
    assert _children(proc.pid) == []


def test_register_with_no_aws_to_reach_explains_what_to_do(tmp_path):
    # The stack cannot be read because nothing answers: that is the network's class (exit 8), not
    # a missing stack's (3, tests/integration/test_hpctl_errors.py).
    env = {k: v for k, v in os.environ.items() if not k.startswith("HPCTL_")}
    env["AWS_ENDPOINT_URL"] = "http://127.0.0.1:9"  # nothing listens on the discard port
    env["AWS_MAX_ATTEMPTS"] = "1"
    out = subprocess.run(
        [*HPCTL, "--stack", "nope", "register", "--cluster", "c", "--mode", "addon"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert out.returncode == EXIT_UNREACHABLE, out.stderr
    assert "cannot reach AWS: stack nope" in out.stderr and "AWS_ENDPOINT_URL" in out.stderr
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1


def test_help_explains_the_commands():
    out = subprocess.run([*HPCTL, "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0
    for word in ("sandbox", "demo", "register", "status", "--stack"):
        assert word in out.stdout
