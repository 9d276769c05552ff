"""The audit report: one data dict, rendered as HTML, Markdown or JSON.

Why one dict: the three forms must always say the same thing, so they are
rendered from the same data. The journal is already scrubbed when written;
the report runs the redactor again on everything it prints, in case a
journal came from an older or foreign writer.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import asdict
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path
from typing import Any, Literal

import jinja2
from markupsafe import Markup

from cutbook import __version__
from cutbook.audit.runs import format_time, run_mode, zone_label, zone_of
from cutbook.audit.signatures import signature_status
from cutbook.clock import is_real_clock
from cutbook.durations import format_duration
from cutbook.errors import UsageError
from cutbook.journal import (
    DEFAULT_LATE_TOLERANCE,
    RunSummary,
    StepSummary,
    format_anchor,
    make_anchor,
    parse_ts,
    read_records,
    resolve_run,
    summarize,
    verify,
)
from cutbook.redact import Redactor

ReportFormat = Literal["html", "md", "json"]
MAX_OUTCOMES_SHOWN = 50

# ---------------------------------------------------------------- report data


def _banner(summary: RunSummary) -> str | None:
    parts = []
    if summary.dry_run:
        parts.append("DRY RUN: nothing was changed on any system")
    if not is_real_clock(summary.clock):
        speed = f" at {summary.speed:g}x speed" if summary.speed else ""
        parts.append(
            f"REHEARSAL on a {summary.clock} clock{speed}: not a real cutover; "
            "times are simulated runbook times"
        )
    return " · ".join(parts) or None


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _step_data(st: StepSummary) -> dict[str, Any]:
    delay = st.start_delay
    return {
        "id": st.id,
        "title": st.title,
        "critical": st.critical,
        "planned": st.planned,
        "planned_start": _iso(st.planned_start),
        "planned_finish": _iso(st.planned_finish),
        "actual_start": _iso(st.actual_start),
        "actual_finish": _iso(st.actual_finish),
        "start_delay_s": delay.total_seconds() if delay is not None else None,
        "status": st.status,
        "error": st.error,
        "item_count": len(st.items),
        "waited_until": st.waited_until,
        "retried": st.retried,
        "changed": st.changed,
        "attempts": [asdict(a) for a in st.attempts],
        "outcomes": [asdict(o) for o in st.outcomes],
    }


def _flatten_versions(versions: Mapping[str, Any], prefix: str = "") -> list[list[str]]:
    flat: list[list[str]] = []
    for key, value in sorted(versions.items()):
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.extend(_flatten_versions(value, name + "."))
        else:
            flat.append([name, str(value)])
    return flat


def build_report(
    path: Path | str,
    *,
    hmac_key: bytes | None = None,
    anchor: Mapping[str, Any] | str | None = None,
    runbook_path: Path | str | None = None,
    redactor: Redactor | None = None,
    late_tolerance: timedelta = DEFAULT_LATE_TOLERANCE,
) -> dict[str, Any]:
    """The report's content as plain JSON data (what all three formats render)."""
    path = Path(path)
    redactor = redactor or Redactor()
    result = verify(path, hmac_key=hmac_key, anchor=anchor, runbook_path=runbook_path)
    summary = summarize(path, late_tolerance=late_tolerance)
    head: dict[str, Any] | None = None
    if result.ok and result.head_hash is not None and result.head_seq is not None:
        head = make_anchor(summary.run_id, result.head_seq, result.head_hash, hmac_key)
        head["line"] = format_anchor(head)
    if result.ok and result.torn_tail:
        status = "verified (torn last line from a crash)"
    elif result.ok:
        status = "verified"
    else:
        status = "FAILED"
    data: dict[str, Any] = {
        "report": {
            "format_version": 1,
            "generator": f"cutbook {__version__}",
            "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "journal": str(path),
            "late_tolerance_s": late_tolerance.total_seconds(),
        },
        "run": {
            "run_id": summary.run_id,
            "runbook_name": summary.runbook_name,
            "runbook_path": summary.runbook_path,
            "runbook_sha256": summary.runbook_sha256,
            "started_by": summary.started_by,
            "host": summary.host,
            "started_at": summary.started_at,
            "finished_at": summary.finished_at,
            "outcome": summary.outcome or "unfinished",
            "error": summary.error,
            "timezone": summary.timezone or "UTC",
            "clock": summary.clock,
            "speed": summary.speed,
            "dry_run": summary.dry_run,
            "mode": run_mode(summary.dry_run, summary.clock, summary.preflight),
            "banner": _banner(summary),
            "window": summary.window,
            "versions": summary.versions,
            "versions_flat": _flatten_versions(summary.versions),
            "variables": summary.variables,
            "plan": {
                "fits_window": summary.plan_fits_window,
                "finish": summary.plan_finish,
                "point_of_no_return": summary.point_of_no_return,
            },
            "records": summary.records,
            "unknown_events": summary.unknown_events,
        },
        "verification": {
            "status": status,
            "ok": result.ok,
            "problem": result.problem,
            "first_bad_line": result.first_bad_line,
            "first_bad_seq": result.first_bad_seq,
            "records_verified": result.records,
            "torn_tail": result.torn_tail,
            "complete": result.complete,
            "hmac_ok": result.hmac_ok,
            "runbook_hash_ok": result.runbook_hash_ok,
            "anchor_ok": result.anchor_ok,
            "head_seq": result.head_seq,
            "head_hash": result.head_hash,
            "warnings": result.warnings,
            "text": result.describe(),
        },
        "anchor": head,
        "approvals": [asdict(a) for a in summary.approvals],
        "answers": _answers(summary, path),
        "steps": [_step_data(st) for st in summary.steps],
        "deviations": [asdict(d) for d in summary.deviations],
        "rollbacks": [asdict(r) for r in summary.rollbacks],
        "guard": _guard_data(summary.guard_forecasts, summary.guard_decisions),
        "resumes": summary.resumes,
        "repairs": summary.repairs,
    }
    scrubbed: dict[str, Any] = redactor.scrub(data)
    return scrubbed


