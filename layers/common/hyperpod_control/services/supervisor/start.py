"""The steps that bring a job up: Admit (claim it, or reject an invalid spec), CreatePods (its
NetworkPolicy, the agents' Pod Identity, its pods), CheckAgents (until every agent is READY) and
StartAgents (ranks assigned, every agent's ``/start``), which also ends a full restart.
"""

from __future__ import annotations

from datetime import datetime

from hyperpod_control.adapters.agents import AgentCall
from hyperpod_control.exceptions import AccessDeniedError, PermanentError
from hyperpod_control.models.agent import AGENT_PORT, AgentAnswer
from hyperpod_control.models.job import (
    HyperPodPytorchJob,
    JobCondition,
    JobSpecError,
    parse_job,
    set_condition,
    validation_message,
)
from hyperpod_control.models.job_faults import JobFault
from hyperpod_control.models.names import JOB_GROUP, JOB_PLURAL, JOB_VERSION, MANAGED_BY, MANAGED_TAG
from hyperpod_control.models.records import JobPhase, JobRecord, OperatorMode, OperatorStatus, PodSlot
from hyperpod_control.models.supervisor import StepInput, StepResult
from hyperpod_control.services import run_policy
from hyperpod_control.services.remediation import Decision
from hyperpod_control.services.supervision import (
    agents_ready,
    assign_ranks,
    build_network_policy,
    build_pod,
    conditions_after,
    decide_agent_association,
    ip_version_at,
    listed,
    pod_ip,
    pod_name,
    pod_phase,
    pod_refs,
    rfc3339,
    service_account,
    spares_held,
    start_calls,
    status_master_port,
)
from hyperpod_control.services.supervisor.access import (
    GONE,
    load_job,
    new_job_record,
    pods_by_name,
    read_job,
    save,
)
from hyperpod_control.services.supervisor.context import Supervisor
from hyperpod_control.services.supervisor.pods import stop_and_wait
from hyperpod_control.services.supervisor.reporting import (
    k8s_event,
    patch_status,
    record_history,
    report_recovery,
)
from hyperpod_control.services.supervisor.suspend import suspension


def admit(request: StepInput, sup: Supervisor) -> StepResult:
    ref = request.job
    poll = sup.config.poll_seconds
    operator = sup.store.get_operator(ref.cluster_arn)
    if (
        operator is None
        or operator.mode is not OperatorMode.SERVERLESS
        or operator.status is not OperatorStatus.ACTIVE
    ):
        return StepResult(
            next="notManaged", reason="the cluster has no active serverless operator", poll_seconds=poll
        )
    record = sup.store.get_job(ref.cluster_arn, ref.uid)
    if record is None:  # started by hand rather than by reconcile_jobs: claim it now
        record = sup.store.put(new_job_record(ref), expected_version=None)
    if ref.segment < record.segment:
        return StepResult(
            next="superseded", reason=f"segment {record.segment} owns the job", poll_seconds=poll
        )
    if record.phase.finished:
        return StepResult(
            next="finished", reason=f"the job is already {record.phase.value}", poll_seconds=poll
        )
    obj = read_job(sup, ref)
    if obj is None:
        return StepResult(next="gone", reason="the job was deleted", poll_seconds=poll)
    try:
        job = parse_job(obj)
    except JobSpecError as exc:
        message = validation_message(exc)
        now = rfc3339(sup.now())
        raw_conditions = ((obj.get("status") or {}).get("conditions")) or []
        conditions = set_condition(
            [JobCondition.model_validate(c) for c in raw_conditions],
            "Failed",
            "True",
            "InvalidSpec",
            message,
            now,
        )
        sup.kube.patch_custom_object_status(
            JOB_GROUP,
            JOB_VERSION,
            JOB_PLURAL,
            ref.namespace,
            ref.name,
            {"conditions": [c.model_dump(mode="json", by_alias=True, exclude_none=True) for c in conditions]},
        )
        save(sup, record, phase=JobPhase.FAILED, reason=message, completed_at=sup.now())
        record_history(sup, record, "Rejected", message)
        return StepResult(next="rejected", reason=message, poll_seconds=poll)
    first = record.execution_arn is None and record.segment == 0
    record = save(
        sup,
        record,
        execution_arn=request.execution,
        segment=ref.segment,
        nnodes=job.replicas,
        spares=job.spares,
    )
    if first:
        if job.queue_name:
            reason = "AdmittedWithoutKueue"
            message = (
                f"the job names Kueue queue '{job.queue_name}'; Kueue admission is not supported by the "
                "serverless operator yet, so the job was admitted directly"
            )
        else:
            reason, message = "Admitted", "the serverless operator admitted the job"
        patch_status(
            sup, job, {"conditions": conditions_after(job, "Created", reason, message, rfc3339(sup.now()))}
        )
        record_history(sup, record, "Admitted", message, reason=reason, execution=request.execution)
    else:
        record_history(
            sup,
            record,
            "SegmentStarted",
            f"execution segment {ref.segment} took over",
            execution=request.execution,
        )
    nxt = {JobPhase.RUNNING: "monitor", JobPhase.SUSPENDED: "monitor", JobPhase.CREATING: "wait"}.get(
        record.phase, "create"
    )
    return StepResult(next=nxt, poll_seconds=poll)


