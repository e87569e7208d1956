"""CloudWatch in the sandbox: the functions' logs and metrics, AWS's own metrics, the alarms.

On AWS, what a function writes to stdout goes to its log group ``/aws/lambda/<function>``, and an
EMF line there (a JSON object with ``_aws.CloudWatchMetrics``, what Powertools' ``Metrics``
prints) becomes metric data; Lambda, SQS and Step Functions publish their own metrics; alarms read
both. The sandbox does the same, so that nothing of it reaches the user's console:

- ``Monitor.invocation`` routes what a handler's thread prints through Powertools (its Logger's
  JSON lines and its EMF) to the function's log group in moto's CloudWatch Logs (stream
  ``YYYY/MM/DD/[$LATEST]<request id>``) and to ``<log_dir>/<function>.log``; EMF lines are
  extracted into moto's CloudWatch as CloudWatch does (every metric of every directive, its
  dimension sets, unit and values). Output outside any invocation (a handler's own worker
  threads, a module imported outside a handler) goes to the ``sandbox.functions`` logger.
- AWS's own metrics are put into moto's CloudWatch where the sandbox sees the event happen,
  under AWS's names: ``AWS/Lambda`` Invocations, Errors, Throttles, Duration (FunctionName) per
  invocation; ``AWS/States`` ExecutionsSucceeded/Failed/Aborted/TimedOut (StateMachineArn) when an
  execution ends; ``AWS/SQS`` ApproximateNumberOfMessagesVisible (QueueName) whenever the sandbox
  puts a message in a queue or takes one out (AWS samples it every minute instead).
- Metric data points carry the sandbox clock's time (``sandbox.clock.SandboxClock``): the alarms' periods are
  in the same sandbox seconds as the schedules and waits that produce the data. Log events carry
  wall time, as the handlers' own clocks do.
- ``alarm_values`` evaluates an alarm of moto's (which stores alarms but never evaluates them)
  against that data: its statistic per period, metric math of the form ``FILL(a,0) + FILL(b,0)``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

log = logging.getLogger("sandbox.functions")

ACCOUNT = "123456789012"

_STATES_METRICS = {
    "SUCCEEDED": "ExecutionsSucceeded",
    "FAILED": "ExecutionsFailed",
    "ABORTED": "ExecutionsAborted",
    "TIMED_OUT": "ExecutionsTimedOut",
}

_current = threading.local()


@dataclass
class _Output:
    function: str
    request_id: str
    lines: list[str] = field(default_factory=list)


def _cloudwatch(region: str) -> Any:
    from moto.cloudwatch.models import cloudwatch_backends

    return cloudwatch_backends[ACCOUNT][region]


def put_metric(
    region: str,
    namespace: str,
    name: str,
    value: float,
    dimensions: dict[str, str],
    when: datetime,
    unit: str = "Count",
) -> None:
    """One data point into moto's CloudWatch (the backend itself: the sandbox, not a function,
    publishes it, so no function's role is asked)."""
    _cloudwatch(region).put_metric_data(
        namespace,
        [
            {
                "MetricName": name,
                "Value": value,
                "Unit": unit,
                "Timestamp": when,
                "Dimensions": [{"Name": k, "Value": v} for k, v in dimensions.items()],
            }
        ],
    )


def emf_metrics(document: dict) -> list[tuple[str, str, float, dict[str, str], str]]:
    """(namespace, name, value, dimensions, unit) of every data point of one EMF document, as
    CloudWatch extracts them: each directive's metrics, once per dimension set, each value."""
    aws = document.get("_aws") or {}
    points = []
    for directive in aws.get("CloudWatchMetrics") or []:
        namespace = directive["Namespace"]
        sets = directive.get("Dimensions") or [[]]
        for metric in directive.get("Metrics") or []:
            name = metric["Name"]
            raw = document.get(name)
            values = raw if isinstance(raw, list) else [raw]
            for dimension_set in sets:
                dims = {d: str(document[d]) for d in dimension_set if d in document}
                for value in values:
                    if isinstance(value, (int, float)):
                        points.append((namespace, name, float(value), dims, metric.get("Unit", "None")))
    return points


