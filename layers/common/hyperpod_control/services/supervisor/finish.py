"""The steps that end a job's supervision: Complete, Fail (agents shut down, cleanPodPolicy
applied, the final condition), Cleanup after the job was deleted, NextSegment (the job handed to
a new execution) and ``runPolicy.ttlSecondsAfterFinished`` (``expire_finished_job``).
"""

from __future__ import annotations

from typing import Any

from hyperpod_control.adapters.agents import AgentCall
from hyperpod_control.models.job import CleanPodPolicy, HyperPodPytorchJob
from hyperpod_control.models.names import JOB_GROUP, JOB_PLURAL, JOB_VERSION
from hyperpod_control.models.records import JobPhase, JobRecord
from hyperpod_control.models.supervisor import StepInput, StepResult
from hyperpod_control.services import run_policy
from hyperpod_control.services.supervision import (
    clean_targets,
    conditions_after,
    job_selector,
    pod_failure,
    pod_phase,
    rfc3339,
)
from hyperpod_control.services.supervisor.access import (
    job_record,
    lenient_job,
    new_job_record,
    pods_by_name,
    read_job,
    save,
)
from hyperpod_control.services.supervisor.context import Supervisor
from hyperpod_control.services.supervisor.reporting import k8s_event, patch_status, record_history


def _shutdown_and_clean(
    sup: Supervisor, record: JobRecord, job: HyperPodPytorchJob | None, completed: set[str]
) -> list[str]:
    pods = pods_by_name(sup, record)
    live = [s for s in record.pods if s.pod in pods and pod_phase(pods[s.pod]) == "Running"]
    sup.agents.call_all(
        AgentCall(pod=s.pod, method="POST", path="/shutdown", ip=s.ip, namespace=record.namespace)
        for s in live
    )
    policy = job.spec.run_policy.clean_pod_policy if job else CleanPodPolicy.ALL
    deleted = []
    for pod in clean_targets(policy, [s for s in record.pods if s.pod in pods], completed):
        if sup.kube.delete_pod(record.namespace, pod):
            deleted.append(pod)
    return deleted


def complete(request: StepInput, sup: Supervisor) -> StepResult:
    ref = request.job
    record = job_record(sup, ref)
    if record.phase is JobPhase.COMPLETED:
        return StepResult(next="done")
    obj = read_job(sup, ref)
    job = lenient_job(obj)
    # Every pod finished its part: the ranks completed, the spares are released by /shutdown.
    deleted = _shutdown_and_clean(sup, record, job, {s.pod for s in record.pods})
    now = sup.now()
    record = save(sup, record, phase=JobPhase.COMPLETED, completed_at=now, task_token=None, reason=None)
    took = (now - (record.started_at or now)).total_seconds()
    message = f"all {record.nnodes} ranks completed in {took:.1f} s"
    if job is not None:
        patch_status(
            sup,
            job,
            {
                "conditions": conditions_after(job, "Completed", "JobCompleted", message, rfc3339(now)),
                "completionTime": rfc3339(now),
            },
        )
        k8s_event(sup, job, "Normal", "Completed", message)
    record_history(sup, record, "Completed", message, deleted_pods=deleted)
    return StepResult(next="done", reason=message)


def fail(request: StepInput, sup: Supervisor) -> StepResult:
    ref = request.job
    record = sup.store.get_job(ref.cluster_arn, ref.uid)
    if record is not None:
        sup.fit_transport(record)
    reason = request.reason or "the job failed"
    if request.error:
        from hyperpod_control.services.failures import readable

        reason = f"{request.error.get('Error', 'Error')}: {readable(str(request.error.get('Cause', '')))}"[
            :1000
        ]
    if record is None or record.phase.finished:
        return StepResult(next="done", reason=reason)
    obj = read_job(sup, ref)
    job = lenient_job(obj)
    pods = pods_by_name(sup, record)
    completed = {
        s.pod for s in record.pods if s.pod in pods and pod_failure(pods[s.pod]) in (None, "PodExited")
    }
    deleted = _shutdown_and_clean(sup, record, job, completed)
    now = sup.now()
    record = save(sup, record, phase=JobPhase.FAILED, completed_at=now, task_token=None, reason=reason)
    if job is not None:
        patch_status(
            sup, job, {"conditions": conditions_after(job, "Failed", "JobFailed", reason, rfc3339(now))}
        )
        k8s_event(sup, job, "Warning", "Failed", reason)
    record_history(sup, record, "Failed", reason, deleted_pods=deleted)
    return StepResult(next="done", reason=reason)


def cleanup(request: StepInput, sup: Supervisor) -> StepResult:
    """The job was deleted: remove its pods (the garbage collector would too, eventually) and its
    JOB item; its history stays until DynamoDB's TTL."""
    ref = request.job
    record = sup.store.get_job(ref.cluster_arn, ref.uid) or new_job_record(ref)
    return StepResult(next="done", reason=delete_job_resources(sup, record))


def expire_finished_job(sup: Supervisor, record: JobRecord, obj: dict[str, Any]) -> bool:
    """``runPolicy.ttlSecondsAfterFinished``: the finished job's object deleted once it passed
    (reconcile_jobs then removes its pods and JOB item, as for any deleted job; its history stays).
    True when it was deleted now."""
    job = lenient_job(obj)
    if job is None or not run_policy.ttl_due(job.spec.run_policy, record.completed_at, sup.now()):
        return False
    if not sup.kube.delete_custom_object(JOB_GROUP, JOB_VERSION, JOB_PLURAL, record.namespace, record.name):
        return False
    ttl = job.spec.run_policy.ttl_seconds_after_finished
    record_history(
        sup, record, "Expired", f"deleted {ttl} s after it finished (runPolicy.ttlSecondsAfterFinished)"
    )
    return True


def delete_job_resources(sup: Supervisor, record: JobRecord) -> str:
    pods = sup.kube.pods(record.namespace, label_selector=job_selector(record))
    for pod in pods:
        sup.kube.delete_pod(record.namespace, pod["metadata"]["name"])
    sup.store.delete(record.pk, record.sk)
    message = f"the job was deleted; {len(pods)} pods deleted and its JOB item removed"
    record_history(sup, record, "Deleted", message, pods=[p["metadata"]["name"] for p in pods])
    return message


def next_segment(request: StepInput, sup: Supervisor) -> StepResult:
    """Hand the job to a new execution before this one's history grows long: the JOB item names
    the new segment first (so this execution's late writes lose), then the segment starts."""
    from hyperpod_control.adapters.stepfunctions import execution_name

    ref = request.job
    record = job_record(sup, ref)
    segment = ref.segment + 1
    record = save(sup, record, segment=segment, task_token=None, execution_arn=None)
    name = execution_name(ref.uid, ref.generation, segment)
    arn = sup.sfn.start_execution(
        request.state_machine or "", name, {"job": ref.model_copy(update={"segment": segment}).dump()}
    )
    record_history(
        sup, record, "SegmentHandedOver", f"execution segment {segment} continues the job", execution=arn
    )
    return StepResult(next="handedOver")
