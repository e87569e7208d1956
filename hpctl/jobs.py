"""``hpctl jobs`` and ``hpctl jobs describe``: the HyperPodPyTorchJobs the control plane knows
(argument parsing is in cli.py).

What the control plane recorded comes from its DynamoDB table: per registered cluster the JOB
items (the serverless supervisor's, or what AWS's operator reported in addon mode) and per job the
history timeline. ``describe`` adds what the cluster's Kubernetes API says now (the job's
conditions and its pods); when that API cannot be read, it still prints the records and says why
the cluster could not be read.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TextIO

from hpctl.stack import load_outputs

GROUP, VERSION, PLURAL = "sagemaker.amazonaws.com", "v1", "hyperpodpytorchjobs"
REASON_WIDTH = 48
HOW_TO_SUBMIT = (
    "Submit one to a registered cluster with `kubectl apply -f job.yaml` (a HyperPodPyTorchJob, "
    "apiVersion sagemaker.amazonaws.com/v1); it is listed here once the control plane has seen it."
)


class JobLookupError(Exception):
    """``describe`` could not pick one job; ``code`` is the exit status (1 unknown, 2 ambiguous)."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class _Cluster:
    operator: Any  # OperatorRecord
    jobs: list[Any] = field(default_factory=list)  # JobRecord


# -- reading ----------------------------------------------------------------------------------------


def _store(stack: str, dynamodb: Any = None, cloudformation: Any = None) -> Any:
    import boto3

    from hyperpod_control.adapters.store import Store

    outputs = load_outputs(stack, cloudformation)
    return Store(outputs["TableName"], client=dynamodb or boto3.client("dynamodb"))


def _clusters(store: Any, cluster: str | None) -> list[_Cluster]:
    """Every registered cluster (or the one named, by name or ARN) with its JOB items."""
    operators = sorted(store.list_operators(), key=lambda o: o.cluster_name)
    if cluster:
        chosen = [o for o in operators if cluster in (o.cluster_name, o.cluster_arn)]
        if not chosen:
            known = ", ".join(o.cluster_name for o in operators) or "none"
            raise JobLookupError(
                f"cluster {cluster} is not registered with the control plane (registered: {known}); "
                "register it with `hpctl register --cluster NAME --mode addon|serverless`.",
                1,
            )
        operators = chosen
    return [_Cluster(o, store.list_jobs(o.cluster_arn)) for o in operators]


def _now() -> datetime:
    return datetime.now(UTC)


def _duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


def _age_or_duration(job: Any, now: datetime) -> str:
    """How long a finished job ran ("took 1m05s"), or how long ago an unfinished one was seen."""
    if job.completed_at is not None:
        began = job.started_at or job.created_at
        return f"took {_duration((job.completed_at - began).total_seconds())}"
    return f"age {_duration((now - job.created_at).total_seconds())}"


def _short(text: str | None, width: int = REASON_WIDTH) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= width else text[: width - 3] + "..."


def _iso(value: datetime | None) -> str | None:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if value else None


def _row(operator: Any, job: Any, now: datetime) -> dict[str, Any]:
    return {
        "cluster": operator.cluster_name,
        "clusterArn": operator.cluster_arn,
        "namespace": job.namespace,
        "name": job.name,
        "uid": job.uid,
        "generation": job.generation,
        "mode": str(job.mode),
        "phase": str(job.phase),
        "reason": job.reason,
        "nnodes": job.nnodes,
        "spares": job.spares,
        "restartCount": job.restart_count,
        "faultCount": job.fault_count,
        "executionArn": job.execution_arn,
        "createdAt": _iso(job.created_at),
        "startedAt": _iso(job.started_at),
        "completedAt": _iso(job.completed_at),
        "age": _age_or_duration(job, now),
    }


def list_jobs(
    stack: str, cluster: str | None = None, *, dynamodb: Any = None, cloudformation: Any = None
) -> list[dict[str, Any]]:
    """One row per JOB item of every registered cluster (or of ``cluster``), oldest first."""
    store = _store(stack, dynamodb, cloudformation)
    now = _now()
    rows = [_row(c.operator, job, now) for c in _clusters(store, cluster) for job in c.jobs]
    return sorted(rows, key=lambda r: (r["cluster"], r["namespace"], r["name"], r["createdAt"] or ""))


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]], indent: str = "") -> list[str]:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    return [
        indent + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    ]


