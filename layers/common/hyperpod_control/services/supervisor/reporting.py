"""What the supervisor tells about a job: the job's status (conditions, restart counts, the
faulty pods), Kubernetes Events on it (what ``kubectl describe`` shows) and its history items in
the store, after a recovery (``report_recovery``) or a resize (``report_resize``) above all.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from hyperpod_control.exceptions import AccessDeniedError, ResourceNotFoundError, RetryableError
from hyperpod_control.models.job import HyperPodPytorchJob
from hyperpod_control.models.job_faults import JobFault
from hyperpod_control.models.names import JOB_GROUP, JOB_PLURAL, JOB_VERSION
from hyperpod_control.models.records import JobEventRecord, JobRecord
from hyperpod_control.models.supervisor import RemediationOutcome
from hyperpod_control.observability import logger
from hyperpod_control.services import elastic
from hyperpod_control.services.remediation import DEFAULT_EVAL_PERIOD_S, Decision, restarts_in_window
from hyperpod_control.services.supervision import (
    conditions_after,
    instance_id,
    pod_refs,
    rank_list,
    rfc3339,
    status_master_port,
)
from hyperpod_control.services.supervisor.context import Supervisor

EVENT_SOURCE_COMPONENT = "hyperpod-control-plane-supervisor"


def record_history(sup: Supervisor, record: JobRecord, kind: str, message: str, **details: Any) -> None:
    now = sup.now()
    sup.store.add_job_event(
        JobEventRecord(
            uid=record.uid,
            event_id=uuid.uuid4().hex[:12],
            at=now,
            cluster_arn=record.cluster_arn,
            namespace=record.namespace,
            name=record.name,
            kind=kind,
            message=message,
            details=details,
            expiration=int((now + timedelta(seconds=sup.config.event_ttl_seconds)).timestamp()),
        )
    )


def k8s_event(sup: Supervisor, job: HyperPodPytorchJob, kind: str, reason: str, message: str) -> None:
    """A Kubernetes Event on the job; best effort (the status and the history already say it)."""
    now = rfc3339(sup.now())
    meta = job.metadata
    body = {
        "metadata": {"generateName": f"{meta.name}.", "namespace": meta.namespace},
        "involvedObject": {
            "apiVersion": job.api_version,
            "kind": job.kind,
            "name": meta.name,
            "namespace": meta.namespace,
            "uid": meta.uid,
        },
        "type": kind,
        "reason": reason,
        "message": message[:1024],
        "source": {"component": EVENT_SOURCE_COMPONENT},
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    }
    # An Event is a courtesy (the status and the history say it too): a step that has acted must
    # not fail, and be retried into acting twice, for it. What the API server answers is sorted:
    # Events refused (RBAC) or absent (the namespace going away) are said once per environment;
    # a throttled or unavailable API server each time. Anything else is a bug of ours (a body the
    # API server refuses, a TypeError) and fails the step, where the tests see it.
    try:
        sup.kube.create_event(meta.namespace, body)
    except (AccessDeniedError, ResourceNotFoundError) as exc:
        refusal = (type(exc).__name__, meta.namespace)
        if refusal not in _EVENTS_REFUSED:
            _EVENTS_REFUSED.add(refusal)
            logger.warning(
                "Kubernetes Events cannot be created: kubectl describe will not show the supervisor's",
                extra={"namespace": meta.namespace, "reason": reason, "error": str(exc)},
            )
    except RetryableError as exc:
        logger.warning(
            "Kubernetes Event not created: the API server is busy or unavailable",
            extra={"namespace": meta.namespace, "reason": reason, "error": str(exc)},
        )


#: (error, namespace) pairs whose refused Events were logged already in this environment.
_EVENTS_REFUSED: set[tuple[str, str]] = set()


def patch_status(sup: Supervisor, job: HyperPodPytorchJob, status: dict[str, Any]) -> None:
    sup.kube.patch_custom_object_status(
        JOB_GROUP, JOB_VERSION, JOB_PLURAL, job.metadata.namespace, job.metadata.name, status
    )


def fault_kind(faults: list[JobFault]) -> str:
    """The kind a remediation is counted under: the first of its faults' kinds, in name order."""
    return sorted({f.kind for f in faults})[0]