def _answers(summary: RunSummary, path: Path) -> list[dict[str, Any]]:
    """Every answer with its signature checked again here, from the journal itself."""
    try:
        status = signature_status(read_records(path, skip_bad=True))
    except OSError:
        status = {}
    rows = []
    for a in summary.answers:
        row = asdict(a)
        row["signature"] = status.get(a.seq, "unsigned") if a.seq is not None else "unsigned"
        if not a.signed:
            row["signature"] = "unsigned"
        row["sha_matches"] = (
            None if a.runbook_sha256 is None else a.runbook_sha256 == summary.runbook_sha256
        )
        row["anonymous"] = a.outcome != "refused" and (a.by or "").strip().lower() in (
            "",
            "unknown",
        )
        rows.append(row)
    return rows


def _guard_data(forecasts: list[dict[str, Any]], decisions: list[dict[str, Any]]) -> dict[str, Any]:
    """The deadline guard's story: its last forecast, its tightest moment, its alarms."""
    slacks = [f for f in forecasts if isinstance(f.get("slack_s"), int | float)]
    return {
        "forecasts": len(forecasts),
        "last": forecasts[-1] if forecasts else None,
        "tightest": min(slacks, key=lambda f: f["slack_s"]) if slacks else None,
        "decisions": decisions,
    }


# ---------------------------------------------------------------- rendering

_UNSAFE_SVG = re.compile(r"<\s*script|<\s*foreignObject|\son[a-z]+\s*=|javascript:", re.I)
_XMLNS = re.compile(r'\s+xmlns(?::\w+)?="http://www\.w3\.org/[^"]*"')


