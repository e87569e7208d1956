"""``hpctl demo``: the most complete real scenario the project runs today, on a fresh sandbox.

Nothing here is canned: every line printed comes from a workflow execution, an event delivery or
an item read back from DynamoDB in the sandbox. The scenario grows as the project does (install,
a training job, a node failure and the spare swap come with later issues).
"""

from __future__ import annotations

import json
import re
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from typing import Any, TextIO

from hpctl.commands import register, status
from hpctl.install import install, uninstall
from hpctl.workflows import Outcome
from sandbox.cluster_faults import node_health_event


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
        sagemaker, sfn = sb.client("sagemaker"), sb.client("stepfunctions")
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

        timeline.say("1. hpctl register --cluster demo-cluster --mode addon")
        _show(
            register(
                stack, "demo-cluster", "addon", sfn=sfn, cloudformation=sb.client("cloudformation"), out=out
            ),
            timeline,
        )

        timeline.say("2. hpctl preflight --cluster demo-cluster")
        timeline.say(f"  -> {_preflight_summary('demo-cluster')}")

        timeline.say("3. hpctl install --cluster demo-cluster (the training operator add-on)")
        installed = install(
            stack, "demo-cluster", "addon", sfn=sfn, cloudformation=sb.client("cloudformation"), out=out
        )
        _show(installed, timeline)
        timeline.say(f"  -> {_operator_summary(sb, core_api=_core_api(sb))}")

        victim = f"hyperpod-{nodes[1]}"
        core = _core_api(sb)
        timeline.say(f"4. a pod serving HTTP on {victim} (a local process on its own pod IP)")
        pod = _serve_pod(core, victim)
        reply = core.connect_get_namespaced_pod_proxy_with_path(f"{pod.metadata.name}:8080", "default", "")
        timeline.say(
            f"  -> pod {pod.metadata.name} Running on {pod.spec.node_name} at {pod.status.pod_ip}; "
            f"its server answers through the API server's pod proxy ({len(reply)} bytes)"
        )

        timeline.say(
            f"5. hpctl sandbox fail-node {victim} --times 2 (the instance dies; HyperPod sends one "
            "change twice)"
        )
        sent = sb.faults.fail_node(victim, times=2)
        sb.wait_idle()
        phase = core.read_namespaced_pod(pod.metadata.name, "default").status.phase
        timeline.say(f"  -> pod still {phase}: its processes are frozen, {_silence(core, pod.metadata.name)}")
        node_ready = _node_ready(core, victim, "Unknown")
        timeline.say(f"  -> after the node-monitor grace period (40 s): node Ready={node_ready}")
        terminating = _pod_terminating(core, pod.metadata.name)
        node = _node(sb, nodes[1])
        k8s_node = core.read_node(victim)
        label = k8s_node.metadata.labels.get("sagemaker.amazonaws.com/node-health-status")
        timeline.say(
            f"  -> after its 300 s toleration: pod {'Terminating' if terminating else 'NOT EVICTED'}; "
            f"node {label}, taints {sorted({t.key.split('/')[-1] for t in k8s_node.spec.taints or []})}"
        )
        timeline.say(
            f"  -> node_health ran {len(sb.runtime.calls('NodeHealthFunction'))} times (event ids "
            f"{', '.join(i[:8] for i in sent)}); NODE item: {node['health_status']} "
            f"(version {node['version']}), repair {node['repair_action']}"
        )

        timeline.say("6. EventBridge redelivers the first event (same id): Powertools idempotency answers it")
        redelivered = _as_delivered(sent[0], sb, cluster, nodes[1])
        sb.client("lambda").invoke(
            FunctionName=sb.stack.physical("NodeHealthFunction"), Payload=json.dumps(redelivered)
        )
        node = _node(sb, nodes[1])
        timeline.say(f"  -> NODE item unchanged: {node['health_status']} (version {node['version']})")

        timeline.say(f"7. hpctl sandbox heal-node {victim}")
        sb.faults.heal_node(victim)
        sb.wait_idle()
        node = _node(sb, nodes[1])
        ready = next(c.status for c in core.read_node(victim).status.conditions if c.type == "Ready")
        timeline.say(
            f"  -> node Ready={ready}; NODE item: {node['health_status']} (version {node['version']})"
        )

        timeline.say(
            "8. hpctl register --cluster demo-cluster --mode serverless (a cluster runs one operator)"
        )
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
        operator = status(stack, "demo-cluster", sagemaker=sagemaker, dynamodb=sb.client("dynamodb"))[
            "operator"
        ]
        timeline.say(
            f"  -> OPERATOR item keeps mode {operator['mode']}; reason recorded: {operator['reason'][:90]}"
        )

        timeline.say("9. hpctl register --cluster no-such-cluster --mode addon")
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

        _run_job(sb, stack, timeline, out)

        dead = sb.client("sqs").get_queue_attributes(
            QueueUrl=sb.output("EventsDeadLetterQueueUrl"), AttributeNames=["ApproximateNumberOfMessages"]
        )["Attributes"]["ApproximateNumberOfMessages"]
        timeline.say(f"events in the dead-letter queue: {dead}; executions: {_count_executions(sfn)}")
        import tempfile
        from pathlib import Path

        from hpctl.jobs import job_timeline

        page = Path(tempfile.gettempdir()) / "hyperpod-demo-timeline.html"
        timeline.say(f"14. hpctl jobs timeline tiny-regression --out {page}")
        job_timeline(stack, "tiny-regression", out_file=str(page), out=out)
    timeline.say("sandbox stopped; nothing left running")
    return 0


