"""node_health's decisions over plain data: what to do about a node given its NODE record, the
OPERATOR record, the cluster's NodeRecovery, the repair circuit breaker and the configuration.
The orchestration runs against in-memory fakes of the adapters."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from hyperpod_control.exceptions import (
    DependencyUnavailableError,
    InvalidInputError,
    NodeActionError,
    RetryableError,
    VersionConflictError,
)
from hyperpod_control.models.node_health import (
    CORDONED_BY_ANNOTATION,
    HEALTH_LABEL,
    BreakerState,
    DescribedCluster,
    NodeMarks,
    NodeRepairConfig,
    NodeView,
)
from hyperpod_control.models.records import NodeHealth, NodeRecord, OperatorMode, OperatorRecord
from hyperpod_control.services import node_health as nh
from tests import fakes
from tests.fakes import FakeSageMaker

pytestmark = pytest.mark.unit

ARN = "arn:aws:sagemaker:us-west-2:123456789012:cluster/abcdef123456"
EKS_ARN = "arn:aws:eks:us-west-2:123456789012:cluster/ml-eks"
T0 = datetime(2026, 3, 4, 10, 0, 0, tzinfo=UTC)
TAINT = {"key": HEALTH_LABEL, "value": "Unschedulable", "effect": "NoSchedule"}
ON = NodeRepairConfig(enabled=True, allow_replace=True, breaker_max_nodes=2, breaker_window_seconds=600)
OFF = NodeRepairConfig()


def node(
    status: NodeHealth = NodeHealth.UNHEALTHY,
    action: str = "Reboot",
    instance: str = "i-0aaa",
    when: datetime = T0,
    event_id: str = "e-1",
    **extra: Any,
) -> NodeRecord:
    return NodeRecord(
        cluster_arn=ARN,
        instance_id=instance,
        health_status=status,
        repair_action=action,
        last_event_time=when,
        last_event_id=event_id,
        **{"failed_at": when if status is NodeHealth.UNHEALTHY else None, **extra},
    )


def operator(mode: OperatorMode = OperatorMode.ADDON) -> OperatorRecord:
    return OperatorRecord(cluster_arn=ARN, cluster_name="ml", mode=mode)


def closed() -> BreakerState:
    return BreakerState(failed_nodes=["i-0aaa"], max_nodes=2, window_seconds=600)


# -- configuration --------------------------------------------------------------------------------


def test_config_defaults_keep_automatic_repair_off():
    config = NodeRepairConfig.from_env({})
    assert (config.enabled, config.allow_replace) == (False, False)
    assert (config.breaker_max_nodes, config.breaker_window_seconds) == (3, 3600)


def test_config_reads_the_environment():
    config = NodeRepairConfig.from_env(
        {
            "NODE_REPAIR_ENABLED": "true",
            "NODE_REPAIR_ALLOW_REPLACE": "1",
            "NODE_REPAIR_BREAKER_MAX_NODES": "5",
            "NODE_REPAIR_BREAKER_WINDOW_SECONDS": "120",
        }
    )
    assert config == NodeRepairConfig(
        enabled=True, allow_replace=True, breaker_max_nodes=5, breaker_window_seconds=120
    )


@pytest.mark.parametrize(
    "env",
    [
        {"NODE_REPAIR_ENABLED": "maybe"},
        {"NODE_REPAIR_BREAKER_MAX_NODES": "0"},
        {"NODE_REPAIR_BREAKER_WINDOW_SECONDS": "x"},
    ],
)
def test_bad_settings_name_the_variable(env):
    with pytest.raises(InvalidInputError, match=r"NODE_REPAIR|breaker"):
        NodeRepairConfig.from_env(env)


# -- the record and the cluster ---------------------------------------------------------------------


def test_a_retry_of_an_unfinished_event_is_resumed_and_nothing_else_is():
    stored = node(event_id="e-1")
    assert nh.is_unfinished_retry(stored, node(event_id="e-1"))
    assert not nh.is_unfinished_retry(stored.model_copy(update={"handled_event_id": "e-1"}), node())
    assert not nh.is_unfinished_retry(stored, node(event_id="e-2"))  # AWS's duplicate, new id
    assert not nh.is_unfinished_retry(None, node())


def test_described_cluster_from_describe_cluster():
    facts = DescribedCluster.from_api(
        {"NodeRecovery": "None", "Orchestrator": {"Eks": {"ClusterArn": EKS_ARN}}}
    )
    assert (facts.node_recovery, facts.eks_cluster_name) == ("None", "ml-eks")
    assert DescribedCluster.from_api({}) == DescribedCluster(node_recovery="Automatic", eks_cluster_name=None)


# -- repair ---------------------------------------------------------------------------------------


def test_reboot_is_requested_when_enabled_and_hyperpod_does_not_recover():
    decision = nh.decide_repair(node(action="Reboot"), "None", closed(), ON)
    assert decision.action == "Reboot" and decision.skipped_reason is None and decision.warning is None


@pytest.mark.parametrize(
    ("record", "recovery", "config", "reason"),
    [
        (node(action="None"), "None", ON, "RepairAction None"),
        (node(), "Automatic", ON, "NodeRecovery is Automatic"),
        (node(), "None", OFF, "NODE_REPAIR_ENABLED"),
        (node(action="Replace"), "None", ON.model_copy(update={"allow_replace": False}), "ALLOW_REPLACE"),
    ],
)
def test_no_repair_and_the_reason(record, recovery, config, reason):
    decision = nh.decide_repair(record, recovery, closed(), config)
    assert decision.action is None and reason in decision.skipped_reason


def test_a_replace_not_allowed_says_it_would_wipe_the_volumes():
    decision = nh.decide_repair(
        node(action="Replace"), "None", None, ON.model_copy(update={"allow_replace": False})
    )
    assert "wiped" in decision.skipped_reason


def test_an_allowed_replace_is_never_silent():
    decision = nh.decide_repair(node(action="Replace"), "None", closed(), ON)
    assert decision.action == "Replace"
    assert "wiped" in decision.warning and "volume" in decision.warning


def test_a_healthy_node_is_not_repaired():
    assert nh.decide_repair(node(NodeHealth.HEALTHY), "None", closed(), ON).action is None


def test_an_open_breaker_stops_repair_and_says_so():
    breaker = BreakerState(failed_nodes=["i-1", "i-2", "i-3"], max_nodes=2, window_seconds=600)
    decision = nh.decide_repair(node(), "None", breaker, ON)
    assert decision.action is None and decision.breaker_open
    assert "circuit breaker open: 3 nodes" in decision.skipped_reason


def test_the_breaker_counts_nodes_failed_in_the_window_healed_or_not():
    record = node(instance="i-new", when=T0)
    nodes = [
        node(instance="i-recent", when=T0 - timedelta(seconds=60)),
        node(NodeHealth.HEALTHY, instance="i-healed", when=T0, failed_at=T0 - timedelta(seconds=300)),
        node(instance="i-old", when=T0 - timedelta(seconds=601)),
        node(NodeHealth.HEALTHY, instance="i-never", when=T0 - timedelta(seconds=10)),
    ]
    state = nh.breaker_state(nodes, record, ON)
    assert state.failed_nodes == ["i-healed", "i-new", "i-recent"]
    assert state.open  # 3 > 2
    assert not nh.breaker_state(nodes[:1], record, ON).open


def test_repairs_are_batched_by_25():
    ids = [f"i-{n}" for n in range(60)]
    assert [len(b) for b in nh.repair_batches(ids)] == [25, 25, 10]
    assert nh.repair_batches([]) == []


@pytest.mark.parametrize(
    ("answer", "requested"),
    [
        ({"Successful": ["i-0aaa"], "Failed": []}, True),
        ({"Failed": [{"NodeId": "i-0aaa", "ErrorCode": "InstanceIdInUse", "Message": "busy"}]}, True),
        ({"Failed": [{"NodeId": "i-0aaa", "ErrorCode": "InstanceIdNotFound", "Message": "gone"}]}, False),
    ],
)
def test_the_batch_answer_for_the_node(answer, requested):
    fields = nh._repair_outcome(node(), "Reboot", answer, T0)
    assert fields.get("repair_requested", False) is requested
    if not requested:
        assert "InstanceIdNotFound" in fields["repair_skipped_reason"]


# -- the plan -------------------------------------------------------------------------------------


def test_an_unregistered_cluster_gets_nothing_but_the_record():
    plan = nh.plan_node_actions(node(), None, "None", None, ON)
    assert not plan.managed and plan.marks == NodeMarks() and plan.repair.action is None


def test_addon_mode_cordons_taints_and_labels_for_the_aws_operator():
    # HyperPod repairs the node itself (NodeRecovery Automatic): the label tells AWS's operator
    # the node is unhealthy, and asks HyperPod for nothing.
    plan = nh.plan_node_actions(node(action="Replace"), operator(), "Automatic", None, ON)
    assert plan.marks == NodeMarks(cordon=True, add_health_taint=True, label="Unschedulable")
    assert not plan.wake_jobs


def test_addon_mode_asks_hyperpod_for_a_repair_by_label_only_when_its_own_decision_approved_it():
    approved = nh.plan_node_actions(node(action="Reboot"), operator(), "None", closed(), ON)
    assert approved.repair.action == "Reboot" and approved.marks.label == "UnschedulablePendingReboot"
    no_replace = ON.model_copy(update={"allow_replace": False})
    replace = nh.plan_node_actions(node(action="Replace"), operator(), "None", closed(), no_replace)
    assert replace.repair.action is None, "a Replace wipes the volumes: not allowed here"
    assert replace.marks.label == "Unschedulable"
    repair_off = nh.plan_node_actions(node(action="Replace"), operator(), "None", closed(), OFF)
    assert repair_off.repair.action is None and repair_off.marks.label == "Unschedulable"
    allowed = nh.plan_node_actions(node(action="Replace"), operator(), "None", closed(), ON)
    assert allowed.marks.label == "UnschedulablePendingReplacement"


def test_hyperpods_own_pending_label_is_never_downgraded():
    current = view(labels={HEALTH_LABEL: "UnschedulablePendingReplacement"})
    marks = NodeMarks(cordon=True, add_health_taint=True, label="Unschedulable")
    patch, actions = nh.node_patch(current, marks, "event-1")
    assert "labels" not in (patch or {}).get("metadata", {}) and not any(
        a.startswith("label") for a in actions
    )


def test_serverless_mode_cordons_and_taints_without_the_label_and_asks_the_wake_hook():
    plan = nh.plan_node_actions(node(), operator(OperatorMode.SERVERLESS), "None", closed(), ON)
    assert plan.marks == NodeMarks(cordon=True, add_health_taint=True, label=None)
    assert plan.wake_jobs and plan.repair.action == "Reboot"


@pytest.mark.parametrize("mode", list(OperatorMode))
def test_a_healthy_node_is_uncordoned_untainted_and_schedulable(mode):
    plan = nh.plan_node_actions(node(NodeHealth.HEALTHY), operator(mode), "None", None, ON)
    assert plan.marks.uncordon and plan.marks.remove_health_taint and plan.marks.label == "Schedulable"
    assert plan.marks.label_only_if_present is (mode is OperatorMode.SERVERLESS)
    assert plan.repair.action is None and not plan.wake_jobs


# -- the node patch -------------------------------------------------------------------------------


def view(**kw: Any) -> NodeView:
    return NodeView(name="hyperpod-i-0aaa", resource_version="7", **kw)


FAIL = NodeMarks(cordon=True, add_health_taint=True, label="UnschedulablePendingReboot")
HEAL = NodeMarks(uncordon=True, remove_health_taint=True, label="Schedulable")


def test_a_node_hyperpod_has_not_marked_is_cordoned_tainted_and_labelled():
    other = {"key": "nvidia.com/gpu", "effect": "NoSchedule"}
    patch, actions = nh.node_patch(view(taints=[other]), FAIL, "e-1")
    assert actions == ["cordon", "taint", "label=UnschedulablePendingReboot"]
    assert patch == {
        "metadata": {
            "resourceVersion": "7",
            "labels": {HEALTH_LABEL: "UnschedulablePendingReboot"},
            "annotations": {CORDONED_BY_ANNOTATION: "e-1"},
        },
        "spec": {"unschedulable": True, "taints": [other, TAINT]},
    }


def test_hyperpods_own_taint_and_label_are_not_added_twice():
    marked = view(taints=[TAINT], labels={HEALTH_LABEL: "UnschedulablePendingReboot"})
    patch, actions = nh.node_patch(marked, FAIL, "e-1")
    assert actions == ["cordon"] and "taints" not in patch["spec"] and "labels" not in patch["metadata"]
    done = view(unschedulable=True, taints=[TAINT], labels={HEALTH_LABEL: "UnschedulablePendingReboot"})
    assert nh.node_patch(done, FAIL, "e-2") == (None, [])


def test_a_node_someone_else_cordoned_is_not_claimed_nor_uncordoned():
    theirs = view(unschedulable=True)
    patch, actions = nh.node_patch(theirs, NodeMarks(cordon=True), "e-1")
    assert (patch, actions) == (None, [])
    patch, actions = nh.node_patch(view(unschedulable=True, taints=[TAINT]), HEAL, "e-2")
    assert actions == ["untaint", "label=Schedulable"] and "unschedulable" not in patch["spec"]


def test_healthy_undoes_what_we_did_and_keeps_other_taints():
    other = {"key": "nvidia.com/gpu", "effect": "NoSchedule"}
    ours = view(
        unschedulable=True,
        taints=[other, TAINT],
        labels={HEALTH_LABEL: "UnschedulablePendingReboot"},
        annotations={CORDONED_BY_ANNOTATION: "e-1"},
    )
    patch, actions = nh.node_patch(ours, HEAL, "e-2")
    assert actions == ["uncordon", "untaint", "label=Schedulable"]
    assert patch["spec"] == {"unschedulable": None, "taints": [other]}
    assert patch["metadata"]["annotations"] == {CORDONED_BY_ANNOTATION: None}
    alone = view(unschedulable=True, taints=[TAINT], annotations={CORDONED_BY_ANNOTATION: "e-1"})
    assert nh.node_patch(alone, HEAL, "e-2")[0]["spec"]["taints"] is None  # merge patch: removed


def test_schedulable_only_corrects_a_label_that_is_there_when_asked_so():
    marks = NodeMarks(label="Schedulable", label_only_if_present=True)
    assert nh.node_patch(view(), marks, "e") == (None, [])
    assert nh.node_patch(view(labels={HEALTH_LABEL: "Unschedulable"}), marks, "e")[1] == ["label=Schedulable"]


# -- carrying it out, against fakes ---------------------------------------------------------------


class FakeStore(fakes.FakeStore):
    """The NODE item, its cluster's OPERATOR item (None: the cluster is not registered) and the
    cluster's other nodes."""

    def __init__(self, record: NodeRecord, op: OperatorRecord | None, others: list[NodeRecord] = ()) -> None:
        super().__init__(record, *others, *([op] if op is not None else []))