def jobs_text(rows: list[dict[str, Any]], cluster: str | None = None) -> str:
    """The job list as a person reads it; a friendly line when there is none."""
    if not rows:
        where = f"on cluster {cluster}" if cluster else "on any registered cluster"
        return f"No jobs {where}. {HOW_TO_SUBMIT}"
    header = (
        "CLUSTER",
        "NAMESPACE/NAME",
        "MODE",
        "PHASE",
        "RANKS",
        "SPARES",
        "RESTARTS",
        "AGE/DURATION",
        "REASON",
    )
    table = [
        (
            r["cluster"],
            f"{r['namespace']}/{r['name']}",
            r["mode"],
            r["phase"],
            str(r["nnodes"]) if r["nnodes"] else "-",
            str(r["spares"]),
            str(r["restartCount"]),
            r["age"],
            _short(r["reason"]) or "-",
        )
        for r in rows
    ]
    return "\n".join(_table(header, table))


# -- describe ---------------------------------------------------------------------------------------


def _find(clusters: list[_Cluster], name: str, namespace: str, cluster: str | None) -> tuple[Any, Any]:
    """The (operator, job) named; the newest JOB item when the job was resubmitted under a new uid."""
    found: dict[str, tuple[Any, Any]] = {}
    for c in clusters:
        for job in c.jobs:
            if job.name == name and job.namespace == namespace:
                best = found.get(c.operator.cluster_arn)
                if best is None or job.created_at > best[1].created_at:
                    found[c.operator.cluster_arn] = (c.operator, job)
    if len(found) == 1:
        return next(iter(found.values()))
    if found:
        names = ", ".join(sorted(op.cluster_name for op, _ in found.values()))
        raise JobLookupError(
            f"job {namespace}/{name} exists on several clusters ({names}); pass --cluster NAME to pick one.",
            2,
        )
    known = sorted({f"{j.namespace}/{j.name}" for c in clusters for j in c.jobs})
    where = f" on cluster {cluster}" if cluster else ""
    listing = f"known jobs: {', '.join(known)}" if known else "no jobs are recorded yet"
    raise JobLookupError(
        f"no job {namespace}/{name}{where} ({listing}). Check the name and --namespace; a job submitted "
        "in the last minute is listed once the control plane has seen it.",
        1,
    )


def _eks_cluster_name(operator: Any, sagemaker: Any = None) -> str:
    if operator.eks_cluster_name:
        return str(operator.eks_cluster_name)
    from hyperpod_control.adapters.sagemaker import SageMakerAdapter
    from hyperpod_control.services.install import cluster_ref

    described = SageMakerAdapter(sagemaker).describe_cluster(operator.cluster_name)
    return cluster_ref(operator.cluster_name, described).eks_cluster_name


def _kube_view(operator: Any, job: Any, kube: Any = None, sagemaker: Any = None) -> dict[str, Any]:
    """What the cluster's Kubernetes API says about the job now, or why it could not be read."""
    from botocore.exceptions import BotoCoreError, ClientError

    from hyperpod_control.exceptions import ControlPlaneError

    view: dict[str, Any] = {"readable": False, "error": None, "exists": None, "conditions": [], "pods": []}
    try:
        if kube is None:
            from hyperpod_control.adapters.kube import KubeAdapter

            kube = KubeAdapter(_eks_cluster_name(operator, sagemaker))
        obj = kube.custom_object(GROUP, VERSION, PLURAL, job.namespace, job.name)
        pods = kube.pods(job.namespace, label_selector=f"HPJob={job.name}")
    except (ControlPlaneError, BotoCoreError, ClientError, OSError) as exc:
        view["error"] = str(exc) or type(exc).__name__
        return view
    view["readable"] = True
    view["exists"] = obj is not None
    if obj is not None:
        status = obj.get("status") or {}
        view["uid"] = (obj.get("metadata") or {}).get("uid")
        view["conditions"] = [
            {
                "type": c.get("type"),
                "status": c.get("status"),
                "reason": c.get("reason"),
                "message": c.get("message"),
                "time": c.get("lastTransitionTime") or c.get("lastUpdateTime"),
            }
            for c in status.get("conditions") or []
        ]
        for key in ("startTime", "completionTime", "masterAddr", "restartCount"):
            if status.get(key) is not None:
                view[key] = status[key]
    view["pods"] = sorted(
        (
            {
                "name": (p.get("metadata") or {}).get("name"),
                "phase": (p.get("status") or {}).get("phase"),
                "node": (p.get("spec") or {}).get("nodeName"),
                "ip": (p.get("status") or {}).get("podIP"),
            }
            for p in pods
        ),
        key=lambda p: p["name"] or "",
    )
    return view


