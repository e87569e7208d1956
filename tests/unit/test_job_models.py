"""The HyperPodPyTorchJob models: real shapes parse, every bad field is named with its fix."""

from __future__ import annotations

import copy

import pytest
from pydantic import ValidationError

from hyperpod_control.exceptions import InvalidInputError
from hyperpod_control.models.install import JOB_KIND
from hyperpod_control.models.job import (
    JOB_KINDS,
    CleanPodPolicy,
    HyperPodPytorchJob,
    JobCondition,
    JobSpecError,
    JobStatus,
    parse_job,
    set_condition,
    validation_message,
)

pytestmark = pytest.mark.unit


def _container(name: str = "pytorch-job-container") -> dict:
    return {
        "name": name,
        "image": "123456789012.dkr.ecr.us-west-2.amazonaws.com/train:latest",
        "command": ["hyperpodrun", "--nnodes=16", "--nproc-per-node=8", "train.py"],
        "ports": [{"containerPort": 8080}],
        "resources": {"requests": {"nvidia.com/gpu": 8}, "limits": {"nvidia.com/gpu": 8}},
    }


def docs_job() -> dict:
    """The AWS documentation's example (docs/hyperpod-contract.md, "The HyperPodPyTorchJob
    resource"), filled in to a whole object."""
    return {
        "apiVersion": "sagemaker.amazonaws.com/v1",
        "kind": "HyperPodPyTorchJob",
        "metadata": {
            "name": "llama-train",
            "namespace": "team-a",
            "uid": "5f1c0d2e-0000-4000-8000-000000000001",
            "generation": 3,
            "resourceVersion": "81234",
            "creationTimestamp": "2025-01-01T00:00:00Z",
            "finalizers": ["sagemaker.amazonaws.com/hyperpodpytorchjob"],
        },
        "spec": {
            "nprocPerNode": "8",
            "replicaSpecs": [
                {
                    "name": "workers",
                    "replicas": 16,
                    "template": {"spec": {"containers": [_container("train")]}},
                }
            ],
            "runPolicy": {
                "jobMaxRetryCount": 50,
                "restartPolicy": {
                    "numRestartBeforeFullJobRestart": 3,
                    "evalPeriodSeconds": 21600,
                    "maxFullJobRestarts": 1,
                },
                "cleanPodPolicy": "All",
                "logMonitoringConfiguration": [
                    {
                        "name": "JobStart",
                        "logPattern": ".*Experiment configuration.*",
                        "expectedStartCutOffInSeconds": 120,
                    },
                    {
                        "name": "JobHangingDetection",
                        "logPattern": ".*\\[Epoch 0 Batch \\d+.*'training_loss_step': (\\d+(\\.\\d+)?).*",
                        "expectedRecurringFrequencyInSeconds": 300,
                        "expectedStartCutOffInSeconds": 600,
                    },
                    {
                        "name": "LowThroughputDetection",
                        "logPattern": ".*\\[Epoch 0 Batch \\d+.*'samples\\/sec': (\\d+(\\.\\d+)?).*",
                        "metricThreshold": 80,
                        "operator": "lteq",
                        "metricEvaluationDataPoints": 25,
                    },
                    {
                        "name": "GPU Error",
                        "logPattern": ".*RuntimeError.*out of memory.*",
                        "faultOnMatch": True,
                    },
                ],
            },
        },
        "status": {
            "startTime": "2025-01-01T00:01:00Z",
            "conditions": [
                {
                    "type": "Created",
                    "status": "True",
                    "reason": "Created",
                    "message": "job created",
                    "lastTransitionTime": "2025-01-01T00:00:01Z",
                },
                {
                    "type": "Running",
                    "status": "True",
                    "reason": "Running",
                    "message": "The fault of reason NodeFault was remediated in 94283 milliseconds",
                    "lastTransitionTime": "2025-01-01T00:05:00Z",
                },
            ],
            "restartCount": 1,
            "restartStatus": {"restartCount": 1, "fullJobRestartCount": 0},
            "latestFaultyPodInstanceList": {
                "restartType": "PLR",
                "faultyInstanceIdList": ["i-0abc"],
                "faultyPodList": ["llama-train-pod-3"],
                "faultyRankList": ["3"],
            },
            "masterAddr": "llama-train-pod-0",
            # AWS's CRD types: masterPort a string, jobPods ObjectReferences
            "masterPort": "23456",
            "jobPods": [
                {"kind": "Pod", "name": f"llama-train-pod-{i}", "namespace": "ml"} for i in range(16)
            ],
            "podSets": [{"name": "main", "count": 16}],
        },
    }


