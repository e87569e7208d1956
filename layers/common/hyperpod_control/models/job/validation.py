"""The checks a HyperPodPyTorchJob must pass before the control plane runs it. No I/O.

:func:`parse_job` collects every problem of a job (type errors and rule breaks alike) into one
:class:`JobSpecError` whose lines name the Kubernetes path and the fix, so a user fixes the
manifest in one pass instead of one error per apply.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import ValidationError
from pydantic.alias_generators import to_snake

from hyperpod_control.models.job.errors import JobSpecError, problem
from hyperpod_control.models.job.resource import JOB_API_VERSION, JOB_KINDS, HyperPodPytorchJob

NPROC_KEYWORDS = ("auto", "cpu", "gpu")
#: A Failed condition's message must stay readable in ``kubectl describe`` and fit the status.
MESSAGE_LIMIT = 1000


def _get(obj: Any, key: str) -> Any:
    """``obj[key]`` by its camelCase name or, as the models accept both, its snake_case one."""
    if not isinstance(obj, dict):
        return None
    return obj[key] if key in obj else obj.get(to_snake(key))


def _int(value: Any) -> int | None:
    """The value as an integer the way pydantic would read it, or None (then pydantic reports it)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and re.fullmatch(r"\s*-?\d+\s*", value):
        return int(value)
    return None


# Fixes for type errors, by field name: pydantic says what is wrong, these say what to write.
_FIXES = {
    "replicas": "set the number of nodes the job runs on (an integer)",
    "spares": "set the number of spare nodes Kueue reserves (an integer, 0 for none)",
    "maxReplicas": "set the elastic upper bound on nodes (an integer)",
    "nprocPerNode": 'write "auto", "cpu", "gpu" or a number of processes per node, quoted',
    "template": "give a PodTemplateSpec (metadata and spec with containers)",
    "cleanPodPolicy": "use All, OnlyComplete or None",
    "operator": "use one of gt, lt, eq, gteq, lteq",
    "restartType": "use PLR or JLR",
    "labels": "label values are strings; quote numbers and booleans",
    "annotations": "annotation values are strings; quote numbers and booleans",
    "name": "give a name",
    "logPattern": "give a regular expression matched against each log line",
}


def _kube_path(loc: tuple, data: Any) -> str:
    """Render a pydantic error location as a Kubernetes field path (``spec.replicaSpecs[0].replicas``).

    Walks the input alongside, so that pydantic's internal tags (union members, validator names)
    are dropped and only keys and indexes that exist in the object, or the missing key, remain.
    Without the input (``data`` None) the location is rendered as it is.
    """
    path = ""
    current = data
    for part in loc:
        if isinstance(current, list) and isinstance(part, int):
            path += f"[{part}]"
            current = current[part] if 0 <= part < len(current) else None
        elif isinstance(current, dict | None) and isinstance(part, str) and "[" not in part:
            # label and annotation keys hold dots and slashes: bracket them to keep the path readable
            path += f'["{part}"]' if "." in part or "/" in part else (f".{part}" if path else part)
            current = current.get(part) if current is not None else None
        elif current is None and isinstance(part, int):
            path += f"[{part}]"
        # anything else is a tag pydantic adds to the location (a union member, a validator's
        # name), met where the input is already a scalar: not a field
    return path or "(job)"


def _type_problems(exc: ValidationError, data: Any) -> list[str]:
    lines = []
    for err in exc.errors(include_url=False):
        path = _kube_path(tuple(err["loc"]), data)
        # the fix of the nearest named field: "labels" for metadata.labels["a/b"]
        fields = reversed(re.findall(r"[A-Za-z_]\w*", re.sub(r'\["[^"]*"\]', "", path)))
        fix = next((_FIXES[f] for f in fields if f in _FIXES), "correct the value")
        what = err["msg"][:1].lower() + err["msg"][1:]
        if err["type"] != "missing":
            what += f" (got {err['input']!r:.60})"
        lines.append(problem(path, what, fix))
    return lines


def _check_not_negative(lines: list[str], obj: Any, base: str, keys: tuple[str, ...], fix: str) -> None:
    for key in keys:
        value = _int(_get(obj, key))
        if value is not None and value < 0:
            lines.append(problem(f"{base}.{key}", f"must not be negative (got {value})", fix))


def _check_rules(lines: list[str], rules: Any, base: str) -> None:
    if not isinstance(rules, list):
        return
    for i, rule in enumerate(rules):
        path = f"{base}[{i}]"
        _check_not_negative(
            lines,
            rule,
            path,
            ("expectedStartCutOffInSeconds", "expectedRecurringFrequencyInSeconds"),
            "give a number of seconds, or leave it out",
        )
        points = _int(_get(rule, "metricEvaluationDataPoints"))
        if points is not None and points < 1:
            lines.append(
                problem(
                    f"{path}.metricEvaluationDataPoints",
                    f"must be at least 1 (got {points})",
                    "set how many consecutive matches count as slow",
                )
            )
        has_threshold = _get(rule, "metricThreshold") is not None
        if has_threshold != (_get(rule, "operator") is not None):
            lines.append(
                problem(
                    path,
                    "metricThreshold and operator go together",
                    "give both (the agent compares the captured metric with the threshold), or neither",
                )
            )


