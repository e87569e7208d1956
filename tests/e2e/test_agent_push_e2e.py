"""The agent's push of a fault, as deployed: the supervisor associates the job's service account
with AgentPodRole (EKS Pod Identity), the pods get the container credential variables from the
webhook and credentials of that role from the node's Pod Identity Agent, the agent puts its
FAULTED on the control plane's bus with them, and job_events wakes the supervisor before its next
poll. The bus takes the agent's source from that role only; a pod with no association has no AWS
identity at all (the sandbox's own credentials never reach a pod)."""

from __future__ import annotations

import json
import tempfile
import textwrap
from datetime import datetime

import pytest
from botocore.exceptions import ClientError
from job_support import apis, executions, history, job_item, submit, wait_finished

from sandbox.aws_ext import event_bus_policy
from sandbox.testing import eventually
from sandbox.workloads import tiny_job

pytestmark = pytest.mark.e2e

AGENT = "hyperpod-control.agent"
#: The supervisor's poll interval for the pushed-fault test (sandbox seconds; 6 s of wall time at
#: the session's time scale): a fault remediated well within it came from the push.
POLL_SECONDS = 300


def _role_name(arn: str) -> str:
    return arn.rsplit("/", 1)[-1]


def test_an_agent_pushes_its_fault_with_its_pod_credentials_and_wakes_the_supervisor(serverless, monkeypatch):
    sb = serverless
    # As if deployed with SupervisorPollSeconds=300: only a push can wake the job sooner.
    supervisor = sb.runtime.lookup(sb.stack.resources["SuperviseJobFunction"])
    monkeypatch.setitem(supervisor.environment, "SUPERVISOR_POLL_SECONDS", str(POLL_SECONDS))
    role_arn = sb.output("AgentPodRoleArn")
    pushes_before = len(event_bus_policy.calls())
    manifest = tiny_job(
        "pushed",
        replicas=2,
        steps=200,
        ckpt_dir=tempfile.mkdtemp(),
        extra_args=["--step-time", "0.02", "--fail-at-step", "80", "--fail-rank", "1"],
        clean_pod_policy="None",
    )
    uid = submit(sb, manifest)["metadata"]["uid"]
    outcome = wait_finished(sb, uid, timeout=240)
    assert outcome.status == "SUCCEEDED", job_item(sb, uid).reason

    # the job's service account was associated with the agent role before its pods existed
    notes = [e for e in history(sb, uid) if e.kind == "AgentIdentity"]
    associations = sb.client("eks").list_pod_identity_associations(
        clusterName=sb.world.eks_cluster_name, namespace="default", serviceAccount="default"
    )["associations"]
    assert len(associations) == 1
    described = sb.client("eks").describe_pod_identity_association(
        clusterName=sb.world.eks_cluster_name, associationId=associations[0]["associationId"]
    )["association"]
    assert described["roleArn"] == role_arn
    assert len(notes) <= 1, "associated once (none when an earlier job of the account already did)"

    # the agent of rank 1 put its FAULTED as its pod's session of AgentPodRole
    pushes = [c for c in event_bus_policy.calls()[pushes_before:] if AGENT in c.sources]
    assert pushes, "no agent pushed anything"
    assert all(c.allowed and c.principal_arn == role_arn for c in pushes), pushes
    sessions = {c.caller_arn.split("/", 2)[2] for c in pushes}
    assert all(c.caller_arn.startswith("arn:aws:sts::") for c in pushes)
    assert any(s.startswith(f"eks-{sb.world.eks_cluster_name}-pushed-") for s in sessions), sessions
    assert {c.caller_arn.split("/")[1] for c in pushes} == {_role_name(role_arn)}

    # job_events confirmed it with the agent and woke the supervisor's wait (Monitor) with it,
    # which then remediated it, long before its poll interval had passed
    confirmed = [
        c.result
        for c in sb.runtime.calls("JobEventsFunction")
        if isinstance(c.result, dict) and c.result.get("uid") == uid and c.result.get("action") == "fault"
    ]
    assert confirmed and confirmed[0]["woken"], [c.result for c in sb.runtime.calls("JobEventsFunction")]
    assert "job_events" in _wakers(sb, uid), "the push ended the supervisor's wait"
    remediated = [e for e in history(sb, uid) if e.kind == "Remediated"]
    assert len(remediated) == 1, [r.message for r in remediated]
    assert remediated[0].details["action"] in ("process_restart", "in_process_restart")
    fault_at = datetime.fromisoformat(remediated[0].details["fault_at"])
    assert (remediated[0].at - fault_at).total_seconds() < POLL_SECONDS * sb.time_scale


