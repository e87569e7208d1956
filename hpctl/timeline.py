"""``hpctl jobs timeline NAME``: a job's life drawn from its recorded history.

Each history entry (``JOB#<uid>`` / ``EVENT#...`` items: what the supervisor, node_health and
job_events recorded) goes on one of four lanes - the job's lifecycle, the faults seen, the
remediation decisions, the recoveries - at its time since the first entry. ``timeline_text``
draws the lanes in the terminal with the entries listed under them; ``timeline_html`` writes the
same as one self-contained HTML page (an SVG, each mark's entry in its tooltip).
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from datetime import datetime
from typing import Any

#: Which lane each kind of history entry goes on, and the letter that marks it there.
LANES: dict[str, dict[str, str]] = {
    "lifecycle": {
        "Admitted": "A",
        "PodsCreated": "P",
        "Started": "S",
        "SegmentStarted": "s",
        "SegmentHandedOver": "h",
        "SpareJoined": "j",
        "Completed": "C",
        "Failed": "X",
        "Deleted": "D",
        "Rejected": "R",
    },
    "faults": {"Fault": "F", "NodeFault": "N", "AgentEvent": "G", "PodEvent": "O", "UnknownJobEvent": "?"},
    "decisions": {"Remediated": "M", "RemediationRefused": "!"},
    "recoveries": {"Resumed": "R", "Recovered": "V"},
}
_LANE_OF = {kind: lane for lane, kinds in LANES.items() for kind in kinds}
_COLOURS = {"lifecycle": "#4477aa", "faults": "#cc3311", "decisions": "#ee7733", "recoveries": "#228833"}


@dataclass(frozen=True)
class Mark:
    at: datetime
    offset: float  # seconds since the first entry
    lane: str
    kind: str
    message: str


def _points(entry: Any) -> list[tuple[datetime, str, str]]:
    """(time, kind, message) of what one history entry tells: a ``Remediated`` entry also when
    its faults were found (``fault_at``) and when the ranks resumed (``resumed_at``)."""
    points = [(entry.at, entry.kind, entry.message)]
    details = getattr(entry, "details", None) or {}
    if entry.kind == "Remediated":
        faults = details.get("faults") or []
        reasons = (
            ", ".join(sorted({str(f.get("reason") or f.get("kind") or "fault") for f in faults})) or "fault"
        )
        where = ", ".join(
            sorted({str(f.get("pod") or f.get("node")) for f in faults if f.get("pod") or f.get("node")})
        )
        if details.get("fault_at"):
            at = datetime.fromisoformat(details["fault_at"])
            points.append((at, "Fault", f"{reasons}{' on ' + where if where else ''}"))
        if details.get("resumed_at"):
            took = details.get("recovery_ms")
            message = f"ranks resumed{f' {took} ms after the fault' if took is not None else ''}"
            points.append((datetime.fromisoformat(details["resumed_at"]), "Resumed", message))
    return points


def marks(history: list[Any]) -> list[Mark]:
    """The entries (``JobEventRecord``s) on their lanes, in time order; a kind this version does
    not know goes on the lifecycle lane, marked ``*``."""
    points = sorted((p for e in history for p in _points(e)), key=lambda p: p[0])
    if not points:
        return []
    t0 = points[0][0]
    return [
        Mark(at, (at - t0).total_seconds(), _LANE_OF.get(kind, "lifecycle"), kind, message)
        for at, kind, message in points
    ]


def _letter(mark: Mark) -> str:
    return LANES.get(mark.lane, {}).get(mark.kind, "*")


def _span(seconds: float) -> str:
    whole = round(seconds)
    minutes, sec = divmod(whole, 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{sec:02d}s" if hours else f"{minutes}m{sec:02d}s" if minutes else f"{sec}s"


def timeline_text(title: str, entries: list[Mark], width: int = 60) -> str:
    """The lanes as text (``width`` columns for the whole span), then every entry with its offset."""
    if not entries:
        return f"{title}\n(no history recorded)"
    span = max(entries[-1].offset, 1e-9)
    lines = [title, f"{'':12}0s{_span(span):>{width - 2}}"]
    for lane in LANES:
        row = [" "] * width
        for m in entries:
            if m.lane == lane:
                column = min(width - 1, int(m.offset / span * (width - 1)))
                row[column] = _letter(m) if row[column] == " " else "+"
        lines.append(f"{lane:<12}{''.join(row).rstrip()}")
    lines.append("")
    for m in entries:
        lines.append(f"  +{_span(m.offset):>8}  {_letter(m)} {m.kind:<20} {' '.join(m.message.split())[:90]}")
    legend = ", ".join(f"{letter} {kind}" for lane in LANES.values() for kind, letter in lane.items())
    lines.append(f"  ({legend}; + several at once)")
    return "\n".join(lines)


def timeline_html(title: str, entries: list[Mark]) -> str:
    """One HTML page: the lanes as an SVG (hover a mark for its entry) and the entries' table."""
    width, left, lane_h = 900, 110, 36
    span = max(entries[-1].offset, 1e-9) if entries else 1.0
    svg = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width + left + 20}" '
        f'height="{lane_h * len(LANES) + 40}" font-family="sans-serif" font-size="12">'
    ]
    for i, lane in enumerate(LANES):
        y = 20 + i * lane_h + lane_h // 2
        svg.append(f'<text x="4" y="{y + 4}">{lane}</text>')
        svg.append(f'<line x1="{left}" y1="{y}" x2="{left + width}" y2="{y}" stroke="#ccc"/>')
        for m in (m for m in entries if m.lane == lane):
            x = left + m.offset / span * width
            tip = html.escape(f"+{_span(m.offset)} {m.kind}: {m.message}")
            svg.append(
                f'<circle cx="{x:.1f}" cy="{y}" r="6" fill="{_COLOURS[lane]}"><title>{tip}</title></circle>'
            )
    axis_y = 20 + len(LANES) * lane_h + 12
    svg.append(f'<text x="{left}" y="{axis_y}">0s</text>')
    svg.append(f'<text x="{left + width}" y="{axis_y}" text-anchor="end">{_span(span)}</text>')
    svg.append("</svg>")
    rows = "".join(
        f"<tr><td>+{_span(m.offset)}</td><td>{m.at.isoformat()}</td><td>{m.lane}</td>"
        f"<td>{html.escape(m.kind)}</td><td>{html.escape(m.message)}</td></tr>"
        for m in entries
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title></head>"
        f"<body><h1>{html.escape(title)}</h1>{''.join(svg)}"
        "<table border='1' cellpadding='3' cellspacing='0'><tr><th>offset</th><th>time</th>"
        f"<th>lane</th><th>kind</th><th>entry</th></tr>{rows}</table></body></html>\n"
    )