def hyp_job() -> dict:
    """A job as ``hyp create hyp-pytorch-job`` writes it (template 1.1 ``to_domain``)."""
    labels = {
        "kueue.x-k8s.io/queue-name": "hyperpod-ns-team-a-localqueue",
        "kueue.x-k8s.io/priority-class": "high",
    }
    return {
        "apiVersion": "sagemaker.amazonaws.com/v1",
        "kind": "HyperPodPytorchJob",
        "metadata": {"name": "demo", "namespace": "hyperpod-ns-team-a", "uid": "u-1", "labels": dict(labels)},
        "spec": {
            "nprocPerNode": "auto",
            "replicaSpecs": [
                {
                    "name": "pod",
                    "replicas": 4,
                    "spares": 2,
                    "template": {
                        "metadata": {"labels": dict(labels)},
                        "spec": {
                            "containers": [_container()],
                            "nodeSelector": {"node.kubernetes.io/instance-type": "ml.p5.48xlarge"},
                        },
                    },
                }
            ],
            "runPolicy": {"cleanPodPolicy": "None", "jobMaxRetryCount": 3},
        },
    }


def problems_of(obj: dict) -> list[str]:
    with pytest.raises(JobSpecError) as info:
        parse_job(obj)
    return info.value.problems


def only_problem(obj: dict) -> str:
    problems = problems_of(obj)
    assert len(problems) == 1, problems
    return problems[0]


# -- real shapes -----------------------------------------------------------------------------------


def test_docs_example_parses_with_every_field():
    job = parse_job(docs_job())
    assert job.kind == JOB_KIND
    assert job.metadata.name == "llama-train" and job.metadata.namespace == "team-a"
    assert job.metadata.generation == 3 and job.metadata.resource_version == "81234"
    assert job.replicas == 16 and job.spares == 0
    assert job.replica_spec.name == "workers"
    assert job.nproc_per_node_value == 8
    assert job.queue_name is None
    run = job.spec.run_policy
    assert run.clean_pod_policy is CleanPodPolicy.ALL
    assert run.job_max_retry_count == 50
    assert run.restart_policy is not None and run.restart_policy.eval_period_seconds == 21600
    assert run.restart_policy.num_restart_before_full_job_restart == 3
    rules = run.log_monitoring_configuration
    assert rules is not None and [r.name for r in rules] == [
        "JobStart",
        "JobHangingDetection",
        "LowThroughputDetection",
        "GPU Error",
    ]
    assert rules[0].expected_start_cut_off_in_seconds == 120
    assert rules[2].operator == "lteq" and rules[2].metric_threshold == 80
    assert rules[2].metric_evaluation_data_points == 25
    assert rules[3].fault_on_match is True
    assert job.status is not None
    assert job.status.restart_status is not None and job.status.restart_status.restart_count == 1
    faulty = job.status.latest_faulty_pod_instance_list
    assert faulty is not None and faulty.restart_type == "PLR" and faulty.faulty_rank_list == ["3"]
    assert job.status.master_port == "23456" and len(job.status.job_pods) == 16
    # what this project does not model is kept, and survives a dump
    assert job.status.dump()["podSets"] == [{"name": "main", "count": 16}]
    running = job.condition("Running")
    assert running is not None and running.status == "True"
    assert job.condition("Failed") is None
    assert not job.is_being_deleted


def test_unknown_fields_are_kept_not_rejected():
    job = parse_job(docs_job())
    dumped = job.dump()
    assert dumped["metadata"]["finalizers"] == ["sagemaker.amazonaws.com/hyperpodpytorchjob"]
    assert dumped["status"]["podSets"] == [{"name": "main", "count": 16}]
    assert dumped["spec"]["replicaSpecs"][0]["template"]["spec"]["containers"][0]["ports"] == [
        {"containerPort": 8080}
    ]


