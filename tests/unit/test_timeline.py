"""hpctl jobs timeline: a job's history on its lanes, as text and as an HTML page."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest

from hpctl.timeline import marks, timeline_html, timeline_text

pytestmark = pytest.mark.unit

T0 = datetime(2026, 1, 5, 10, 0, tzinfo=UTC)


def entry(seconds: float, kind: str, message: str = "", **details) -> SimpleNamespace:
    at = T0 + timedelta(seconds=seconds)
    return SimpleNamespace(at=at, kind=kind, message=message or kind, details=details)


HISTORY = [
    entry(120, "Completed", "all 2 ranks completed"),
    entry(0, "Admitted"),
    entry(2, "PodsCreated"),
    entry(5, "Started"),
    entry(60, "NodeFault", "node hyperpod-i-0b Unhealthy"),
    entry(
        61,
        "Remediated",
        "remediated in 812 milliseconds (spare_swap)",
        faults=[{"reason": "NodeFault", "pod": "tiny-1"}],
        fault_at=(T0 + timedelta(seconds=58)).isoformat(),
        resumed_at=(T0 + timedelta(seconds=62)).isoformat(),
        recovery_ms=812,
    ),
    entry(70, "Recovered", "<script>rank 1 back</script>"),
    entry(80, "SomethingNew"),
]


def test_entries_go_on_their_lanes_in_time_order():
    got = marks(HISTORY)
    assert [m.kind for m in got][:3] == ["Admitted", "PodsCreated", "Started"]
    assert [m.offset for m in got] == sorted(m.offset for m in got)
    lanes = {m.kind: m.lane for m in got}
    assert lanes["NodeFault"] == "faults" and lanes["Remediated"] == "decisions"
    assert lanes["Recovered"] == "recoveries" and lanes["SomethingNew"] == "lifecycle"
    # A remediation also tells when its fault was found and when the ranks resumed.
    fault, resumed = (next(m for m in got if m.kind == k) for k in ("Fault", "Resumed"))
    assert (fault.offset, fault.lane, fault.message) == (58, "faults", "NodeFault on tiny-1")
    assert (resumed.offset, resumed.lane) == (62, "recoveries") and "812 ms" in resumed.message
    assert marks([]) == []


def test_text_draws_each_lane_at_its_time_and_lists_the_entries():
    text = timeline_text("job default/tiny", marks(HISTORY), width=61)
    lines = text.splitlines()
    rows = {line.split()[0]: line for line in lines[2:6]}
    # 60 s of 120 s is half way along the 61 columns after the 12-column lane name.
    assert rows["faults"].index("N") == 12 + 30
    assert rows["decisions"].index("M") == 12 + 30
    assert rows["lifecycle"][12] == "A" and rows["lifecycle"].endswith("C")
    assert lines[1].rstrip().endswith("2m00s")
    assert any("+   1m00s  N NodeFault" in line for line in lines)
    assert "(no history recorded)" in timeline_text("job default/none", [])


def test_html_is_one_page_with_a_mark_per_entry_escaped():
    page = timeline_html("job default/tiny", marks(HISTORY))
    assert page.startswith("<!doctype html>") and page.count("<circle") == len(HISTORY) + 2
    assert "<script>" not in page and "&lt;script&gt;rank 1 back" in page