class FakeKube:
    def __init__(self, fail_times: int = 0, error: Exception | None = None) -> None:
        self.obj = {"metadata": {"name": "hyperpod-i-0aaa", "resourceVersion": "1"}, "spec": {}}
        self.fail_times, self.error, self.patches = fail_times, error, []

    def node(self, name):
        return self.obj

    def pods(self, namespace=None, *, label_selector="", field_selector=""):
        return []  # no job's pod on the node

    def close(self):
        pass

    def patch_node(self, name, patch):
        if self.error:
            raise self.error
        if self.fail_times:
            self.fail_times -= 1
            raise VersionConflictError("409")
        self.patches.append(patch)
        return self.obj


def adapters(store, sagemaker, kube) -> nh.NodeHealthAdapters:
    return nh.NodeHealthAdapters(store=store, sagemaker=sagemaker, kube_factory=lambda name: kube)


def test_act_cordons_requests_the_reboot_and_records_both():
    record = node()
    store, sm, kube = FakeStore(record, operator()), FakeSageMaker(), FakeKube(fail_times=2)
    result = nh.act_on_node_change(record, True, adapters(store, sm, kube), ON, now=lambda: T0)
    assert sm.calls == [("Reboot", ["i-0aaa"])]
    assert len(kube.patches) == 1  # after two 409s, read again and patched
    outcome = store.outcomes[-1]
    assert outcome.handled_event_id == "e-1" and outcome.repair_requested
    assert outcome.kube_actions == ["cordon", "taint", "label=UnschedulablePendingReboot"]
    assert result.breaker is not None and not result.breaker.open


