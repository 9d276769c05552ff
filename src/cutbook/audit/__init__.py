"""The auditor's side: list, show, verify, anchor and report on past runs.

Everything here returns data plus rendered strings; the CLI (``cutbook audit
…``) only prints them and picks exit codes. Finding runs lives in
:mod:`cutbook.audit.runs`, the report in :mod:`cutbook.audit.report`; both
are importable from here, as they always were.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Final

from cutbook.audit.report import ReportFormat, build_report, render_report, report
from cutbook.audit.runs import (
    RunListing,
    format_listing,
    format_time,
    list_runs,
    offset_of,
    run_mode,
    zone_label,
    zone_of,
)
from cutbook.audit.signatures import SignatureReport, check_signatures, signature_status
from cutbook.durations import format_duration
from cutbook.errors import ChainBroken, JournalError
from cutbook.journal import (
    RESERVED_FIELDS,
    RunSummary,
    StepSummary,
    VerifyResult,
    format_anchor,
    journal_files,
    make_anchor,
    parse_anchor,
    parse_ts,
    read_records,
    resolve_run,
    summarize,
    verify,
)
from cutbook.journal.fold import AnswerRecord
from cutbook.redact import Redactor

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
    return [(p.stem, verify(p, hmac_key=hmac_key)) for p in journal_files(Path(journal_dir))]


def verify_signatures(journal_dir: Path | str, run_id: str) -> SignatureReport:
    """Re-check a run's signed answers against its journalled runbook's keys.

    Apart from :func:`verify_run` because it answers another question (who
    answered, not whether the file changed); ``cutbook audit verify`` asks both.
    Reads what it can of a damaged journal: the chain check names the damage.
    """
    return check_signatures(read_records(resolve_run(journal_dir, run_id), skip_bad=True))


def verdict(
    run_id: str,
    result: VerifyResult,
    signatures: SignatureReport,
    *,
    store: Sequence[str] = (),
    store_passed: bool = True,
) -> tuple[list[str], bool]:
    """What ``cutbook audit verify`` prints for one run, and whether it passed.

    The verdict is said once, on the first line (``RUN: OK: ...`` or ``RUN:
    FAILED: <the first reason>``); the lines under it, indented, are the
    evidence (the file, the checks, each signature problem) and never repeat it.
    ``store`` holds the lines comparing the worker's file with the audit store,
    the first of them the reason when ``store_passed`` is false.
    """
    sig_head, *sig_rest = signatures.lines()
    reasons = []
    if not result.passed:
        reasons.append(result.problem or "the journal does not verify")
    if not signatures.passed:
        reasons.append(sig_head)
    if not store_passed and store:
        reasons.append(store[0])
    chain = ""
    if result.passed:
        end = "ends with run.finished" if result.complete else "not finished: the run is live"
        chain = f"{result.records} records verify, {end}"
        if result.head_hash:
            chain += f"; head seq {result.head_seq} hash {result.head_hash}"
    where = f"  journal: {result.path}" if result.path else "  journal: ?"
    if reasons:
        lines = [f"{run_id}: FAILED: {reasons[0]}", where + (f": {chain}" if chain else "")]
    else:
        lines = [f"{run_id}: OK: {chain}", where]
    if result.passed and result.problem:
        lines.append(f"  note: {result.problem}")
    if result.ok and not result.passed and result.torn_tail:
        lines.append(
            f"  the run crashed: resume it with cutbook resume {result.run_id or run_id} "
            "(the torn line is cut away and the repair journalled)"
        )
    if result.hmac_ok is not None:
        lines.append(f"  hmac: {'ok' if result.hmac_ok else 'BAD'}")
    if result.runbook_hash_ok:  # a difference is said by the problem or a warning
        lines.append("  runbook hash: matches")
    if result.anchor_ok is not None:
        lines.append(f"  anchor: {'matches' if result.anchor_ok else 'DOES NOT MATCH'}")
    if sig_head not in reasons[:1]:
        lines.append(f"  {sig_head}")
    lines.extend(sig_rest)
    lines.extend(f"  {line}" for line in store if line not in reasons[:1])
    lines.extend(f"  warning: {w}" for w in result.warnings)
    return lines, not reasons


def anchor(journal_dir: Path | str, run_id: str, hmac_key: bytes | None = None) -> dict[str, Any]:
    """The verified head of a run, to paste into a ticket (see :func:`format_anchor`).

    Refuses (:class:`ChainBroken`, exit 1) a chain that does not verify: that
    would vouch for it. An intact run without run.finished (live, crashed or
    cut: the anchor cannot tell) is anchored, marked ``"finished": False`` so
    the output says so; the pasted line stays the head alone.
    """
    path = resolve_run(journal_dir, run_id)
    result = verify(path, hmac_key=hmac_key)
    if not result.ok:
        raise ChainBroken(f"not anchoring a journal that fails verification: {result.problem}")
    if result.head_hash is None or result.head_seq is None:
        raise JournalError(f"{path} has no records to anchor")
    head = make_anchor(result.run_id or path.stem, result.head_seq, result.head_hash, hmac_key)
    if not result.complete:
        head["finished"] = False
    return head


SUMMARY_NOTE_WIDTH: Final = 60
"""A step's note is cut here so every step stays on one line of a terminal."""


