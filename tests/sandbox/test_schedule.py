"""sandbox.eventbus: schedule expressions as EventBridge reads them, and the sandbox clock."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest

from sandbox.clock import SandboxClock
from sandbox.eventbus import Schedule

pytestmark = pytest.mark.unit

# 2025-03-05 is a Wednesday.
WED_10_07 = datetime(2025, 3, 5, 10, 7, 30, tzinfo=UTC)


def at(day: int, hour: int, minute: int = 0, month: int = 3, year: int = 2025) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


# -- rate ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "seconds"),
    [
        ("rate(1 minute)", 60),
        ("rate(5 minutes)", 300),
        ("rate(1 hour)", 3600),
        ("rate(12 hours)", 12 * 3600),
        ("rate(1 day)", 86400),
        ("rate(7 days)", 7 * 86400),
    ],
)
def test_rate_period(expression, seconds):
    schedule = Schedule(expression)

    assert schedule.period == seconds
    assert schedule.next_after(WED_10_07) == WED_10_07 + timedelta(seconds=seconds)


def test_rate_zero_is_refused():
    with pytest.raises(ValueError, match=r"rate\(0 minutes\)"):
        Schedule("rate(0 minutes)")


@pytest.mark.parametrize("expression", ["rate(1 minutes)", "rate(5 minute)", "rate(2 day)", "rate(1 hours)"])
def test_rate_unit_must_agree_with_the_number(expression):
    # EventBridge: "If the value is equal to 1, then the unit must be singular", plural above 1;
    # the rule is refused on AWS, so the sandbox must refuse it too.
    with pytest.raises(ValueError, match=expression.replace("(", r"\(").replace(")", r"\)")):
        Schedule(expression)


# -- cron ---------------------------------------------------------------------------------------


def test_cron_at_noon_every_day():
    schedule = Schedule("cron(0 12 * * ? *)")

    assert schedule.period is None
    assert schedule.next_after(WED_10_07) == at(5, 12)
    assert schedule.next_after(at(5, 12)) == at(6, 12)  # strictly after
    assert schedule.next_after(at(5, 12, 1)) == at(6, 12)


def test_cron_every_15_minutes():
    schedule = Schedule("cron(*/15 * * * ? *)")

    assert schedule.next_after(WED_10_07) == at(5, 10, 15)
    assert schedule.next_after(at(5, 10, 15)) == at(5, 10, 30)
    assert schedule.next_after(at(5, 10, 50)) == at(5, 11, 0)


def test_cron_step_from_an_offset():
    schedule = Schedule("cron(5/20 * * * ? *)")

    assert schedule.fields[0] == {5, 25, 45}
    assert schedule.next_after(at(5, 10, 30)) == at(5, 10, 45)


def test_cron_day_of_week_counts_from_sunday_as_1():
    # Every Monday at 09:00: AWS numbers Sunday 1, Monday 2.
    schedule = Schedule("cron(0 9 ? * 2 *)")

    nxt = schedule.next_after(WED_10_07)
    assert nxt == at(10, 9)
    assert nxt.strftime("%A") == "Monday"

    sunday = Schedule("cron(0 9 ? * 1 *)").next_after(WED_10_07)
    assert sunday == at(9, 9)
    assert sunday.strftime("%A") == "Sunday"


def test_cron_weekday_range_skips_the_weekend():
    schedule = Schedule("cron(30 8 ? * 2-6 *)")  # Monday to Friday

    friday = at(7, 8, 30)
    assert schedule.next_after(at(6, 9)) == friday
    assert schedule.next_after(friday) == at(10, 8, 30)  # Monday, not Saturday


def test_cron_lists_of_days_and_hours():
    schedule = Schedule("cron(0 6,18 ? * 1,7 *)")  # weekends at 06:00 and 18:00

    first = schedule.next_after(WED_10_07)
    assert first == at(8, 6)  # Saturday
    assert schedule.next_after(first) == at(8, 18)
    assert schedule.next_after(at(8, 18)) == at(9, 6)  # Sunday
    assert schedule.next_after(at(9, 18)) == at(15, 6)


def test_cron_day_of_month_month_and_year():
    schedule = Schedule("cron(15 3 1 6 ? 2025-2026)")

    assert schedule.next_after(WED_10_07) == datetime(2025, 6, 1, 3, 15, tzinfo=UTC)
    assert Schedule("cron(15 3 1 6 ? 2024)").fields[5] == {2024}


def test_cron_month_range():
    schedule = Schedule("cron(0 0 1 4-5 ? *)")

    assert schedule.next_after(WED_10_07) == at(1, 0, month=4)
    assert schedule.next_after(at(1, 0, month=4)) == at(1, 0, month=5)


@pytest.mark.parametrize(
    "expression",
    [
        "every 5 minutes",
        "rate(5 fortnights)",
        "rate(-1 minutes)",
        "cron(0 12 * * ?)",
        "cron(0 12 * * ? * *)",
        "cron 0 12 * * ? *",
    ],
)
def test_malformed_expression_raises_naming_it(expression):
    with pytest.raises(ValueError) as info:
        Schedule(expression)
    assert expression in str(info.value)


@pytest.mark.parametrize(
    "expression",
    [
        "cron(0 12 L * ? *)",
        "cron(0 12 15W * ? *)",
        "cron(0 12 ? * 6L *)",
        "cron(0 12 ? * 2#1 *)",
        "cron(0 12 LW * ? *)",
    ],
)
def test_l_w_and_hash_are_refused(expression):
    with pytest.raises(ValueError) as info:
        Schedule(expression)
    assert expression in str(info.value)


@pytest.mark.parametrize(
    "expression",
    [
        "cron(*/0 * * * ? *)",  # a zero step
        "cron(a-b * * * ? *)",  # not numbers
        "cron(0/x * * * ? *)",  # not a number of steps
        "cron(60 * * * ? *)",  # minute out of range
        "cron(0 24 * * ? *)",  # hour out of range
        "cron(0 0 32 * ? *)",  # day of month out of range
        "cron(0 0 ? * 8 *)",  # day of week out of range (1-7)
        "cron(0 0 1 13 ? *)",  # month out of range
    ],
)
def test_invalid_field_values_raise_naming_the_expression(expression):
    # Refused when the rule is read, as PutRule refuses it, with the expression in the message.
    with pytest.raises(ValueError) as info:
        Schedule(expression)
    assert expression in str(info.value)


# -- the sandbox clock --------------------------------------------------------------------------


def test_sandbox_clock_runs_faster_by_its_scale():
    clock = SandboxClock(scale=0.001)  # 1 s of wall time is 1000 s of sandbox time
    start = clock.now()
    time.sleep(0.05)
    elapsed = (clock.now() - start).total_seconds()

    assert start.tzinfo is not None
    assert abs((start - datetime.now(UTC)).total_seconds()) < 5
    assert 40 <= elapsed <= 5000


def test_sandbox_clock_sleeps_scaled():
    clock = SandboxClock(scale=0.001)
    t0 = time.monotonic()
    clock.sleep(60)  # a sandbox minute: 60 ms of wall time

    assert 0.05 <= time.monotonic() - t0 < 2
