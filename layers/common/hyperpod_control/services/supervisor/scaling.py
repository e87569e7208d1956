"""An elastic job's growth: a scale-up watched one poll round at a time (``scale_up_round``:
services/elastic.py decides), and the coordinated restart at the new size once its new pods stand
by (``scale_up``, the Remediate step's share of it).
"""

from __future__ import annotations

from typing import Any

from hyperpod_control.exceptions import DependencyUnavailableError
from hyperpod_control.models.agent import AgentAnswer
from hyperpod_control.models.job import HyperPodPytorchJob
from hyperpod_control.models.records import JobRecord
from hyperpod_control.models.supervisor import StepResult
from hyperpod_control.services import elastic
from hyperpod_control.services.remediation import aggregate_progress, standing_spares
from hyperpod_control.services.supervision import ip_version_at, listed, start_calls
from hyperpod_control.services.supervisor.access import save
from hyperpod_control.services.supervisor.context import Supervisor
from hyperpod_control.services.supervisor.pods import replacement_spares, stop_and_wait
from hyperpod_control.services.supervisor.reporting import k8s_event, record_history, report_resize


def scale_up_round(
    sup: Supervisor,
    record: JobRecord,
    job: HyperPodPytorchJob,
    pods: dict[str, dict[str, Any]],
    answers: dict[str, AgentAnswer],
) -> dict[str, Any]:
    """An elastic job's growth, one poll round at a time (services/elastic.py decides): with a
    scale-up under way, ``resize`` once its new pods' agents stand by, or its pods deleted once
    ``scalingTimeoutInSeconds`` passed; else, capacity back (schedulable nodes without a pod of the
    job) and ``scaleUpSnoozeTimeInSeconds`` since the last restart: the new pods created. Returns
    the JOB item's update."""
    now = sup.now()
    scaling = record.scaling
    if scaling:
        if elastic.scale_up_ready(scaling, standing_spares(record, answers)):
            return {"resize": True}
        if not elastic.scaling_expired(scaling, job, now):
            return {}
        for pod in scaling["pods"]:
            sup.kube.delete_pod(record.namespace, pod, grace_period_seconds=0)
        failures = record.scaling_failures + 1
        message = (
            f"elastic scale-up to {scaling['target']} ranks abandoned: its pods {', '.join(scaling['pods'])} "
            f"did not run and answer within scalingTimeoutInSeconds ({failures} in a row)"
        )
        k8s_event(sup, job, "Warning", "ScaleUpFailed", message)
        record_history(sup, record, "ScaleUpFailed", message, target=scaling["target"], pods=scaling["pods"])
        return {
            "scaling": None,
            "scaling_failures": failures,
            "last_resize_at": now,  # the snooze applies before the next try too
            "pods": [s for s in record.pods if s.pod not in set(scaling["pods"])],
        }
    if not elastic.scale_up_open(record, job, now):
        return {}
    free = elastic.free_nodes(sup.kube.nodes(), pods)
    target = elastic.grow_target(record, job, len(free))
    if target is None:
        return {}
    standing = max(0, len(record.spare_pods()) - job.spares)
    count = max(0, target - record.nnodes - standing)
    new = replacement_spares(sup, job, record.pods, count)
    message = (
        f"elastic scale-up from {record.nnodes} to {target} ranks: {len(free)} schedulable node(s) free, "
        f"{count} pod(s) created"
    )
    record_history(
        sup, record, "ScaleUpStarted", message, target=target, pods=[s.pod for s in new], nodes=free
    )
    scaling = {"target": target, "since": now.isoformat(), "pods": [s.pod for s in new]}
    if not new:  # idle pods enough already: resize at once
        return {"scaling": scaling, "resize": True}
    return {"scaling": scaling, "pods": [*record.pods, *new]}


def scale_up(
    sup: Supervisor, record: JobRecord, job: HyperPodPytorchJob, answers: dict[str, AgentAnswer]
) -> StepResult:
    """The coordinated restart of a scale-up whose new pods stand by: the ranks stopped
    gracefully (the workers get the elastic-event signal and checkpoint, within
    ``gracefulShutdownTimeoutInSeconds``), then every rank started at the new size from the
    checkpoint all of them finished."""
    scaling = record.scaling or {}
    poll = sup.config.poll_seconds
    if not elastic.scale_up_ready(scaling, standing_spares(record, answers)) and scaling.get("pods"):
        return StepResult(next="monitor", poll_seconds=poll)  # a new pod went away meanwhile
    began = sup.now()
    before = record.nnodes
    target = int(scaling["target"])
    slots = elastic.resize_slots(record, target, set())
    ranked = {s.pod for s in slots if s.rank is not None}
    stop = [s for s in record.pods if s.rank is not None or s.pod in ranked]
    stop_and_wait(
        sup, record, stop, "process_level_restart", graceful=True, timeout=elastic.graceful_timeout(job)
    )
    # the checkpoint the workers took on the signal, as the stopped agents report it
    after = sup.statuses(record, [s for s in record.ranked()], {})
    progress = (
        aggregate_progress({pod: a.status.progress for pod, a in after.items() if a.ok and a.status})
        or record.progress
    )
    master = next((s.ip for s in slots if s.rank == 0), record.master_addr)
    ip_version = ip_version_at(sup.now())
    update = {
        "pods": slots,
        "nnodes": target,
        "master_addr": master,
        "ip_version": ip_version,
        "fault_count": record.fault_count + 1,
        "progress": progress,
        "scaling": None,
        "scaling_failures": 0,
        "last_resize_at": began,
        "task_token": None,
    }
    staged = record.model_copy(update=update)
    chosen = {s.pod for s in stop}
    started = sup.agents.call_all(c for c in start_calls(staged, job, ip_version) if c.pod in chosen)
    refused = [f"{pod}: {a.error}" for pod, a in started.items() if not a.ok]
    if refused:
        raise DependencyUnavailableError("agents refused /start after a scale-up: " + listed(refused, "; "))
    record = save(sup, record, **update)
    why = f"capacity returned: {target - before} more rank(s), towards maxReplicas {elastic.max_size(job)}"
    report_resize(sup, record, job, before, why, began, sup.now(), faulty=False)
    return StepResult(
        next="monitor", reason=f"elastic scale-up from {before} to {target} ranks", poll_seconds=poll
    )