def create_pods(request: StepInput, sup: Supervisor) -> StepResult:
    ref = request.job
    loaded = load_job(sup, ref)
    if loaded is None:
        return GONE
    record, job, _obj = loaded
    # By uid, as every read: a job deleted and recreated under the same name owns none of the
    # old job's pods still terminating.
    existing = set(pods_by_name(sup, record))
    total = job.replicas + job.spares
    # Before the pods, so none of them is ever reachable outside the policy.
    policy = _ensure_network_policy(sup, record, job)
    if len(existing) < total:
        _ensure_agent_identity(sup, record, job)
    created = []
    for index in range(total):
        name = pod_name(ref.name, index)
        if name in existing:
            continue
        if sup.kube.create_pod(ref.namespace, build_pod(job, index, sup.config.event_bus)) is not None:
            created.append(name)
    slots = [PodSlot(pod=pod_name(ref.name, i)) for i in range(total)]
    record = save(sup, record, phase=JobPhase.CREATING, pods=slots, created_at=sup.now())
    record_history(
        sup,
        record,
        "PodsCreated",
        f"{total} pods ({job.replicas} ranks + {job.spares} spares)",
        pods=created,
        network_policy=policy,
    )
    return StepResult(next="wait")


def _ensure_network_policy(sup: Supervisor, record: JobRecord, job: HyperPodPytorchJob) -> str | None:
    """The job's NetworkPolicy (supervision.build_network_policy), created or brought up to date;
    its name, or None when the cluster's RBAC does not allow it: a cluster installed before the
    control plane's ClusterRole granted networkpolicies. The job then runs as jobs did before
    (its agents' port open in the cluster), with a Warning saying how to close it."""
    body = build_network_policy(job, sup.config.agent_cidrs)
    try:
        sup.kube.ensure_network_policy(record.namespace, body)
    except AccessDeniedError as exc:
        message = (
            f"NetworkPolicy {body['metadata']['name']} not created, the agents' port {AGENT_PORT} stays "
            f"open to the cluster: {exc.message} Re-run the operator install (or upgrade) to update the "
            "control plane's ClusterRoles."
        )
        k8s_event(sup, job, "Warning", "NetworkPolicyNotCreated", message)
        record_history(sup, record, "NetworkPolicyNotCreated", message)
        return None
    return body["metadata"]["name"]


def _ensure_agent_identity(sup: Supervisor, record: JobRecord, job: HyperPodPytorchJob) -> None:
    """The job's service account associated with the agent role (EKS Pod Identity) before its
    pods exist: EKS injects credentials only into pods created after the association. Best
    effort, as the pushes it serves are: when it cannot be made the history says why and the
    pods are created anyway (polling finds every fault). A retryable error (throttling, a
    concurrent create) fails the step, which the state machine retries."""
    role = sup.config.agent_role_arn
    if not (role and sup.config.event_bus and sup.eks is not None and sup.eks_cluster):
        return
    namespace, account = record.namespace, service_account(job)
    try:
        existing = sup.eks.find_association(sup.eks_cluster, namespace, account)
        action = decide_agent_association(existing, role)
        if action == "create":
            sup.eks.create_association(sup.eks_cluster, namespace, account, role, {MANAGED_TAG: MANAGED_BY})
            record_history(
                sup,
                record,
                "AgentIdentity",
                f"service account {namespace}/{account} associated with {role} (EKS Pod Identity) "
                "for the agents' pushes",
                serviceAccount=account,
                roleArn=role,
            )
        elif action == "foreign":
            assert existing is not None
            record_history(
                sup,
                record,
                "AgentIdentity",
                f"service account {namespace}/{account} is associated with {existing.get('roleArn')}, not "
                f"{role}: its association is left as it is, so the agents' pushes are refused and faults "
                "are found by polling",
                serviceAccount=account,
                roleArn=existing.get("roleArn"),
            )
    except PermanentError as exc:  # access denied, cluster gone: pods run, pushes do not
        record_history(
            sup,
            record,
            "AgentIdentity",
            f"no Pod Identity association for {namespace}/{account}: {exc}; the agents cannot push, "
            "faults are found by polling",
            serviceAccount=account,
        )