def test_hyp_cli_job_parses():
    job = parse_job(hyp_job())
    assert job.kind == "HyperPodPytorchJob"
    assert job.replica_spec.name == "pod"
    assert job.replica_spec.template["spec"]["containers"][0]["name"] == "pytorch-job-container"
    assert job.replicas == 4 and job.spares == 2
    assert job.queue_name == "hyperpod-ns-team-a-localqueue"
    assert job.priority_class == "high"
    assert job.nproc_per_node_value == "auto"
    assert job.spec.run_policy.clean_pod_policy is CleanPodPolicy.NONE
    assert job.spec.elastic_policy is None
    assert job.status is None and job.condition("Running") is None


@pytest.mark.parametrize("kind", JOB_KINDS)
def test_both_kind_spellings_are_accepted(kind):
    obj = hyp_job()
    obj["kind"] = kind
    assert parse_job(obj).kind == kind


@pytest.mark.parametrize(
    ("value", "expected"), [("auto", "auto"), ("cpu", "cpu"), ("gpu", "gpu"), ("4", 4), (8, 8)]
)
def test_nproc_per_node_values(value, expected):
    obj = hyp_job()
    obj["spec"]["nprocPerNode"] = value
    assert parse_job(obj).nproc_per_node_value == expected


def test_defaults_of_a_minimal_job():
    obj = hyp_job()
    del obj["spec"]["nprocPerNode"], obj["spec"]["runPolicy"]
    del obj["spec"]["replicaSpecs"][0]["spares"], obj["metadata"]["namespace"]
    job = parse_job(obj)
    assert job.spec.nproc_per_node == "auto"
    assert job.spec.run_policy.clean_pod_policy is CleanPodPolicy.ALL
    assert job.spares == 0
    assert job.metadata.namespace == "default" and job.metadata.generation == 1


def test_several_replica_specs_are_summed_and_the_first_is_used():
    obj = hyp_job()
    second = copy.deepcopy(obj["spec"]["replicaSpecs"][0]) | {"name": "extra", "replicas": 2, "spares": 1}
    obj["spec"]["replicaSpecs"].append(second)
    job = parse_job(obj)
    assert job.replicas == 6 and job.spares == 3
    assert job.replica_spec.name == "pod"


def test_deletion_timestamp_marks_the_job_as_being_deleted():
    obj = hyp_job()
    obj["metadata"]["deletionTimestamp"] = "2025-01-02T00:00:00Z"
    assert parse_job(obj).is_being_deleted


def test_elastic_policy_parses():
    obj = hyp_job()
    obj["spec"]["elasticPolicy"] = {
        "minReplicas": 2,
        "maxReplicas": 8,
        "replicaIncrementStep": 2,
        "gracefulShutdownTimeoutInSeconds": 60,
    }
    elastic = parse_job(obj).spec.elastic_policy
    assert elastic is not None and elastic.max_replicas == 8 and elastic.replica_increment_step == 2


# -- invalid jobs: each names its field ------------------------------------------------------------


def test_replicas_below_one():
    obj = hyp_job()
    obj["spec"]["replicaSpecs"][0]["replicas"] = 0
    problem = only_problem(obj)
    assert problem == (
        "spec.replicaSpecs[0].replicas: must be at least 1 (got 0); set the number of nodes the job runs on"
    )


def test_replicas_missing():
    obj = hyp_job()
    del obj["spec"]["replicaSpecs"][0]["replicas"]
    assert only_problem(obj).startswith("spec.replicaSpecs[0].replicas: must be at least 1")


def test_negative_spares():
    obj = hyp_job()
    obj["spec"]["replicaSpecs"][0]["spares"] = -1
    assert only_problem(obj).startswith("spec.replicaSpecs[0].spares: must not be negative (got -1)")


@pytest.mark.parametrize("value", ["0", "-2", "many", "GPU", "1.5", ""])
def test_bad_nproc_per_node(value):
    obj = hyp_job()
    obj["spec"]["nprocPerNode"] = value
    problem = only_problem(obj)
    assert problem.startswith("spec.nprocPerNode: must be auto, cpu, gpu or a positive integer")
    assert repr(value) in problem


def test_restart_policy_without_eval_period():
    obj = hyp_job()
    obj["spec"]["runPolicy"]["restartPolicy"] = {"maxFullJobRestarts": 1}
    problem = only_problem(obj)
    assert problem.startswith("spec.runPolicy.restartPolicy.evalPeriodSeconds: is required")
    assert "remove restartPolicy" in problem


