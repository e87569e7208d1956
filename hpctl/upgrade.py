"""``hpctl upgrade``: show the plan of an add-on version change, then (unless ``--dry-run``) run
upgrade_operator and show each step as it runs (argument parsing is in cli.py).

The plan comes from the stack's PlanUpgrade function: the same pure function the workflow
follows, over live data (the add-on, the versions the cluster's Kubernetes supports, the jobs).
It changes nothing, so ``--dry-run`` is safe on any cluster.
"""

from __future__ import annotations

import json
import sys
from typing import Any, TextIO

from hpctl.stack import load_outputs
from hpctl.workflows import Outcome, follow, start

#: Pass and Choice states that only move data or branch; the step list shows the work.
_PLUMBING = frozenset(
    {
        # upgrade_operator
        "Defaults",
        "Start",
        "UseCluster",
        "LockTaken",
        "ChooseAction",
        "ApplyVersionFailed",
        "UnwrapApplyFailure",
        "ApplyFailureKnown",
        "RollbackParseCause",
        "RollbackHasMessage",
        "RollbackLambdaCause",
        "RollbackRawCause",
        "RollbackVersionFailed",
        "UnwrapRollbackFailure",
        "RollbackFailureKnown",
        "ChildFailure",
        "ChildFailedStep",
        "ChildError",
        "RouteChildFailure",
        "RestoreBeforeFailing",
        "AfterFailure",
        # apply_addon_version, the child it runs forward and to roll back
        "NeedSnapshot",
        "NeedDrain",
        "WaitJobsStart",
        "JobsGoneYet",
        "WaitJobsCount",
        "NeedAssociation",
        "WaitForAddonStart",
        "AddonActiveYet",
        "WaitForAddonCount",
        "NeedResubmit",
        "Applied",
        "Failing",
        "InPhase",
        "RollbackStepName",
        "UpgradeStepName",
        "FailureCause",
    }
)

ACTIONS = {
    "noop": "nothing to do",
    "upgrade": "upgrade",
    "downgrade": "downgrade",
    "draining_downgrade": "draining downgrade (jobs deleted, then resubmitted)",
}


def upgrade_input(cluster: str, version: str | None = None, force: bool = False) -> dict[str, Any]:
    payload: dict[str, Any] = {"clusterName": cluster, "force": force}
    if version:
        payload["addonVersion"] = version
    return payload


def plan_text(plan: dict[str, Any]) -> str:
    """The plan as a person reads it before anything changes."""
    lines = [
        f"plan: {ACTIONS.get(plan['action'], plan['action'])}: "
        f"{plan['currentVersion']} -> {plan['targetVersion']}",
        f"  snapshot jobs first: {'yes' if plan.get('snapshot') else 'no'}; "
        f"delete and resubmit jobs: {'yes' if plan.get('drain') else 'no'}",
    ]
    jobs = plan.get("jobs") or []
    count = max(plan.get("jobCount") or 0, len(jobs))
    shown = f", the first {len(jobs)} shown" if count > len(jobs) else ""
    lines.append(f"  jobs ({count}{shown}):" if jobs else "  jobs: none")
    for job in jobs:
        uses = f"  uses {', '.join(job['features'])}" if job.get("features") else ""
        lines.append(f"    {job['namespace']}/{job['name']}{uses}")
    for forced in plan.get("forced") or []:
        lines.append(f"  forced: {forced} runs on a version without what it uses")
    for note in plan.get("notes") or []:
        lines.append(f"  note: {note}")
    return "\n".join(lines)


def fetch_plan(lambda_client: Any, function_name: str, payload: dict[str, Any]) -> dict[str, Any]:
    """The PlanUpgrade function's answer: the plan, or ``{"refused": reason}``."""
    response = lambda_client.invoke(FunctionName=function_name, Payload=json.dumps(payload).encode())
    body = json.loads(response["Payload"].read() or b"null")
    if response.get("FunctionError"):
        message = body.get("errorMessage") if isinstance(body, dict) else str(body)
        return {
            "refused": message,
            "errorType": (body or {}).get("errorType") if isinstance(body, dict) else None,
        }
    return body


def summary(outcome: Outcome) -> str:
    if outcome.ok:
        out = outcome.output or {}
        return (
            f"upgrade SUCCEEDED on {out.get('clusterName', '?')}: {ACTIONS.get(out.get('action'), '?')} "
            f"{out.get('previousVersion')} -> {out.get('addonVersion')}."
        )
    return f"upgrade {outcome.status}: {outcome.error}: {outcome.cause}"


