"""What each hpctl command does, apart from argument parsing (cli.py) so it can be tested."""

from __future__ import annotations

import sys
from typing import Any, TextIO

from hpctl.stack import load_outputs
from hpctl.workflows import Outcome, follow, start


def register(
    stack: str,
    cluster: str,
    mode: str,
    *,
    wait: bool = True,
    timeout: float = 3600.0,
    sfn: Any = None,
    cloudformation: Any = None,
    out: TextIO = sys.stderr,
) -> Outcome | str:
    """Start the register_cluster workflow; with ``wait``, follow it and return its outcome."""
    import boto3

    outputs = load_outputs(stack, cloudformation)
    sfn = sfn or boto3.client("stepfunctions")
    arn = start(
        sfn,
        outputs["RegisterClusterStateMachineArn"],
        f"register-{cluster}",
        {"clusterName": cluster, "mode": mode},
    )
    print(f"register_cluster started: {arn}", file=out, flush=True)
    if not wait:
        return arn
    return follow(sfn, arn, timeout=timeout, out=out)


def status(stack: str, cluster: str, *, sagemaker: Any = None, dynamodb: Any = None) -> dict[str, Any]:
    """The control plane's view of one cluster: its operator and its nodes' health."""
    import boto3

    from hyperpod_control.adapters.sagemaker import SageMakerAdapter
    from hyperpod_control.adapters.store import Store

    outputs = load_outputs(stack)
    arn = SageMakerAdapter(sagemaker or boto3.client("sagemaker")).describe_cluster(cluster)["ClusterArn"]
    store = Store(outputs["TableName"], client=dynamodb or boto3.client("dynamodb"))
    operator = store.get_operator(arn)
    return {
        "clusterName": cluster,
        "clusterArn": arn,
        "operator": operator.model_dump(mode="json", exclude_none=True) if operator else None,
        "nodes": [n.model_dump(mode="json", exclude_none=True) for n in store.list_nodes(arn)],
    }
