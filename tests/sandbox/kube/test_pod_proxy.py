"""The pod proxy: the kubernetes client reaches a pod's own address through the API
server, and every listener in a pod binds the pod IP, so two pods share a port number."""

from __future__ import annotations

import json
import textwrap

import pytest
from kubernetes.client.exceptions import ApiException

from sandbox.testing import eventually
from tests.sandbox.kube.pods import create_pod, pod_body, wait_phase

pytestmark = pytest.mark.integration

NODES = ["hyperpod-i-0bbbbbbbbbbbbbbb1", "hyperpod-i-0bbbbbbbbbbbbbbb2"]
# no --bind flag: the harder case, http.server binds the wildcard (IPv6 dual stack on this host)
HTTP_SERVER = ["sh", "-c", "echo $(POD_NAME) > index.html && exec python -m http.server 8080"]
POD_NAME_ENV = [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]

ECHO_SERVER = textwrap.dedent(
    """
    import json, os
    from http.server import BaseHTTPRequestHandler, HTTPServer

    class Echo(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            out = json.dumps({"path": self.path, "body": body.decode(), "type": self.headers["Content-Type"],
                              "pod": os.environ["POD_IP"]}).encode()
            self.send_response(201)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

    HTTPServer(("0.0.0.0", 8080), Echo).serve_forever()
    """
)


def proxy_get(core, namespace: str, name: str, path: str) -> str | None:
    try:
        return core.connect_get_namespaced_pod_proxy_with_path(f"{name}:8080", namespace, path)
    except ApiException as exc:
        if exc.status == 503:  # not listening yet
            return None
        raise


def test_two_pods_on_different_nodes_both_serve_port_8080_through_the_proxy(cluster, core, pod_ns):
    for i, node in enumerate(NODES):
        create_pod(
            cluster, pod_ns, pod_body(f"web-{i}", HTTP_SERVER, nodeName=node, container={"env": POD_NAME_ENV})
        )
    ips = {wait_phase(cluster, pod_ns, f"web-{i}", "Running")["podIP"] for i in range(2)}
    assert len(ips) == 2 and all(ip.startswith("127.") and ip != "127.0.0.1" for ip in ips)
    for i in range(2):
        # each answers with its own name: the proxy reached the right pod, and neither bind collided
        body = eventually(
            lambda i=i: proxy_get(core, pod_ns, f"web-{i}", "index.html"), 20, f"web-{i} serving"
        )
        assert body.strip() == f"web-{i}"
    # the listeners are on the pod IPs, not on the wildcard or on the host's 127.0.0.1
    listening = _listening_ports()
    assert {(ip, 8080) for ip in ips} <= listening
    assert ("0.0.0.0", 8080) not in listening and ("::", 8080) not in listening


def test_post_with_a_body_reaches_the_pod(cluster, core, pod_ns):
    env = [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}]
    create_pod(cluster, pod_ns, pod_body("echo", ["python", "-c", ECHO_SERVER], container={"env": env}))
    ip = wait_phase(cluster, pod_ns, "echo", "Running")["podIP"]
    api = core.api_client
    url = f"{api.configuration.host}/api/v1/namespaces/{pod_ns}/pods/echo:8080/proxy/start?rank=0"
    headers = {
        "Content-Type": "application/json",
        "Authorization": f"Bearer {api.configuration.api_key['authorization']}",
    }

    def post() -> dict | None:
        response = api.call_api("POST", url, header_params=headers, body={"rank": 0})
        if response.status == 503:  # not listening yet
            return None
        assert response.status == 201, response.read()
        return json.loads(response.read())

    answer = eventually(post, 20, "the echo server")
    assert answer == {"path": "/start?rank=0", "body": '{"rank": 0}', "type": "application/json", "pod": ip}
    # a body serialised already (a /start's shared rank table) goes through the adapter unchanged
    from hyperpod_control.adapters.kube import KubeAdapter

    sent = b'{"rank":0,"rankIps":[{"rank":0,"ip":"10.0.0.1"}]}'
    answer = KubeAdapter("sandbox", api_client=api).pod_proxy(pod_ns, "echo", 8080, "POST", "/start", sent)
    assert answer == {"path": "/start", "body": sent.decode(), "type": "application/json", "pod": ip}


def test_proxy_errors_are_status_objects(cluster, core, pod_ns):
    create_pod(cluster, pod_ns, pod_body("quiet", ["python", "-c", "import time; time.sleep(600)"]))
    wait_phase(cluster, pod_ns, "quiet", "Running")
    with pytest.raises(ApiException) as refused:
        core.connect_get_namespaced_pod_proxy_with_path("quiet:8080", pod_ns, "status")
    assert refused.value.status == 503
    assert "connection refused" in json.loads(refused.value.body)["message"]
    with pytest.raises(ApiException) as missing:
        core.connect_get_namespaced_pod_proxy_with_path("nobody:8080", pod_ns, "status")
    assert missing.value.status == 404


TORCH_MASTER = textwrap.dedent(
    """
    import datetime, os, torch.distributed as dist
    # a master store as torchrun's rendezvous makes it: no host to bind, MASTER_ADDR is the pod IP
    store = dist.TCPStore(os.environ["MASTER_ADDR"], 29500, 1, True, datetime.timedelta(seconds=30),
                          wait_for_workers=False)
    store.set("who", os.environ["POD_NAME"])
    open("ready", "w").close()
    import time; time.sleep(600)
    """
)


def test_two_torch_master_stores_on_one_port_bind_their_pod_ips(cluster, pod_ns):
    pytest.importorskip("torch")
    import datetime

    import torch.distributed as dist

    env = [
        *POD_NAME_ENV,
        {"name": "MASTER_ADDR", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
    ]
    for i, node in enumerate(NODES):
        create_pod(
            cluster,
            pod_ns,
            pod_body(f"master-{i}", ["python", "-c", TORCH_MASTER], nodeName=node, container={"env": env}),
        )
    for i in range(2):
        ip = wait_phase(cluster, pod_ns, f"master-{i}", "Running")["podIP"]
        eventually(lambda ip=ip: (ip, 29500) in _listening_ports(), 60, f"master-{i}'s store listening")
        client = dist.TCPStore(ip, 29500, 1, False, datetime.timedelta(seconds=10))
        assert client.get("who") == f"master-{i}".encode()


def _listening_ports() -> set[tuple[str, int]]:
    """(address, port) of every listening TCP socket on this host, v4-mapped v6 as v4."""
    import ipaddress

    found = set()
    for table, size in (("/proc/net/tcp", 4), ("/proc/net/tcp6", 16)):
        with open(table) as f:
            next(f)
            for line in f:
                fields = line.split()
                if fields[3] != "0A":  # LISTEN
                    continue
                addr_hex, port_hex = fields[1].split(":")
                raw = bytes.fromhex(addr_hex)
                # /proc prints each 32-bit word in host (little-endian) order
                packed = b"".join(raw[i : i + 4][::-1] for i in range(0, size, 4))
                addr = ipaddress.ip_address(packed)
                if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped:
                    addr = addr.ipv4_mapped
                found.add((str(addr), int(port_hex, 16)))
    return found