def _short(value: Any, limit: int = 120) -> str:
    """One field on one timeline line: long values would bury the timeline."""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def show(
    journal_dir: Path | str,
    run_id: str,
    *,
    redactor: Redactor | None = None,
    verbose: bool = False,
    reports_dir: Path | str | None = None,
) -> str:
    """What ``cutbook audit show`` prints: a one-screen summary, or every record.

    The summary is what an auditor reads first (who, what, when, how it ended,
    whether the journal verifies); ``verbose`` is the whole timeline, one line
    per record. Both give times in the runbook's zone and name it once.
    ``reports_dir`` is where a written report is looked for.
    """
    path = resolve_run(journal_dir, run_id)
    redactor = redactor or Redactor()
    summary = summarize(path)
    if verbose:
        return _timeline(path, summary, redactor)
    return _summary(path, summary, redactor, Path(reports_dir) if reports_dir else None)


def _timeline(path: Path, summary: RunSummary, redactor: Redactor) -> str:
    """Every record, one line each: time, seq, event, every field (long ones cut)."""
    tz = zone_of(summary.timezone)
    mode = run_mode(summary.dry_run, summary.clock, summary.preflight)
    out = [
        f"run {summary.run_id}  runbook {summary.runbook_name or '?'}  "
        f"sha256 {summary.runbook_sha256 or '?'}",
        f"started by {summary.started_by or '?'} on {summary.host or '?'}  "
        f"mode {mode}  outcome {summary.outcome or 'unfinished'}",
        f"times in {zone_label(summary.timezone, parse_ts(summary.started_at))}; the first "
        "column is when the host wrote each record",
        "",
    ]
    for rec in read_records(path, skip_bad=True):
        rec = redactor.scrub(rec)
        event = str(rec.get("event", "?"))
        details = []
        for key, value in sorted(rec.items()):
            if key not in RESERVED_FIELDS:
                details.append(f"{key}={_short(value)}")
        seq = rec.get("seq", "?")
        out.append(f"{format_time(rec.get('ts'), tz)}  #{seq:<5} {event:<18} {' '.join(details)}")
    out.append("")
    out.append(verify(path).describe())
    return "\n".join(out)


class _Clock:
    """Times for the summary: the zone is named once, so each time goes without it,
    unless its offset differs from the named one (a daylight-saving change mid-night)."""

    def __init__(self, zone: str | None, anchor: datetime | None) -> None:
        self.tz = zone_of(zone)
        self.offset = offset_of(anchor, self.tz)
        self.label = zone_label(zone, anchor)

    def at(self, moment: datetime | str | None, fmt: str = "%Y-%m-%d %H:%M:%S") -> str:
        parsed = moment if isinstance(moment, datetime) else parse_ts(moment)
        if parsed is None:
            return "-"
        text = parsed.astimezone(self.tz).strftime(fmt)
        offset = offset_of(parsed, self.tz)
        return text if offset == self.offset else f"{text} {offset}"


def _cut(text: str, width: int = SUMMARY_NOTE_WIDTH) -> str:
    """One line, at most ``width`` characters: a long error would wrap the table."""
    text = " ".join(text.splitlines())
    return text if len(text) <= width else text[: width - 1] + "…"


def _answer_note(answers: list[AnswerRecord]) -> str:
    """The last answer to a step's question, as one phrase: what was decided and by whom."""
    if not answers:
        return ""
    a = answers[-1]
    if a.outcome == "timeout":
        return "no answer in time"
    if a.outcome == "refused":
        return f"answer by {a.by or '?'} refused"
    word = {"go": "approved", "no-go": "rejected"}.get(a.outcome, a.outcome)
    return f"{word} by {a.by or '?'}" + (" (auto)" if a.auto else "")