class Monitor:
    """Where the functions' output and the AWS services' metrics of one sandbox go."""

    def __init__(self, region: str, now: Callable[[], datetime], log_dir: Path) -> None:
        self.region = region
        self.now = now
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        #: Powertools Logger handlers whose stream is a ``FunctionOutput``, and the stream it replaced.
        self._streams: list[tuple[logging.StreamHandler, Any]] = []

    def _capture_logger(self, service: str | None) -> None:
        """Powertools' Logger of ``service`` (created when a handler module is first imported)
        writes through ``FunctionOutput`` from now on; ``close`` gives it its stream back."""
        if not service:
            return
        for handler in logging.getLogger(service).handlers:
            if isinstance(handler, logging.StreamHandler) and not isinstance(handler.stream, FunctionOutput):
                with self._lock:
                    self._streams.append((handler, handler.setStream(FunctionOutput(self, handler.stream))))

    def close(self) -> None:
        with self._lock:
            streams, self._streams = self._streams, []
        for handler, stream in streams:
            # Not setStream: it flushes the replaced stream, and ours may wrap one closed since.
            handler.acquire()
            try:
                handler.stream = stream
            finally:
                handler.release()

    # -- the functions' output ------------------------------------------------------------------

    @contextlib.contextmanager
    def invocation(self, spec: Any, request_id: str) -> Iterator[None]:
        """While a handler runs in this thread, what it prints is the invocation's output."""
        self._capture_logger(spec.environment.get("POWERTOOLS_SERVICE_NAME"))
        output = _Output(spec.name, request_id)
        output.lines.append(f"START RequestId: {request_id} Version: $LATEST")
        _current.output = output
        try:
            yield
        except BaseException as exc:
            # What the Lambda runtime writes for a handler's unhandled error (or its timeout).
            if type(exc).__name__ == "LambdaTimedOut":
                output.lines.append(f"{request_id} Task timed out")
            else:
                output.lines.append(f"[ERROR] {type(exc).__name__}: {exc}")
            raise
        finally:
            output.lines.append(f"END RequestId: {request_id}")
            _current.output = None
            self._flush(output)

    def write(self, text: str) -> None:
        output = getattr(_current, "output", None)
        if output is None:
            for line in text.splitlines():
                log.debug("%s", line)
            return
        output.lines.extend(line for line in text.splitlines() if line.strip())

    def _flush(self, output: _Output) -> None:
        if not output.lines:
            return
        # Log events carry wall time, as Lambda stamps what the function wrote (CloudWatch Logs
        # refuses events over 2 hours ahead: the sandbox clock soon is); metrics the sandbox's.
        written = datetime.now(UTC)
        with self._lock, open(self.log_dir / f"{output.function}.log", "a", encoding="utf-8") as f:
            for line in output.lines:
                f.write(f"{written.isoformat()} {output.request_id} {line}\n")
        self._put_log_events(output, written)
        when = self.now()
        for line in output.lines:
            if not line.startswith("{") or '"_aws"' not in line:
                continue
            try:
                document = json.loads(line)
            except ValueError:
                continue
            for namespace, name, value, dims, unit in emf_metrics(document):
                put_metric(self.region, namespace, name, value, dims, when, unit)

    def _put_log_events(self, output: _Output, when: datetime) -> None:
        from moto.logs.exceptions import ResourceAlreadyExistsException
        from moto.logs.models import logs_backends

        logs = logs_backends[ACCOUNT][self.region]
        group = f"/aws/lambda/{output.function}"
        stream = f"{when:%Y/%m/%d}/[$LATEST]{output.request_id.replace('-', '')}"
        with self._lock:
            if group not in logs.groups:  # Lambda creates a group the stack did not declare
                with contextlib.suppress(ResourceAlreadyExistsException):
                    logs.create_log_group(group, {})
            with contextlib.suppress(ResourceAlreadyExistsException):
                logs.create_log_stream(group, stream)
            ms = int(when.timestamp() * 1000)
            logs.put_log_events(group, stream, [{"timestamp": ms, "message": m} for m in output.lines])

    # -- AWS's own metrics ----------------------------------------------------------------------

    def finished(self, spec: Any, record: Any) -> None:
        """AWS/Lambda's metrics of one invocation (a throttled one is no invocation)."""
        dims = {"FunctionName": spec.name}
        when = self.now()
        if record.error_type == "TooManyRequestsException":
            put_metric(self.region, "AWS/Lambda", "Throttles", 1, dims, when)
            return
        put_metric(self.region, "AWS/Lambda", "Invocations", 1, dims, when)
        put_metric(self.region, "AWS/Lambda", "Errors", 1 if record.error_type else 0, dims, when)
        put_metric(self.region, "AWS/Lambda", "Duration", record.duration * 1000, dims, when, "Milliseconds")

    def execution_ended(self, state_machine_arn: str, status: str) -> None:
        metric = _STATES_METRICS.get(status)
        if metric:
            dims = {"StateMachineArn": state_machine_arn}
            put_metric(self.region, "AWS/States", metric, 1, dims, self.now())

    def queue_depth(self, queue_name: str, visible: int) -> None:
        put_metric(
            self.region,
            "AWS/SQS",
            "ApproximateNumberOfMessagesVisible",
            visible,
            {"QueueName": queue_name},
            self.now(),
        )


