"""``NodeRepairMirror``: SageMaker's reboots and replacements of HyperPod nodes, seen in Kubernetes.

    mirror = NodeRepairMirror(runtime, "sandbox-hyperpod", region="us-west-2").start()
    ...
    mirror.stop()

The AWS emulation (``sandbox/aws_ext/sagemaker_hyperpod.py``) changes a node's status when
``BatchRebootClusterNodes``/``BatchReplaceClusterNodes`` (or its ``fail_node()`` with automatic
recovery) is called and then over sandbox time. This mirror hears each change through the
emulation's node listener and takes the Node ``hyperpod-<instance-id>`` through the same states
as a hardware fault injected with ``sandbox.cluster_faults.Faults``, whose paths it reuses:

- ``Pending`` (a reboot), ``ShuttingDown`` (a replacement), ``Failure``: the node fails
  (``Faults.fail_node``, no node-health event: the mirror reports repairs, it does not inject
  faults): its processes die, it goes NotReady with the unreachable taints, HyperPod's
  ``node-health-status`` label (``UnschedulablePendingReboot``/``...PendingReplacement``), taint
  and fault marks are set, its pods are evicted. A node already failed (by ``Faults`` or an
  earlier change) only gets the health label of the repair now under way.
- ``Running`` again after one of those: healed (``Faults.heal_node``: kubelet back, Ready,
  ``Schedulable``).
- gone (the replaced instance): the Node is deleted; ``KubeRuntime`` stops its kubelet and
  deletes the pods still bound to it, as upstream's pod garbage collector does.
- a new instance ``Running`` (the replacement): a Node ``hyperpod-<new id>`` with the HyperPod
  labels (``sandbox.kube.cluster.hyperpod_node``), Ready; the runtime gives it a kubelet. It is
  created when the instance is Running, not while it is Pending (booting, lifecycle scripts).

For a reboot or replacement asked through the API no health agent detected anything, so there
is no fault type on AWS's side; the mirror marks the node with the sandbox's own fault type
``InstanceReboot``/``InstanceReplacement`` (reasons ``RebootRequested``/``ReplacementRequested``)
so the node carries the same marks as after a fault. ``SystemUpdating`` (software update) is not
mirrored: the node stays Ready.

Timed transitions in the emulation are applied only when something reads the cluster, so the
mirror also reads it (``current_nodes``, straight from moto's backend: going through the
SageMaker API would consume faults a test armed with ``aws_ext.api_faults`` for the code under test)
every ``poll`` wall seconds. The listener only queues changes; one thread applies them in order,
so a jump of sandbox time past a whole reboot still takes the node down and up again.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
from typing import TYPE_CHECKING

from moto.core import DEFAULT_ACCOUNT_ID

from sandbox.aws_ext import sagemaker_hyperpod as hyperpod
from sandbox.aws_ext._base import AwsError
from sandbox.cluster_faults import HEALTH_LABEL, PENDING_LABEL, Faults
from sandbox.kube.cluster import add_node, hyperpod_node, node_name
from sandbox.kube.store import ApiError

if TYPE_CHECKING:
    from sandbox.kube.runtime import KubeRuntime

log = logging.getLogger("sandbox.kube.node_mirror")

#: SageMaker node status -> (repair action, fault type, fault reason, message) while it is down
DOWN = {
    "Pending": ("Reboot", "InstanceReboot", "RebootRequested", "EC2 instance reboot in progress"),
    "ShuttingDown": (
        "Replace",
        "InstanceReplacement",
        "ReplacementRequested",
        "Instance replacement started",
    ),
    # fail_node() in the emulation: what the health agent reported; the repair follows at once
    "Failure": ("Replace", "NvidiaErrorTerminate", "XidHardwareFailure", hyperpod.HMA_FAULT),
}


class NodeRepairMirror:
    """Mirror the HyperPod cluster ``cluster_name``'s node changes into ``runtime``'s Nodes."""

    def __init__(
        self,
        runtime: KubeRuntime,
        cluster_name: str,
        *,
        region: str = "us-west-2",
        account_id: str = DEFAULT_ACCOUNT_ID,
        poll: float = 0.05,
    ) -> None:
        self.runtime = runtime
        self.store = runtime.store
        self.cluster_name = cluster_name
        self.region = region
        self.account_id = account_id
        self.poll = poll
        self._faults = Faults(runtime)
        self._changes: queue.Queue[hyperpod.NodeChange | None] = queue.Queue()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._listening = False

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self, background: bool = True) -> NodeRepairMirror:
        """Listen, bring the Nodes in line with the instances now (Running ones without a Node
        get one; a Node whose instance is down fails), then follow changes in a thread; with
        ``background=False`` nothing runs until ``sync()`` is called (tests)."""
        hyperpod.add_node_listener(self._heard)
        self._listening = True
        # listening first: a change made while the snapshot is read is queued, and applied after
        # it, so the end state is the latest one
        for change in self._read():
            self._apply(change)
        if background:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="kube-node-mirror", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._listening:
            hyperpod.remove_node_listener(self._heard)
            self._listening = False
        self._stop.set()
        self._changes.put(None)  # wake the thread
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def __enter__(self) -> NodeRepairMirror:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def sync(self) -> None:
        """Read the cluster (due transitions happen now) and apply every change heard so far."""
        self._read()
        while True:
            try:
                change = self._changes.get_nowait()
            except queue.Empty:
                return
            if change is not None:
                self._apply(change)

    # -- the loop ---------------------------------------------------------------------------------

    def _heard(self, change: hyperpod.NodeChange) -> None:
        # runs in whichever thread applied the change (a moto request, a reader): queue it only
        if (change.account_id, change.region, change.cluster_name) == (
            self.account_id,
            self.region,
            self.cluster_name,
        ):
            self._changes.put(change)

    def _read(self) -> list[hyperpod.NodeChange]:
        try:
            return hyperpod.current_nodes(self.cluster_name, region=self.region, account_id=self.account_id)
        except AwsError:
            return []  # no such cluster (yet, or any more): nothing to mirror

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._read()
                try:
                    change = self._changes.get(timeout=self.poll)
                except queue.Empty:
                    continue
                if change is not None:
                    self._apply(change)
            except Exception:  # keep mirroring: one bad change must not freeze every node
                log.exception("node mirror for %s", self.cluster_name)

    # -- one change ---------------------------------------------------------------------------------

    def _apply(self, change: hyperpod.NodeChange) -> None:
        name = node_name(change.instance_id)
        rt = self.store.rt("", "nodes")
        exists = self.store.find(rt, None, name) is not None
        if change.status is None:
            if exists:
                with contextlib.suppress(ApiError):
                    self.store.delete(rt, None, name)
            return
        if change.status == "Running":
            if not exists:
                add_node(
                    self.store,
                    hyperpod_node(
                        change.instance_id,
                        change.instance_type,
                        change.instance_group,
                        **({"zone": change.zone} if change.zone else {}),
                    ),
                )
            elif change.previous in DOWN:
                self._faults.heal_node(name, emit=False)
            return
        if change.status in DOWN and exists:
            repair, fault_type, reason, message = DOWN[change.status]
            if self.runtime.kubelet(name).failed:
                # down already (a fault, or the Failure before this repair): say which repair
                def pending(node: dict) -> dict:
                    node["metadata"].setdefault("labels", {})[HEALTH_LABEL] = PENDING_LABEL[repair]
                    return node

                self.store.patch(rt, None, name, pending)
            else:
                self._faults.fail_node(
                    name,
                    fault_type=fault_type,
                    fault_reason=reason,
                    repair_action=repair,
                    message=message,
                    emit=False,
                    # SageMaker took the instance down to repair it: its processes are gone at once
                    mode="clean",
                )
