"""The job's status as AWS's CRD types it and the texts the supervisor writes, as pure functions:
the conditions after an event (``conditions_after``), ``jobPods``, ``masterPort``, the faulty ranks,
what cleanPodPolicy deletes (``clean_targets``), and reasons short enough for the execution's
state (``listed``).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from hyperpod_control.models.job import CleanPodPolicy, HyperPodPytorchJob, set_condition
from hyperpod_control.models.records import PodSlot
from hyperpod_control.services.supervision.calls import master_port

#: The items a reason names before "and N more": a reason travels in the execution's state (Step
#: Functions' 256 KiB), where one line per pod of a 4,096-rank job would not fit; the JOB item's
#: history keeps the details.
LISTED = 10


def listed(items: Sequence[str], sep: str = ", ", limit: int = LISTED) -> str:
    """Pure: the first ``limit`` items joined, and how many more there are."""
    items = list(items)
    more = len(items) - limit
    return sep.join(items[:limit]) + (f"{sep}and {more} more" if more > 0 else "")


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def clean_targets(policy: CleanPodPolicy, slots: list[PodSlot], completed: set[str]) -> list[str]:
    """Pure: the pods cleanPodPolicy says to delete when the job ends."""
    if policy is CleanPodPolicy.ALL:
        return [s.pod for s in slots]
    if policy is CleanPodPolicy.ONLY_COMPLETE:
        return [s.pod for s in slots if s.pod in completed]
    return []


def conditions_after(
    job: HyperPodPytorchJob, kind: str, reason: str, message: str, now: str
) -> list[dict[str, Any]]:
    """Pure: the job's conditions once ``kind`` happened (the others it implies set False)."""
    conditions = list(job.status.conditions) if job.status else []
    implied_false = {
        "Running": ["Completed", "Failed"],
        "Completed": ["Running"],
        "Failed": ["Running"],
    }.get(kind, [])
    for other in implied_false:
        if any(c.type == other for c in conditions):
            conditions = set_condition(conditions, other, "False", reason, message, now)
    conditions = set_condition(conditions, kind, "True", reason, message, now)
    return [c.model_dump(mode="json", by_alias=True, exclude_none=True) for c in conditions]


def pod_refs(namespace: str, pods: list[str]) -> list[dict[str, Any]]:
    """Pure: ``status.jobPods`` as AWS's CRD types it: ObjectReferences, not names."""
    return [{"apiVersion": "v1", "kind": "Pod", "name": pod, "namespace": namespace} for pod in pods]


def status_master_port(fault_count: int) -> str:
    """Pure: ``status.masterPort``, a string in AWS's CRD."""
    return str(master_port(fault_count))


def rank_list(ranks: set[int]) -> list[str]:
    """Pure: ``faultyRankList``, strings in AWS's CRD, in rank order."""
    return [str(r) for r in sorted(ranks)]