# -- Powertools' output and Step Functions' executions, hooked once per process ------------------

_active_monitor: Monitor | None = None
_installed = False


def activate(monitor: Monitor | None) -> None:
    global _active_monitor
    _active_monitor = monitor


def install() -> None:
    """Powertools' EMF ``print`` and Logger stream, and the end of every execution, reach the
    active sandbox's monitor. Idempotent."""
    global _installed
    if _installed:
        return
    from aws_lambda_powertools.metrics.provider.cloudwatch_emf import cloudwatch as emf
    from moto.stepfunctions.parser.backend.execution import BaseExecutionWorkerCommunication

    def emf_print(*args: Any, sep: str = " ", end: str = "\n", **kwargs: Any) -> None:
        text = sep.join(str(a) for a in args)
        if _active_monitor is not None:
            _active_monitor.write(text)
        else:
            print(text, end=end, **kwargs)

    # The module's global ``print`` shadows the builtin for its flushes (and its overflow flush
    # at 100 values, which ignores POWERTOOLS_METRICS_DISABLED).
    emf.print = emf_print  # type: ignore[attr-defined]
    # On Lambda one environment runs one invocation at a time; here the functions' invocations
    # are threads of one process sharing Powertools' one metric set. Its operations are made
    # atomic (no set changes while another thread serializes it); a metric added by one
    # invocation may then be flushed by another's, into that function's log group: the data
    # CloudWatch extracts is the same.
    metrics_lock = threading.RLock()
    for name in (
        "add_metric",
        "add_dimension",
        "add_metadata",
        "serialize_metric_set",
        "flush_metrics",
        "clear_metrics",
    ):
        unlocked = getattr(emf.AmazonCloudWatchEMFProvider, name)

        def locked(self: Any, *args: Any, _unlocked: Any = unlocked, **kwargs: Any) -> Any:
            with metrics_lock:
                return _unlocked(self, *args, **kwargs)

        setattr(emf.AmazonCloudWatchEMFProvider, name, locked)
    flush = emf.AmazonCloudWatchEMFProvider.flush_metrics

    def flush_metrics(self: Any, raise_on_empty_metrics: bool = False) -> None:
        # Nothing to flush: Powertools would only warn (on Lambda, into the function's log
        # group), which here would reach the console.
        if not raise_on_empty_metrics and not self.metric_set:
            return
        flush(self, raise_on_empty_metrics)

    emf.AmazonCloudWatchEMFProvider.flush_metrics = flush_metrics

    original = BaseExecutionWorkerCommunication.terminated

    def terminated(self: Any) -> None:
        original(self)
        execution = self.execution
        status = getattr(execution.exec_status, "value", None)
        if _active_monitor is not None and status:
            _active_monitor.execution_ended(execution.state_machine_arn, status)

    BaseExecutionWorkerCommunication.terminated = terminated
    _hook_queues()
    _installed = True


def _hook_queues() -> None:
    """Every change of a queue's visible messages (sent, received, deleted, purged, made visible
    again) publishes its depth: the sandbox's deliveries and any client's calls alike."""
    from moto.sqs.models import SQSBackend

    names = (
        "send_message",
        "send_message_batch",
        "receive_message",
        "delete_message",
        "delete_message_batch",
        "change_message_visibility",
        "change_message_visibility_batch",
        "purge_queue",
    )
    for name in names:
        original = getattr(SQSBackend, name)

        def hooked(self: Any, queue_name: str, *args: Any, _original: Any = original, **kwargs: Any) -> Any:
            result = _original(self, queue_name, *args, **kwargs)
            monitor = _active_monitor
            if monitor is not None and self.region_name == monitor.region:
                visible = self.get_queue(queue_name).approximate_number_of_messages
                monitor.queue_depth(queue_name, visible)
            return result

        setattr(SQSBackend, name, hooked)


