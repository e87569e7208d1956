"""Pod networking for the sandbox kubelet: every listener in a pod binds the pod's own address.

The kubelet puts this directory first on ``PYTHONPATH`` of every container it starts, with
``SANDBOX_POD_IP`` set to the pod's loopback address (127.0.0.N). Python imports
``sitecustomize`` at start-up, before the user's script, so without changing any training script:

- ``socket.socket.bind`` to the wildcard (``""``, ``0.0.0.0``, ``::``) binds the pod IP instead.
  An IPv6 wildcard socket becomes a dual-stack one bound to ``::ffff:<pod ip>`` (pods have no
  IPv6 address of their own). So ``python -m http.server 8080`` and the agent's server
  (``--server-host 0.0.0.0``) listen on ``<pod ip>:8080``, and two pods' port 8080 never collide.
- PyTorch's ``TCPStore`` binds in C++ (libuv), out of reach of the socket patch. When a master
  store is created without a listen socket, the hook below binds one in Python on the pod IP and
  hands it over through ``master_listen_fd`` (a documented TCPStore argument), so the master
  port (MASTER_ADDR is the pod IP) is bound on the pod IP only.

Why not LD_PRELOAD (interposing ``bind(2)`` in C): it needs a compiled shim for the host's libc,
a C toolchain wherever the sandbox runs, and does nothing for static binaries either; every
listener this project starts in a pod is Python (the agent, torch's store, test servers), and
``sitecustomize`` is the interpreter's documented start-up hook. Not covered: non-Python programs
that bind the wildcard themselves, and Python started with ``-I``/``-S`` or without this
``PYTHONPATH``; explicit binds to 127.0.0.1 are left alone (that address is the host's, where the
sandbox's own API servers live).

Another ``sitecustomize`` later on ``sys.path`` (a venv's, a distribution's) still runs: this one
loads it after installing its hooks. Stdlib only; it must never import the sandbox package.
"""

from __future__ import annotations

import os
import socket
import sys

POD_IP = os.environ.get("SANDBOX_POD_IP", "")
_WILDCARDS_V4 = ("", "0.0.0.0")
_WILDCARDS_V6 = ("", "::", "::0")


def _pod_address(family: int, address: object) -> object:
    """The address to bind instead of ``address``; the same object when it is not a wildcard."""
    if not POD_IP or not isinstance(address, tuple) or not address:
        return address
    host = address[0]
    if family == socket.AF_INET and host in _WILDCARDS_V4:
        return (POD_IP, *address[1:])
    if family == socket.AF_INET6 and host in _WILDCARDS_V6:
        return (f"::ffff:{POD_IP}", *address[1:])
    return address


_original_bind = socket.socket.bind


def _bind(self: socket.socket, address: object) -> None:
    target = _pod_address(self.family, address)
    if target is not address and self.family == socket.AF_INET6:
        # a v4-mapped address needs a dual-stack socket
        self.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    _original_bind(self, target)


def _patch_tcp_store() -> None:
    """Make a master TCPStore listen on the pod IP (called once torch.distributed is imported)."""
    try:
        from torch._C import _distributed_c10d as c10d
    except ImportError:
        return
    store_type = c10d.TCPStore
    if getattr(store_type, "_sandbox_pod_ip", None):
        return
    original_init = store_type.__init__
    names = ("host_name", "port", "world_size", "is_master", "timeout", "wait_for_workers")
    names += ("multi_tenant", "master_listen_fd", "use_libuv")

    def init(self: object, *args: object, **kwargs: object) -> None:
        bound = dict(zip(names, args, strict=False))
        bound.update(kwargs)
        if bound.get("is_master") and bound.get("master_listen_fd") is None:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                _original_bind(sock, (POD_IP, int(bound.get("port") or 0)))  # type: ignore[arg-type]
                sock.listen(2048)
            except OSError:
                sock.close()
                raise
            # the store owns the descriptor from here on (libuv closes it with the server)
            bound["master_listen_fd"] = sock.detach()
            bound["port"] = int(bound.get("port") or 0)
        original_init(self, **bound)

    store_type.__init__ = init
    store_type._sandbox_pod_ip = POD_IP


class _TorchHook:
    """A meta-path finder that patches TCPStore right after ``torch.distributed`` is imported."""

    def find_spec(self, name: str, path: object = None, target: object = None) -> object:
        if name != "torch.distributed":
            return None
        sys.meta_path.remove(self)
        try:
            import importlib.util

            spec = importlib.util.find_spec(name)
        finally:
            sys.meta_path.insert(0, self)
        if spec is None or spec.loader is None:
            return spec
        loader = spec.loader
        original_exec = loader.exec_module

        def exec_module(module: object) -> None:
            original_exec(module)
            _patch_tcp_store()

        loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


def _chain_next_sitecustomize() -> None:
    """Run the ``sitecustomize`` this one shadows, if there is one further on ``sys.path``."""
    import importlib.machinery
    import importlib.util

    here = os.path.dirname(os.path.abspath(__file__))
    rest = [p for p in sys.path if os.path.abspath(p or ".") != here]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", rest)
    if spec is None or spec.loader is None:
        return
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)


if POD_IP:
    socket.socket.bind = _bind  # type: ignore[method-assign]
    if "torch.distributed" in sys.modules:
        _patch_tcp_store()
    else:
        sys.meta_path.insert(0, _TorchHook())
_chain_next_sitecustomize()
