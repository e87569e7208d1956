"""What the supervisor does to a job's pods and agents in more than one step: create them all anew
(``fresh_pods``: a full restart, a resume), add spares (``replacement_spares``: after a swap, for a
scale-up), and stop agents and wait until they are READY again (``stop_and_wait``).
"""

from __future__ import annotations

import time

from hyperpod_control.adapters.agents import AgentCall
from hyperpod_control.exceptions import DependencyUnavailableError
from hyperpod_control.models.agent import AgentState, StopRequest
from hyperpod_control.models.job import HyperPodPytorchJob
from hyperpod_control.models.records import JobRecord, PodSlot
from hyperpod_control.services.supervision import avoid_nodes, build_pod, listed, pod_index, pod_name
from hyperpod_control.services.supervisor.context import Supervisor


def fresh_pods(
    sup: Supervisor, record: JobRecord, job: HyperPodPytorchJob, avoid: list[str] | None = None
) -> list[PodSlot]:
    """Every pod of the job created anew (``replicas`` + ``spares``), indexed after every pod it
    had (so no old pod still terminating is mistaken for a new one), off the ``avoid`` nodes."""
    start = max((pod_index(s.pod) for s in record.pods), default=-1) + 1
    slots = []
    for index in range(start, start + job.replicas + job.spares):
        body = build_pod(job, index, sup.config.event_bus, position=index - start)
        if avoid:
            avoid_nodes(body, avoid)
        sup.kube.create_pod(job.metadata.namespace, body)
        slots.append(PodSlot(pod=pod_name(job.metadata.name, index)))
    return slots


def replacement_spares(
    sup: Supervisor, job: HyperPodPytorchJob, slots: list[PodSlot], count: int
) -> list[PodSlot]:
    """New spare pods, indexed after every pod the job had; Pending until capacity returns."""
    start = max((pod_index(s.pod) for s in slots), default=-1) + 1
    made = []
    for index in range(start, start + count):
        sup.kube.create_pod(job.metadata.namespace, build_pod(job, index, sup.config.event_bus))
        made.append(PodSlot(pod=pod_name(job.metadata.name, index)))
    return made


STOP_WAIT_S = 90.0


def stop_and_wait(
    sup: Supervisor,
    record: JobRecord,
    slots: list[PodSlot],
    mode: str,
    *,
    graceful: bool = False,
    timeout: int | None = None,
) -> list[str]:
    """/stop ``slots``' agents and wait until each is READY again (its workers stopped). Agents
    that cannot answer are returned: their pods are dying with their node. ``graceful``: the
    workers get the elastic-event signal (SIGUSR1) rather than the kill, ``timeout`` seconds to
    checkpoint and exit (the wire protocol's ``is_graceful`` and ``timeout``)."""
    body = StopRequest(restart_mode=mode, is_graceful=graceful or None, timeout=timeout).body()
    calls = [AgentCall(s.pod, "POST", "/stop", body=body, ip=s.ip, namespace=record.namespace) for s in slots]
    answers = sup.agents.call_all(calls)
    pending = {s.pod: s.ip for s in slots if answers.get(s.pod) and answers[s.pod].ok}
    unreachable = [s.pod for s in slots if s.pod not in pending]
    deadline = time.monotonic() + STOP_WAIT_S + (timeout or 0)
    while pending:
        statuses = sup.agents.statuses(record.namespace, pending.items())
        for pod, answer in statuses.items():
            if answer.ok and answer.status and answer.status.status is AgentState.READY:
                pending.pop(pod, None)
            elif answer.pod_gone:
                pending.pop(pod, None)
                unreachable.append(pod)
        if not pending:
            break
        if time.monotonic() > deadline:
            raise DependencyUnavailableError(
                f"agents {listed(list(pending))} did not stop within {STOP_WAIT_S:.0f} s (retried)."
            )
        time.sleep(sup.deadline.timeout(0.05, f"waiting for agents {listed(list(pending))} to stop"))
    return unreachable