def describe_job(
    stack: str,
    name: str,
    namespace: str = "default",
    cluster: str | None = None,
    *,
    dynamodb: Any = None,
    cloudformation: Any = None,
    kube: Any = None,
    sagemaker: Any = None,
) -> dict[str, Any]:
    """One job: its JOB item, its rank table, its history (DynamoDB) and its conditions and pods
    (the cluster's Kubernetes API). Raises ``JobLookupError`` for an unknown or ambiguous name."""
    store = _store(stack, dynamodb, cloudformation)
    operator, job = _find(_clusters(store, cluster), name, namespace, cluster)
    doc = _row(operator, job, _now())
    doc.update(
        {
            "segment": job.segment,
            "masterAddr": job.master_addr,
            "eksClusterName": operator.eks_cluster_name,
            "updatedAt": _iso(job.updated_at),
            "pods": [
                {
                    "rank": slot.rank,
                    # Before the agents start no pod holds a rank: none is a spare yet.
                    "spare": slot.rank is None and bool(job.ranked()),
                    "pod": slot.pod,
                    "node": slot.node,
                    "ip": slot.ip,
                }
                for slot in [*job.ranked(), *job.spare_pods()]
            ],
            "recordedConditions": job.conditions,
            "sizes": size_timeline(store.job_history(job.uid)),
            "history": [
                {"at": _iso(e.at), "kind": e.kind, "message": e.message, "details": e.details}
                for e in sorted(store.job_history(job.uid), key=lambda e: e.at)
            ],
            "kubernetes": _kube_view(operator, job, kube, sagemaker),
        }
    )
    return doc


def size_timeline(events: list[Any]) -> list[dict[str, Any]]:
    """Pure: the job's size over time, from its history: each start (``Started``: its ranks) and
    each elastic resize (``Resized``: from, to, why, how long training stood still)."""
    sizes = []
    for e in sorted(events, key=lambda e: e.at):
        if e.kind == "Started":
            ranks = len(e.details.get("ranks") or {})
            sizes.append({"at": _iso(e.at), "ranks": ranks, "change": "started", "durationMs": None})
        elif e.kind == "Resized":
            sizes.append(
                {
                    "at": _iso(e.at),
                    "ranks": e.details.get("to"),
                    "change": f"{e.details.get('direction')} from {e.details.get('from')}: "
                    f"{e.details.get('reason')}",
                    "durationMs": e.details.get("duration_ms"),
                }
            )
    return sizes


def _conditions_rows(conditions: list[dict[str, Any]]) -> list[tuple[str, ...]]:
    return [
        (
            str(c.get("type") or "-"),
            str(c.get("status") or "-"),
            str(c.get("reason") or "-"),
            _short(c.get("message"), 60) or "-",
            str(c.get("time") or c.get("lastTransitionTime") or "-"),
        )
        for c in conditions
    ]


def _rank_cell(pod: dict[str, Any]) -> str:
    return "spare" if pod["spare"] else "-" if pod["rank"] is None else str(pod["rank"])


