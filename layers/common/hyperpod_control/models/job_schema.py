"""The HyperPodPyTorchJob CRD's ``openAPIV3Schema``: AWS's field names and types, and the bounds
that keep a job the cluster admits one the control plane can run.

One home for the schema: ``services/install/crd.py`` installs it with the serverless operator's CRD,
and the sandbox's copy of AWS's add-on CRD uses it too, so a job refused or pruned by one is
refused or pruned by the other. Types are those of AWS's CRD as the ``sagemaker-hyperpod`` SDK's
models derive them (``status.masterPort`` a string, ``status.jobPods`` ObjectReferences,
``faultyRankList`` strings, ``metricThreshold`` an integer); the SDK's models forbid unknown fields,
so the schema is structural and the API server prunes what it does not declare. Two places keep
unknown fields: a replica spec's pod ``template`` (a whole PodTemplateSpec, validated when the pods
are created) and ``status`` (fields AWS's operator writes that this project does not model).

The bounds are this project's (AWS's CRD has few): 1 to ``MAX_REPLICAS`` nodes, names that fit a
pod name and a label value, counts that are not negative. Kubernetes checks them at admission, in
seconds, before anything is created.
"""

from __future__ import annotations

from typing import Any

#: Nodes of one replica spec. HyperPod clusters run jobs on thousands of nodes; far beyond this a
#: number is a typo, and the supervisor would try to create that many pods.
MAX_REPLICAS = 10_000
#: The job name becomes the ``HPJob`` label value and the pods' names (``<job>-<index>``).
NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
NAME_MAX = 53  # leaves room for "-<index>" within a 63-character pod hostname

_INT: dict[str, Any] = {"type": "integer", "format": "int32"}


def _count(minimum: int = 0, maximum: int | None = None) -> dict[str, Any]:
    schema = {**_INT, "minimum": minimum}
    if maximum is not None:
        schema["maximum"] = maximum
    return schema