def check_agents(request: StepInput, sup: Supervisor) -> StepResult:
    ref = request.job
    loaded = load_job(sup, ref)
    if loaded is None:
        return GONE
    record, job, obj = loaded
    suspended = suspension(sup, record, obj)
    if suspended is not None:
        return suspended
    pods = pods_by_name(sup, record)
    running = [
        (s.pod, pod_ip(pods.get(s.pod))) for s in record.pods if pod_phase(pods.get(s.pod)) == "Running"
    ]
    answers = sup.agents.statuses(ref.namespace, running)
    verdict, why = agents_ready(record, pods, answers)
    if verdict == "wait":
        now, policy = sup.now(), job.spec.run_policy
        over = (
            run_policy.active_deadline(record, policy, now)
            or run_policy.fault_deadline(record, policy, now)
            or run_policy.startup_deadline(record, policy, now, sup.config.startup_deadline_seconds)
        )
        if over:
            return StepResult(next="fail", reason=f"{over}; still {why}")
        return StepResult(next="wait", reason=why)
    if verdict == "fail":
        return StepResult(next="fail", reason=why)
    slots = [
        s.model_copy(
            update={"node": (pods[s.pod].get("spec") or {}).get("nodeName"), "ip": pod_ip(pods[s.pod])}
        )
        for s in record.pods
    ]
    save(sup, record, pods=slots)
    return StepResult(next="start")


def start_agents(request: StepInput, sup: Supervisor) -> StepResult:
    ref = request.job
    loaded = load_job(sup, ref)
    if loaded is None:
        return GONE
    record, job, obj = loaded
    slots = assign_ranks(record.pods, record.nnodes)
    master = next((s.ip for s in slots if s.rank == 0), None)
    now = sup.now()
    ip_version = ip_version_at(now)
    record = record.model_copy(update={"pods": slots, "master_addr": master, "ip_version": ip_version})
    spares = sup.statuses(record, record.spare_pods(), {})
    calls = start_calls(record, job, ip_version, spares_held(spares))
    answers = sup.agents.call_all(calls)
    answers.update(_start_again_if_running(sup, record, calls, answers))
    refused = [f"{pod}: {a.error}" for pod, a in answers.items() if not a.ok]
    if refused:
        return StepResult(next="fail", reason="agents refused /start: " + listed(refused, "; "))
    record = save(sup, record, phase=JobPhase.RUNNING, started_at=record.started_at or now)
    stamp = rfc3339(now)
    conditions = conditions_after(job, "PodsRunning", "PodsRunning", f"{len(slots)} pods running", stamp)
    merged = [JobCondition.model_validate(c) for c in conditions]
    merged = set_condition(merged, "Running", "True", "Running", f"{record.nnodes} ranks started", stamp)
    patch_status(
        sup,
        job,
        {
            "conditions": [c.model_dump(mode="json", by_alias=True, exclude_none=True) for c in merged],
            "startTime": (job.status.start_time if job.status and job.status.start_time else stamp),
            "masterAddr": master,
            "masterPort": status_master_port(record.fault_count),
            "jobPods": pod_refs(record.namespace, [s.pod for s in slots]),
            "restartCount": record.restart_count,
        },
    )
    ranks = {str(s.rank): s.pod for s in record.ranked()}
    recovered = None
    if record.recovery:  # the end of a full job restart: training runs again
        recovery = record.recovery
        record = save(sup, record, recovery=None)
        recovered = report_recovery(
            sup,
            record,
            parse_job(read_job(sup, ref) or obj),
            Decision.model_validate(recovery["decision"]),
            [JobFault.model_validate(f) for f in recovery["faults"]],
            datetime.fromisoformat(recovery["fault_at"]),
            now,
            [*recovery["actions"], f"started {record.nnodes} ranks with faultCount {record.fault_count}"],
        ).model_copy(update={"decided": False})
    record_history(
        sup,
        record,
        "Started",
        f"{record.nnodes} ranks started, {len(record.spare_pods())} spares standing by",
        ranks=ranks,
        spares=[s.pod for s in record.spare_pods()],
        # how each spare stands by, as its agent's /status said (README, "Images with AWS's agent")
        standby={
            pod: ("started as a spare" if a.status.holds_spares() else "READY, no /start until promoted")
            + f" ({a.status.describe()})"
            for pod, a in spares.items()
            if a.ok and a.status is not None
        },
        master=master,
    )
    return StepResult(next="monitor", poll_seconds=sup.config.poll_seconds, remediation=recovered)


def _start_again_if_running(
    sup: Supervisor, record: JobRecord, calls: list[AgentCall], answers: dict[str, AgentAnswer]
) -> dict[str, AgentAnswer]:
    """This project's agent refuses a ``/start`` while it runs one (409; AWS's agent takes it and
    starts again): a retried StartAgents whose first attempt reached it. Those agents are stopped
    and started again under this attempt's IP table; the answers of their second ``/start``."""
    busy = {pod for pod, a in answers.items() if not a.ok and "409" in (a.error or "")}
    if not busy:
        return {}
    stop_and_wait(sup, record, [s for s in record.pods if s.pod in busy], "process_level_restart")
    return sup.agents.call_all(c for c in calls if c.pod in busy)
