"""EventBridge in the sandbox: delivery to targets, scheduled rules and EventBridge Scheduler.

Delivery (``EventDelivery``) is asynchronous as on AWS: ``put_events`` returns, a worker pool
delivers (moto's ``Rule.send_to_targets`` hands Lambda and Step Functions targets to it, see
``patches.py``; ``target_input`` applies a target's ``Input``/``InputPath``/``InputTransformer``).
A Lambda target is an asynchronous invocation (Lambda's two retries, then the function's
dead-letter queue); a Step Functions target starts an execution, retried per the target's
``RetryPolicy`` and sent to the target's ``DeadLetterConfig`` queue if it cannot be started.
``wait_idle()`` returns when every accepted event has been delivered, so tests wait on a
condition, not a sleep. Lambda's own asynchronous invokes (``InvocationType=Event``) run on the
same pool.

Scheduled rules (``rate(...)``, ``cron(...)``) and EventBridge Scheduler schedules
(``AWS::Scheduler::Schedule``, SAM ``ScheduleV2``, or ``scheduler.create_schedule``: ``rate``,
``cron`` and one-time ``at(...)``) fire on the sandbox's clock (``sandbox.clock``: sandbox time
runs ``1 / time_scale`` times faster than wall time), from a ``ScheduleRunner`` thread. A rule
sends its targets a "Scheduled Event"; a schedule sends its target's ``Input`` verbatim (``{}``
without one; the ``<aws.scheduler.*>`` context attributes are filled in), asynchronously to a
Lambda function (Lambda's retries, then the function's dead-letter queue) or as a Step
Functions ``StartExecution`` (the schedule's ``RetryPolicy``, then its ``DeadLetterConfig``
queue). Not emulated: ``FlexibleTimeWindow`` (always fires on time), ``ScheduleExpressionTimezone``
(cron is UTC), ``StartDate``/``EndDate``, ``ActionAfterCompletion``; schedules and rules pick up
``update_*`` (state, expression) live.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sandbox.clock import RFC3339, SandboxClock

if TYPE_CHECKING:
    from sandbox.lambdas import FunctionSpec, LambdaRuntime

log = logging.getLogger("sandbox.events")


class DeliveryPool:
    """The worker pool deliveries run on; ``wait_idle()`` returns when every one has finished."""

    def __init__(self, workers: int = 8) -> None:
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sandbox-events")
        self._pending: set[Future] = set()
        self._cond = threading.Condition()
        self.failures: list[dict[str, Any]] = []

    def submit(self, fn: Callable[[], None], describe: str) -> None:
        def run() -> None:
            try:
                fn()
            except Exception as exc:  # a bug in delivery must not vanish silently
                log.exception("delivery failed: %s", describe)
                self.failures.append({"target": describe, "error": repr(exc)})

        with self._cond:
            future = self._pool.submit(run)
            self._pending.add(future)
        future.add_done_callback(self._done)

    def _done(self, future: Future) -> None:
        with self._cond:
            self._pending.discard(future)
            self._cond.notify_all()

    def wait_idle(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._pending:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(
                        f"{len(self._pending)} event deliveries still running after {timeout}s"
                    )
                self._cond.wait(left)

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


# -- schedule expressions ------------------------------------------------------------------------

_RATE = re.compile(r"^rate\((\d+)\s+(minute|minutes|hour|hours|day|days)\)$")
_UNIT = {"minute": 60, "hour": 3600, "day": 86400}
_AT = re.compile(r"^at\((\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})\)$")
#: "never again": what a one-time schedule is due at once it has fired (or was in the past)
NEVER = datetime.max.replace(tzinfo=UTC)


class Schedule:
    """``rate(N unit)`` or ``cron(min hour dom month dow year)`` with *, ?, lists, ranges, steps;
    with ``one_time=True`` (EventBridge Scheduler) also ``at(yyyy-mm-ddThh:mm:ss)``, in UTC."""

    def __init__(self, expression: str, one_time: bool = False) -> None:
        self.expression = expression.strip()
        self.at: datetime | None = None
        at = _AT.match(self.expression) if one_time else None
        if at:
            try:
                self.at = datetime.fromisoformat(at.group(1)).replace(tzinfo=UTC)
            except ValueError as exc:
                raise ValueError(f"{expression}: {exc}") from None
            self.period: float | None = None
            self.fields: list[set[int] | None] = []
            return
        rate = _RATE.match(self.expression)
        if rate:
            n, unit = int(rate.group(1)), rate.group(2)
            if n < 1:
                raise ValueError(f"{expression}: rate must be at least 1")
            # EventBridge wants "1 minute" but "5 minutes": a wrong plural fails on AWS, so here too.
            if (n == 1) == unit.endswith("s"):
                raise ValueError(f"{expression}: use the singular unit for 1 and the plural above 1")
            self.period = n * _UNIT[unit.rstrip("s")]
            self.fields = []
            return
        if not (self.expression.startswith("cron(") and self.expression.endswith(")")):
            raise ValueError(f"{expression}: not a rate(...) or cron(...) expression")
        parts = self.expression[5:-1].split()
        if len(parts) != 6:
            raise ValueError(
                f"{expression}: cron needs 6 fields (minutes hours day-of-month month day-of-week year)"
            )
        self.period = None
        bounds = [(0, 59), (0, 23), (1, 31), (1, 12), (1, 7), (1970, 2199)]
        self.fields = [self._field(p, lo, hi, expression) for p, (lo, hi) in zip(parts, bounds, strict=True)]

    @staticmethod
    def _field(text: str, lo: int, hi: int, expression: str) -> set[int] | None:
        if text in ("*", "?"):
            return None
        values: set[int] = set()
        for part in text.split(","):
            try:
                step = 1
                if "/" in part:
                    part, step_text = part.split("/", 1)
                    step = int(step_text)
                if part in ("*", ""):
                    start, end = lo, hi
                elif "-" in part:
                    start, end = (int(x) for x in part.split("-", 1))
                elif part.isdigit():
                    start = int(part)
                    end = hi if step > 1 else start
                else:
                    raise ValueError(f"the sandbox does not support '{part}' in cron fields")
            except ValueError as exc:
                raise ValueError(f"{expression}: {exc}") from None
            if step < 1 or not lo <= start <= end <= hi:
                raise ValueError(f"{expression}: '{text}' is outside {lo}-{hi} or has a step below 1")
            values.update(range(start, end + 1, step))
        return values

    def next_after(self, moment: datetime) -> datetime:
        if self.at is not None:
            return self.at if self.at > moment else NEVER
        if self.period is not None:
            return moment + timedelta(seconds=self.period)
        candidate = (moment + timedelta(minutes=1)).replace(second=0, microsecond=0)
        minute, hour, dom, month, dow, year = self.fields
        limit = moment + timedelta(days=8 * 366)  # a leap day fires within 8 years
        while candidate < limit:
            aws_dow = (candidate.isoweekday() % 7) + 1  # AWS: 1 = Sunday
            day_matches = (
                (dom is None or candidate.day in dom)
                and (month is None or candidate.month in month)
                and (dow is None or aws_dow in dow)
                and (year is None or candidate.year in year)
            )
            if not day_matches:  # skip the rest of the day: the search stays cheap for years
                candidate = (candidate + timedelta(days=1)).replace(hour=0, minute=0)
                continue
            if (minute is None or candidate.minute in minute) and (hour is None or candidate.hour in hour):
                return candidate
            candidate += timedelta(minutes=1)
        raise ValueError(f"{self.expression}: never fires within eight years")


def scheduled_event(rule_arn: str, region: str, account: str, when: datetime) -> dict[str, Any]:
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": account,
        "time": when.strftime(RFC3339),
        "region": region,
        "resources": [rule_arn],
        "detail": {},
    }


class ScheduleRunner(threading.Thread):
    """Fires enabled scheduled rules of the default bus, and enabled EventBridge Scheduler
    schedules, on the sandbox clock.

    ``rules()`` returns moto's event rules (``scheduled_expression``, ``state``); ``fire(rule,
    event)`` gets the rule and its "Scheduled Event". ``schedules()`` returns moto's scheduler
    schedules (``schedule_expression``, ``state``); ``fire_schedule(schedule, when)`` gets the
    schedule and the sandbox time it was due at. Both are read every tick, so what the API
    changes (a new schedule, a disabled rule) takes effect at once.
    """

    def __init__(
        self,
        clock: SandboxClock,
        rules: Callable[[], list[Any]],
        fire: Callable[[Any, dict], None],
        region: str,
        account: str,
        tick: float = 0.02,
        schedules: Callable[[], list[Any]] | None = None,
        fire_schedule: Callable[[Any, datetime], None] | None = None,
    ) -> None:
        super().__init__(name="sandbox-scheduler", daemon=True)
        self.clock, self._rules, self._fire = clock, rules, fire
        self._schedules, self._fire_schedule = schedules, fire_schedule
        self.region, self.account, self.tick = region, account, tick
        self._stop_event = threading.Event()
        self._next: dict[str, tuple[str, datetime]] = {}
        #: (rule name, or "schedule/<group>/<name>" for a schedule; the time it was due)
        self.fired: list[tuple[str, datetime]] = []

    def stop(self) -> None:
        self._stop_event.set()

    def run(self) -> None:
        while not self._stop_event.wait(self.tick):
            now = self.clock.now()
            for rule in self._rules():
                expression = getattr(rule, "scheduled_expression", None)
                due = self._due(rule.arn, rule.name, expression, getattr(rule, "state", "ENABLED"), now)
                if due is not None:
                    self.fired.append((rule.name, due))
                    self._fire(rule, scheduled_event(rule.arn, self.region, self.account, due))
            if self._schedules is None or self._fire_schedule is None:
                continue
            for schedule in self._schedules():
                label = f"schedule/{schedule.group_name}/{schedule.name}"
                due = self._due(
                    schedule.arn, label, schedule.schedule_expression, schedule.state, now, one_time=True
                )
                if due is not None:
                    self.fired.append((label, due))
                    self._fire_schedule(schedule, due)

    def _due(
        self, key: str, name: str, expression: str | None, state: str, now: datetime, one_time: bool = False
    ) -> datetime | None:
        """The time ``key`` was due at if it is due now (and when it is due next), else None."""
        if not expression or state != "ENABLED":
            self._next.pop(key, None)  # enabled again later: counts from then, no burst of catch-ups
            return None
        known = self._next.get(key)
        if known is None or known[0] != expression:
            try:
                self._next[key] = (expression, Schedule(expression, one_time).next_after(now))
            except ValueError as exc:
                log.error("%s: %s", name, exc)
                self._next[key] = (expression, NEVER)
            return None
        if now < known[1]:
            return None
        self._next[key] = (expression, Schedule(expression, one_time).next_after(known[1]))
        return known[1]


def scheduler_input(schedule_arn: str, target: dict, when: datetime, attempt: int = 1) -> Any:
    """What EventBridge Scheduler sends a target: its ``Input`` verbatim (``{}`` without one), with
    the ``<aws.scheduler.*>`` context attributes replaced; JSON is parsed for the in-process call."""
    text = target.get("Input")
    if not text:
        return {}
    for attribute, value in (
        ("schedule-arn", schedule_arn),
        ("scheduled-time", when.strftime(RFC3339)),
        ("execution-id", str(uuid.uuid4())),
        ("attempt-number", str(attempt)),
    ):
        text = text.replace(f"<aws.scheduler.{attribute}>", value)
    try:
        return json.loads(text)
    except ValueError:
        return text


def scheduler_dlq_message(
    payload: Any,
    error_code: str,
    message: str,
    schedule_arn: str,
    target_arn: str,
    attempts: int,
    exhausted: str,
) -> dict:
    """An SQS message as EventBridge Scheduler writes it to a schedule's dead-letter queue."""
    return {
        "MessageBody": payload if isinstance(payload, str) else json.dumps(payload),
        "MessageAttributes": {
            "ERROR_CODE": {"DataType": "String", "StringValue": error_code},
            "ERROR_MESSAGE": {"DataType": "String", "StringValue": message[:1000] or error_code},
            "EXHAUSTED_RETRY_CONDITION": {"DataType": "String", "StringValue": exhausted},
            "RETRY_ATTEMPTS": {"DataType": "Number", "StringValue": str(attempts)},
            "SCHEDULE_ARN": {"DataType": "String", "StringValue": schedule_arn},
            "TARGET_ARN": {"DataType": "String", "StringValue": target_arn},
        },
    }


