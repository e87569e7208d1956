"""Fault injection for the sandbox, done the way faults happen on HyperPod.

- ``node_health_event``: the EventBridge entry HyperPod's health agent puts on the default bus
  (docs/hyperpod-contract.md, "Events and node marks"), as ``put_events`` takes it.
- ``Faults`` (over a running ``KubeRuntime`` and a boto3 EventBridge client):

  ``fail_node(node)``: an instance dies, by default as it does on EKS (``mode="dirty"``): its
  processes freeze where they are (SIGSTOP: connections to its pods are accepted by nobody and
  answered by nothing, they hang) and its kubelet posts nothing more, so its pods stay Running.
  After the node-monitor grace period (40 s on the sandbox clock) the node lifecycle controller
  marks it NotReady (Ready ``Unknown``, the ``unreachable`` NoSchedule and NoExecute taints) and
  its pods not Ready; each pod is evicted when its toleration of ``unreachable`` runs out (300 s,
  from the DefaultTolerationSeconds admission the sandbox API server applies): marked for
  deletion, it stays ``Terminating`` (no kubelet confirms) until the node comes back or someone
  force-deletes it. HyperPod's health agent marks the node (4.3):
  ``sagemaker.amazonaws.com/node-health-status`` = ``UnschedulablePendingReplacement`` (or
  ``...PendingReboot``), the ``fault-types``/``fault-reasons`` labels, the
  ``sagemaker.amazonaws.com/node-health-status=Unschedulable:NoSchedule`` taint, the
  ``fault-details`` annotation and a node condition named after the fault type, and puts the
  "SageMaker HyperPod Cluster Node Health Event" (Unhealthy) on the bus, each put with its own id:
  ``event="first"`` at the failure, ``"after"`` once the node is NotReady, ``"never"`` (no mark,
  no event: the fault must be found from Kubernetes and the agents alone); ``times`` puts.
  ``mode="clean"`` is the kinder fault of earlier versions: processes killed at once (connections
  refused), NotReady and marked at once, pods force-deleted at once.
  ``heal_node(node)``: all of that undone, the kubelet back, a Healthy event.
  ``crash_pod``: one container's main process killed (SIGKILL by default; the kubelet reports the
  exit and restarts it under the pod's restartPolicy). ``hang_pod``/``resume_pod``: SIGSTOP and
  SIGCONT to every process of the pod (the pod stays Running, as a hung job does).
  ``hang_agent``: only the container's main process (the agent, ``hyperpodrun``) stops: its
  port accepts connections and never answers while its workers run on.
  ``repeat_event(node, times)``: the node's last health event again, ``times`` puts with
  distinct ids, as AWS may deliver one change several times.

Node names are ``hyperpod-<instance-id>``; the event carries the instance id.
"""

from __future__ import annotations

import contextlib
import copy
import json
import signal
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from sandbox.clock import now_rfc3339
from sandbox.kube.store import UNREACHABLE_TAINT

if TYPE_CHECKING:
    from sandbox.kube.runtime import KubeRuntime

NODE_HEALTH = "SageMaker HyperPod Cluster Node Health Event"
HEALTH_LABEL = "sagemaker.amazonaws.com/node-health-status"
FAULT_TYPES_LABEL = "sagemaker.amazonaws.com/fault-types"
FAULT_REASONS_LABEL = "sagemaker.amazonaws.com/fault-reasons"
FAULT_DETAILS_ANNOTATION = "sagemaker.amazonaws.com/fault-details"
HEALTH_TAINT = {"key": HEALTH_LABEL, "value": "Unschedulable", "effect": "NoSchedule"}
UNREACHABLE = UNREACHABLE_TAINT
NODE_PREFIX = "hyperpod-"
#: kube-controller-manager's --node-monitor-grace-period: a silent kubelet's node goes NotReady.
NODE_MONITOR_GRACE_S = 40.0
FailMode = Literal["dirty", "clean"]
EventTiming = Literal["first", "after", "never"]
#: repair action -> the node-health-status label HyperPod sets while it waits for the repair
PENDING_LABEL = {
    "Replace": "UnschedulablePendingReplacement",
    "Reboot": "UnschedulablePendingReboot",
    "None": "Unschedulable",
}