def test_elastic_step_and_discrete_values_are_exclusive():
    obj = hyp_job()
    obj["spec"]["elasticPolicy"] = {
        "minReplicas": 2,
        "replicaIncrementStep": 2,
        "replicaDiscreteValues": [2, 4],
    }
    problem = only_problem(obj)
    assert problem.startswith("spec.elasticPolicy: replicaIncrementStep and replicaDiscreteValues")


def test_elastic_max_below_min():
    obj = hyp_job()
    obj["spec"]["elasticPolicy"] = {"minReplicas": 4, "maxReplicas": 2}
    assert only_problem(obj).startswith("spec.elasticPolicy.maxReplicas: must not be below minReplicas")


@pytest.mark.parametrize("specs", [[], None])
def test_no_replica_specs(specs):
    obj = hyp_job()
    if specs is None:
        del obj["spec"]["replicaSpecs"]
    else:
        obj["spec"]["replicaSpecs"] = specs
    assert only_problem(obj).startswith("spec.replicaSpecs: must list at least one replica spec")


def test_missing_spec_is_no_replica_specs():
    obj = hyp_job()
    del obj["spec"]
    assert only_problem(obj).startswith("spec.replicaSpecs: must list at least one replica spec")


@pytest.mark.parametrize("template", [{}, {"spec": {}}, {"spec": {"containers": []}}, None])
def test_template_without_containers(template):
    obj = hyp_job()
    if template is None:
        del obj["spec"]["replicaSpecs"][0]["template"]
    else:
        obj["spec"]["replicaSpecs"][0]["template"] = template
    assert only_problem(obj).startswith(
        "spec.replicaSpecs[0].template.spec.containers: must list at least one"
    )


@pytest.mark.parametrize(
    "field", ["jobMaxRetryCount", "faultDeadlineSeconds", "startupDeadlineSeconds", "activeDeadlineSeconds"]
)
def test_negative_run_policy_counts(field):
    obj = hyp_job()
    obj["spec"]["runPolicy"][field] = -1
    assert only_problem(obj).startswith(f"spec.runPolicy.{field}: must not be negative (got -1)")


@pytest.mark.parametrize(
    "field",
    [
        "numRestartBeforeFullJobRestart",
        "maxFullJobRestarts",
        "maxNumRepeatOffendersToAvoid",
        "scaleUpSnoozeTimeInSeconds",
    ],
)
def test_negative_restart_policy_counts(field):
    obj = hyp_job()
    obj["spec"]["runPolicy"]["restartPolicy"] = {"evalPeriodSeconds": 3600, field: -3}
    assert only_problem(obj).startswith(
        f"spec.runPolicy.restartPolicy.{field}: must not be negative (got -3)"
    )


def test_ttl_minus_one_means_forever_but_below_is_wrong():
    obj = hyp_job()
    obj["spec"]["runPolicy"]["ttlSecondsAfterFinished"] = -1
    parse_job(obj)
    obj["spec"]["runPolicy"]["ttlSecondsAfterFinished"] = -5
    assert only_problem(obj).startswith("spec.runPolicy.ttlSecondsAfterFinished: must be -1 or more")


def test_log_rule_threshold_without_operator():
    obj = hyp_job()
    obj["spec"]["runPolicy"]["logMonitoringConfiguration"] = [
        {"name": "Slow", "logPattern": ".*sps: (\\d+).*", "metricThreshold": 10}
    ]
    assert only_problem(obj).startswith(
        "spec.runPolicy.logMonitoringConfiguration[0]: metricThreshold and operator go together"
    )


def test_log_rule_bad_operator_and_missing_pattern():
    obj = hyp_job()
    obj["spec"]["runPolicy"]["logMonitoringConfiguration"] = [
        {"name": "Slow", "logPattern": ".*", "metricThreshold": 10, "operator": "ge"},
        {"name": "NoPattern"},
    ]
    problems = problems_of(obj)
    assert any(p.startswith("spec.runPolicy.logMonitoringConfiguration[0].operator: ") for p in problems)
    assert any("gt, lt, eq, gteq, lteq" in p for p in problems)
    assert any(
        p.startswith("spec.runPolicy.logMonitoringConfiguration[1].logPattern: field required")
        for p in problems
    )