class FunctionOutput:
    """A stream for Powertools' Logger: in a handler's thread, the invocation's output; elsewhere
    the stream it replaced."""

    def __init__(self, monitor: Monitor, fallback: Any) -> None:
        self.monitor = monitor
        self.fallback = fallback

    def write(self, text: str) -> int:
        if getattr(_current, "output", None) is not None:
            self.monitor.write(text)
        else:
            self.fallback.write(text)
        return len(text)

    def flush(self) -> None:
        if getattr(_current, "output", None) is None:
            with contextlib.suppress(ValueError):  # a fallback closed since (a test's capture)
                self.fallback.flush()


# -- alarms ---------------------------------------------------------------------------------------


_TERM = re.compile(r"^\s*(?:FILL\(\s*(\w+)\s*,\s*0\s*\)|(\w+))\s*$")


def _series(region: str, stat: dict, period: int) -> dict[float, float]:
    """A metric's statistic per period start (epoch seconds), over the periods that have data."""
    metric = stat["Metric"]
    wanted = {(d["Name"], d["Value"]) for d in metric.get("Dimensions") or []}
    buckets: dict[float, list[float]] = {}
    for datum in list(_cloudwatch(region).metric_data):
        if datum.namespace != metric["Namespace"] or datum.name != metric["MetricName"]:
            continue
        if {(d.name, d.value) for d in datum.dimensions} != wanted or not hasattr(datum, "value"):
            continue
        start = datum.timestamp.timestamp() // period * period
        buckets.setdefault(start, []).append(datum.value)
    reducers: dict[str, Callable[[list[float]], float]] = {
        "Sum": sum,
        "Maximum": max,
        "Minimum": min,
        "SampleCount": len,
        "Average": lambda v: sum(v) / len(v),
    }
    reduce = reducers[stat["Stat"]]
    return {start: float(reduce(values)) for start, values in buckets.items()}


def alarm_values(region: str, alarm: dict) -> dict[datetime, float]:
    """The value ``alarm`` (as DescribeAlarms returns it) computes per period that has data."""
    if alarm.get("MetricName"):
        stat = {
            "Metric": {
                "Namespace": alarm["Namespace"],
                "MetricName": alarm["MetricName"],
                "Dimensions": alarm.get("Dimensions") or [],
            },
            "Stat": alarm["Statistic"],
        }
        series = _series(region, stat, int(alarm["Period"]))
    else:
        queries = {q["Id"]: q for q in alarm["Metrics"]}
        (returned,) = [q for q in alarm["Metrics"] if q.get("ReturnData")]
        terms = []
        for term in returned["Expression"].split("+"):
            match = _TERM.match(term)
            if match is None:
                raise NotImplementedError(
                    f"alarm {alarm['AlarmName']}: the sandbox evaluates sums of FILL(id,0) terms only, "
                    f"not {returned['Expression']!r}"
                )
            terms.append(match.group(1) or match.group(2))
        series = {}
        for term in terms:
            stat = queries[term]["MetricStat"]
            for start, value in _series(region, stat, int(stat["Period"])).items():
                series[start] = series.get(start, 0.0) + value
    return {datetime.fromtimestamp(start, UTC): value for start, value in sorted(series.items())}


_COMPARE: dict[str, Callable[[float, float], bool]] = {
    "GreaterThanOrEqualToThreshold": lambda v, t: v >= t,
    "GreaterThanThreshold": lambda v, t: v > t,
    "LessThanThreshold": lambda v, t: v < t,
    "LessThanOrEqualToThreshold": lambda v, t: v <= t,
}


def breaching_periods(region: str, alarm: dict) -> list[datetime]:
    """The periods in which ``alarm``'s value crossed its threshold."""
    compare = _COMPARE[alarm["ComparisonOperator"]]
    values = alarm_values(region, alarm)
    return [start for start, value in values.items() if compare(value, float(alarm["Threshold"]))]