def _check_run_policy(lines: list[str], run: Any) -> None:
    if not isinstance(run, dict):
        return
    _check_not_negative(
        lines,
        run,
        "spec.runPolicy",
        ("jobMaxRetryCount", "faultDeadlineSeconds", "startupDeadlineSeconds", "activeDeadlineSeconds"),
        "use 0 or a positive number, or leave it out",
    )
    ttl = _int(_get(run, "ttlSecondsAfterFinished"))
    if ttl is not None and ttl < -1:
        lines.append(
            problem(
                "spec.runPolicy.ttlSecondsAfterFinished",
                f"must be -1 or more (got {ttl})",
                "use -1 to keep the finished job forever, or the seconds to keep it",
            )
        )
    restart = _get(run, "restartPolicy")
    if isinstance(restart, dict):
        if _get(restart, "evalPeriodSeconds") is None:
            lines.append(
                problem(
                    "spec.runPolicy.restartPolicy.evalPeriodSeconds",
                    "is required when restartPolicy is given",
                    "set the window in seconds the restart limits count over (e.g. 21600), "
                    "or remove restartPolicy",
                )
            )
        else:
            period = _int(_get(restart, "evalPeriodSeconds"))
            if period is not None and period < 1:
                lines.append(
                    problem(
                        "spec.runPolicy.restartPolicy.evalPeriodSeconds",
                        f"must be at least 1 (got {period})",
                        "set the window in seconds the restart limits count over (e.g. 21600)",
                    )
                )
        _check_not_negative(
            lines,
            restart,
            "spec.runPolicy.restartPolicy",
            (
                "numRestartBeforeFullJobRestart",
                "maxFullJobRestarts",
                "maxNumRepeatOffendersToAvoid",
                "scaleUpSnoozeTimeInSeconds",
            ),
            "use 0 or a positive number, or leave it out",
        )
    _check_rules(lines, _get(run, "logMonitoringConfiguration"), "spec.runPolicy.logMonitoringConfiguration")


def _check_elastic(lines: list[str], elastic: Any) -> None:
    if not isinstance(elastic, dict):
        return
    base = "spec.elasticPolicy"
    if (
        _get(elastic, "replicaIncrementStep") is not None
        and _get(elastic, "replicaDiscreteValues") is not None
    ):
        lines.append(
            problem(
                base,
                "replicaIncrementStep and replicaDiscreteValues are mutually exclusive",
                "keep one: a step to grow by, or the list of allowed replica counts",
            )
        )
    low, high = _int(_get(elastic, "minReplicas")), _int(_get(elastic, "maxReplicas"))
    if low is not None and low < 1:
        lines.append(
            problem(f"{base}.minReplicas", f"must be at least 1 (got {low})", "set the fewest nodes")
        )
    if low is not None and high is not None and high < low:
        lines.append(
            problem(
                f"{base}.maxReplicas",
                f"must not be below minReplicas (got {high} < {low})",
                "raise maxReplicas or lower minReplicas",
            )
        )
    step = _int(_get(elastic, "replicaIncrementStep"))
    if step is not None and step < 1:
        lines.append(
            problem(f"{base}.replicaIncrementStep", f"must be at least 1 (got {step})", "set a positive step")
        )
    _check_not_negative(
        lines,
        elastic,
        base,
        ("scalingTimeoutInSeconds", "gracefulShutdownTimeoutInSeconds", "faultyScaleDownTimeoutInSeconds"),
        "give a number of seconds, or leave it out",
    )


def _check_replica_spec(lines: list[str], replica: Any, base: str) -> None:
    if not isinstance(replica, dict):
        return  # pydantic names the type error
    replicas = _get(replica, "replicas")
    count = _int(replicas)
    if replicas is None or (count is not None and count < 1):
        lines.append(
            problem(
                f"{base}.replicas",
                f"must be at least 1 (got {count if replicas is not None else 'none'})",
                "set the number of nodes the job runs on",
            )
        )
    spares = _int(_get(replica, "spares"))
    if spares is not None and spares < 0:
        lines.append(
            problem(
                f"{base}.spares",
                f"must not be negative (got {spares})",
                "set the number of spare nodes Kueue reserves, or 0 for none",
            )
        )
    template = _get(replica, "template")
    if template is None or isinstance(template, dict):
        pod_spec = (template or {}).get("spec")
        containers = pod_spec.get("containers") if isinstance(pod_spec, dict) else None
        if not containers:
            lines.append(
                problem(
                    f"{base}.template.spec.containers",
                    "must list at least one container",
                    "add the training container (it runs hyperpodrun and exposes port 8080)",
                )
            )