def node_health_event(
    cluster: dict[str, Any],
    instance_id: str,
    healthy: bool,
    when: datetime,
    *,
    fault_type: str = "NvidiaErrorTerminate",
    repair_action: str = "Replace",
) -> dict:
    """The event HyperPod's health agent puts on the default bus (docs/hyperpod-contract.md,
    "Events and node marks"), as a ``put_events`` entry; ``cluster`` needs ClusterName and
    ClusterArn (``describe_cluster``)."""
    summary = (
        {
            "HealthStatus": "Healthy",
            "HealthStatusReason": "Node passed health checks.",
            "RepairAction": "None",
        }
        if healthy
        else {
            "HealthStatus": "Unhealthy",
            "HealthStatusReason": "HyperPod Health Monitoring Agent (HMA) has detected fault type "
            f"{fault_type} on this node and is unhealthy.",
            "RepairAction": repair_action,
            "Recommendation": "Please Reboot the Faulty Node."
            if repair_action == "Reboot"
            else "Please Replace the Faulty Node.",
        }
    )
    return {
        "Source": "aws.sagemaker",
        "DetailType": NODE_HEALTH,
        "Time": when,
        "Resources": [cluster["ClusterArn"]],
        "Detail": json.dumps(
            {
                "ClusterName": cluster["ClusterName"],
                "ClusterArn": cluster["ClusterArn"],
                "InstanceId": instance_id,
                "Tags": {},
                "HealthSummary": summary,
            }
        ),
    }


def instance_id_of(node: str) -> str:
    if not node.startswith(NODE_PREFIX + "i-"):
        raise ValueError(f"{node!r} is not a HyperPod node name (hyperpod-<instance-id>)")
    return node[len(NODE_PREFIX) :]


def failed_node(
    node: dict, fault_type: str, fault_reason: str, repair_action: str, message: str, when: str
) -> dict:
    """Pure: the Node object after HyperPod detected a fault and its kubelet went silent."""
    marked = health_marked_node(node, fault_type, fault_reason, repair_action, message, when)
    return not_ready_node(marked, when)


def not_ready_node(node: dict, when: str) -> dict:
    """Pure: the Node object once the node lifecycle controller found its kubelet silent."""
    node = copy.deepcopy(node)
    spec = node.setdefault("spec", {})
    taints = [t for t in spec.get("taints") or [] if t.get("key") != UNREACHABLE]
    spec["taints"] = [
        *taints,
        {"key": UNREACHABLE, "effect": "NoSchedule", "timeAdded": when},
        {"key": UNREACHABLE, "effect": "NoExecute", "timeAdded": when},
    ]
    for c in node.setdefault("status", {}).get("conditions") or []:
        if c.get("type") in ("Ready", "MemoryPressure", "DiskPressure", "PIDPressure"):
            c.update(
                status="Unknown",
                reason="NodeStatusUnknown",
                message="Kubelet stopped posting node status.",
                lastTransitionTime=when,
            )
    return node


def health_marked_node(
    node: dict, fault_type: str, fault_reason: str, repair_action: str, message: str, when: str
) -> dict:
    """Pure: the Node object once HyperPod's health agent marked it faulty (labels, annotation,
    its NoSchedule taint, a condition named after the fault type)."""
    node = copy.deepcopy(node)
    meta = node["metadata"]
    labels = meta.setdefault("labels", {})
    labels[HEALTH_LABEL] = PENDING_LABEL.get(repair_action, "Unschedulable")
    labels[FAULT_TYPES_LABEL] = fault_type
    labels[FAULT_REASONS_LABEL] = fault_reason
    annotations = meta.setdefault("annotations", {})
    details = json.loads(annotations.get(FAULT_DETAILS_ANNOTATION) or "[]")
    details.append({"timestamp": when, "type": fault_type, "reason": fault_reason, "message": message})
    annotations[FAULT_DETAILS_ANNOTATION] = json.dumps(details[-10:])
    spec = node.setdefault("spec", {})
    spec["taints"] = [
        *(t for t in spec.get("taints") or [] if t.get("key") != HEALTH_LABEL),
        dict(HEALTH_TAINT),
    ]
    conditions = [
        c for c in node.setdefault("status", {}).get("conditions") or [] if c.get("type") != fault_type
    ]
    conditions.append(
        {
            "type": fault_type,
            "status": "True",
            "reason": fault_reason,
            "message": message,
            "lastTransitionTime": when,
        }
    )
    node["status"]["conditions"] = conditions
    return node


