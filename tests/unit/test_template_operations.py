"""template.yaml's operations: log retention, alarms to the stack's SNS topic, names that let two
stacks share an account and Region, the JobChanged dead letters, the event functions' cap and the
operators' index."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from sandbox.template import load_template

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
TEMPLATE = load_template(REPO / "template.yaml")
RESOURCES = TEMPLATE["Resources"]
PARAMETERS = TEMPLATE["Parameters"]
FUNCTIONS = sorted(k for k, v in RESOURCES.items() if v["Type"] == "AWS::Serverless::Function")
ALARMS = {k: v["Properties"] for k, v in RESOURCES.items() if v["Type"] == "AWS::CloudWatch::Alarm"}
EVENT_FUNCTIONS = ["NodeHealthFunction", "JobEventsFunction", "WatchJobsFunction", "ReconcileJobsFunction"]
WORKFLOWS = [
    "RegisterClusterStateMachine",
    "InstallOperatorStateMachine",
    "UninstallOperatorStateMachine",
    "UpgradeOperatorStateMachine",
    "SuperviseJobStateMachine",
]


def _ref(name: str) -> dict:
    return {"Ref": name}


def _metrics_of(alarm: dict) -> list[dict]:
    """(namespace, name, dimensions) of each metric an alarm reads, plain or through metric math."""
    if "MetricName" in alarm:
        return [{"Namespace": alarm["Namespace"], "MetricName": alarm["MetricName"], **alarm}]
    return [q["MetricStat"]["Metric"] for q in alarm["Metrics"] if "MetricStat" in q]


def _alarm_on(namespace: str, metric: str, dimension: tuple[str, object]) -> tuple[str, dict]:
    found = [
        (name, alarm)
        for name, alarm in ALARMS.items()
        for m in _metrics_of(alarm)
        if m["Namespace"] == namespace
        and m["MetricName"] == metric
        and {"Name": dimension[0], "Value": dimension[1]} in m["Dimensions"]
    ]
    assert len(found) == 1, f"one alarm on {namespace} {metric} {dimension}, found {[n for n, _ in found]}"
    return found[0]


# -- logs ---------------------------------------------------------------------------------------


def test_every_function_has_its_log_group_with_the_retention_parameter():
    groups = {
        res["Properties"]["LogGroupName"]["Fn::Sub"]: res["Properties"]
        for res in RESOURCES.values()
        if res["Type"] == "AWS::Logs::LogGroup" and isinstance(res["Properties"]["LogGroupName"], dict)
    }
    for function in FUNCTIONS:
        group = groups.get(f"/aws/lambda/${{{function}}}")
        assert group is not None, f"{function} has no log group /aws/lambda/<its name>"
        assert group["RetentionInDays"] == _ref("LogRetentionDays")
    # Step Functions' groups have a retention too; none keeps its events forever.
    for logical, res in RESOURCES.items():
        if res["Type"] == "AWS::Logs::LogGroup":
            assert "RetentionInDays" in res["Properties"], logical
    assert 30 in PARAMETERS["LogRetentionDays"]["AllowedValues"]


# -- alarms -------------------------------------------------------------------------------------


def test_every_alarm_notifies_the_stacks_topic_and_says_what_to_do_first():
    assert RESOURCES["AlarmTopic"]["Type"] == "AWS::SNS::Topic"
    subscription = RESOURCES["AlarmEmailSubscription"]
    assert subscription["Condition"] == "HasAlarmEmail"
    assert subscription["Properties"]["Endpoint"] == _ref("AlarmEmail")
    assert PARAMETERS["AlarmEmail"]["Default"] == ""
    assert ALARMS
    for name, alarm in ALARMS.items():
        assert _ref("AlarmTopic") in alarm["AlarmActions"], name
        assert "First" in alarm["AlarmDescription"], f"{name}: the description names the first step"
        assert alarm["AlarmName"]["Fn::Sub"].startswith("${AWS::StackName}-"), name
        assert alarm["TreatMissingData"] == "notBreaching", name
        threshold = alarm["Threshold"]
        if isinstance(threshold, dict):
            assert "Default" in PARAMETERS[threshold["Ref"]], f"{name}: its threshold parameter has a default"


def test_the_dead_letter_queue_has_an_alarm_on_its_visible_messages():
    queue_name = {"Fn::GetAtt": ["EventsDeadLetterQueue", "QueueName"]}
    _, alarm = _alarm_on("AWS/SQS", "ApproximateNumberOfMessagesVisible", ("QueueName", queue_name))
    assert alarm["Threshold"] == _ref("DeadLetterAlarmThreshold")
    assert alarm["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"
    # Every queue of the stack is a dead-letter queue: each has its alarm.
    queues = [k for k, v in RESOURCES.items() if v["Type"] == "AWS::SQS::Queue"]
    assert queues == ["EventsDeadLetterQueue"]


@pytest.mark.parametrize("workflow", WORKFLOWS)
def test_each_workflow_alarms_on_failed_timed_out_and_aborted_executions(workflow):
    metrics = ["ExecutionsFailed", "ExecutionsTimedOut"]
    # supervise_job's executions are stopped on purpose when their job is deleted (reconcile_jobs).
    if workflow != "SuperviseJobStateMachine":
        metrics.append("ExecutionsAborted")
    names = set()
    for metric in metrics:
        name, alarm = _alarm_on("AWS/States", metric, ("StateMachineArn", _ref(workflow)))
        names.add(name)
        assert alarm["Threshold"] == _ref("FailedExecutionsAlarmThreshold")
        (expression,) = [q for q in alarm["Metrics"] if q.get("ReturnData")]
        ids = {q["Id"] for q in alarm["Metrics"] if "MetricStat" in q}
        # The alarm's value is the sum of them all: each one alone reaches the threshold.
        assert set(re.findall(r"FILL\((\w+),0\)", expression["Expression"])) == ids
    assert len(names) == 1


@pytest.mark.parametrize("function", [*EVENT_FUNCTIONS, "SuperviseJobFunction"])
def test_event_driven_functions_alarm_on_errors_and_throttles(function):
    _, errors = _alarm_on("AWS/Lambda", "Errors", ("FunctionName", _ref(function)))
    assert errors["Threshold"] == _ref("FunctionErrorsAlarmThreshold")
    if function in EVENT_FUNCTIONS:  # throttled only when capped
        name, throttles = _alarm_on("AWS/Lambda", "Throttles", ("FunctionName", _ref(function)))
        assert throttles["Threshold"] == _ref("FunctionThrottlesAlarmThreshold")
        assert RESOURCES[name]["Condition"] == "CapEventFunctions"


@pytest.mark.parametrize("metric", ["NodeRepairBreakerOpen", "NodeActionFailures"])
def test_the_projects_own_metrics_have_alarms(metric):
    service = TEMPLATE["Globals"]["Function"]["Environment"]["Variables"]["POWERTOOLS_SERVICE_NAME"]
    # Powertools' EMF carries the service as its one dimension (hyperpod_control/observability.py).
    _, alarm = _alarm_on(_ref("MetricsNamespace"), metric, ("service", service))  # type: ignore[arg-type]
    assert alarm["Statistic"] == "Sum"


# -- deploy and cost defects --------------------------------------------------------------------


def test_event_driven_functions_have_a_reserved_concurrency_cap():
    for function in EVENT_FUNCTIONS:
        cap = RESOURCES[function]["Properties"]["ReservedConcurrentExecutions"]
        assert cap == {
            "Fn::If": [
                "CapEventFunctions",
                _ref("EventFunctionsReservedConcurrency"),
                _ref("AWS::NoValue"),
            ]
        }


def test_sam_event_dead_letter_configs_use_the_form_sam_honours():
    """SAM takes ``Arn`` or ``Type`` (a queue it creates), never both; anything else it ignores."""
    seen = 0
    for logical, res in RESOURCES.items():
        for event_id, event in (res.get("Properties", {}).get("Events") or {}).items():
            dlq = event.get("Properties", {}).get("DeadLetterConfig")
            if dlq is None:
                continue
            seen += 1
            assert set(dlq) <= {"Arn", "Type", "QueueLogicalId"}, f"{logical}.{event_id}: {sorted(dlq)}"
            assert dlq.get("Arn") == {"Fn::GetAtt": ["EventsDeadLetterQueue", "Arn"]}, f"{logical}.{event_id}"
            assert "Type" not in dlq
    assert seen >= 1


def test_no_function_scans_the_table_and_operators_are_indexed():
    table = RESOURCES["ControlPlaneTable"]["Properties"]
    (index,) = table["GlobalSecondaryIndexes"]
    assert index["IndexName"] == "Operators"
    assert index["KeySchema"] == [{"AttributeName": "operator_index", "KeyType": "HASH"}]
    for logical in FUNCTIONS:
        for policy in RESOURCES[logical]["Properties"].get("Policies") or []:
            for statement in policy.get("Statement", []) if isinstance(policy, dict) else []:
                actions = statement.get("Action", []) if isinstance(statement, dict) else []
                assert "dynamodb:Scan" not in ([actions] if isinstance(actions, str) else actions), logical


_NAME_KEYS = {
    "Name",
    "TableName",
    "QueueName",
    "BucketName",
    "TopicName",
    "AlarmName",
    "DashboardName",
    "RoleName",
    "ManagedPolicyName",
    "LayerName",
    "LogGroupName",
    "StateMachineName",
    "FunctionName",
}


def _names(logical: str, res: dict):
    props = res.get("Properties", {})
    for key in _NAME_KEYS & set(props):
        yield f"{logical}.{key}", props[key]
    for event_id, event in (props.get("Events") or {}).items():
        if "Name" in event.get("Properties", {}):
            yield f"{logical}.Events.{event_id}.Name", event["Properties"]["Name"]


def test_every_named_resource_is_named_after_its_stack():
    """Names unique per account and Region carry the stack's name, so a second stack deploys."""
    functions = set(FUNCTIONS)
    for logical, res in RESOURCES.items():
        if res["Type"] in ("AWS::Lambda::Permission", "AWS::Events::EventBusPolicy"):
            continue  # FunctionName / EventBusName there name another resource, not this one
        for where, value in _names(logical, res):
            text = value.get("Fn::Sub") if isinstance(value, dict) else value
            assert isinstance(text, str), f"{where}: {value}"
            named_after_function = any(f"${{{f}}}" in text for f in functions)
            assert "${AWS::StackName}" in text or named_after_function, f"{where}: {text}"