def _run_job(sb: Any, stack: str, timeline: Timeline, out: TextIO) -> None:
    """Switch the cluster to the serverless operator and run a real PyTorch job on it."""
    import tempfile

    from hyperpod_control.adapters.store import Store
    from sandbox.testing import eventually
    from sandbox.workloads import tiny_job

    sfn, cfn = sb.client("stepfunctions"), sb.client("cloudformation")
    timeline.say("10. hpctl uninstall, then hpctl install --operator serverless (switch operators)")
    _show(uninstall(stack, "demo-cluster", sfn=sfn, cloudformation=cfn, out=out), timeline)
    _show(install(stack, "demo-cluster", "serverless", sfn=sfn, cloudformation=cfn, out=out), timeline)

    custom = _custom_api(sb)
    # cleanPodPolicy None keeps the pods (Succeeded), so their logs can be read afterwards.
    manifest = tiny_job(
        "tiny-regression",
        replicas=2,
        spares=1,
        steps=600,
        ckpt_dir=tempfile.mkdtemp(),
        clean_pod_policy="None",
        extra_args=["--step-time", "0.02", "--ckpt-every", "50"],
    )
    timeline.say(
        "11. kubectl apply: HyperPodPyTorchJob tiny-regression, 2 nodes x 2 processes + 1 spare, "
        "600 steps of DDP over gloo under hyperpodrun, a checkpoint every 50 steps"
    )
    job = custom.create_namespaced_custom_object(
        "sagemaker.amazonaws.com", "v1", "default", "hyperpodpytorchjobs", manifest
    )
    uid = job["metadata"]["uid"]
    store = Store(sb.output("TableName"), client=sb.client("dynamodb"))
    arn = sb.world.hyperpod_cluster_arn
    seen: list[str] = []

    def watch(until: Any) -> Any:
        record = store.get_job(arn, uid)
        phase = record.phase.value if record else "not seen yet"
        if not seen or seen[-1] != phase:
            seen.append(phase)
            extra = ""
            if record and record.execution_arn and phase in ("Pending", "Creating"):
                extra = f" (execution {record.execution_arn.rsplit(':', 1)[-1]})"
            if record and phase == "Running":
                extra = f" ({_ranks(record)})"
            timeline.say(f"  -> JOB item: {phase}{extra}")
        return until(record)

    running = eventually(
        lambda: watch(lambda r: r if r and r.phase.value == "Running" and r.progress else None),
        timeout=240,
        what="the job to run with a checkpoint",
    )
    step = running.progress["tiny"]["progressCount"]
    victim = running.ranked()[1]
    import io

    from hpctl.jobs import job_logs

    rank_log = io.StringIO()
    job_logs(stack, "tiny-regression", rank=1, tail=40, out=rank_log)
    # The pod's log interleaves the agent's own lines (its access log of every /status poll)
    # with the workers' output: show the last two lines the training itself printed.
    training = [line for line in rank_log.getvalue().splitlines() if not line.startswith("[hyperpodrun ")]
    for line in training[-2:]:
        timeline.say(f"  hpctl jobs logs tiny-regression --rank 1: {line}")
    timeline.say(
        f"12. hpctl sandbox fail-node {victim.node} (under rank 1, {victim.pod}; every rank has "
        f"checkpointed step {step})"
    )
    sb.faults.fail_node(victim.node)
    eventually(
        lambda: watch(lambda r: r is None or r.phase.value in ("Completed", "Failed")), 240, "the job's end"
    )
    record = store.get_job(arn, uid)
    for entry in store.job_history(uid):
        if entry.kind == "Remediated":
            timeline.say(f"  -> {entry.message}; {'; '.join(entry.details.get('actions', []))}")
    timeline.say(f"  -> JOB item now: {_ranks(record)}; restarts {record.restart_count}")
    status = custom.get_namespaced_custom_object(
        "sagemaker.amazonaws.com", "v1", "default", "hyperpodpytorchjobs", "tiny-regression"
    )["status"]
    last = [c for c in status["conditions"] if c["status"] == "True"][-1]
    timeline.say(f"  -> job condition {last['type']}: {last['message']}")
    promoted = record.ranked()[1].pod
    # hyperpodrun --tee prefixes each worker line with its rank ("[default0]:"); drop it.
    lines = [
        re.sub(r"^\[[^\]]*\]:", "", line)
        for line in (sb.pods.container_log("default", promoted, "trainer") or "").splitlines()
    ]
    resumed = [line for line in lines if "starting at step" in line]
    losses = [line for line in lines if line.startswith("step ")]
    if resumed and losses:
        timeline.say(f"  -> {promoted} log: {resumed[0]} ... {losses[-1]}")
    sb.faults.heal_node(victim.node)
    timeline.say("13. the job's history, from DynamoDB:")
    history = store.job_history(uid)
    start = history[0].at if history else None
    for entry in history:
        offset = (entry.at - start).total_seconds() if start else 0.0
        print(f"      +{offset:7.2f}s  {entry.kind:<18} {entry.message[:110]}", file=out)
    timeline.say("  -> history: " + " -> ".join(e.kind for e in history))