def _gantt(data: Mapping[str, Any]) -> tuple[Markup | None, str | None]:
    """The planned-vs-actual chart as inline SVG, or why there is none."""
    try:
        from cutbook.gantt import GanttRow, render_svg
    except ImportError:
        return None, "the Gantt chart module is not available in this installation"
    tz = zone_of(data["run"]["timezone"])
    rows = []
    for st in data["steps"]:
        start, finish = parse_ts(st["planned_start"]), parse_ts(st["planned_finish"])
        if start is None or finish is None:
            continue
        rows.append(
            GanttRow(
                id=st["id"],
                label=st["title"] if st["title"] == st["id"] else f"{st['id']}: {st['title']}",
                planned_start=start,
                planned_finish=finish,
                actual_start=parse_ts(st["actual_start"]),
                actual_finish=parse_ts(st["actual_finish"]),
                critical=bool(st["critical"]),
                status=st["status"],
            )
        )
    if not rows:
        return None, "the journal holds no plan to chart"
    window = data["run"]["window"]
    w_start, w_end = parse_ts(window.get("start")), parse_ts(window.get("end"))
    markers = []
    pnr = parse_ts(data["run"]["plan"]["point_of_no_return"])
    if pnr is not None:
        markers.append((pnr, "point of no return"))
    for d in data["guard"]["decisions"]:
        asked = parse_ts(d.get("asked_at"))
        if asked is not None:
            markers.append((asked, f"guard: {d.get('decision', '?')}"))
    svg = render_svg(
        rows,
        window=(w_start, w_end) if w_start and w_end else None,
        markers=markers,
        tz=tz,
    )
    if _UNSAFE_SVG.search(svg):
        return None, "the chart was withheld: it contained active content"
    svg = _XMLNS.sub("", svg)
    return Markup(svg), None


class _Verbatim(str):
    """Text for a Markdown code block: newlines folded, nothing else escaped."""

    __slots__ = ()


def _md_escape(value: Any) -> str:
    """Every value printed into Markdown: no tables broken, no HTML, no links."""
    if isinstance(value, _Verbatim):
        return " ".join(value.split())
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    text = " ".join(str(value).split())
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return re.sub(r"([\\`*_\[\]|#!])", r"\\\1", text)


def _html_finalize(value: Any) -> Any:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return value


def _environment(fmt: Literal["html", "md"], tz: tzinfo) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("cutbook", "templates"),
        autoescape=fmt == "html",
        undefined=jinja2.StrictUndefined,
        finalize=_html_finalize if fmt == "html" else _md_escape,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )

    def when(value: Any) -> str | None:
        return format_time(value, tz) if value else None

    def delay(seconds: Any) -> str | None:
        if not isinstance(seconds, int | float):
            return None
        return ("+" if seconds >= 0 else "") + format_duration(seconds)

    def as_json(value: Any) -> str:
        return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)

    env.filters["when"] = when
    env.filters["delay"] = delay
    env.filters["as_json"] = as_json
    env.filters["verbatim"] = _Verbatim
    return env


def render_report(data: Mapping[str, Any], fmt: ReportFormat) -> str:
    """Render report data as one self-contained HTML page, Markdown or JSON."""
    if fmt == "json":
        return json.dumps(data, indent=2, ensure_ascii=False, sort_keys=False) + "\n"
    if fmt not in ("html", "md"):
        raise UsageError(f"unknown report format {fmt!r}: use html, md or json")
    tz = zone_of(data["run"]["timezone"])
    env = _environment(fmt, tz)
    context: dict[str, Any] = {
        **data,
        "max_outcomes": MAX_OUTCOMES_SHOWN,
        # the zone named once, with its offset that night (what "+07:00" on each time means)
        "tz_name": zone_label(
            data["run"]["timezone"],
            parse_ts(data["run"]["window"].get("start")) or parse_ts(data["run"]["started_at"]),
        ),
    }
    if fmt == "html":
        svg, why = _gantt(data)
        context["gantt_svg"] = svg
        context["gantt_missing"] = why
    template = env.get_template("report.html.j2" if fmt == "html" else "report.md.j2")
    return template.render(context)


def report(
    journal_dir: Path | str,
    run_id: str,
    fmt: ReportFormat,
    *,
    hmac_key: bytes | None = None,
    anchor: Mapping[str, Any] | str | None = None,
    runbook_path: Path | str | None = None,
    redactor: Redactor | None = None,
    late_tolerance: timedelta = DEFAULT_LATE_TOLERANCE,
) -> str:
    """The audit report for one run as HTML, Markdown or JSON."""
    data = build_report(
        resolve_run(journal_dir, run_id),
        hmac_key=hmac_key,
        anchor=anchor,
        runbook_path=runbook_path,
        redactor=redactor,
        late_tolerance=late_tolerance,
    )
    return render_report(data, fmt)