@pytest.mark.parametrize("kind", ["PyTorchJob", "hyperpodpytorchjob", None])
def test_wrong_kind(kind):
    obj = hyp_job()
    obj["kind"] = kind
    problem = only_problem(obj)
    assert problem.startswith("kind: must be HyperPodPyTorchJob") and repr(kind) in problem


@pytest.mark.parametrize("api_version", ["sagemaker.amazonaws.com/v2", "kubeflow.org/v1", None])
def test_wrong_api_version(api_version):
    obj = hyp_job()
    obj["apiVersion"] = api_version
    assert only_problem(obj).startswith("apiVersion: must be sagemaker.amazonaws.com/v1")


@pytest.mark.parametrize("field", ["name", "uid"])
def test_metadata_name_and_uid_are_required(field):
    obj = hyp_job()
    del obj["metadata"][field]
    assert only_problem(obj).startswith(f"metadata.{field}: is required")


def test_type_errors_name_the_kubernetes_path():
    obj = hyp_job()
    obj["spec"]["replicaSpecs"][0]["replicas"] = "abc"
    problem = only_problem(obj)
    assert problem.startswith("spec.replicaSpecs[0].replicas: input should be a valid integer")
    assert "'abc'" in problem and "set the number of nodes" in problem
    assert "(" not in problem.split(":", 1)[0]  # not pydantic's tuple location


