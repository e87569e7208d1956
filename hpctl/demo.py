"""``hpctl demo``: the most complete real scenario the project runs today, on a fresh sandbox.

Nothing here is canned: every line printed comes from a workflow execution, an event delivery or
an item read back from DynamoDB in the sandbox. The scenario grows as the project does (install,
a training job, a node failure and the spare swap come with later issues).
"""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from typing import Any, TextIO

from hpctl.commands import register, status
from hpctl.workflows import Outcome
from sandbox.faults import NODE_HEALTH, node_health_event

# node_health_event (the event HyperPod's health agent puts on the bus) lives in sandbox.faults,
# next to the fault injection that puts it; it stays importable from here for existing callers.
__all__ = ["NODE_HEALTH", "node_health_event", "run_demo"]


class Timeline:
    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.t0 = time.monotonic()
        self.rows: list[tuple[float, str]] = []

    def say(self, text: str) -> None:
        elapsed = time.monotonic() - self.t0
        self.rows.append((elapsed, text))
        print(f"[{elapsed:6.2f}s] {text}", file=self.out, flush=True)


def _show(outcome: Outcome | str, timeline: Timeline) -> None:
    assert not isinstance(outcome, str)
    entered = outcome.states_entered()
    repeated = ", ".join(f"{name} x{n}" for name, n in Counter(entered).items() if n > 1)
    path = f"{len(entered)} states" + (f" ({repeated})" if repeated else "") + f", ending in {entered[-1]}"
    if outcome.ok:
        timeline.say(f"  -> {outcome.status}: {path}")
    else:
        timeline.say(f"  -> {outcome.status}: {outcome.error}: {outcome.cause}")