def _step_note(st: StepSummary, summary: RunSummary, redactor: Redactor) -> str:
    """Who answered, how late, how often retried, why it failed: what an auditor asks."""
    parts = [_answer_note([a for a in summary.answers if a.step == st.id])]
    kinds = {d.kind for d in summary.deviations if d.step == st.id}
    delay = st.start_delay
    if "late" in kinds and delay is not None:
        parts.append(f"late {format_duration(delay)}")
    if "overran" in kinds and st.actual_finish and st.planned_finish:
        parts.append(f"over {format_duration(st.actual_finish - st.planned_finish)}")
    if "retried" in kinds:
        parts.append(f"{len(st.attempts)} failed attempt(s)")
    if "unplanned" in kinds:
        parts.append("not in the plan")
    if st.error and st.status in ("failed", "skipped", "rolled_back"):
        parts.append(" ".join(st.error.split()))
    return _cut(redactor.scrub_text("; ".join(p for p in parts if p)))


def _status(st: StepSummary, summary: RunSummary) -> str:
    if st.status:
        return st.status
    return "not run" if summary.finished else "not finished"


def _step_table(summary: RunSummary, clock: _Clock, redactor: Redactor) -> list[str]:
    rows = [("STEP", "STATUS", "START", "FINISH", "ITEMS", "NOTES")]
    for st in summary.steps:
        rows.append(
            (
                st.id,
                _status(st, summary),
                clock.at(st.actual_start, "%m-%d %H:%M:%S"),
                clock.at(st.actual_finish, "%m-%d %H:%M:%S"),
                str(len(st.items)) if st.items else "-",
                _step_note(st, summary, redactor),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = []
    for r in rows:
        cells = [r[i].ljust(widths[i]) for i in range(4)]
        lines.append("  ".join([*cells, r[4].rjust(widths[4]), r[5]]).rstrip())
    return lines


def _gates_line(summary: RunSummary) -> str:
    answers = summary.answers
    if not summary.approvals and not answers:
        return "none asked"
    auto = sum(1 for a in answers if a.auto and a.outcome != "refused")
    people = sorted({a.by or "?" for a in answers if not a.auto and a.outcome != "refused"})
    parts = [f"{len(summary.approvals)} asked"]
    if auto:
        parts.append(f"{auto} answered automatically")
    if people:
        parts.append(f"answered by {', '.join(people)}")
    for outcome, words in (("refused", "refused"), ("timeout", "timed out")):
        n = sum(1 for a in answers if a.outcome == outcome)
        if n:
            parts.append(f"{n} {words}")
    unanswered = sum(1 for g in summary.approvals if g.answered_at is None)
    if unanswered:
        parts.append(f"{unanswered} never answered")
    return ", ".join(parts)


def _work_line(summary: RunSummary) -> str:
    fanned = [st for st in summary.steps if st.items]
    items = sum(len(st.items) for st in fanned)
    changed = sum(
        1 for st in summary.steps for o in st.outcomes if o.phase == "apply" and o.changed
    )
    failed = sum(len(st.attempts) for st in summary.steps)
    retried = sum(1 for st in summary.steps if st.attempts)
    return (
        f"{items} item(s) in {len(fanned)} fan-out step(s); {changed} change(s) applied; "
        f"{failed} failed attempt(s) in {retried} step(s)"
    )


def _guard_line(summary: RunSummary, clock: _Clock) -> str | None:
    forecasts = summary.guard_forecasts
    if not forecasts:
        return None
    slacks = [f for f in forecasts if isinstance(f.get("slack_s"), int | float)]
    text = f"{len(forecasts)} forecast(s)"
    if slacks:
        tight = min(slacks, key=lambda f: float(f["slack_s"]))
        text += (
            f"; tightest slack {format_duration(float(tight['slack_s']))} "
            f"at {clock.at(tight.get('at'), '%H:%M:%S')}"
        )
    decisions = summary.guard_decisions
    if not decisions:
        return text + "; no alarm"
    said = ", ".join(f"{d.get('decision', '?')} by {d.get('by', '?')}" for d in decisions)
    return text + f"; {len(decisions)} alarm(s): {said}"


def _journal_line(result: VerifyResult, signatures: SignatureReport) -> str:
    """The verdict, said once: the chain, how it ends, and the signatures' summary line."""
    if result.passed:
        end = "ends with run.finished" if result.complete else "live run, not finished yet"
        text = f"OK: {result.records} records verify, {end}"
        if result.head_hash:
            text += f"; head seq {result.head_seq} hash {result.head_hash[:12]}…"
    else:
        text = f"FAILED: {result.problem}"
    if result.warnings:
        text += f" ({len(result.warnings)} warning(s): see cutbook audit verify)"
    return f"{text}; {signatures.lines()[0]}"


def _summary(path: Path, summary: RunSummary, redactor: Redactor, reports_dir: Path | None) -> str:
    """One screen: identity, window, who and when, one line per step, then the totals."""
    started = parse_ts(summary.started_at)
    window = summary.window
    clock = _Clock(summary.timezone, parse_ts(window.get("start")) or started)
    mode = run_mode(summary.dry_run, summary.clock, summary.preflight)
    real_time = mode in ("real", "dry run", "preflight")
    rid = summary.run_id
    outcome = summary.outcome or ("interrupted" if summary.interrupted else "unfinished")
    head = f"run {rid}: {outcome}"
    if summary.error:
        head += f": {redactor.scrub_text(summary.error)}"
    if mode == "rehearsal":
        speed = f" at {summary.speed:g}x" if summary.speed else ""
        mode += f" on a {summary.clock} clock{speed}: step times are simulated"
    elif mode == "real":
        mode += ": real systems, real time"
    out = [
        _cut(head, 120),
        f"runbook   {summary.runbook_name or '?'} ({summary.runbook_path or '?'})",
        f"sha256    {summary.runbook_sha256 or '?'}",
        f"mode      {mode}",
    ]
    if window:
        plan = ""
        if summary.plan_finish:
            fits = {True: "fits", False: "does NOT fit", None: "fit unknown"}
            plan = (
                f"; planned finish {clock.at(summary.plan_finish, '%m-%d %H:%M')} "
                f"({fits[summary.plan_fits_window]})"
            )
        if summary.point_of_no_return:
            plan += f"; point of no return {clock.at(summary.point_of_no_return, '%H:%M')}"
        out.append(
            f"window    {clock.at(window.get('start'), '%Y-%m-%d %H:%M')} to "
            f"{clock.at(window.get('end'), '%Y-%m-%d %H:%M')}{plan}"
        )
    finished = parse_ts(summary.finished_at)
    took = f" ({format_duration(finished - started)})" if started and finished else ""
    until = "…"
    if finished is not None:
        same_day = started is not None and clock.at(started, "%F") == clock.at(finished, "%F")
        until = clock.at(finished, "%H:%M:%S" if same_day else "%Y-%m-%d %H:%M:%S")
    host = "" if real_time else " host time"
    out.append(
        f"ran       {clock.at(started)} to {until}{host}{took}, "
        f"by {summary.started_by or '?'} on {summary.host or '?'}"
    )
    if summary.interrupted:
        out.append(
            f"stopped   by {summary.interrupted.get('signal') or '?'} at "
            f"{clock.at(summary.interrupted.get('ts'))}: "
            f"{summary.interrupted.get('resume_command') or 'cutbook resume ' + rid}"
        )
    if summary.resumes:
        who = ", ".join(
            f"{r.get('by') or '?'} at {clock.at(r.get('ts'), '%m-%d %H:%M')}"
            for r in summary.resumes
        )
        out.append(_cut(f"resumed   {len(summary.resumes)}x: {who}", 120))
    out.append(f"times in {clock.label}")
    out.append("")
    out.extend(_step_table(summary, clock, redactor))
    out.append("")
    out.append(f"gates     {_gates_line(summary)}")
    out.append(f"work      {_work_line(summary)}")
    for rb in summary.rollbacks:
        result = {True: "ok", False: "FAILED", None: "unfinished"}[rb.ok]
        out.append(
            _cut(
                f"rollback  {clock.at(rb.started_at, '%H:%M:%S')}: {rb.reason or '?'}; undid "
                f"{', '.join(rb.steps) or 'nothing'}: {result}",
                120,
            )
        )
    guard = _guard_line(summary, clock)
    if guard:
        out.append(f"guard     {guard}")
    signatures = check_signatures(read_records(path, skip_bad=True))
    out.append(f"journal   {_journal_line(verify(path), signatures)}")
    out.append(f"report    {_report_where(rid, reports_dir)}")
    out.append(f"every record: cutbook audit show {rid} --verbose")
    return "\n".join(out)


def _report_where(run_id: str, reports_dir: Path | None) -> str:
    """The report already written for this run (as ``cutbook demo`` does), or how to write one."""
    if reports_dir is not None and reports_dir.is_dir():
        written = sorted(p for p in reports_dir.glob(f"{run_id}.*") if p.is_file())
        if written:
            return ", ".join(str(p) for p in written)
    return f"none written yet: cutbook audit report {run_id} -o {run_id}.html"


__all__ = [
    "ReportFormat",
    "RunListing",
    "SignatureReport",
    "anchor",
    "build_report",
    "check_signatures",
    "format_anchor",
    "format_listing",
    "list_runs",
    "parse_anchor",
    "render_report",
    "report",
    "resolve_run",
    "show",
    "signature_status",
    "verdict",
    "verify_all",
    "verify_run",
    "verify_signatures",
]
