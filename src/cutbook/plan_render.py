"""Show a :class:`~cutbook.planning.Plan` to people: terminal text, Markdown, JSON or HTML.

Text and Markdown are plain strings (no rich): they must print fast even for a
10,000-step plan and paste cleanly into a ticket. HTML is one self-contained,
printable page from ``templates/plan.html.j2`` with autoescaping on; jinja2 is
imported only when HTML is asked for.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime, tzinfo
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Literal

from cutbook.durations import format_duration
from cutbook.gantt import GanttRow, render_svg
from cutbook.model import Runbook
from cutbook.planning import Plan, PlannedStep

if TYPE_CHECKING:
    from jinja2 import Template

__all__ = ["Format", "render", "summary"]

Format = Literal["text", "md", "json", "html"]

_TITLE_WIDTH = 40


def render(plan: Plan, runbook: Runbook, fmt: Format) -> str:
    """Render ``plan`` (made from ``runbook``) in one of the four formats."""
    if fmt == "json":
        return json.dumps(plan.to_json(), indent=2, ensure_ascii=False)
    if fmt == "text":
        return _text(plan, runbook)
    if fmt == "md":
        return _markdown(plan, runbook)
    if fmt == "html":
        return _html(plan, runbook)
    raise ValueError(f"unknown plan format {fmt!r}: use text, md, json or html")


# --- shared wording ---------------------------------------------------------------


class _Clock:
    """Formats times as HH:MM, adding the date whenever it differs from the last shown.

    Seconds appear only if some time in the plan has them, so a plan of whole
    minutes reads cleanly and a plan with 90s steps is not silently rounded.
    """

    def __init__(self, plan: Plan, zone: tzinfo) -> None:
        self.zone = zone
        self.seconds = any(s.start.second or s.finish.second for s in plan.steps)
        self.last_date: str | None = None

    def __call__(self, moment: datetime) -> str:
        local = moment.astimezone(self.zone)
        clock = local.strftime("%H:%M:%S" if self.seconds else "%H:%M")
        day = local.strftime("%Y-%m-%d")
        if day != self.last_date:
            self.last_date = day
            return f"{day} {clock}"
        return clock


def _offset(local: datetime) -> str:
    raw = local.strftime("%z")
    return f"{raw[:3]}:{raw[3:]}"


def _full(moment: datetime, zone: tzinfo) -> str:
    """Date, time and UTC offset: unambiguous on its own, for the summary."""
    local = moment.astimezone(zone)
    text = local.strftime("%Y-%m-%d %H:%M:%S" if local.second else "%Y-%m-%d %H:%M")
    return f"{text} ({_offset(local)})"


def _span(first: datetime, last: datetime, zone: tzinfo) -> str:
    """A range, repeating the date and offset of its end only when they change."""
    a, b = first.astimezone(zone), last.astimezone(zone)
    if a.date() == b.date() and _offset(a) == _offset(b):
        clock = b.strftime("%H:%M:%S" if b.second else "%H:%M")
        return f"{a.strftime('%Y-%m-%d %H:%M')} → {clock} ({_offset(a)})"
    return f"{_full(a, zone)} → {_full(b, zone)}"


def _notes(step: PlannedStep, zone: tzinfo) -> list[str]:
    notes: list[str] = []
    if step.at is not None:
        notes.append(f"not before {step.at.astimezone(zone).strftime('%H:%M')}")
    if step.items_unknown:
        notes.append("item count unknown (planned as 1)")
    elif step.items is not None:
        notes.append(f"{step.items} items")
    if step.gate:
        notes.append("approval gate")
    if step.irreversible:
        notes.append("IRREVERSIBLE")
    if step.always:
        notes.append("always runs")
    return notes


def _fit_text(plan: Plan) -> str:
    if plan.fits_window:
        return f"yes, with {format_duration(plan.margin_s)} to spare"
    return f"NO: over the window by {format_duration(-plan.margin_s)}"


def _ponr_text(plan: Plan, zone: tzinfo) -> str:
    ponr = plan.point_of_no_return
    if ponr is None:
        return (
            "none: even abandoning at the very start, the always-run steps "
            f"({format_duration(plan.always_s)}) cannot finish inside the window"
        )
    text = _full(ponr, zone)
    if plan.ponr_limited_by is not None:
        return (
            f"{text}, the start of irreversible step {plan.ponr_limited_by}: "
            "after it the previous state cannot be restored"
        )
    undo = plan.rollback_cost_s(ponr)
    instant = ponr.astimezone(UTC)
    finishing = [s.id for s in plan.steps if s.rollback_s and s.finish.astimezone(UTC) == instant]
    if finishing:
        it, has = ("they", "have") if len(finishing) > 1 else ("it", "has")
        return (
            f"{text}, before {', '.join(finishing)} finishes: until then abandoning needs "
            f"{format_duration(undo)} of rollback + {format_duration(plan.always_s)} of "
            f"always-run steps; once {it} {has} finished, undoing {it} too would not fit"
        )
    text += (
        f"; abandoning then needs {format_duration(undo)} of rollback"
        f" + {format_duration(plan.always_s)} of always-run steps"
    )
    if ponr.astimezone(UTC) >= plan.finish.astimezone(UTC):
        text += " (later than the forecast finish: all of it can still be undone)"
    return text


def summary(plan: Plan, runbook: Runbook) -> list[tuple[str, str]]:
    """The plan's headline facts as (label, value) pairs, shared by every format."""
    zone = runbook.zone
    window_len = format_duration(plan.window_end.timestamp() - plan.window_start.timestamp())
    rows = [
        ("Window", f"{_span(plan.window_start, plan.window_end, zone)}, {window_len} long"),
        ("Start", _full(plan.start, zone)),
        ("Finish", f"{_full(plan.finish, zone)} (takes {format_duration(plan.duration_s)})"),
        ("Fits the window", _fit_text(plan)),
        ("Point of no return", _ponr_text(plan, zone)),
        ("Critical path", " → ".join(plan.critical_path)),
    ]
    unknown = [s.id for s in plan.steps if s.items_unknown]
    if unknown:
        rows.append(("Item counts unknown", ", ".join(unknown) + " (each planned as 1 item)"))
    return rows


