"""On an addon-mode cluster AWS's operator runs the jobs: reconcile_jobs only records each job's
conditions and restarts on its JOB item, and never creates, touches or deletes a pod."""

from __future__ import annotations

import pytest
from install_support import install_sandbox, run_install

from hyperpod_control.adapters.store import Store
from sandbox.workloads import tiny_job

pytestmark = pytest.mark.integration

GROUP, VERSION, PLURAL = "sagemaker.amazonaws.com", "v1", "hyperpodpytorchjobs"


@pytest.fixture(scope="module")
def addon_cluster():
    with install_sandbox() as sb:
        outcome = run_install(sb, operator="addon")
        assert outcome.ok, (outcome.error, outcome.cause)
        yield sb


def _apis(sb):
    from kubernetes import client

    api = client.ApiClient(sb.kube.client_configuration())
    return client.CustomObjectsApi(api), client.CoreV1Api(api)


def _reconcile(sb) -> dict:
    payload, error = sb.invoke_lambda(sb.stack.resources["ReconcileJobsFunction"], {})
    assert error is None, payload
    return payload


def test_a_job_on_an_addon_cluster_is_recorded_and_gets_no_pods(addon_cluster):
    sb = addon_cluster
    custom, core = _apis(sb)
    job = custom.create_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, tiny_job("aws-runs-me"))
    uid = job["metadata"]["uid"]

    report = _reconcile(sb)
    (cluster,) = report["clusters"]
    # The one-minute schedule may have recorded the job already; either way nothing is started.
    assert cluster["mode"] == "addon" and cluster["started"] == [] and cluster["jobs"] == 1
    store = Store(sb.output("TableName"), client=sb.client("dynamodb"))
    item = store.get_job(sb.world.hyperpod_cluster_arn, uid)
    assert item.mode == "addon" and item.phase == "Observed"
    assert core.list_namespaced_pod("default").items == [], "the add-on creates pods, not us"
    sfn = sb.client("stepfunctions")
    assert sfn.list_executions(stateMachineArn=sb.output("SuperviseJobStateMachineArn"))["executions"] == []

    # AWS's operator reports a restart and then completion: the JOB item follows its status.
    status = {
        "conditions": [
            {
                "type": "Created",
                "status": "True",
                "reason": "Created",
                "lastTransitionTime": "2026-01-01T00:00:00Z",
            },
            {
                "type": "Running",
                "status": "True",
                "reason": "Running",
                "lastTransitionTime": "2026-01-01T00:01:00Z",
            },
        ],
        "restartCount": 1,
    }
    custom.patch_namespaced_custom_object_status(
        GROUP, VERSION, "default", PLURAL, "aws-runs-me", {"status": status}
    )
    _reconcile(sb)
    item = store.get_job(sb.world.hyperpod_cluster_arn, uid)
    assert item.restart_count == 1 and [c["type"] for c in item.conditions] == ["Created", "Running"]
    status["conditions"].append(
        {
            "type": "Completed",
            "status": "True",
            "reason": "Succeeded",
            "lastTransitionTime": "2026-01-01T00:09:00Z",
        }
    )
    custom.patch_namespaced_custom_object_status(
        GROUP, VERSION, "default", PLURAL, "aws-runs-me", {"status": status}
    )
    _reconcile(sb)
    assert store.get_job(sb.world.hyperpod_cluster_arn, uid).phase == "Completed"
    assert core.list_namespaced_pod("default").items == []
    # Deleting the job is the add-on's business too: the record stays as history, no pod call.
    custom.delete_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, "aws-runs-me")
    assert _reconcile(sb)["clusters"][0]["deleted"] == []