def upgrade(
    stack: str,
    cluster: str,
    version: str | None = None,
    force: bool = False,
    dry_run: bool = False,
    wait: bool = True,
    *,
    timeout: float = 3600.0,
    sfn: Any = None,
    lambda_client: Any = None,
    cloudformation: Any = None,
    out: TextIO = sys.stderr,
) -> Outcome | dict[str, Any] | str:
    """Show the plan; with ``dry_run`` return it, else run upgrade_operator (its outcome, or the
    execution ARN without ``wait``). A refused plan is returned as ``{"refused": reason}``."""
    import boto3

    outputs = load_outputs(stack, cloudformation)
    lambda_client = lambda_client or boto3.client("lambda")
    payload = upgrade_input(cluster, version, force)
    plan = fetch_plan(lambda_client, outputs["PlanUpgradeFunctionName"], payload)
    if "refused" in plan:
        print(f"upgrade refused: {plan['refused']}", file=out, flush=True)
        return plan
    print(plan_text(plan), file=out, flush=True)
    if dry_run:
        print("dry run: nothing was changed.", file=out, flush=True)
        return plan
    if plan["action"] == "noop":
        return plan
    sfn = sfn or boto3.client("stepfunctions")
    arn = start(sfn, outputs["UpgradeOperatorStateMachineArn"], f"upgrade-{cluster}", payload)
    print(f"upgrade_operator started: {arn}", file=out, flush=True)
    if not wait:
        return arn
    outcome = follow(sfn, arn, timeout=timeout, out=out, hide=_PLUMBING)
    print(summary(outcome), file=out, flush=True)
    return outcome


def exit_code(result: Outcome | dict[str, Any] | str) -> int:
    """0 for a plan shown, a started or succeeded workflow; 1 for a refusal or a failed workflow."""
    if isinstance(result, Outcome):
        return 0 if result.ok else 1
    if isinstance(result, dict):
        return 1 if "refused" in result else 0
    return 0


def _yes(value: bool) -> str:
    return "yes" if value else "no"


def addon_versions(
    cluster: str, *, sagemaker: Any = None, eks: Any = None, out: TextIO = sys.stdout
) -> list[dict[str, Any]]:
    """``hpctl addon versions``: the add-on versions the cluster's Kubernetes supports, what each
    supports (``services.upgrade.version_support``), the installed one marked."""
    from hyperpod_control.adapters.eks import EksAdapter
    from hyperpod_control.adapters.sagemaker import SageMakerAdapter
    from hyperpod_control.models.install import ADDON_NAME
    from hyperpod_control.services.install import cluster_ref
    from hyperpod_control.services.upgrade import version_support

    adapter = EksAdapter(eks)
    ref = cluster_ref(cluster, SageMakerAdapter(sagemaker).describe_cluster(cluster))
    kubernetes = adapter.describe_cluster(ref.eks_cluster_name).get("version")
    addon = adapter.describe_addon(ref.eks_cluster_name, ADDON_NAME)
    installed = (addon or {}).get("addonVersion")
    compatible = [
        v["addonVersion"] for v in adapter.addon_versions(ADDON_NAME, kubernetes) if "addonVersion" in v
    ]
    rows = version_support(compatible, installed, kubernetes)
    print(
        f"{ADDON_NAME} versions for {cluster} (EKS {ref.eks_cluster_name}, Kubernetes {kubernetes}); "
        f"installed: {installed or 'none'}",
        file=out,
    )
    if not rows:
        print(f"  no version supports Kubernetes {kubernetes}", file=out)
    header = ("", "VERSION", "CHECKPOINTLESS", "ELASTIC", "NEEDS AGENT", "INLINE POD IDENTITY")
    table = [header] + [
        (
            "*" if r["installed"] else "",
            r["version"],
            _yes(r["checkpointlessTraining"]),
            _yes(r["elasticTraining"]),
            _yes(r["requiresAgent"]),
            _yes(r["inlinePodIdentity"]),
        )
        for r in rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table if rows else []:
        print("  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip(), file=out)
    if rows:
        print(
            "  * installed; checkpointless/elastic training and the agent requirement need 1.2.0+", file=out
        )
    return rows