def test_type_errors_in_labels_bracket_the_key():
    obj = hyp_job()
    obj["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] = 7
    problem = only_problem(obj)
    assert problem.startswith('metadata.labels["kueue.x-k8s.io/queue-name"]: input should be a valid string')
    assert "quote numbers" in problem


def test_bad_clean_pod_policy():
    obj = hyp_job()
    obj["spec"]["runPolicy"]["cleanPodPolicy"] = "Sometimes"
    problem = only_problem(obj)
    assert problem.startswith("spec.runPolicy.cleanPodPolicy: ") and "All, OnlyComplete or None" in problem


def test_all_problems_are_collected_at_once():
    obj = hyp_job()
    obj["kind"] = "PyTorchJob"
    del obj["metadata"]["uid"]
    obj["spec"]["nprocPerNode"] = "0"
    obj["spec"]["replicaSpecs"][0]["replicas"] = 0
    obj["spec"]["replicaSpecs"][0]["spares"] = -2
    obj["spec"]["runPolicy"]["restartPolicy"] = {}
    obj["spec"]["runPolicy"]["jobMaxRetryCount"] = "lots"
    obj["spec"]["elasticPolicy"] = {"replicaIncrementStep": 1, "replicaDiscreteValues": [1, 2]}
    with pytest.raises(JobSpecError) as info:
        parse_job(obj)
    error = info.value
    paths = [p.split(": ", 1)[0] for p in error.problems]
    assert paths == [
        "kind",
        "metadata.uid",
        "spec.nprocPerNode",
        "spec.replicaSpecs[0].replicas",
        "spec.replicaSpecs[0].spares",
        "spec.runPolicy.restartPolicy.evalPeriodSeconds",
        "spec.elasticPolicy",
        "spec.runPolicy.jobMaxRetryCount",  # the type error, alongside the rule breaks
    ]
    assert isinstance(error, InvalidInputError)
    text = str(error)
    assert text.startswith("HyperPodPyTorchJob hyperpod-ns-team-a/demo is invalid: ")
    assert all(p in text for p in error.problems)


def test_not_an_object():
    assert problems_of([]) == ["(job): must be an object (got list); pass the job's manifest"]  # type: ignore[arg-type]


# -- validation_message ----------------------------------------------------------------------------


def test_validation_message_lists_problems_within_the_limit():
    obj = hyp_job()
    obj["spec"]["replicaSpecs"] = [
        {"name": f"r{i}", "replicas": 0, "template": {"spec": {"containers": [_container()]}}}
        for i in range(40)
    ]
    with pytest.raises(JobSpecError) as info:
        parse_job(obj)
    message = validation_message(info.value)
    assert len(message) <= 1000
    assert message.startswith("spec.replicaSpecs[0].replicas: must be at least 1")
    assert message.endswith(" more)")
    short = validation_message(info.value, limit=120)
    assert len(short) <= 120


def test_validation_message_short_cases():
    error = JobSpecError(["spec.nprocPerNode: bad; fix it"])
    assert validation_message(error) == "spec.nprocPerNode: bad; fix it"
    assert len(validation_message(JobSpecError(["x" * 5000]))) <= 1000
    assert validation_message(RuntimeError("boom")) == "boom"
    try:
        JobCondition.model_validate({"type": "Running", "status": "maybe"})
    except ValidationError as exc:
        assert validation_message(exc).startswith("status: input should be")
    else:  # pragma: no cover
        pytest.fail("expected a validation error")


# -- status ----------------------------------------------------------------------------------------


def test_status_dump_is_camel_case_without_nones():
    status = JobStatus(
        start_time="2025-01-01T00:00:00Z",
        restart_count=2,
        conditions=[JobCondition(type="Running", status="True", reason="Running", last_transition_time="t0")],
    )
    assert status.dump() == {
        "startTime": "2025-01-01T00:00:00Z",
        "restartCount": 2,
        "conditions": [
            {
                "type": "Running",
                "status": "True",
                "reason": "Running",
                "message": "",
                "lastTransitionTime": "t0",
            }
        ],
        "jobPods": [],
    }


def test_set_condition_appends_a_new_type():
    result = set_condition([], "Created", "True", "Created", "job created", now="t1")
    assert [c.model_dump() for c in result] == [
        JobCondition(
            type="Created", status="True", reason="Created", message="job created", last_transition_time="t1"
        ).model_dump()
    ]


def test_set_condition_keeps_transition_time_when_status_unchanged():
    before = [
        JobCondition(type="Created", status="True", reason="Created", last_transition_time="t0"),
        JobCondition(
            type="Running", status="True", reason="Running", message="old", last_transition_time="t1"
        ),
    ]
    after = set_condition(before, "Running", "True", "Remediated", "fault remediated", now="t9")
    assert [c.type for c in after] == ["Created", "Running"]
    running = after[1]
    assert (running.reason, running.message, running.last_transition_time) == (
        "Remediated",
        "fault remediated",
        "t1",
    )
    assert before[1].message == "old"  # the input is not changed


def test_set_condition_moves_transition_time_when_status_changes():
    before = [JobCondition(type="Running", status="True", reason="Running", last_transition_time="t1")]
    after = set_condition(before, "Running", False, "Faulted", "node fault", now="t9")
    assert after[0].status == "False" and after[0].last_transition_time == "t9"
    back = set_condition(after, "Running", "True", "Running", "", now="t10")
    assert back[0].last_transition_time == "t10"


def test_set_condition_collapses_duplicates_of_the_type():
    before = [
        JobCondition(type="Running", status="True", last_transition_time="t1"),
        JobCondition(type="Failed", status="False", last_transition_time="t1"),
        JobCondition(type="Running", status="False", last_transition_time="t2"),
    ]
    after = set_condition(before, "Running", "True", "Running", "", now="t9")
    assert [(c.type, c.last_transition_time) for c in after] == [("Running", "t1"), ("Failed", "t1")]


# -- round trip ------------------------------------------------------------------------------------


@pytest.mark.parametrize("make", [docs_job, hyp_job])
def test_dump_parse_round_trip(make):
    job = parse_job(make())
    again = parse_job(job.dump())
    assert again == job
    assert again.dump() == job.dump()


def test_round_trip_with_a_condition_set():
    job = parse_job(hyp_job())
    job.status = JobStatus(conditions=set_condition([], "Failed", "True", "InvalidSpec", "bad", now="t1"))
    again = HyperPodPytorchJob.model_validate(job.dump())
    failed = again.condition("Failed")
    assert failed is not None and failed.reason == "InvalidSpec" and failed.last_transition_time == "t1"


def test_a_status_an_older_writer_left_with_numbers_and_names_still_parses():
    obj = docs_job()
    obj["status"].update(masterPort=23456, jobPods=["a-0", "a-1"])
    obj["status"]["latestFaultyPodInstanceList"]["faultyRankList"] = [3]
    status = HyperPodPytorchJob.model_validate(obj).status
    assert status.master_port == 23456 and status.job_pods == ["a-0", "a-1"]
