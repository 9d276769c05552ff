"""A dependency-free SVG Gantt chart for plans and, later, planned-versus-actual audits.

The output is a plain ``<svg>`` element meant to be pasted inside an HTML page
(so no XML declaration and, by default, no ``xmlns``: the HTML parser puts
``<svg>`` in the right namespace, and pages stay free of any ``http://``
string). Every piece of caller text is XML-escaped. Positions come from UTC
timestamps, never wall-clock subtraction, so charts stay right across a
daylight-saving change; tick labels are shown in the runbook's zone.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, tzinfo

__all__ = ["STATUS_COLOURS", "GanttRow", "render_svg"]

_LABEL_W = 340
_CHART_W = 840
_PAD = 12
_AXIS_H = 46

# Critical bars are dark and normal ones light, so the difference survives a
# black-and-white printer; red is left for failures.
_PLANNED = "#9cc3e6"
_PLANNED_EDGE = "#4a7fb0"
_CRITICAL = "#1f3a5f"
_CRITICAL_EDGE = "#0d1b2a"
_WINDOW = "#e7f2e4"
_WINDOW_EDGE = "#5e8c55"
_MARKER_COLOURS = ("#8e24aa", "#c62828", "#1565c0", "#6d4c41", "#ef6c00")

STATUS_COLOURS: dict[str, str] = {
    "succeeded": "#2e7d32",
    "failed": "#c62828",
    "rolled_back": "#ef6c00",
    "skipped": "#9e9e9e",
    "running": "#00897b",
    "pending": "#bdbdbd",
    "cancelled": "#616161",
}
_STATUS_OTHER = "#455a64"

# Tick spacings to choose from, in minutes: the smallest giving at most ~16 ticks.
_TICK_STEPS = (5, 10, 15, 30, 60, 120, 180, 360, 720, 1440)
_MAX_TICKS = 16

_XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


@dataclass(frozen=True, slots=True)
class GanttRow:
    """One bar (and optionally the actual run beneath it) on the chart."""

    id: str
    label: str
    planned_start: datetime
    planned_finish: datetime
    actual_start: datetime | None = None
    actual_finish: datetime | None = None
    critical: bool = False
    status: str | None = None


def _esc(text: object) -> str:
    """Escape for XML text and attributes, dropping characters XML cannot carry."""
    return html.escape(_XML_INVALID.sub("", str(text)), quote=True)


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: max(limit - 1, 1)] + "…"


def _split_label(row: GanttRow) -> tuple[str, str]:
    """(step id, title) when the label names both, as plans ("Title (id)") and audits
    ("id: Title") write it; else ("", label). Leading with the id keeps it visible when
    a long title has to be cut, so every row can be found in the step table."""
    label, ident = row.label, row.id
    if ident and label.endswith(f" ({ident})") and len(label) > len(ident) + 3:
        return ident, label[: -len(ident) - 3]
    if ident and label.startswith(f"{ident}: ") and len(label) > len(ident) + 2:
        return ident, label[len(ident) + 2 :]
    return "", label


def _hhmm(moment: datetime, tz: tzinfo) -> str:
    local = moment.astimezone(tz)
    return local.strftime("%H:%M:%S" if local.second else "%H:%M")


def render_svg(
    rows: Sequence[GanttRow],
    *,
    window: tuple[datetime, datetime] | None,
    markers: Sequence[tuple[datetime, str]] = (),
    tz: tzinfo,
    standalone: bool = False,
) -> str:
    """Draw ``rows`` against a time axis in ``tz`` and return one ``<svg>`` element.

    ``window`` is shaded; ``markers`` (moment, label) become labelled vertical
    lines ("point of no return", "now"). Rows with actual times get a second,
    status-coloured bar under the planned one. Past 300 rows the chart switches
    to compact rows so a large plan stays a few thousand pixels tall.
    ``standalone=True`` adds the XML namespace for writing an ``.svg`` file.
    """
    compact = len(rows) > 300
    with_actuals = any(r.actual_start is not None for r in rows)
    font = 9 if compact else 12
    if with_actuals:
        row_h, bar_h = (16, 6) if compact else (30, 11)
    else:
        row_h, bar_h = (12, 8) if compact else (22, 14)
    # Room for the label, less the status swatch drawn at its right when there are statuses.
    swatch = 14 if any(r.status for r in rows) else 0
    # Helvetica/Arial average about 0.45 em a character in mixed-case text; 0.5 leaves room.
    label_chars = int((_LABEL_W - 2 * _PAD - swatch) / (font * 0.5))

    # Time range: everything drawn must fit, widened to whole ticks.
    stamps: list[float] = []
    for r in rows:
        stamps += [r.planned_start.timestamp(), r.planned_finish.timestamp()]
        if r.actual_start is not None:
            stamps.append(r.actual_start.timestamp())
        if r.actual_finish is not None:
            stamps.append(r.actual_finish.timestamp())
    if window is not None:
        stamps += [window[0].timestamp(), window[1].timestamp()]
    stamps += [m[0].timestamp() for m in markers]
    if not stamps:
        stamps = [0.0]
    lo, hi = min(stamps), max(stamps)
    if hi - lo < 60:
        hi = lo + 3600
    step_min = next((s for s in _TICK_STEPS if (hi - lo) / (s * 60) <= _MAX_TICKS), None)
    if step_min is None:
        step_min = 1440 * math.ceil((hi - lo) / (1440 * 60 * _MAX_TICKS))
    step_s = step_min * 60
    first_local = datetime.fromtimestamp(lo, tz)
    if step_min >= 1440:
        floored = first_local.replace(hour=0, minute=0, second=0, microsecond=0)
    else:
        minutes = (first_local.hour * 60 + first_local.minute) // step_min * step_min
        floored = first_local.replace(
            hour=minutes // 60, minute=minutes % 60, second=0, microsecond=0
        )
    lo = min(lo, floored.timestamp())
    hi = lo + math.ceil((hi - lo) / step_s) * step_s
    span = hi - lo

    def x(stamp: float) -> float:
        return _LABEL_W + (stamp - lo) / span * _CHART_W

    rows_top = _AXIS_H
    rows_bottom = rows_top + max(len(rows), 1) * row_h
    marker_rows = len(markers)
    legend_y = rows_bottom + 18 + 14 * marker_rows
    width = _LABEL_W + _CHART_W + 3 * _PAD
    height = legend_y + 24

    out: list[str] = []
    ns = ' xmlns="http://www.w3.org/2000/svg"' if standalone else ""
    out.append(
        f'<svg{ns} class="gantt" role="img" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="Helvetica, Arial, sans-serif" '
        f'font-size="{font}">'
    )
    out.append(f"<title>Gantt chart, {len(rows)} steps</title>")
    out.append(f'<rect x="0" y="0" width="{width}" height="{height}" fill="#ffffff"/>')

    # Zebra stripes make a long chart followable across the page.
    for i in range(1, len(rows), 2):
        out.append(
            f'<rect x="0" y="{rows_top + i * row_h}" width="{width}" height="{row_h}" '
            'fill="#f5f6f8"/>'
        )

    if window is not None:
        wx0, wx1 = x(window[0].timestamp()), x(window[1].timestamp())
        out.append(
            f'<rect x="{wx0:.1f}" y="{rows_top}" width="{max(wx1 - wx0, 0.5):.1f}" '
            f'height="{rows_bottom - rows_top}" fill="{_WINDOW}" fill-opacity="0.75"/>'
        )
        for wx in (wx0, wx1):
            out.append(
                f'<line x1="{wx:.1f}" y1="{rows_top - 6}" x2="{wx:.1f}" y2="{rows_bottom}" '
                f'stroke="{_WINDOW_EDGE}" stroke-width="1.5" stroke-dasharray="6 3"/>'
            )

    # Axis: ticks in the runbook's zone, the date shown whenever it changes.
    out.append(
        f'<line x1="{_LABEL_W}" y1="{rows_top}" x2="{_LABEL_W + _CHART_W}" y2="{rows_top}" '
        'stroke="#555"/>'
    )
    last_date = ""
    tick = lo
    while tick <= hi + 1e-6:
        tx = x(tick)
        local = datetime.fromtimestamp(tick, tz)
        out.append(
            f'<line x1="{tx:.1f}" y1="{rows_top - 4}" x2="{tx:.1f}" y2="{rows_bottom}" '
            'stroke="#d0d4da" stroke-width="0.8"/>'
        )
        out.append(
            f'<text x="{tx:.1f}" y="{rows_top - 8}" text-anchor="middle" fill="#333">'
            f"{_esc(local.strftime('%H:%M'))}</text>"
        )
        day = local.strftime("%a %d %b")
        if day != last_date:
            out.append(
                f'<text x="{tx:.1f}" y="{rows_top - 24}" text-anchor="middle" '
                f'font-weight="bold" fill="#333">{_esc(day)}</text>'
            )
            last_date = day
        tick += step_s
    zone_name = getattr(tz, "key", None) or str(datetime.fromtimestamp(lo, tz).tzname())
    out.append(f'<text x="{_PAD}" y="{rows_top - 8}" fill="#666">times in {_esc(zone_name)}</text>')

    if not rows:
        out.append(
            f'<text x="{_LABEL_W + 8}" y="{rows_top + row_h - 6}" fill="#666">no steps</text>'
        )

    now = next((m[0].timestamp() for m in markers if m[1].strip().lower() == "now"), None)
    statuses_seen: dict[str, str] = {}
    any_critical = False
    for i, r in enumerate(rows):
        top = rows_top + i * row_h
        ps, pf = r.planned_start.timestamp(), r.planned_finish.timestamp()
        px0 = x(ps)
        pw = max(x(pf) - px0, 2.0)
        planned = f"{_hhmm(r.planned_start, tz)}–{_hhmm(r.planned_finish, tz)}"
        tip = f"{r.label} ({r.id}): planned {planned}"
        if r.critical:
            tip += ", critical"
            any_critical = True
        if r.actual_start is not None:
            done = _hhmm(r.actual_finish, tz) if r.actual_finish is not None else "…"
            tip += f"; actual {_hhmm(r.actual_start, tz)}–{done}"
        if r.status:
            tip += f"; {r.status}"
        out.append(f'<g class="row"><title>{_esc(tip)}</title>')
        text_y = (
            top + (bar_h if with_actuals else row_h / 2) + font * 0.35 + (3 if with_actuals else 0)
        )
        weight = ' font-weight="bold"' if r.critical else ""
        ident, title = _split_label(r)
        if ident:
            # Bold text runs ~10% wider: give the id what it needs, the title the rest.
            id_chars = math.ceil(len(ident) * (1.1 if r.critical else 1.0))
            rest = label_chars - id_chars - 1
            shown = _esc(_clip(ident, label_chars))
            if rest >= 4:
                shown += (
                    f'<tspan fill="#5b6573" font-weight="normal"> '
                    f"{_esc(_clip(title, rest))}</tspan>"
                )
            out.append(f'<text x="{_PAD}" y="{text_y:.1f}" fill="#111"{weight}>{shown}</text>')
        else:
            out.append(
                f'<text x="{_PAD}" y="{text_y:.1f}" fill="#222"{weight}>'
                f"{_esc(_clip(r.label, label_chars))}</text>"
            )
        bar_y = top + (3 if with_actuals else (row_h - bar_h) / 2)
        fill, edge = (_CRITICAL, _CRITICAL_EDGE) if r.critical else (_PLANNED, _PLANNED_EDGE)
        out.append(
            f'<rect x="{px0:.1f}" y="{bar_y:.1f}" width="{pw:.1f}" height="{bar_h}" '
            f'fill="{fill}" stroke="{edge}" stroke-width="0.8" rx="2"/>'
        )
        colour = STATUS_COLOURS.get(r.status or "", _STATUS_OTHER)
        if r.status:
            statuses_seen[r.status] = colour
            out.append(
                f'<rect x="{_LABEL_W - _PAD - 8}" y="{bar_y:.1f}" width="8" height="{bar_h}" '
                f'fill="{colour}"/>'
            )
        if r.actual_start is not None:
            a0 = r.actual_start.timestamp()
            if r.actual_finish is not None:
                a1 = r.actual_finish.timestamp()
                dash = ""
            else:  # still running: up to "now" if marked, else as long as planned
                a1 = now if now is not None and now >= a0 else a0 + (pf - ps)
                dash = ' stroke-dasharray="3 2"'
            ax0 = x(a0)
            aw = max(x(a1) - ax0, 2.0)
            out.append(
                f'<rect x="{ax0:.1f}" y="{bar_y + bar_h + 2:.1f}" width="{aw:.1f}" '
                f'height="{bar_h - 2}" fill="{colour}" stroke="#222" stroke-width="0.5"{dash}/>'
            )
        out.append("</g>")

    for k, (moment, label) in enumerate(markers):
        colour = _MARKER_COLOURS[k % len(_MARKER_COLOURS)]
        mx = x(moment.timestamp())
        y_end = rows_bottom + 6 + 14 * k
        out.append(
            f'<line x1="{mx:.1f}" y1="{rows_top - 4}" x2="{mx:.1f}" y2="{y_end}" '
            f'stroke="{colour}" stroke-width="2" stroke-dasharray="8 3"/>'
        )
        anchor = "end" if mx > _LABEL_W + _CHART_W * 0.75 else "start"
        nudge = -4 if anchor == "end" else 4
        out.append(
            f'<text x="{mx + nudge:.1f}" y="{rows_bottom + 14 + 14 * k}" text-anchor="{anchor}" '
            f'fill="{colour}" font-weight="bold">'
            f"{_esc(label)} {_esc(_hhmm(moment, tz))}</text>"
        )

    # Legend, so a printed chart explains itself.
    items: list[tuple[str, str]] = [(_PLANNED, "planned")]
    if any_critical:
        items.append((_CRITICAL, "critical path"))
    if window is not None:
        items.append((_WINDOW, "window"))
    items += [(c, f"actual: {s.replace('_', ' ')}") for s, c in statuses_seen.items()]
    lx = float(_PAD)
    for colour, text in items:
        out.append(
            f'<rect x="{lx:.1f}" y="{legend_y}" width="14" height="10" fill="{colour}" '
            'stroke="#555" stroke-width="0.5"/>'
        )
        out.append(f'<text x="{lx + 18:.1f}" y="{legend_y + 9}" fill="#333">{_esc(text)}</text>')
        lx += 30 + len(text) * font * 0.55
    out.append("</svg>")
    return "\n".join(out)
