"""The ``hyperpod`` rendezvous backend: ranks come from the control plane, not from a store.

torchelastic's agents get their group rank, the group size and the master address from a
rendezvous; here the control plane decides them and pushes them in ``POST /start`` and ``/update``.
The handler holds the last values pushed and hands them to torchelastic's ``_rendezvous`` as a
``RendezvousInfo``. There is no shared store (``use_agent_store`` is False: workers build their own
from MASTER_ADDR/MASTER_PORT) and the rendezvous never closes and never has nodes waiting, so
torchelastic's membership-change restart never fires: membership is the control plane's business.

It also keeps the pod IP table (``pod_resourceconfig.json``: ``ips`` indexed by group rank,
``current_pod_ip``, ``ips_timestamp``), which frameworks read to connect without a TCPStore.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import tempfile
import threading
from dataclasses import dataclass

from torch.distributed import Store
from torch.distributed.elastic.rendezvous import (
    RendezvousHandler,
    RendezvousInfo,
    RendezvousParameters,
    rendezvous_handler_registry,
)
from torch.distributed.elastic.rendezvous.api import RendezvousStoreInfo

from .models import RankIp

logger = logging.getLogger(__name__)

BACKEND = "hyperpod"
DEFAULT_RESOURCE_CONFIG = "/opt/ml/input/config/pod_resourceconfig.json"


@dataclass(frozen=True)
class RankAssignment:
    """What the control plane told this pod in the last /start or /update."""

    group_rank: int
    nnodes: int
    fault_count: int
    master_addr: str
    master_port: int


class _NoStore(Store):
    """Stands where torchelastic expects a store. Ranks are computed without one (see
    HyperPodElasticAgent._assign_worker_ranks); any use of it is a bug, and says so."""

    def _fail(self, *args, **kwargs):
        raise RuntimeError("the hyperpod rendezvous has no store; ranks come from the control plane")

    set = get = add = compare_set = wait = multi_get = multi_set = _fail


class HyperPodRendezvousHandler(RendezvousHandler):
    def __init__(
        self, run_id: str, nnodes: int, master_addr: str, master_port: int, resource_config_path=None
    ):
        self._run_id = run_id
        self._lock = threading.Lock()
        # Until the first /start these are torchrun's own values (--node-rank, --master-addr); an
        # in-process-restart agent spawns its workers with them before it knows its rank.
        self._assignment = RankAssignment(0, nnodes, 0, master_addr, master_port)
        self._assigned = False
        self._ips: list[str | None] = []
        self._ip_version: str | None = None
        self._config_path = resource_config_path or os.environ.get(
            "HYPERPOD_RESOURCE_CONFIG_PATH", DEFAULT_RESOURCE_CONFIG
        )

    # -- what the control plane pushes -------------------------------------------------------
    def assign(
        self,
        assignment: RankAssignment,
        rank_ips: list[RankIp],
        ip_version: str | None,
        rank_ips_sent: bool | None = None,
    ) -> None:
        """Take a /start's rank and IP table. A ``rankIps`` (``rank_ips_sent``; by default, a
        non-empty one) is merged into the table held, which takes its ``ipVersion``: the first call
        carries the whole table, later ones only the ranks whose IP changed, none when none did
        (as the HyperPod agent does)."""
        sent = bool(rank_ips) if rank_ips_sent is None else rank_ips_sent
        with self._lock:
            self._assignment = assignment
            self._assigned = True
            if sent and (rank_ips or ip_version is not None):
                self._ips = self._merged(rank_ips)
                self._ip_version = ip_version
                self._write_ip_table()
            elif ip_version is not None and not self._ips:
                self._ip_version = ip_version

    def merged_ips(self, rank_ips: list[RankIp]) -> list[str | None]:
        """The table held with ``rank_ips`` merged in (nothing changes)."""
        with self._lock:
            return self._merged(rank_ips)

    def _merged(self, rank_ips: list[RankIp]) -> list[str | None]:
        ips = list(self._ips)
        for item in rank_ips:
            if item.rank >= len(ips):
                ips.extend([None] * (item.rank + 1 - len(ips)))
            ips[item.rank] = item.ip
        return ips

    @property
    def assignment(self) -> RankAssignment:
        with self._lock:
            return self._assignment

    @property
    def assigned(self) -> bool:
        with self._lock:
            return self._assigned

    @property
    def ip_version(self) -> str | None:
        with self._lock:
            return self._ip_version

    @property
    def rank_ips(self) -> dict[int, str]:
        with self._lock:
            return {i: ip for i, ip in enumerate(self._ips) if ip is not None}

    def _write_ip_table(self) -> None:
        table = {
            "ips": self._ips,
            "current_pod_ip": _own_ip(),
            "ips_timestamp": self._ip_version,
        }
        directory = os.path.dirname(self._config_path) or "."
        try:
            os.makedirs(directory, exist_ok=True)
            # Atomic: readers never see half a table.
            fd, tmp = tempfile.mkstemp(dir=directory, prefix=".pod_resourceconfig.")
            with os.fdopen(fd, "w") as f:
                json.dump(table, f)
            os.replace(tmp, self._config_path)
        except OSError as exc:
            logger.warning(
                "cannot write the IP table to %s (%s); set HYPERPOD_RESOURCE_CONFIG_PATH to a "
                "writable path if the training framework reads it",
                self._config_path,
                exc,
            )

    # -- RendezvousHandler -------------------------------------------------------------------
    def get_backend(self) -> str:
        return BACKEND

    @property
    def use_agent_store(self) -> bool:
        return False

    def next_rendezvous(self) -> RendezvousInfo:
        a = self.assignment
        return RendezvousInfo(
            store=_NoStore(),
            rank=a.group_rank,
            world_size=a.nnodes,
            bootstrap_store_info=RendezvousStoreInfo(a.master_addr, a.master_port),
        )

    def is_closed(self) -> bool:
        return False

    def set_closed(self) -> None:
        pass

    def num_nodes_waiting(self) -> int:
        return 0

    def get_run_id(self) -> str:
        return self._run_id

    def shutdown(self) -> bool:
        return True


def _own_ip() -> str:
    try:
        return socket.gethostbyname(socket.gethostname())
    except OSError:
        return "127.0.0.1"


def _create_handler(params: RendezvousParameters) -> HyperPodRendezvousHandler:
    master_addr, _, port = (params.endpoint or "127.0.0.1:29500").rpartition(":")
    return HyperPodRendezvousHandler(
        params.run_id, params.max_nodes, master_addr or "127.0.0.1", int(port or 29500)
    )


def register() -> None:
    """Register the backend under ``hyperpod`` (idempotent), so ``--rdzv-backend hyperpod`` resolves."""
    with contextlib.suppress(ValueError):  # already registered
        rendezvous_handler_registry.register(BACKEND, _create_handler)