def _ranks(record: Any) -> str:
    ranks = ", ".join(f"rank {p.rank}: {p.pod} on {p.node}" for p in record.ranked())
    spares = ", ".join(f"{p.pod} on {p.node or 'no node yet'}" for p in record.spare_pods()) or "none"
    return f"{ranks}; spare {spares}; master {record.master_addr}"


def _custom_api(sb: Any) -> Any:
    from kubernetes import client, config

    return client.CustomObjectsApi(config.new_client_from_config(config_file=str(sb.kubeconfig)))


def _preflight_summary(cluster: str) -> str:
    import io

    from hpctl.preflight import run_preflight

    buffer = io.StringIO()
    code = run_preflight(cluster, "addon", output="json", out=buffer)
    results = json.loads(buffer.getvalue())["results"]
    counts = Counter(r["status"] for r in results)
    failed = [r["id"] for r in results if r["status"] == "failed"]
    return (
        f"{len(results)} checks: {counts['passed']} passed, {counts['failed']} failed, "
        f"{counts['skipped']} skipped (not knowable here)"
        + (f", {counts['unchecked']} could not run" if counts["unchecked"] else "")
        + f"{'; failed: ' + ', '.join(failed) if failed else ''}"
        f"; exit {code}"
    )


def _operator_summary(sb: Any, core_api: Any) -> str:
    from kubernetes import client

    eks = sb.client("eks")
    addon = eks.describe_addon(
        clusterName="demo-eks", addonName="amazon-sagemaker-hyperpod-training-operator"
    )["addon"]
    associations = eks.list_pod_identity_associations(clusterName="demo-eks", namespace="aws-hyperpod")[
        "associations"
    ]
    deployments = client.AppsV1Api(core_api.api_client).list_namespaced_deployment("aws-hyperpod").items
    available = [d.metadata.name for d in deployments if (d.status.available_replicas or 0) > 0]
    return (
        f"add-on {addon['status']} at {addon['addonVersion']}; {len(associations)} Pod Identity association; "
        f"controller Deployment available: {', '.join(available) or 'none'}"
    )