def dlq_message(event: Any, error_code: str, message: str, rule_arn: str, target_arn: str) -> dict:
    """An SQS message as EventBridge writes it to a target's dead-letter queue."""
    return {
        "MessageBody": json.dumps(event),
        "MessageAttributes": {
            "ERROR_CODE": {"DataType": "String", "StringValue": error_code},
            "ERROR_MESSAGE": {"DataType": "String", "StringValue": message[:1000]},
            "RULE_ARN": {"DataType": "String", "StringValue": rule_arn},
            "TARGET_ARN": {"DataType": "String", "StringValue": target_arn},
        },
    }


class EventDelivery:
    """Delivery to Lambda functions and state machines, as EventBridge, EventBridge Scheduler and
    Lambda's event queue do it: accepted at once, run on the worker pool.

    ``runtime`` runs the Lambda handlers, ``client(service)`` is a boto3 client into the sandbox's
    account, ``clock`` the sandbox's (retry back-off and event age count sandbox time); the
    scheduled rules and schedules are read from moto's backends of ``account`` and ``region``.
    """

    def __init__(
        self,
        runtime: LambdaRuntime,
        client: Callable[[str], Any],
        clock: SandboxClock,
        region: str,
        account: str,
        workers: int = 8,
    ) -> None:
        self.runtime, self.client, self.clock = runtime, client, clock
        self.region, self.account = region, account
        self.pool = DeliveryPool(workers)

    def schedule_runner(self) -> ScheduleRunner:
        """The thread that fires this account's scheduled rules and schedules (not started)."""
        return ScheduleRunner(
            self.clock,
            self.scheduled_rules,
            self.fire_scheduled,
            self.region,
            self.account,
            schedules=self.schedules,
            fire_schedule=self.fire_schedule,
        )

    def invoke_lambda_event(self, function_name: str, event: Any) -> None:
        """An asynchronous Invoke (``InvocationType=Event``), accepted at once: Lambda's event
        queue runs it, with its two retries and then the function's dead-letter queue."""
        self.pool.submit(
            lambda: self.runtime.invoke_async(function_name, event, self._lambda_dead_letter),
            f"invoke/{function_name}",
        )

    def deliver_to_target(self, rule: Any, target: dict, event: Any) -> None:
        """An EventBridge rule's target gets ``event`` (already shaped by Input/InputPath)."""

        def dead_letter(code: str, message: str, attempts: int, exhausted: str) -> dict:
            return dlq_message(event, code, message, rule.arn, target["Arn"])

        self._deliver(rule.name, target, event, dead_letter)

    def _deliver(
        self, source: str, target: dict, event: Any, dead_letter: Callable[[str, str, int, str], dict]
    ) -> None:
        """Asynchronous delivery to a Lambda function or a state machine; ``dead_letter(code,
        message, retries, exhausted condition)`` builds what the target's DeadLetterConfig gets
        when the target cannot be invoked at all."""
        arn = target["Arn"]
        if ":lambda:" in arn:
            self.pool.submit(
                lambda: self._invoke_async_target(target, event, dead_letter), f"{source}->{arn}"
            )
        else:
            self.pool.submit(
                lambda: self._start_execution_target(target, event, dead_letter), f"{source}->{arn}"
            )

    def _invoke_async_target(
        self, target: dict, event: Any, dead_letter: Callable[[str, str, int, str], dict]
    ) -> None:
        try:
            self.runtime.lookup(target["Arn"])
        except KeyError as exc:  # the function is gone: the invoke itself fails, not the handler
            self._send_dead_letter(
                target.get("DeadLetterConfig", {}).get("Arn"),
                dead_letter("ResourceNotFoundException", str(exc), 0, "MaximumRetryAttempts"),
            )
            return
        # Accepted by Lambda: a handler's failure is Lambda's to retry and dead-letter, not the caller's.
        self.runtime.invoke_async(target["Arn"], event, self._lambda_dead_letter)

    def _send_dead_letter(self, queue_arn: str | None, message: dict) -> None:
        if not queue_arn:
            log.error("event lost: no dead-letter queue configured (%s)", message["MessageAttributes"])
            return
        name = queue_arn.rsplit(":", 1)[-1]
        sqs = self.client("sqs")
        sqs.send_message(QueueUrl=sqs.get_queue_url(QueueName=name)["QueueUrl"], **message)

    def _lambda_dead_letter(self, spec: FunctionSpec, event: Any, payload: Any) -> None:
        error = payload.get("errorType", "Unhandled") if isinstance(payload, dict) else "Unhandled"
        message = payload.get("errorMessage", "") if isinstance(payload, dict) else str(payload)
        body = {
            "MessageBody": json.dumps(event),
            "MessageAttributes": {
                "RequestID": {"DataType": "String", "StringValue": str(payload.get("requestId", ""))},
                "ErrorCode": {"DataType": "Number", "StringValue": "200"},
                "ErrorMessage": {"DataType": "String", "StringValue": f"{error}: {message}"[:1000]},
            },
        }
        self._send_dead_letter(spec.dead_letter_arn, body)

    def _start_execution_target(
        self, target: dict, event: Any, dead_letter: Callable[[str, str, int, str], dict]
    ) -> None:
        """``StartExecution``, retried with back-off per the target's ``RetryPolicy`` (its
        ``MaximumRetryAttempts``, at most 19 here, and ``MaximumEventAgeInSeconds`` in sandbox
        time), then the target's dead-letter queue."""
        policy = target.get("RetryPolicy", {})
        attempts = min(int(policy.get("MaximumRetryAttempts", 185)), 19) + 1
        max_age = float(policy.get("MaximumEventAgeInSeconds", 86400))
        born = self.clock.now()
        sfn = self.client("stepfunctions")
        last, exhausted, retries = "", "MaximumRetryAttempts", 0
        for attempt in range(attempts):
            retries = attempt
            try:
                sfn.start_execution(
                    stateMachineArn=target["Arn"], input=json.dumps(event), name=str(uuid.uuid4())
                )
                return
            except Exception as exc:
                last = str(exc)
            if attempt + 1 == attempts:
                break
            delay = min(2**attempt, 60)
            if (self.clock.now() - born).total_seconds() + delay > max_age:
                exhausted = "MaximumEventAgeInSeconds"
                break
            self.clock.sleep(delay)
        self._send_dead_letter(
            target.get("DeadLetterConfig", {}).get("Arn"),
            dead_letter("SDK_CLIENT_ERROR", last, retries, exhausted),
        )

    def scheduled_rules(self) -> list[Any]:
        from moto.events.models import events_backends

        bus = events_backends[self.account][self.region].event_buses.get("default")
        return list(bus.rules.values()) if bus else []

    def fire_scheduled(self, rule: Any, event: dict) -> None:
        for target in rule.targets:
            self.deliver_to_target(rule, target, target_input(target, event))

    def schedules(self) -> list[Any]:
        from moto.scheduler.models import scheduler_backends

        backend = scheduler_backends[self.account][self.region]
        return [s for group in list(backend.schedule_groups.values()) for s in list(group.schedules.values())]

    def fire_schedule(self, schedule: Any, when: Any) -> None:
        """EventBridge Scheduler invokes the target with its Input, asynchronously."""
        target = dict(schedule.target)
        payload = scheduler_input(schedule.arn, target, when)

        def dead_letter(code: str, message: str, attempts: int, exhausted: str) -> dict:
            return scheduler_dlq_message(
                payload, code, message, schedule.arn, target["Arn"], attempts, exhausted
            )

        self._deliver(f"schedule/{schedule.group_name}/{schedule.name}", target, payload, dead_letter)

    def wait_idle(self, timeout: float = 30.0) -> None:
        """Block until every event accepted so far has been delivered (and retried)."""
        self.pool.wait_idle(timeout)

    def shutdown(self) -> None:
        self.pool.shutdown()


def target_input(target: dict, event: dict) -> Any:
    """What the target receives: the event, ``Input`` (constant JSON) or ``InputPath``."""
    if target.get("Input"):
        return json.loads(target["Input"])
    if target.get("InputPath"):
        from jsonpath_ng import parse  # moto's own dependency

        matches = parse(target["InputPath"]).find(event)
        return matches[0].value if matches else None
    if target.get("InputTransformer"):
        from moto.events.utils import EventTemplateParser

        transformer = target["InputTransformer"]
        return EventTemplateParser.parse(
            input_template=transformer.get("InputTemplate"),
            input_paths_map=transformer.get("InputPathsMap", {}),
            event=event,
        )
    return event