def healed_node(node: dict, when: str) -> dict:
    """Pure: the Node object once repaired and its kubelet posting Ready again."""
    node = copy.deepcopy(node)
    meta = node["metadata"]
    labels = meta.setdefault("labels", {})
    labels[HEALTH_LABEL] = "Schedulable"
    labels.pop(FAULT_TYPES_LABEL, None)
    labels.pop(FAULT_REASONS_LABEL, None)
    spec = node.setdefault("spec", {})
    spec["taints"] = [t for t in spec.get("taints") or [] if t.get("key") not in (HEALTH_LABEL, UNREACHABLE)]
    if not spec["taints"]:
        spec.pop("taints")
    ok = {
        "Ready": ("True", "KubeletReady", "kubelet is posting ready status"),
        "MemoryPressure": ("False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
        "DiskPressure": ("False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
        "PIDPressure": ("False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
    }
    for c in node.setdefault("status", {}).get("conditions") or []:
        if c.get("type") in ok:
            status, reason, message = ok[c["type"]]
            c.update(status=status, reason=reason, message=message, lastTransitionTime=when)
        elif c.get("status") == "True":
            # a fault condition flips back to False after recovery (4.3)
            c.update(status="False", reason="NoFault", lastTransitionTime=when)
    return node


class Faults:
    """Fault injection over a running ``KubeRuntime``; ``events`` is a boto3 EventBridge client
    (``Sandbox.client("events")``), ``cluster`` the HyperPod cluster's ClusterName and ClusterArn
    (or pass ``sagemaker`` and ``cluster_name`` to look them up)."""

    def __init__(
        self,
        runtime: KubeRuntime,
        events: Any = None,
        cluster: dict[str, Any] | None = None,
        *,
        sagemaker: Any = None,
        cluster_name: str | None = None,
        time_scale: float = 1.0,
    ) -> None:
        self.runtime = runtime
        self.store = runtime.store
        self.events = events
        self._cluster = {k: cluster[k] for k in ("ClusterName", "ClusterArn")} if cluster else None
        self._sagemaker = sagemaker
        self._cluster_name = cluster_name
        self._last_event: dict[str, dict] = {}  # node -> the last entry put for it
        self._lock = threading.Lock()
        #: Wall seconds per sandbox second, for the grace periods of a dirty failure.
        self.time_scale = time_scale
        self._timelines: dict[str, threading.Event] = {}  # node -> cancels its failure's timeline

    # -- nodes ----------------------------------------------------------------------------------

    def fail_node(
        self,
        node: str,
        *,
        mode: FailMode = "dirty",
        event: EventTiming = "first",
        fault_type: str = "NvidiaErrorTerminate",
        fault_reason: str = "XidHardwareFailure",
        repair_action: str = "Replace",
        message: str = "NVRM: Xid (PCI:0000:b9:00): 79, GPU has fallen off the bus.",
        emit: bool = True,
        times: int = 1,
        grace_seconds: float = NODE_MONITOR_GRACE_S,
    ) -> list[str]:
        """Fail ``node`` (see the module docstring); returns the ids of the node-health events put
        now (``times`` copies, each with its own id; none when ``event`` is "after" or "never").
        ``event="never"``: HyperPod neither marks the node nor puts an event; ``emit=False``: it
        marks the node, but the event is not put (the caller reports the change its own way)."""
        instance_id = instance_id_of(node)
        if repair_action not in PENDING_LABEL:
            raise ValueError(f"repair_action must be one of {sorted(PENDING_LABEL)}")
        if mode not in ("dirty", "clean"):
            raise ValueError("mode must be 'dirty' or 'clean'")
        if event not in ("first", "after", "never"):
            raise ValueError("event must be 'first', 'after' or 'never'")
        kubelet = self.runtime.kubelet(node)
        rt = self.store.rt("", "nodes")

        def mark() -> list[str]:
            when = now_rfc3339()
            for sub in (None, "status"):  # labels, annotation and taint; then the condition
                self.store.patch(
                    rt,
                    None,
                    node,
                    lambda n: health_marked_node(n, fault_type, fault_reason, repair_action, message, when),
                    sub,
                )
            if not emit:  # HyperPod marked the node; its event is not put (the caller puts its own)
                return []
            entry = node_health_event(
                self._cluster_info(),
                instance_id,
                False,
                datetime.now(UTC),
                fault_type=fault_type,
                repair_action=repair_action,
            )
            return self._put(node, entry, times)

        if mode == "clean":
            pods = kubelet.fail()
            when = now_rfc3339()
            for sub in (None, "status"):
                self.store.patch(rt, None, node, lambda n: not_ready_node(n, when), sub)
            self._evict_pods(node, pods)
            return mark() if event != "never" else []

        kubelet.freeze()
        ids = mark() if event == "first" else []
        cancel = threading.Event()
        with self._lock:
            old = self._timelines.pop(node, None)
            self._timelines[node] = cancel
        if old is not None:
            old.set()

        def not_ready() -> None:
            when = now_rfc3339()
            for sub in (None, "status"):
                self.store.patch(rt, None, node, lambda n: not_ready_node(n, when), sub)
            self._mark_pods_not_ready(node, when)
            if event == "after":
                mark()
            for seconds, name, namespace in self._tolerations(node):
                self._after(cancel, seconds, lambda ns=namespace, n=name: self._taint_evict(ns, n))

        self._after(cancel, grace_seconds, not_ready)
        return ids

    def _after(self, cancel: threading.Event, sandbox_seconds: float, action: Callable[[], None]) -> None:
        """Run ``action`` ``sandbox_seconds`` from now on the sandbox clock, unless cancelled."""

        def run() -> None:
            if cancel.wait(max(0.0, sandbox_seconds * self.time_scale)):
                return
            with contextlib.suppress(Exception):  # the sandbox may be stopping
                action()

        threading.Thread(target=run, name="sandbox-node-lifecycle", daemon=True).start()

    def _pods_on(self, node: str) -> list[dict]:
        rt = self.store.rt("", "pods")
        return [p for p in self.store.list(rt, None).items if (p.get("spec") or {}).get("nodeName") == node]

    def _mark_pods_not_ready(self, node: str, when: str) -> None:
        """As the node lifecycle controller does: every pod of a NotReady node is not Ready."""
        rt = self.store.rt("", "pods")

        def not_ready(current: dict) -> dict:
            for c in (current.setdefault("status", {})).get("conditions") or []:
                if c.get("type") in ("Ready", "ContainersReady"):
                    c.update(status="False", lastTransitionTime=when)
            return current

        for pod in self._pods_on(node):
            with contextlib.suppress(Exception):
                self.store.patch(
                    rt, pod["metadata"]["namespace"], pod["metadata"]["name"], not_ready, "status"
                )

    def _tolerations(self, node: str) -> list[tuple[float, str, str]]:
        """(seconds the pod tolerates ``unreachable``, name, namespace) of each pod on ``node``
        that does not tolerate it forever (the taint manager's schedule)."""
        found = []
        for pod in self._pods_on(node):
            seconds: float | None = 0.0  # no toleration: evicted as soon as the taint is there
            for t in (pod.get("spec") or {}).get("tolerations") or []:
                matches = t.get("key") == UNREACHABLE or (not t.get("key") and t.get("operator") == "Exists")
                if matches and t.get("effect") in (None, "", "NoExecute"):
                    seconds = float(t["tolerationSeconds"]) if "tolerationSeconds" in t else None
                    break
            if seconds is not None:
                found.append((seconds, pod["metadata"]["name"], pod["metadata"]["namespace"]))
        return found

    def _taint_evict(self, namespace: str, name: str) -> None:
        """The taint manager's eviction: a DisruptionTarget condition, then a deletion with the
        pod's own grace period, which no kubelet confirms: the pod stays Terminating."""
        rt = self.store.rt("", "pods")
        when = now_rfc3339()
        with contextlib.suppress(Exception):
            self.store.patch(rt, namespace, name, lambda p: _disrupted(p, when), "status")
        with contextlib.suppress(Exception):
            self.store.delete(rt, namespace, name, {})

    def heal_node(self, node: str, *, emit: bool = True, times: int = 1) -> list[str]:
        """The node is repaired: kubelet back, Ready, HyperPod's marks gone, a Healthy event."""
        instance_id = instance_id_of(node)
        kubelet = self.runtime.kubelet(node)
        with self._lock:
            timeline = self._timelines.pop(node, None)
        if timeline is not None:
            timeline.set()  # a failure still unfolding stops here
        rt = self.store.rt("", "nodes")
        when = now_rfc3339()
        for sub in (None, "status"):
            self.store.patch(rt, None, node, lambda current: healed_node(current, when), sub)
        if kubelet.failed:
            kubelet.recover()
        if not emit:
            return []
        entry = node_health_event(self._cluster_info(), instance_id, True, datetime.now(UTC))
        return self._put(node, entry, times)

    def repeat_event(self, node: str, times: int = 2) -> list[str]:
        """The last node-health event put for ``node``, ``times`` more puts, each its own id."""
        with self._lock:
            entry = self._last_event.get(node)
        if entry is None:
            raise LookupError(f"no node-health event was put for {node} yet")
        return self._put(node, entry, times)

    def _evict_pods(self, node: str, pods_seen: list[dict]) -> None:
        rt = self.store.rt("", "pods")
        when = now_rfc3339()
        for pod in self.store.list(rt, None).items:
            if (pod.get("spec") or {}).get("nodeName") != node:
                continue
            if any(
                t.get("key") == UNREACHABLE
                and t.get("effect") == "NoExecute"
                and "tolerationSeconds" not in t
                for t in pod["spec"].get("tolerations") or []
            ):
                continue  # tolerates the fault forever: it stays, bound to a dead node
            ns, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
            with contextlib.suppress(Exception):
                self.store.patch(rt, ns, name, lambda p: _disrupted(p, when), "status")
            with contextlib.suppress(Exception):
                self.store.delete(rt, ns, name, {"gracePeriodSeconds": 0})

    # -- pods -------------------------------------------------------------------------------------

    def crash_pod(
        self, namespace: str, name: str, container: str | None = None, sig: int = signal.SIGKILL
    ) -> int:
        """Kill a container's main process with ``sig``; returns its pid."""
        proc = self.runtime.pod_worker(namespace, name).container(container)
        pid = proc.main_pid if proc is not None and proc.running else None
        if pid is None:
            raise LookupError(f"pod {namespace}/{name} has no running container {container or ''}".rstrip())
        import os

        os.kill(pid, sig)
        return pid

    def hang_pod(self, namespace: str, name: str) -> list[int]:
        """SIGSTOP every process of the pod; returns the pids stopped."""
        return self._signal_pod(namespace, name, signal.SIGSTOP)

    def hang_agent(self, namespace: str, name: str, container: str | None = None) -> list[int]:
        """SIGSTOP the container's main process only (the agent): its HTTP port accepts and never
        answers, while the workers it started run on. Returns the pid stopped."""
        proc = self.runtime.pod_worker(namespace, name).container(container)
        pid = proc.main_pid if proc is not None and proc.running else None
        if pid is None:
            raise LookupError(f"pod {namespace}/{name} has no running container {container or ''}".rstrip())
        import os

        os.kill(pid, signal.SIGSTOP)
        return [pid]

    def resume_pod(self, namespace: str, name: str) -> list[int]:
        return self._signal_pod(namespace, name, signal.SIGCONT)

    def _signal_pod(self, namespace: str, name: str, sig: int) -> list[int]:
        import os

        pids = self.runtime.pod_worker(namespace, name).all_pids()
        if not pids:
            raise LookupError(f"pod {namespace}/{name} has no running process")
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        return pids

    # -- events ------------------------------------------------------------------------------------

    def _cluster_info(self) -> dict[str, Any]:
        if self._cluster is None:
            if self._sagemaker is None or not self._cluster_name:
                raise ValueError(
                    "Faults needs cluster={'ClusterName', 'ClusterArn'} or sagemaker and cluster_name"
                )
            described = self._sagemaker.describe_cluster(ClusterName=self._cluster_name)
            self._cluster = {"ClusterName": described["ClusterName"], "ClusterArn": described["ClusterArn"]}
        return self._cluster

    def _put(self, node: str, entry: dict, times: int) -> list[str]:
        if self.events is None:
            raise ValueError("Faults needs an EventBridge client (events=) to put node-health events")
        if times < 1:
            raise ValueError("times must be at least 1")
        with self._lock:
            self._last_event[node] = entry
        ids = []
        for _ in range(times):
            # one put per copy: EventBridge gives each its own id, as AWS's repeated deliveries have
            result = self.events.put_events(Entries=[entry])
            if result.get("FailedEntryCount"):
                raise RuntimeError(f"put_events refused the node-health event: {result['Entries']}")
            ids.append(result["Entries"][0]["EventId"])
        return ids


def _disrupted(pod: dict, when: str) -> dict:
    """Pure: ``pod`` with the DisruptionTarget condition taint-based eviction sets first."""
    status = pod.setdefault("status", {})
    conditions = [c for c in status.get("conditions") or [] if c.get("type") != "DisruptionTarget"]
    conditions.append(
        {
            "type": "DisruptionTarget",
            "status": "True",
            "reason": "DeletionByTaintManager",
            "message": "Taint manager: deleting due to NoExecute taint",
            "lastTransitionTime": when,
        }
    )
    status["conditions"] = conditions
    return pod