def _core_api(sb: Any) -> Any:
    from kubernetes import client, config

    return client.CoreV1Api(config.new_client_from_config(config_file=str(sb.kubeconfig)))


def _serve_pod(core: Any, node: str) -> Any:
    """A pod running ``python -m http.server 8080`` (no bind address) on ``node``; waits for Running."""
    from kubernetes import client

    from sandbox.testing import eventually

    body = client.V1Pod(
        metadata=client.V1ObjectMeta(generate_name="web-", labels={"app": "demo"}),
        spec=client.V1PodSpec(
            node_selector={"kubernetes.io/hostname": node},
            containers=[
                client.V1Container(
                    name="web", image="python", command=[sys.executable, "-m", "http.server", "8080"]
                )
            ],
        ),
    )
    name = core.create_namespaced_pod("default", body).metadata.name

    def running() -> Any:
        pod = core.read_namespaced_pod(name, "default")
        return pod if pod.status.phase == "Running" else None

    pod = eventually(running, timeout=60, what=f"pod {name} to run")
    # Running means the process started; the server listens a moment later.
    eventually(lambda: _answers(core, name), timeout=30, what=f"pod {name} to serve")
    return pod


def _answers(core: Any, name: str) -> bool:
    from kubernetes.client.rest import ApiException

    try:
        core.connect_get_namespaced_pod_proxy_with_path(f"{name}:8080", "default", "")
        return True
    except ApiException:
        return False


def _silence(core: Any, name: str) -> str:
    """What a client of the dead pod sees: a connection nobody answers."""
    from urllib3.exceptions import MaxRetryError
    from urllib3.exceptions import TimeoutError as Urllib3Timeout

    try:
        core.connect_get_namespaced_pod_proxy_with_path(
            f"{name}:8080", "default", "", _request_timeout=(2, 2)
        )
    except Urllib3Timeout:
        return "a request to it hangs (no answer in 2 s)"
    except MaxRetryError as exc:
        if isinstance(exc.reason, Urllib3Timeout):
            return "a request to it hangs (no answer in 2 s)"
        return f"a request to it failed: {exc.reason}"
    except Exception as exc:  # shown as what it is
        return f"a request to it failed: {type(exc).__name__}"
    return "ITS SERVER STILL ANSWERS"


def _node_ready(core: Any, node: str, want: str) -> str:
    from sandbox.testing import eventually

    def ready() -> str | None:
        status = next(c.status for c in core.read_node(node).status.conditions if c.type == "Ready")
        return status if status == want else None

    return eventually(ready, timeout=30, what=f"node {node} Ready={want}")


def _pod_terminating(core: Any, name: str) -> bool:
    from sandbox.testing import eventually

    def marked() -> bool:
        return core.read_namespaced_pod(name, "default").metadata.deletion_timestamp is not None

    return eventually(marked, timeout=30, what=f"pod {name} Terminating")


def _as_delivered(event_id: str, sb: Any, cluster: dict[str, Any], instance_id: str) -> dict[str, Any]:
    """The event as EventBridge hands it to a target: the entry's fields plus its id."""
    entry = node_health_event(cluster, instance_id, False, datetime.now(UTC))
    return {
        "version": "0",
        "id": event_id,
        "detail-type": entry["DetailType"],
        "source": entry["Source"],
        "account": "123456789012",
        "time": entry["Time"].strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": sb.config.region,
        "resources": entry["Resources"],
        "detail": json.loads(entry["Detail"]),
    }


def _node(sb: Any, instance_id: str) -> dict[str, Any]:
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
