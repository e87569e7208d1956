"""Training jobs for the sandbox: the scripts their pods run and the HyperPodPyTorchJob manifests
that run them (the demo's job, the end-to-end tests' jobs, the benchmarks')."""

from __future__ import annotations

from pathlib import Path
from typing import Any

TRAIN_TINY = Path(__file__).with_name("train_tiny.py")


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
) -> dict[str, Any]:
    """A HyperPodPyTorchJob running ``train_tiny.py`` under hyperpodrun.

    ``hyp_shaped`` shapes it as the ``hyp`` CLI does (container ``pytorch-job-container``,
    replica spec ``pod``, ``runPolicy.cleanPodPolicy: None`` from ``--max-retry``, Kueue labels
    for ``queue``); hyperpod-facts 2.3."""
    script = [str(TRAIN_TINY), "--steps", str(steps), *(["--ckpt-dir", ckpt_dir] if ckpt_dir else [])]
    container = {
        "name": "pytorch-job-container" if hyp_shaped else "trainer",
        "image": "sandbox/pytorch:2.13",
        # No --tee for log-monitoring rules: hyperpodrun reads every local rank's output itself.
        "command": [
            "hyperpodrun",
            f"--nproc-per-node={nproc_per_node}",
            *script,
            *(extra_args or []),
        ],
        "ports": [{"containerPort": 8080}],
        "env": [{"name": "OMP_NUM_THREADS", "value": "1"}],
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
        },
    }