def _check_nproc(lines: list[str], value: Any) -> None:
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        value = "auto" if value is None else str(value)
    if not isinstance(value, str):
        return  # pydantic names the type error
    if value in NPROC_KEYWORDS or (value.isdigit() and int(value) > 0):
        return
    lines.append(
        problem(
            "spec.nprocPerNode",
            f"must be auto, cpu, gpu or a positive integer (got {value!r})",
            'use "auto" (one process per GPU, else per CPU) or the number of processes per node',
        )
    )


def job_problems(obj: Any) -> list[str]:
    """Every problem of a raw HyperPodPyTorchJob object, one line each; empty when it is fine.

    Checks run on the raw dict, next to pydantic's type checks, so that a type error in one field
    does not hide a rule broken in another.
    """
    if not isinstance(obj, dict):
        return [problem("(job)", f"must be an object (got {type(obj).__name__})", "pass the job's manifest")]
    lines: list[str] = []
    api_version = _get(obj, "apiVersion")
    if api_version != JOB_API_VERSION:
        lines.append(
            problem(
                "apiVersion",
                f"must be {JOB_API_VERSION} (got {api_version!r})",
                f"set apiVersion: {JOB_API_VERSION}",
            )
        )
    kind = _get(obj, "kind")
    if kind not in JOB_KINDS:
        lines.append(problem("kind", f"must be {JOB_KINDS[0]} (got {kind!r})", f"set kind: {JOB_KINDS[0]}"))
    meta = _get(obj, "metadata")
    for key, fix in (
        ("name", "give the job a name"),
        ("uid", "pass the job as read from the API server, which assigns the uid"),
    ):
        if not _get(meta, key):
            lines.append(problem(f"metadata.{key}", "is required", fix))
    spec = _get(obj, "spec")
    if not isinstance(spec, dict):
        if spec is not None:
            return lines  # pydantic names the type error
        spec = {}
    _check_nproc(lines, _get(spec, "nprocPerNode"))
    replica_specs = _get(spec, "replicaSpecs")
    if replica_specs is None or (isinstance(replica_specs, list) and not replica_specs):
        lines.append(
            problem(
                "spec.replicaSpecs",
                "must list at least one replica spec",
                "add one with replicas and a pod template (hyp names it pod)",
            )
        )
    elif isinstance(replica_specs, list):
        for i, replica in enumerate(replica_specs):
            _check_replica_spec(lines, replica, f"spec.replicaSpecs[{i}]")
    _check_run_policy(lines, _get(spec, "runPolicy"))
    _check_elastic(lines, _get(spec, "elasticPolicy"))
    return lines


def _job_ref(obj: Any) -> str | None:
    meta = _get(obj, "metadata")
    name = _get(meta, "name")
    if not isinstance(name, str) or not name:
        return None
    namespace = _get(meta, "namespace")
    return f"{namespace if isinstance(namespace, str) and namespace else 'default'}/{name}"


def parse_job(obj: dict) -> HyperPodPytorchJob:
    """The job as a model, or :class:`JobSpecError` listing every problem found (types and rules)."""
    lines = job_problems(obj)
    if not isinstance(obj, dict):
        raise JobSpecError(lines)
    job = None
    try:
        job = HyperPodPytorchJob.model_validate(obj)
    except ValidationError as exc:
        # a field the rules already named (kind: None) needs no second line from pydantic
        named = {line.split(": ", 1)[0] for line in lines}
        lines.extend(line for line in _type_problems(exc, obj) if line.split(": ", 1)[0] not in named)
    if lines or job is None:
        raise JobSpecError(list(dict.fromkeys(lines)), job=_job_ref(obj))
    return job


def validation_message(exc: BaseException, limit: int = MESSAGE_LIMIT) -> str:
    """A short text for a Failed condition's message: the problems, as many as fit in ``limit``."""
    if isinstance(exc, JobSpecError):
        problems = exc.problems
    elif isinstance(exc, ValidationError):
        problems = _type_problems(exc, None)
    else:
        problems = [str(exc)]
    text = ""
    for i, line in enumerate(problems):
        more = len(problems) - i
        candidate = f"{text}; {line}" if text else line
        tail = f" (and {more - 1} more)" if more > 1 else ""
        if len(candidate) + len(tail) > limit:
            if not text:  # even the first line does not fit: cut it short
                return line[: max(limit - len(tail) - 3, 0)] + "..." + tail
            return f"{text} (and {more} more)"
        text = candidate
    return text