def _table_rows(plan: Plan, zone: tzinfo) -> list[dict[str, str]]:
    clock = _Clock(plan, zone)
    rows: list[dict[str, str]] = []
    for s in plan.steps:
        start = clock(s.start)
        rows.append(
            {
                "mark": "*" if s.critical else "",
                "id": s.id,
                "title": s.title,
                "start": start,
                "finish": clock(s.finish),
                "duration": format_duration(s.estimate_s),
                "slack": format_duration(s.slack_s),
                "no_go": _no_go_text(s, zone),
                "notes": "; ".join(_notes(s, zone)),
            }
        )
    return rows


def _no_go_text(step: PlannedStep, zone: tzinfo) -> str:
    """When a no-go given after this step must come by; ``!`` when that is before it ends
    (once it has finished, abandoning no longer fits), ``-`` when no no-go can undo it."""
    if step.no_go_by is None:
        return "-"
    local = step.no_go_by.astimezone(zone)
    text = local.strftime("%H:%M:%S" if local.second else "%H:%M")
    return text + "!" if step.no_go_by < step.finish else text


# --- text ---------------------------------------------------------------------------

_COLUMNS = (
    ("mark", ""),
    ("id", "STEP"),
    ("title", "TITLE"),
    ("start", "START"),
    ("finish", "FINISH"),
    ("duration", "TAKES"),
    ("slack", "SLACK"),
    ("no_go", "NO-GO BY"),
    ("notes", "NOTES"),
)