def test_the_dashboard_shows_every_alarm_and_the_projects_own_metrics():
    import json

    body = json.loads(RESOURCES["OperationsDashboard"]["Properties"]["DashboardBody"]["Fn::Sub"])
    (alarm_widget,) = [w for w in body["widgets"] if w["type"] == "alarm"]
    shown = set(alarm_widget["properties"]["alarms"])
    unconditional = {name for name in ALARMS if "Condition" not in RESOURCES[name]}
    assert shown == {f"${{{name}.Arn}}" for name in unconditional}
    series = [m for w in body["widgets"] if w["type"] == "metric" for m in w["properties"]["metrics"]]
    metrics = {m[1] for m in series if isinstance(m[0], str)}
    assert {"NodeRepairBreakerOpen", "NodeActionFailures", "ApproximateNumberOfMessagesVisible"} <= metrics
    # Metrics by cluster are searched: the dimension set must be the one emitted, to the name
    # (observability.emit_remediation / emit_jobs_by_phase; Powertools adds "service").
    searches = {m[0]["expression"] for m in series if isinstance(m[0], dict)}
    remediation = "{${MetricsNamespace},ClusterArn,Action,FaultKind,service}"
    assert f"SEARCH('{remediation} MetricName=\"TimeToRecover\"', 'Average', 300)" in searches
    assert f"SEARCH('{remediation} MetricName=\"Remediations\"', 'Sum', 300)" in searches
    jobs = "{${MetricsNamespace},ClusterArn,Phase,service}"
    assert f"SEARCH('{jobs} MetricName=\"Jobs\"', 'Maximum', 300)" in searches
    steps = "{${MetricsNamespace},ClusterArn,Step,service}"
    assert f"SEARCH('{steps} Step=\"poll\" MetricName=\"SupervisorStepDuration\"', 'p99', 300)" in searches
    nodes = "{${MetricsNamespace},ClusterArn,Action,service}"
    assert f"SEARCH('{nodes} MetricName=\"NodeActions\"', 'Sum', 300)" in searches