def test_a_duplicate_does_nothing():
    record = node()
    store = FakeStore(record.model_copy(update={"handled_event_id": "e-1"}), operator())
    result = nh.act_on_node_change(
        node(event_id="e-9"), False, adapters(store, FakeSageMaker(), FakeKube()), ON
    )
    assert not result.acted and store.outcomes == []


def test_a_kubernetes_failure_raises_retryable_after_recording_the_repair_and_the_retry_resumes():
    record = node()
    store, sm = FakeStore(record, operator()), FakeSageMaker()
    broken = FakeKube(error=DependencyUnavailableError("API server down"))
    with pytest.raises(NodeActionError, match="API server down") as failed:
        nh.act_on_node_change(record, True, adapters(store, sm, broken), ON)
    assert isinstance(failed.value, RetryableError)
    stored = store.nodes["i-0aaa"]
    assert stored.repair_requested and stored.handled_event_id is None and "API server" in stored.action_error

    # Lambda's retry: the store now says "no change"; the item shows the event unfinished
    kube = FakeKube()
    result = nh.act_on_node_change(record, False, adapters(store, sm, kube), ON)
    assert result.resumed and sm.calls == [("Reboot", ["i-0aaa"])]  # not asked twice
    assert store.nodes["i-0aaa"].handled_event_id == "e-1" and store.nodes["i-0aaa"].action_error is None