def _object(properties: dict[str, Any], required: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": properties, **extra}
    if required:
        schema["required"] = required
    return schema


_STRING: dict[str, Any] = {"type": "string"}

_LOG_RULE = _object(
    {
        "name": {"type": "string", "minLength": 1, "maxLength": 128},
        "logPattern": {"type": "string", "minLength": 1, "maxLength": 1024},
        "stopPattern": {"type": "string", "maxLength": 1024},
        "expectedStartCutOffInSeconds": _count(),
        "expectedRecurringFrequencyInSeconds": _count(),
        "metricThreshold": {"type": "integer"},
        "operator": {"type": "string", "enum": ["gt", "gteq", "lt", "lteq", "eq"]},
        "metricEvaluationDataPoints": _count(1),
        # Read by the agent (1.1.3 and later) though not in the SDK's model: declared, so kept.
        "faultOnMatch": {"type": "boolean"},
    },
    required=["name", "logPattern"],
)

_RESTART_POLICY = _object(
    {
        "evalPeriodSeconds": _count(1),
        "numRestartBeforeFullJobRestart": _count(),
        "maxFullJobRestarts": _count(),
        "maxNumRepeatOffendersToAvoid": _count(),
        "scaleUpSnoozeTimeInSeconds": _count(),
    }
)

_RUN_POLICY = _object(
    {
        "cleanPodPolicy": {"type": "string", "enum": ["All", "OnlyComplete", "None"]},
        "jobMaxRetryCount": _count(),
        "restartPolicy": _RESTART_POLICY,
        "logMonitoringConfiguration": {"type": "array", "maxItems": 32, "items": _LOG_RULE},
        "faultDeadlineSeconds": _count(),
        "startupDeadlineSeconds": _count(),
        "activeDeadlineSeconds": _count(),
        "ttlSecondsAfterFinished": _count(-1),
        "suspend": {"type": "boolean"},
        "workloadMode": _STRING,
    }
)

_ELASTIC_POLICY = _object(
    {
        "minReplicas": _count(1, MAX_REPLICAS),
        "maxReplicas": _count(1, MAX_REPLICAS),
        "replicaIncrementStep": _count(1, MAX_REPLICAS),
        "replicaDiscreteValues": {"type": "array", "items": _count(1, MAX_REPLICAS)},
        "scalingTimeoutInSeconds": _count(),
        "gracefulShutdownTimeoutInSeconds": _count(),
        "faultyScaleDownTimeoutInSeconds": _count(),
    }
)

_REPLICA_SPEC = _object(
    {
        "name": {"type": "string", "minLength": 1, "maxLength": 63},
        "replicas": _count(1, MAX_REPLICAS),
        "maxReplicas": _count(1, MAX_REPLICAS),
        "spares": _count(0, MAX_REPLICAS),
        "template": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
    },
    required=["name"],
)

_SPEC = _object(
    {
        # "auto", "cpu", "gpu" or a number of processes; the CRD types it as a string.
        "nprocPerNode": {"type": "string", "pattern": r"^(auto|cpu|gpu|[1-9][0-9]{0,3})$"},
        "replicaSpecs": {"type": "array", "maxItems": 16, "items": _REPLICA_SPEC},
        "runPolicy": _RUN_POLICY,
        "elasticPolicy": _ELASTIC_POLICY,
    },
)

_OBJECT_REFERENCE = _object(
    {
        "apiVersion": _STRING,
        "fieldPath": _STRING,
        "kind": _STRING,
        "name": _STRING,
        "namespace": _STRING,
        "resourceVersion": _STRING,
        "uid": _STRING,
    }
)

_STATUS = _object(
    {
        "startTime": _STRING,
        "completionTime": _STRING,
        "conditions": {
            "type": "array",
            "items": _object(
                {
                    "type": _STRING,
                    "status": {"type": "string", "enum": ["True", "False", "Unknown"]},
                    "reason": _STRING,
                    "message": _STRING,
                    "lastTransitionTime": _STRING,
                    "lastProbeTime": _STRING,
                },
                required=["type", "status"],
            ),
        },
        "restartCount": _count(),
        "restartStatus": _object(
            {
                "currentEvalPeriod": {"type": "integer"},
                "restartCount": _count(),
                "fullJobRestartCount": _count(),
            }
        ),
        "latestFaultyPodInstanceList": _object(
            {
                "restartType": {"type": "string", "enum": ["PLR", "JLR"]},
                "faultyInstanceIdList": {"type": "array", "items": _STRING},
                "faultyPodList": {"type": "array", "items": _STRING},
                "faultyRankList": {"type": "array", "items": _STRING},
            }
        ),
        "masterAddr": _STRING,
        "masterPort": _STRING,
        "jobPods": {"type": "array", "items": _OBJECT_REFERENCE},
        # Written by elastic training (services/elastic.py scaling_status). ``podsScaled``, whose
        # type AWS does not publish, is left undeclared: kept as written (unknown fields are).
        "elasticScalingStatus": _object(
            {
                "targetReplicas": {"type": "object", "additionalProperties": _INT},
                "lastUpdated": _STRING,
                "lastScalingTime": _STRING,
                "lastRestartTime": _STRING,
                "isFaultyPodScaleDown": {"type": "boolean"},
                "consecutiveScalingFailures": _count(),
            },
            **{"x-kubernetes-preserve-unknown-fields": True},
        ),
    },
    # AWS's operator writes more (podSets, elasticScalingStatus, ...): kept, not pruned.
    **{"x-kubernetes-preserve-unknown-fields": True},
)

JOB_SCHEMA: dict[str, Any] = _object(
    {
        "apiVersion": _STRING,
        "kind": _STRING,
        "metadata": _object({"name": {"type": "string", "maxLength": NAME_MAX, "pattern": NAME_PATTERN}}),
        "spec": _SPEC,
        "status": _STATUS,
    },
)


def job_schema() -> dict[str, Any]:
    """A copy of the schema, for a CRD body (``versions[].schema.openAPIV3Schema``)."""
    import copy

    return copy.deepcopy(JOB_SCHEMA)