def _wakers(sb, uid: str) -> list[str]:
    """Who ended each of the job's Monitor waits early (SendTaskSuccess's ``wokenBy``)."""
    sfn = sb.client("stepfunctions")
    found = []
    for execution in executions(sb, uid):
        pages = sfn.get_paginator("get_execution_history").paginate(executionArn=execution["executionArn"])
        for page in pages:
            for event in page["events"]:
                output = (event.get("taskSucceededEventDetails") or {}).get("output") or ""
                if "wokenBy" in output:
                    found.append(json.loads(output).get("wokenBy"))
    return found


def _pod_script() -> str:
    """What a pod reports of its AWS identity: the credential variables it got, whether the
    sandbox's own keys leaked into it, who STS says it is, and what PutEvents of the agent's
    source on the bus answers."""
    return textwrap.dedent(
        """
        import json, os, sys
        import boto3
        from botocore.exceptions import ClientError, NoCredentialsError
        out = {"env": sorted(k for k in os.environ if k.startswith("AWS_"))}
        try:
            out["caller"] = boto3.client("sts").get_caller_identity()["Arn"]
            entry = {"Source": "hyperpod-control.agent", "DetailType": "HyperPod Agent State Change",
                     "Detail": "{}", "EventBusName": sys.argv[1]}
            boto3.client("events").put_events(Entries=[entry])
            out["put"] = "accepted"
        except NoCredentialsError:
            out["caller"] = "none"
        except ClientError as exc:
            out["put"] = exc.response["Error"]["Code"]
        print("IDENTITY " + json.dumps(out), flush=True)
        """
    )


def _identity_of_pod(sb, namespace: str, name: str, service_account: str) -> dict:
    _, core = apis(sb)
    if namespace != "default":
        core.create_namespace({"metadata": {"name": namespace}})
        core.create_namespaced_service_account(namespace, {"metadata": {"name": service_account}})
    bus = sb.client("events").describe_event_bus(Name=sb.output("EventBusName"))["Arn"]
    core.create_namespaced_pod(
        namespace,
        {
            "metadata": {"name": name},
            "spec": {
                "serviceAccountName": service_account,
                "restartPolicy": "Never",
                "containers": [
                    {"name": "main", "image": "python:3.11", "command": ["python", "-c", _pod_script(), bus]}
                ],
            },
        },
    )

    def reported() -> dict | None:
        log = sb.pods.container_log(namespace, name, "main") or ""
        lines = [line for line in log.splitlines() if line.startswith("IDENTITY ")]
        return json.loads(lines[-1].removeprefix("IDENTITY ")) if lines else None

    try:
        return eventually(reported, 60, f"pod {namespace}/{name} to report its identity")
    finally:
        core.delete_namespaced_pod(name, namespace, grace_period_seconds=0)


def test_a_pod_of_another_role_is_refused_the_agents_source_and_one_without_an_association_has_no_identity(
    serverless,
):
    sb = serverless
    eks = sb.client("eks")
    cluster = sb.world.eks_cluster_name
    trust = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": "pods.eks.amazonaws.com"},
                "Action": ["sts:AssumeRole", "sts:TagSession"],
            }
        ],
    }
    other = sb.client("iam").create_role(
        RoleName="team-b-training", AssumeRolePolicyDocument=json.dumps(trust)
    )
    eks.create_pod_identity_association(
        clusterName=cluster, namespace="team-b", serviceAccount="trainer", roleArn=other["Role"]["Arn"]
    )

    theirs = _identity_of_pod(sb, "team-b", "impostor", "trainer")
    assert {"AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"} <= set(
        theirs["env"]
    )
    assert "AWS_ACCESS_KEY_ID" not in theirs["env"] and "AWS_SECRET_ACCESS_KEY" not in theirs["env"]
    assert ":assumed-role/team-b-training/eks-" in theirs["caller"]
    assert theirs["put"] == "AccessDeniedException", "the bus takes the agent's source from AgentPodRole only"

    nobody = _identity_of_pod(sb, "team-c", "anonymous", "trainer")
    assert nobody["caller"] == "none", nobody
    assert not any(
        k.startswith(("AWS_CONTAINER_", "AWS_ACCESS_", "AWS_SECRET_", "AWS_SESSION_")) for k in nobody["env"]
    )

    # and the test process, the account's administrator, is refused that source as well
    with pytest.raises(ClientError) as refused:
        sb.client("events").put_events(
            Entries=[
                {
                    "Source": AGENT,
                    "DetailType": "HyperPod Agent State Change",
                    "Detail": "{}",
                    "EventBusName": sb.output("EventBusName"),
                }
            ]
        )
    assert refused.value.response["Error"]["Code"] == "AccessDeniedException"
