"""Training jobs for the sandbox: the scripts their pods run and the HyperPodPyTorchJob manifests
that run them (the demo's job, the end-to-end tests' jobs, the benchmarks')."""

from __future__ import annotations

from pathlib import Path
from typing import Any

TRAIN_TINY = Path(__file__).with_name("train_tiny.py")
REPO = Path(__file__).resolve().parents[2]
#: The image of jobs whose pods run this project's agent: the sandbox's own interpreter, .venv.
IMAGE = "sandbox/pytorch:2.13"
#: An image built as teams on HyperPod build theirs: AWS's agent (hyperpod-elastic-agent 1.1.3) on
#: torch 2.13, launched by agent/aws_compat/hyperpodrun_aws.py (`make .venv-aws-agent/.installed`).
AWS_AGENT_IMAGE = "sandbox/pytorch-aws-agent:2.13"
AWS_AGENT_VENV = REPO / ".venv-aws-agent"
AWS_LAUNCHER = REPO / "agent" / "aws_compat" / "hyperpodrun_aws.py"
#: What each image carries, as the sandbox's kubelets run it: directories first on PATH.
IMAGE_PATHS = {AWS_AGENT_IMAGE: [str(AWS_AGENT_VENV / "bin")]}
#: The agents a job's pods can run: this project's hyperpodrun, or AWS's.
AGENTS = ("ours", "aws")


def tiny_job(
    name: str,
    *,
    namespace: str = "default",
    replicas: int = 2,
    spares: int = 0,
    nproc_per_node: int = 2,
    steps: int = 300,
    ckpt_dir: str | None = None,
    clean_pod_policy: str = "All",
    hyp_shaped: bool = False,
    queue: str | None = None,
    extra_args: list[str] | None = None,
    log_rules: list[dict[str, Any]] | None = None,
    agent: str = "ours",
    elastic_policy: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A HyperPodPyTorchJob running ``train_tiny.py`` under hyperpodrun: this project's (``agent``
    "ours"), or AWS's 1.1.3 ("aws": ``AWS_AGENT_IMAGE``, through the launcher its torch needs).

    ``hyp_shaped`` shapes it as the ``hyp`` CLI does (container ``pytorch-job-container``,
    replica spec ``pod``, ``runPolicy.cleanPodPolicy: None`` from ``--max-retry``, Kueue labels
    for ``queue``; docs/hyperpod-contract.md, "The HyperPodPyTorchJob resource"). ``elastic_policy``:
    the job's ``elasticPolicy``, its workers told to stop together on a graceful /stop
    (``HYPERPOD_SIGNAL_COORDINATION=distributed``)."""
    script = [str(TRAIN_TINY), "--steps", str(steps), *(["--ckpt-dir", ckpt_dir] if ckpt_dir else [])]
    if agent not in AGENTS:
        raise ValueError(f"agent: {agent!r} is none of {', '.join(AGENTS)}")
    launcher = ["hyperpodrun"]
    if agent == "aws":
        # AWS's agent writes the rank table to /opt/ml/input/config; every sandbox pod shares the
        # host's filesystem, so each gets that directory in its own working directory instead.
        launcher = ["python", str(AWS_LAUNCHER), "--rdzv-conf=resource_config_dir=opt-ml-input-config"]
    container = {
        "name": "pytorch-job-container" if hyp_shaped else "trainer",
        "image": AWS_AGENT_IMAGE if agent == "aws" else IMAGE,
        # No --tee for this project's agent: hyperpodrun reads every local rank's output itself.
        # AWS's agent reads log-monitoring rules from the files --tee 3 writes (README, "The agent").
        "command": [
            *launcher,
            f"--nproc-per-node={nproc_per_node}",
            *(["--tee=3"] if log_rules and agent == "aws" else []),
            *script,
            *(extra_args or []),
        ],
        "ports": [{"containerPort": 8080}],
        "env": [
            {"name": "OMP_NUM_THREADS", "value": "1"},
            *([{"name": "HYPERPOD_SIGNAL_COORDINATION", "value": "distributed"}] if elastic_policy else []),
        ],
    }
    labels: dict[str, str] = {}
    if queue:
        labels = {"kueue.x-k8s.io/queue-name": queue, "kueue.x-k8s.io/priority-class": "training-priority"}
    run_policy: dict[str, Any] = {"cleanPodPolicy": "None" if hyp_shaped else clean_pod_policy}
    if hyp_shaped:
        run_policy["jobMaxRetryCount"] = 2
    if log_rules:
        run_policy["logMonitoringConfiguration"] = log_rules
    return {
        "apiVersion": "sagemaker.amazonaws.com/v1",
        "kind": "HyperPodPyTorchJob",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {
            "nprocPerNode": str(nproc_per_node),
            "replicaSpecs": [
                {
                    "name": "pod" if hyp_shaped else "workers",
                    "replicas": replicas,
                    "spares": spares,
                    "template": {"metadata": {"labels": labels}, "spec": {"containers": [container]}},
                }
            ],
            "runPolicy": run_policy,
            **({"elasticPolicy": elastic_policy} if elastic_policy else {}),
        },
    }