def report_recovery(
    sup: Supervisor,
    record: JobRecord,
    job: HyperPodPytorchJob,
    decision: Decision,
    faults: list[JobFault],
    fault_at: datetime,
    resumed: datetime,
    actions: list[str],
) -> RemediationOutcome:
    """The job's status, a Kubernetes Event and a history item once training runs again."""
    took_ms = max(0, int((resumed - fault_at).total_seconds() * 1000))
    fault = fault_kind(faults)
    reason = {"node": "NodeFault", "pod": "PodFault", "hang": "HangFault"}.get(fault, "WorkerFault")
    message = (
        f"The fault of reason {reason} was remediated in {took_ms} milliseconds ({decision.action.value})"
    )
    stamp = rfc3339(resumed)
    eval_period = None
    if job.spec.run_policy.restart_policy:
        eval_period = job.spec.run_policy.restart_policy.eval_period_seconds
    window = eval_period or DEFAULT_EVAL_PERIOD_S
    status = {
        "conditions": conditions_after(job, "Running", "Running", message, stamp),
        "restartCount": record.restart_count,
        "restartStatus": {
            "currentEvalPeriod": window,
            "restartCount": restarts_in_window(record, window, resumed),
            "fullJobRestartCount": record.full_restart_count,
        },
        "latestFaultyPodInstanceList": {
            "restartType": decision.restart_type,
            "faultyInstanceIdList": sorted({i for f in faults if (i := instance_id(f.node))}),
            "faultyPodList": sorted({f.pod for f in faults if f.pod}),
            "faultyRankList": rank_list({f.rank for f in faults if f.rank is not None}),
        },
        "masterAddr": record.master_addr,
        "masterPort": status_master_port(record.fault_count),
        "jobPods": pod_refs(record.namespace, [s.pod for s in record.pods]),
    }
    patch_status(sup, job, status)
    k8s_event(sup, job, "Normal", "Running", message)
    record_history(
        sup,
        record,
        "Remediated",
        message,
        action=decision.action.value,
        decision=decision.reason,
        faults=[f.model_dump(mode="json") for f in faults],
        actions=actions,
        recovery_ms=took_ms,
        fault_at=fault_at.isoformat(),
        resumed_at=resumed.isoformat(),
        progress=record.progress,
    )
    return RemediationOutcome(action=decision.action.value, fault=fault, recovery_ms=took_ms)


def report_resize(
    sup: Supervisor,
    record: JobRecord,
    job: HyperPodPytorchJob,
    before: int,
    why: str,
    began: datetime,
    resumed: datetime,
    *,
    faulty: bool,
) -> None:
    """``status.elasticScalingStatus``, a Kubernetes Event and a ``Resized`` history entry after
    the job changed size: from and to, why, and how long training stood still."""
    took_ms = max(0, int((resumed - began).total_seconds() * 1000))
    direction = "ScaledDown" if record.nnodes < before else "ScaledUp"
    message = f"elastic {direction}: {before} -> {record.nnodes} ranks in {took_ms} milliseconds"
    stamp = rfc3339(resumed)
    status = {
        "elasticScalingStatus": elastic.scaling_status(
            job,
            record.nnodes,
            stamp,
            faulty=faulty,
            pods_scaled=abs(record.nnodes - before),
            failures=record.scaling_failures,
        ),
        "masterAddr": record.master_addr,
        "masterPort": status_master_port(record.fault_count),
        "jobPods": pod_refs(record.namespace, [s.pod for s in record.pods]),
    }
    if not faulty:  # a fault's recovery has set the Running condition already (report_recovery)
        status["conditions"] = conditions_after(job, "Running", direction, message, stamp)
    patch_status(sup, job, status)
    k8s_event(sup, job, "Normal", direction, f"{message}: {why}")
    record_history(
        sup,
        record,
        "Resized",
        message,
        direction=direction,
        reason=why,
        **{"from": before, "to": record.nnodes},
        duration_ms=took_ms,
        ranks={str(s.rank): s.pod for s in record.ranked()},
        progress=record.progress,
    )