def test_a_sagemaker_failure_raises_retryable_and_keeps_the_marks():
    record = node()
    store, kube = FakeStore(record, operator()), FakeKube()
    sm = FakeSageMaker(fail=DependencyUnavailableError("InternalFailure"))
    with pytest.raises(NodeActionError, match="SageMaker Reboot"):
        nh.act_on_node_change(record, True, adapters(store, sm, kube), ON)
    assert kube.patches and store.nodes["i-0aaa"].kube_actions[0] == "cordon"


def test_the_breaker_opens_on_the_cluster_nodes_in_the_table():
    others = [node(instance=f"i-{n}", when=T0 - timedelta(seconds=n)) for n in range(1, 3)]
    record = node()
    store, sm = FakeStore(record, operator(), others), FakeSageMaker()
    result = nh.act_on_node_change(record, True, adapters(store, sm, FakeKube()), ON)
    assert sm.calls == [] and result.breaker.open
    outcome = store.outcomes[-1]
    assert outcome.breaker_open and "circuit breaker open" in outcome.repair_skipped_reason


def test_an_unregistered_cluster_is_left_alone():
    record = node()
    store, sm, kube = FakeStore(record, None), FakeSageMaker(), FakeKube()
    result = nh.act_on_node_change(record, True, adapters(store, sm, kube), ON)
    assert not result.plan.managed and sm.calls == [] and kube.patches == [] and store.outcomes == []


def test_the_sagemaker_adapter_asks_25_nodes_per_call_and_merges_the_answers():
    from hyperpod_control.adapters.sagemaker import SageMakerAdapter

    class Client:
        calls: list[list[str]] = []

        def batch_reboot_cluster_nodes(self, ClusterName, NodeIds):
            self.calls.append(NodeIds)
            return {
                "Successful": NodeIds[1:],
                "Failed": [{"NodeId": NodeIds[0], "ErrorCode": "InstanceIdInUse"}],
            }

    client = Client()
    ids = [f"i-{n:03d}" for n in range(30)]
    result = SageMakerAdapter(client).batch_repair_nodes(ARN, "Reboot", ids)
    assert [len(c) for c in client.calls] == [25, 5]
    assert len(result["Successful"]) == 28 and [f["NodeId"] for f in result["Failed"]] == ["i-000", "i-025"]