def _clip(text: str, width: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def _text(plan: Plan, runbook: Runbook) -> str:
    zone = runbook.zone
    rows = _table_rows(plan, zone)
    for row in rows:
        row["title"] = _clip(row["title"], _TITLE_WIDTH)
    widths = {key: max([len(head)] + [len(r[key]) for r in rows]) for key, head in _COLUMNS}
    lines = [
        f"Plan for {runbook.name}: times in {runbook.timezone}, * = critical path",
        f"NO-GO BY: the latest no-go once the step has finished that still reopens "
        f"{format_duration(runbook.guard.margin.total_seconds())} before the window ends "
        "(! = already too late when it finishes, - = cannot be undone)",
        "",
    ]

    def line(cells: dict[str, str]) -> str:
        return "  ".join(cells[k].ljust(widths[k]) for k, _ in _COLUMNS).rstrip()

    lines.append(line({k: h for k, h in _COLUMNS}))
    lines.append(line({k: "-" * widths[k] for k, _ in _COLUMNS}))
    lines.extend(line(r) for r in rows)
    lines.append("")
    facts = summary(plan, runbook)
    label_w = max(len(label) for label, _ in facts) + 1
    lines.extend(f"{(label + ':').ljust(label_w)} {value}" for label, value in facts)
    return "\n".join(lines) + "\n"


# --- markdown -----------------------------------------------------------------------


def _md(text: str) -> str:
    """Make arbitrary text safe inside a Markdown table cell."""
    flat = " ".join(text.split())
    out = []
    for ch in flat:
        if ch in "\\`*_[]<>|#":
            out.append("\\" + ch)
        else:
            out.append(ch)
    return "".join(out)


def _markdown(plan: Plan, runbook: Runbook) -> str:
    zone = runbook.zone
    lines = [f"# Plan: {_md(runbook.name)}", ""]
    if runbook.description.strip():
        lines += [_md(runbook.description), ""]
    lines += [f"- **{label}:** {_md(value)}" for label, value in summary(plan, runbook)]
    lines += [
        "",
        f"Times in {_md(runbook.timezone)}; \\* marks the critical path.",
        "",
        "| | Step | Title | Start | Finish | Takes | Slack | No-go by | Notes |",
        "|---|---|---|---|---|---:|---:|---:|---|",
    ]
    for r in _table_rows(plan, zone):
        mark = "\\*" if r["mark"] else ""
        ident = f"**{_md(r['id'])}**" if r["mark"] else _md(r["id"])
        cells = [mark, ident, _md(r["title"]), r["start"], r["finish"], r["duration"]]
        cells += [r["slack"], r["no_go"], _md(r["notes"])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# --- html ---------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _template() -> Template:
    from importlib.resources import files

    from jinja2 import Environment

    source = files("cutbook").joinpath("templates/plan.html.j2").read_text(encoding="utf-8")
    env = Environment(autoescape=True, trim_blocks=True, lstrip_blocks=True)
    return env.from_string(source)


def gantt_rows(plan: Plan) -> Sequence[GanttRow]:
    """The plan's steps as chart rows (planned times only)."""
    return [
        GanttRow(
            id=s.id,
            label=s.title if s.title == s.id else f"{s.title} ({s.id})",
            planned_start=s.start,
            planned_finish=s.finish,
            critical=s.critical,
        )
        for s in plan.steps
    ]


def _html(plan: Plan, runbook: Runbook) -> str:
    from markupsafe import Markup

    zone = runbook.zone
    markers: list[tuple[datetime, str]] = []
    if plan.point_of_no_return is not None:
        markers.append((plan.point_of_no_return, "point of no return"))
    svg = render_svg(
        gantt_rows(plan),
        window=(plan.window_start, plan.window_end),
        markers=markers,
        tz=zone,
    )
    context: dict[str, Any] = {
        "name": runbook.name,
        "description": runbook.description,
        "timezone": runbook.timezone,
        "facts": [f for f in summary(plan, runbook) if f[0] != "Fits the window"],
        "fits": plan.fits_window,
        "fit_text": _fit_text(plan),
        "ponr_text": _ponr_text(plan, zone),
        "has_ponr": plan.point_of_no_return is not None,
        "gantt": Markup(svg),  # built by gantt.render_svg, which escapes every text
        "rows": _table_rows(plan, zone),
        "step_count": len(plan.steps),
        "critical_count": sum(1 for s in plan.steps if s.critical),
    }
    return _template().render(**context)
