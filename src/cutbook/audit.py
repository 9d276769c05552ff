"""The auditor's side: list, show, verify, anchor and report on past runs.

Everything here returns data plus rendered strings; the CLI (``cutbook audit
…``) only prints them and picks exit codes. Reports are built from one data
dict, so the HTML, Markdown and JSON forms always say the same thing. The
journal is already scrubbed when written; the report runs the redactor again
on everything it prints, in case a journal came from an older or foreign
writer.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, timedelta, tzinfo
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import jinja2
from markupsafe import Markup

from cutbook import __version__
from cutbook.errors import ChainBroken, JournalError, UsageError
from cutbook.journal import (
    DEFAULT_LATE_TOLERANCE,
    INDEX_NAME,
    RUN_FINISHED,
    RUN_RESUMED,
    RUN_STARTED,
    RunSummary,
    StepSummary,
    VerifyResult,
    format_anchor,
    make_anchor,
    parse_anchor,
    parse_ts,
    read_records,
    summarize,
    verify,
)
from cutbook.redact import Redactor

ReportFormat = Literal["html", "md", "json"]
MAX_OUTCOMES_SHOWN = 50

# ---------------------------------------------------------------- finding runs


@dataclass
class RunListing:
    """One line of ``cutbook audit list``."""

    run_id: str
    path: Path
    runbook: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    outcome: str | None = None
    timezone: str | None = None
    dry_run: bool | None = None
    clock: str | None = None

    @property
    def started(self) -> datetime | None:
        return parse_ts(self.started_at)

    @property
    def local_date(self) -> date | None:
        """The start date in the runbook's zone: what the auditor calls "that night"."""
        started = self.started
        if started is None:
            return None
        return started.astimezone(_zone(self.timezone)).date()

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["path"] = str(self.path)
        return data


def _journal_files(journal_dir: Path) -> list[Path]:
    if not journal_dir.is_dir():
        return []
    return sorted(p for p in journal_dir.glob("*.jsonl") if p.name != INDEX_NAME)


def _read_index(journal_dir: Path) -> dict[str, dict[str, Any]]:
    """Merge index lines per run (later lines win); torn or odd lines are skipped."""
    merged: dict[str, dict[str, Any]] = {}
    try:
        raw = (journal_dir / INDEX_NAME).read_bytes()
    except OSError:
        return merged
    for line in raw.split(b"\n"):
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and isinstance(entry.get("run_id"), str):
            merged.setdefault(entry["run_id"], {}).update(entry)
    return merged


def _scan(path: Path) -> RunListing:
    """Build a listing from the journal itself (index missing or stale)."""
    listing = RunListing(run_id=path.stem, path=path)
    try:
        with open(path, "rb") as fh:
            for raw in fh:
                if not raw.endswith(b"\n"):
                    break
                if b'"event":"run.' in raw:
                    _scan_line(listing, raw)
    except OSError:
        pass
    return listing


def _scan_line(listing: RunListing, raw: bytes) -> None:
    try:
        rec = json.loads(raw)
    except ValueError:
        return
    if not isinstance(rec, dict):
        return
    event = rec.get("event")
    if event == RUN_STARTED and listing.started_at is None:
        listing.run_id = str(rec.get("run_id") or listing.run_id)
        listing.runbook = _opt_str(rec.get("runbook_name"))
        listing.started_at = _opt_str(rec.get("ts"))
        listing.timezone = _opt_str(rec.get("timezone"))
        listing.dry_run = bool(rec.get("dry_run"))
        listing.clock = _opt_str(rec.get("clock"))
    elif event == RUN_RESUMED:
        listing.outcome = listing.finished_at = None
    elif event == RUN_FINISHED:
        listing.outcome = _opt_str(rec.get("outcome"))
        listing.finished_at = _opt_str(rec.get("ts"))


def _opt_str(value: Any) -> str | None:
    return None if value is None else str(value)