def describe_text(doc: dict[str, Any]) -> str:
    """The job as a person reads it: summary, ranks, Kubernetes conditions and pods, history."""
    lines = [
        f"Job {doc['namespace']}/{doc['name']} on cluster {doc['cluster']} ({doc['mode']} mode)",
        f"  uid:        {doc['uid']} (generation {doc['generation']})",
        f"  phase:      {doc['phase']}" + (f"  reason: {doc['reason']}" if doc.get("reason") else ""),
        f"  ranks:      {doc['nnodes'] or '-'}  spares: {doc['spares']}  restarts: {doc['restartCount']}  "
        f"faults: {doc['faultCount']}",
        f"  created:    {doc['createdAt']}  started: {doc['startedAt'] or '-'}  "
        f"completed: {doc['completedAt'] or '-'}  ({doc['age']})",
    ]
    if doc.get("executionArn"):
        lines.append(f"  execution:  {doc['executionArn']} (segment {doc['segment']})")
    lines.append(f"  master:     {doc.get('masterAddr') or '-'}")

    lines.append("")
    if doc["pods"]:
        assigned = any(p["rank"] is not None for p in doc["pods"])
        lines.append("Ranks:" if assigned else "Ranks: not assigned yet (assigned when the agents start)")
        rows = [(_rank_cell(p), p["pod"], p["node"] or "-", p["ip"] or "-") for p in doc["pods"]]
        lines += _table(("RANK", "POD", "NODE", "IP"), rows, "  ")
    else:
        lines.append("Ranks: no pods yet")

    kube = doc["kubernetes"]
    lines.append("")
    if not kube["readable"]:
        lines.append(f"Kubernetes: could not read cluster {doc['cluster']}: {kube['error']}")
        if doc.get("recordedConditions"):
            lines.append("Conditions (as last recorded):")
            lines += _table(
                ("TYPE", "STATUS", "REASON", "MESSAGE", "TIME"),
                _conditions_rows(doc["recordedConditions"]),
                "  ",
            )
    else:
        if not kube["exists"]:
            lines.append("Kubernetes: the job no longer exists in the cluster (deleted); its records remain.")
        if kube["exists"] and kube.get("uid") not in (None, doc["uid"]):
            lines.append(
                f"Kubernetes: another job of that name (uid {kube['uid']}) is in the cluster now; see below."
            )
        if kube["exists"] and kube["conditions"]:
            lines.append("Conditions:")
            lines += _table(
                ("TYPE", "STATUS", "REASON", "MESSAGE", "TIME"), _conditions_rows(kube["conditions"]), "  "
            )
        elif kube["exists"]:
            lines.append("Conditions: none yet")
        if kube["pods"]:
            lines.append("Pods:")
            rows = [(p["name"] or "-", p["phase"] or "-", p["node"] or "-") for p in kube["pods"]]
            lines += _table(("NAME", "PHASE", "NODE"), rows, "  ")
        else:
            lines.append("Pods: none in the cluster")

    if len(doc.get("sizes") or []) > 1:
        lines.append("")
        lines.append("Size over time:")
        rows = [
            (
                e["at"] or "-",
                str(e["ranks"]),
                "-" if e["durationMs"] is None else f"{e['durationMs']} ms",
                _short(e["change"], 90),
            )
            for e in doc["sizes"]
        ]
        lines += _table(("TIME", "RANKS", "PAUSE", "CHANGE"), rows, "  ")

    lines.append("")
    if doc["history"]:
        lines.append("History:")
        rows = [(e["at"] or "-", e["kind"], _short(e["message"], 100)) for e in doc["history"]]
        lines += _table(("TIME", "KIND", "MESSAGE"), rows, "  ")
    else:
        lines.append("History: none recorded")
    return "\n".join(lines)


# -- the command ------------------------------------------------------------------------------------


def job_timeline(
    stack: str,
    name: str,
    namespace: str = "default",
    cluster: str | None = None,
    *,
    out_file: str | None = None,
    out: TextIO | None = None,
    dynamodb: Any = None,
) -> str:
    """Draw the job's faults, decisions and recoveries over time from its recorded history (to
    ``out``; with ``out_file``, also as an HTML page there). Returns the text drawn."""
    from pathlib import Path

    from hpctl.timeline import marks, timeline_html, timeline_text

    out = out or sys.stdout
    store = _store(stack, dynamodb)
    operator, job = _find(_clusters(store, cluster), name, namespace, cluster)
    entries = marks(store.job_history(job.uid))
    title = (
        f"job {job.namespace}/{job.name} on {operator.cluster_name} "
        f"({job.phase}, {job.restart_count} restart(s))"
    )
    text = timeline_text(title, entries)
    print(text, file=out)
    if out_file:
        path = Path(out_file)
        path.write_text(timeline_html(title, entries), encoding="utf-8")
        print(f"timeline written to {path.resolve()}", file=out)
    return text


