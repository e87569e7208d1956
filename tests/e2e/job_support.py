"""Helpers of the job end-to-end tests: submit a HyperPodPyTorchJob with the kubernetes client,
find its supervise_job execution, read its JOB item and history (imported as job_support)."""

from __future__ import annotations

from typing import Any

from hyperpod_control.adapters.store import Store
from hyperpod_control.models.records import JobEventRecord, JobRecord
from sandbox import Sandbox
from sandbox.testing import eventually

GROUP, VERSION, PLURAL = "sagemaker.amazonaws.com", "v1", "hyperpodpytorchjobs"


def apis(sb: Sandbox) -> tuple[Any, Any]:
    from kubernetes import client

    api = client.ApiClient(sb.kube.client_configuration())
    return client.CustomObjectsApi(api), client.CoreV1Api(api)


def named(name: str, agent: str) -> str:
    """A job's name for the agent its pods run (conftest's ``agent``): the session's cluster runs
    the same jobs under both."""
    return name if agent == "ours" else f"{name}-{agent}"


def submit(sb: Sandbox, manifest: dict) -> dict:
    custom, _ = apis(sb)
    namespace = manifest["metadata"].get("namespace", "default")
    return custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, manifest)


def get_job(sb: Sandbox, name: str, namespace: str = "default") -> dict:
    custom, _ = apis(sb)
    return custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)


def conditions(job: dict) -> dict[str, dict]:
    return {c["type"]: c for c in (job.get("status") or {}).get("conditions") or []}


def store(sb: Sandbox) -> Store:
    return Store(sb.output("TableName"), client=sb.client("dynamodb"))


def job_item(sb: Sandbox, uid: str) -> JobRecord | None:
    return store(sb).get_job(sb.world.hyperpod_cluster_arn, uid)


def history(sb: Sandbox, uid: str) -> list[JobEventRecord]:
    return store(sb).job_history(uid)


def executions(sb: Sandbox, uid: str) -> list[dict]:
    sfn = sb.client("stepfunctions")
    found = sfn.list_executions(stateMachineArn=sb.output("SuperviseJobStateMachineArn"))["executions"]
    return [e for e in found if e["name"].startswith(uid)]


def execution_of(sb: Sandbox, uid: str, timeout: float = 30) -> str:
    """The first execution reconcile_jobs started for the job (it runs every sandbox minute)."""
    return eventually(lambda: executions(sb, uid), timeout, f"an execution for job {uid}")[-1]["executionArn"]


def pods_of(sb: Sandbox, name: str, namespace: str = "default") -> list[Any]:
    _, core = apis(sb)
    return core.list_namespaced_pod(namespace, label_selector=f"HPJob={name}").items


def wait_finished(sb: Sandbox, uid: str, timeout: float = 180) -> Any:
    """Wait for the job's last execution segment to end; its Outcome. A job crosses segments
    (15 poll rounds each in the e2e sandbox), so the first execution is not always the last."""

    def last_segment_done() -> Any:
        found = {e["name"]: e for e in executions(sb, uid)}
        record = job_item(sb, uid)
        if record is None:  # deleted, or not claimed yet
            done = [e for e in found.values() if e["status"] != "RUNNING"]
            return done[-1] if found and len(done) == len(found) else None
        current = found.get(f"{uid}-g{record.generation}-{record.segment}")
        return current if current and current["status"] != "RUNNING" else None

    execution_of(sb, uid)
    last = eventually(last_segment_done, timeout, f"job {uid}'s last execution segment to end")
    return sb.wait_execution(last["executionArn"], timeout=10)