def list_runs(
    journal_dir: Path | str,
    *,
    runbook: str | None = None,
    outcome: str | None = None,
    since: date | None = None,
    until: date | None = None,
) -> list[RunListing]:
    """Every run in ``journal_dir``, oldest first, filtered.

    Uses the index where it knows a finished run; any run the index lacks or
    has as unfinished is read from its journal, so a lost index loses nothing.
    ``outcome="unfinished"`` selects runs without ``run.finished``; dates are
    inclusive and compared in each runbook's own zone.
    """
    journal_dir = Path(journal_dir)
    index = _read_index(journal_dir)
    runs: list[RunListing] = []
    for path in _journal_files(journal_dir):
        entry = index.get(path.stem)
        if entry and entry.get("outcome") and entry.get("started_at"):
            listing = RunListing(
                run_id=path.stem,
                path=path,
                runbook=_opt_str(entry.get("runbook")),
                started_at=_opt_str(entry.get("started_at")),
                finished_at=_opt_str(entry.get("finished_at")),
                outcome=_opt_str(entry.get("outcome")),
                timezone=_opt_str(entry.get("timezone")),
                dry_run=entry.get("dry_run") if isinstance(entry.get("dry_run"), bool) else None,
                clock=_opt_str(entry.get("clock")),
            )
        else:
            listing = _scan(path)
        runs.append(listing)

    def keep(run: RunListing) -> bool:
        if runbook is not None and run.runbook != runbook:
            return False
        if outcome is not None and (run.outcome or "unfinished") != outcome:
            return False
        day = run.local_date
        if since is not None and (day is None or day < since):
            return False
        return not (until is not None and (day is None or day > until))

    far_past = datetime.min.replace(tzinfo=UTC)
    return sorted(filter(keep, runs), key=lambda r: (r.started or far_past, r.run_id))


def format_listing(runs: Sequence[RunListing]) -> str:
    """A plain text table for ``cutbook audit list``."""
    if not runs:
        return "no runs found"
    header = ("RUN", "RUNBOOK", "STARTED (UTC)", "OUTCOME", "MODE")
    rows = [header]
    for run in runs:
        started = run.started
        mode = "dry run" if run.dry_run else ("rehearsal" if _is_rehearsal(run.clock) else "real")
        rows.append(
            (
                run.run_id,
                run.runbook or "?",
                started.astimezone(UTC).strftime("%Y-%m-%d %H:%M") if started else "?",
                run.outcome or "unfinished",
                mode,
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows
    )


def resolve_run(journal_dir: Path | str, run_id: str) -> Path:
    """The journal file for a run id or a unique prefix of one."""
    journal_dir = Path(journal_dir)
    if not run_id or "/" in run_id or "\\" in run_id:
        raise UsageError(f"{run_id!r} is not a run id")
    exact = journal_dir / f"{run_id}.jsonl"
    if exact.is_file() and exact.name != INDEX_NAME:
        return exact
    matches = [p for p in _journal_files(journal_dir) if p.stem.startswith(run_id)]
    if not matches:
        raise UsageError(f"no run {run_id!r} in {journal_dir}")
    if len(matches) > 1:
        names = ", ".join(p.stem for p in matches[:10])
        raise UsageError(f"run id prefix {run_id!r} is ambiguous: {names}")
    return matches[0]


# ---------------------------------------------------------------- verify / anchor


def verify_run(
    journal_dir: Path | str,
    run_id: str,
    *,
    hmac_key: bytes | None = None,
    anchor: Mapping[str, Any] | str | None = None,
    runbook_path: Path | str | None = None,
) -> VerifyResult:
    """Verify one run's chain (and its HMACs, anchor and runbook hash if given)."""
    return verify(
        resolve_run(journal_dir, run_id),
        hmac_key=hmac_key,
        anchor=anchor,
        runbook_path=runbook_path,
    )


def verify_all(
    journal_dir: Path | str, *, hmac_key: bytes | None = None
) -> list[tuple[str, VerifyResult]]:
    """Verify every journal in the directory; the caller fails if any is not ok."""
    return [(p.stem, verify(p, hmac_key=hmac_key)) for p in _journal_files(Path(journal_dir))]


def anchor(journal_dir: Path | str, run_id: str, hmac_key: bytes | None = None) -> dict[str, Any]:
    """The verified head of a run, to paste into a ticket (see :func:`format_anchor`).

    Refuses to anchor a chain that does not verify: that would vouch for it.
    """
    path = resolve_run(journal_dir, run_id)
    result = verify(path, hmac_key=hmac_key)
    if not result.ok:
        raise ChainBroken(f"not anchoring a journal that fails verification: {result.problem}")
    if result.head_hash is None or result.head_seq is None:
        raise JournalError(f"{path} has no records to anchor")
    return make_anchor(result.run_id or path.stem, result.head_seq, result.head_hash, hmac_key)


# ---------------------------------------------------------------- show


_BULKY = frozenset({"runbook_text", "plan", "variables", "versions", "output"})


def _zone(name: str | None) -> tzinfo:
    if not name:
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return UTC


def _fmt_time(value: Any, tz: tzinfo) -> str:
    parsed = value if isinstance(value, datetime) else parse_ts(value)
    if parsed is None:
        return "" if value is None else str(value)
    local = parsed.astimezone(tz)
    return local.strftime("%Y-%m-%d %H:%M:%S %z")[:-2] + ":" + local.strftime("%z")[-2:]


def _short(value: Any, limit: int = 120) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def show(
    journal_dir: Path | str,
    run_id: str,
    *,
    redactor: Redactor | None = None,
    verbose: bool = False,
) -> str:
    """A readable timeline: one line per record, times in the runbook's zone."""
    path = resolve_run(journal_dir, run_id)
    redactor = redactor or Redactor()
    summary = summarize(path)
    tz = _zone(summary.timezone)
    out = [
        f"run {summary.run_id}  runbook {summary.runbook_name or '?'}  "
        f"sha256 {summary.runbook_sha256 or '?'}",
        f"started by {summary.started_by or '?'} on {summary.host or '?'}  "
        f"mode {_mode(summary)}  outcome {summary.outcome or 'unfinished'}",
        f"times in {getattr(tz, 'key', 'UTC')} (host clock)",
        "",
    ]
    for rec in read_records(path, skip_bad=True):
        rec = redactor.scrub(rec)
        event = str(rec.get("event", "?"))
        details = []
        for key, value in sorted(rec.items()):
            if key in {"seq", "ts", "run_id", "event", "prev", "hash"}:
                continue
            if key in _BULKY and not verbose:
                details.append(f"{key}=…")
                continue
            details.append(f"{key}={_short(value)}")
        seq = rec.get("seq", "?")
        out.append(f"{_fmt_time(rec.get('ts'), tz)}  #{seq:<5} {event:<18} {' '.join(details)}")
    out.append("")
    out.append(verify(path).describe())
    return "\n".join(out)


# ---------------------------------------------------------------- report data


def _is_rehearsal(clock: str | None) -> bool:
    return clock not in (None, "real", "wall")


def _mode(summary: RunSummary) -> str:
    if summary.dry_run:
        return "dry run"
    if _is_rehearsal(summary.clock):
        return "rehearsal"
    return "real"


def _banner(summary: RunSummary) -> str | None:
    parts = []
    if summary.dry_run:
        parts.append("DRY RUN: nothing was changed on any system")
    if _is_rehearsal(summary.clock):
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
            "mode": _mode(summary),
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
        "steps": [_step_data(st) for st in summary.steps],
        "deviations": [asdict(d) for d in summary.deviations],
        "rollbacks": [asdict(r) for r in summary.rollbacks],
        "resumes": summary.resumes,
        "repairs": summary.repairs,
    }
    scrubbed: dict[str, Any] = redactor.scrub(data)
    return scrubbed