def run_demo(time_scale: float = 0.01, out: TextIO = sys.stdout) -> int:
    from sandbox import Sandbox, SandboxConfig

    timeline = Timeline(out)
    print("HyperPod serverless control plane: demo on the local sandbox (no AWS account)", file=out)
    # ERROR keeps the functions' own JSON logs (CloudWatch on AWS) out of the demo's output.
    from sandbox import aws_ext
    from sandbox.world import WorldOptions

    world = WorldOptions(hyperpod_cluster_name="demo-cluster", eks_cluster_name="demo-eks")
    # ERROR keeps the functions' own JSON logs (CloudWatch on AWS) out of the demo's output.
    config = SandboxConfig(
        server=True, time_scale=time_scale, parameters={"LogLevel": "ERROR"}, world=world, kube=True
    )
    with Sandbox(config) as sb:
        stack = sb.config.stack_name
        timeline.say(
            f"sandbox up: moto on {sb.endpoint_url}, stack {stack} deployed "
            f"({len(sb.stack.resources)} resources), time scale {time_scale}"
        )
        sagemaker, events, sfn = sb.client("sagemaker"), sb.client("events"), sb.client("stepfunctions")
        cluster = sagemaker.describe_cluster(ClusterName="demo-cluster")
        summaries = sagemaker.list_cluster_nodes(ClusterName="demo-cluster")["ClusterNodeSummaries"]
        nodes = [n["InstanceId"] for n in summaries]
        kube_nodes = [n.metadata.name for n in _core_api(sb).list_node().items]
        timeline.say(
            f"HyperPod cluster demo-cluster ({len(nodes)} nodes) on EKS cluster demo-eks; Kubernetes API "
            f"{sb.kube.url} serves nodes {', '.join(kube_nodes)}"
        )
        # A software patch keeps the cluster SystemUpdating for 400 sandbox seconds: registration
        # must wait for InService (its Wait loop), not fail.
        aws_ext.set_delays(software_update=400)
        sagemaker.update_cluster_software(ClusterName="demo-cluster")
        timeline.say(
            f"HyperPod patches its software: cluster is "
            f"{sagemaker.describe_cluster(ClusterName='demo-cluster')['ClusterStatus']}"
        )

        timeline.say("1. hpctl register --cluster demo-cluster --mode serverless")
        _show(
            register(
                stack,
                "demo-cluster",
                "serverless",
                sfn=sfn,
                cloudformation=sb.client("cloudformation"),
                out=out,
            ),
            timeline,
        )

        victim = nodes[1]
        t_fault = datetime.now(UTC)
        timeline.say(f"2. HyperPod reports {victim} Unhealthy: the same change twice, each with its own id")
        sent = events.put_events(Entries=[node_health_event(cluster, victim, False, t_fault)] * 2)["Entries"]
        sb.wait_idle()
        calls = sb.runtime.calls("NodeHealthFunction")
        node = _node(sb, stack, victim)
        timeline.say(
            f"  -> node_health ran {len(calls)} times (event ids "
            f"{', '.join(e['EventId'][:8] for e in sent)}); "
            f"NODE item: {node['health_status']} (version {node['version']}), repair {node['repair_action']}"
        )

        timeline.say("3. EventBridge redelivers the first event (same id): Powertools idempotency answers it")
        lambda_client = sb.client("lambda")
        redelivered = {
            "version": "0",
            "id": sent[0]["EventId"],
            "detail-type": NODE_HEALTH,
            "source": "aws.sagemaker",
            "account": "123456789012",
            "time": t_fault.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "region": sb.config.region,
            "resources": [cluster["ClusterArn"]],
            "detail": json.loads(node_health_event(cluster, victim, False, t_fault)["Detail"]),
        }
        lambda_client.invoke(
            FunctionName=sb.stack.physical("NodeHealthFunction"), Payload=json.dumps(redelivered)
        )
        node = _node(sb, stack, victim)
        timeline.say(f"  -> NODE item unchanged: {node['health_status']} (version {node['version']})")

        timeline.say(f"4. HyperPod reports {victim} Healthy again")
        events.put_events(Entries=[node_health_event(cluster, victim, True, datetime.now(UTC))])
        sb.wait_idle()
        node = _node(sb, stack, victim)
        timeline.say(f"  -> NODE item: {node['health_status']} (version {node['version']})")

        timeline.say("5. hpctl register --cluster demo-cluster --mode addon (a cluster runs one operator)")
        _show(
            register(
                stack, "demo-cluster", "addon", sfn=sfn, cloudformation=sb.client("cloudformation"), out=out
            ),
            timeline,
        )
        operator = status(stack, "demo-cluster", sagemaker=sagemaker, dynamodb=sb.client("dynamodb"))[
            "operator"
        ]
        timeline.say(
            f"  -> OPERATOR item keeps mode {operator['mode']}; reason recorded: {operator['reason'][:90]}"
        )

        timeline.say("6. hpctl register --cluster no-such-cluster --mode addon")
        _show(
            register(
                stack,
                "no-such-cluster",
                "addon",
                sfn=sfn,
                cloudformation=sb.client("cloudformation"),
                out=out,
            ),
            timeline,
        )

        dead = sb.client("sqs").get_queue_attributes(
            QueueUrl=sb.output("EventsDeadLetterQueueUrl"), AttributeNames=["ApproximateNumberOfMessages"]
        )["Attributes"]["ApproximateNumberOfMessages"]
        timeline.say(f"events in the dead-letter queue: {dead}; executions: {_count_executions(sfn)}")
    timeline.say("sandbox stopped; nothing left running")
    return 0


def _core_api(sb: Any) -> Any:
    from kubernetes import client, config

    return client.CoreV1Api(config.new_client_from_config(config_file=str(sb.kubeconfig)))


def _node(sb: Any, stack: str, instance_id: str) -> dict[str, Any]:
    from hyperpod_control.adapters.store import Store

    arn = sb.client("sagemaker").describe_cluster(ClusterName="demo-cluster")["ClusterArn"]
    record = Store(sb.output("TableName"), client=sb.client("dynamodb")).get_node(arn, instance_id)
    if record is None:
        raise RuntimeError(f"node_health did not record {instance_id}")
    return record.model_dump(mode="json")


def _count_executions(sfn: Any) -> str:
    counts: dict[str, int] = {}
    for sm in sfn.list_state_machines()["stateMachines"]:
        for ex in sfn.list_executions(stateMachineArn=sm["stateMachineArn"])["executions"]:
            counts[ex["status"]] = counts.get(ex["status"], 0) + 1
    return ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "none"
