"""EventBridge in the sandbox: asynchronous delivery to targets, and the scheduler's clock.

Delivery is asynchronous as on AWS: ``put_events`` returns, a worker pool delivers. A Lambda
target is an asynchronous invocation (Lambda's two retries, then the function's dead-letter
queue); a Step Functions target starts an execution, retried per the target's ``RetryPolicy``
and sent to the target's ``DeadLetterConfig`` queue if it cannot be started. ``wait_idle()``
returns when every accepted event has been delivered, so tests wait on a condition, not a sleep.

Scheduled rules (``rate(...)``, ``cron(...)``) and EventBridge Scheduler schedules
(``AWS::Scheduler::Schedule``, SAM ``ScheduleV2``, or ``scheduler.create_schedule``: ``rate``,
``cron`` and one-time ``at(...)``) fire on the sandbox's clock: sandbox time runs
``1 / time_scale`` times faster than wall time. A rule sends its targets a "Scheduled Event"; a
schedule sends its target's ``Input`` verbatim (``{}`` without one; the ``<aws.scheduler.*>``
context attributes are filled in), asynchronously to a Lambda function (Lambda's retries, then
the function's dead-letter queue) or as a Step Functions ``StartExecution`` (the schedule's
``RetryPolicy``, then its ``DeadLetterConfig`` queue). Not emulated: ``FlexibleTimeWindow``
(always fires on time), ``ScheduleExpressionTimezone`` (cron is UTC), ``StartDate``/``EndDate``,
``ActionAfterCompletion``; schedules and rules pick up ``update_*`` (state, expression) live.
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
from typing import Any

log = logging.getLogger("sandbox.events")


class SandboxClock:
    """Sandbox time: starts at wall time and runs ``1 / scale`` times faster."""

    def __init__(self, scale: float) -> None:
        self.scale = scale
        self._wall0 = time.time()
        self._mono0 = time.monotonic()

    def now(self) -> datetime:
        elapsed = (time.monotonic() - self._mono0) / self.scale
        return datetime.fromtimestamp(self._wall0 + elapsed, UTC)

    def sleep(self, sandbox_seconds: float) -> None:
        time.sleep(sandbox_seconds * self.scale)


class Delivery:
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
        "time": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": region,
        "resources": [rule_arn],
        "detail": {},
    }


class Scheduler(threading.Thread):
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
        ("scheduled-time", when.strftime("%Y-%m-%dT%H:%M:%SZ")),
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