# ---------------------------------------------------------------- rendering

_UNSAFE_SVG = re.compile(r"<\s*script|<\s*foreignObject|\son[a-z]+\s*=|javascript:", re.I)
_XMLNS = re.compile(r'\s+xmlns(?::\w+)?="http://www\.w3\.org/[^"]*"')


def _gantt(data: Mapping[str, Any]) -> tuple[Markup | None, str | None]:
    """The planned-vs-actual chart as inline SVG, or why there is none."""
    try:
        from cutbook.gantt import GanttRow, render_svg
    except ImportError:
        return None, "the Gantt chart module is not available in this installation"
    tz = _zone(data["run"]["timezone"])
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
        return _fmt_time(value, tz) if value else None

    def delay(seconds: Any) -> str | None:
        if not isinstance(seconds, int | float):
            return None
        sign = "+" if seconds >= 0 else "-"
        total = int(abs(seconds))
        hours, rest = divmod(total, 3600)
        minutes, secs = divmod(rest, 60)
        text = f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"
        return sign + text

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
    tz = _zone(data["run"]["timezone"])
    env = _environment(fmt, tz)
    context: dict[str, Any] = {
        **data,
        "max_outcomes": MAX_OUTCOMES_SHOWN,
        "tz_name": getattr(tz, "key", "UTC"),
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


__all__ = [
    "ReportFormat",
    "RunListing",
    "anchor",
    "build_report",
    "format_anchor",
    "format_listing",
    "list_runs",
    "parse_anchor",
    "render_report",
    "report",
    "resolve_run",
    "show",
    "verify_all",
    "verify_run",
]