def _pod_of_rank(job: Any, rank: int) -> str:
    for slot in job.ranked():
        if slot.rank == rank:
            return str(slot.pod)
    held = (
        ", ".join(f"{slot.rank} ({slot.pod})" for slot in job.ranked())
        or "none yet: its agents have not started"
    )
    raise JobLookupError(f"job {job.namespace}/{job.name} has no rank {rank}; its ranks: {held}.", 1)


def job_logs(
    stack: str,
    name: str,
    namespace: str = "default",
    cluster: str | None = None,
    *,
    rank: int = 0,
    follow: bool = False,
    previous: bool = False,
    tail: int | None = None,
    poll_seconds: float = 2.0,
    out: TextIO | None = None,
    dynamodb: Any = None,
    kube: Any = None,
    sagemaker: Any = None,
) -> str:
    """Print the output of the pod that holds ``rank`` (the job's JOB item says which), read
    through the cluster's Kubernetes API (``pods/{name}/log``, as ``kubectl logs``); ``previous``:
    its container's run before the last restart. ``follow`` reads again every ``poll_seconds``
    and prints what is new until the pod stops running. Returns the pod's name."""
    import time

    from hyperpod_control.adapters.kube import KubeAdapter

    out = out or sys.stdout
    store = _store(stack, dynamodb)
    operator, job = _find(_clusters(store, cluster), name, namespace, cluster)
    pod = _pod_of_rank(job, rank)
    kube = kube or KubeAdapter(_eks_cluster_name(operator, sagemaker))
    core = kube._api("CoreV1Api")

    def read() -> tuple[str, str | None]:
        kwargs: dict[str, Any] = {"previous": previous}
        if tail is not None:
            kwargs["tail_lines"] = tail
        text = kube._call(
            f"Pod {namespace}/{pod} log", core.read_namespaced_pod_log, pod, namespace, **kwargs
        )
        phase = None
        if follow:
            found = kube.pods(namespace, field_selector=f"metadata.name={pod}")
            phase = (found[0].get("status") or {}).get("phase") if found else None
        return text or "", phase

    printed = 0
    while True:
        text, phase = read()
        # A log rotated or restarted under us is shorter: print it whole.
        new = text[printed:] if len(text) >= printed else text
        if new:
            out.write(new)
            out.flush()
        printed = len(text)
        if not follow or phase not in ("Pending", "Running"):
            return pod
        time.sleep(poll_seconds)


def run(
    stack: str,
    command: str | None,
    *,
    name: str | None = None,
    namespace: str = "default",
    cluster: str | None = None,
    as_json: bool = False,
    out: TextIO | None = None,
    err: TextIO | None = None,
    rank: int = 0,
    follow: bool = False,
    previous: bool = False,
    out_file: str | None = None,
) -> int:
    """``hpctl jobs [describe|logs NAME]``: print, and return the exit status (0, 1 unknown, 2 ambiguous)."""
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        if command == "timeline":
            assert name is not None
            job_timeline(stack, name, namespace, cluster, out_file=out_file, out=out)
        elif command == "logs":
            assert name is not None
            job_logs(stack, name, namespace, cluster, rank=rank, follow=follow, previous=previous, out=out)
        elif command == "describe":
            assert name is not None
            doc = describe_job(stack, name, namespace, cluster)
            print(json.dumps(doc, indent=2, default=str) if as_json else describe_text(doc), file=out)
        else:
            rows = list_jobs(stack, cluster)
            print(json.dumps(rows, indent=2) if as_json else jobs_text(rows, cluster), file=out)
    except JobLookupError as exc:
        print(f"hpctl: {exc}", file=err)
        return exc.code
    return 0
