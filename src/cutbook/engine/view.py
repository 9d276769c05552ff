"""What a run looks like to people: one row per step, and the UI's markdown table.

The terminal's board (:mod:`cutbook.engine.board`) and the Prefect artifact are
built from the same :class:`Row` per step, taken on the engine's loop
(:func:`rows`), so they can never disagree on
what is late, how often a step was tried, or who answered a gate. Every cell is
one line: a summary is flattened (JSON becomes ``key=value``) and cut to fit,
because a table that wraps cannot be redrawn in place.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from cutbook.durations import format_duration

if TYPE_CHECKING:
    from cutbook.engine.state import RunState, StepState

STATUS_STYLE = {
    "succeeded": "green",
    "dry_run": "cyan",
    "failed": "bold red",
    "rolled_back": "magenta",
    "skipped": "dim",
    "running": "bold yellow",
    "waiting": "blue",
    "pending": "dim",
}
STATUS_GLYPH = {
    "succeeded": "✓",
    "dry_run": "○",
    "failed": "✗",
    "rolled_back": "↺",
    "skipped": "-",
    "running": "▸",
    "waiting": "…",
    "pending": "·",
}
SETTLED = ("succeeded", "failed", "rolled_back", "skipped", "dry_run")
ON_TIME_S = 60.0
"""Closer to the plan than this counts as on time (the plan is in whole minutes)."""
SUMMARY_CHARS = 100
"""The artifact's summaries: one line of a Markdown table."""


@dataclass(frozen=True)
class Delta:
    """Actual minus planned, in seconds (positive: late); ``at_least`` while it still grows
    (a step past its planned start that has not started, or past its finish and running)."""

    seconds: float
    at_least: bool = False

    @property
    def on_time(self) -> bool:
        return not self.at_least and abs(self.seconds) < ON_TIME_S


@dataclass(frozen=True)
class Row:
    """One step as people see it, in plain values (rendered by the terminal and Markdown)."""

    step_id: str
    status: str
    planned_start: datetime | None
    planned_finish: datetime | None
    started: datetime | None
    finished: datetime | None
    start_delta: Delta | None
    finish_delta: Delta | None
    attempts: str
    """Apply attempts of a plain step; ``1 each`` or ``+N retries`` for a fan-out; a gate's
    answer (``go``, ``no-go``, ``asking``)."""
    items_done: int | None
    items_total: int | None
    summary: str
    """One line: the error, a gate's who/until, or the result's summary without raw JSON."""

    @property
    def settled(self) -> bool:
        return self.status in SETTLED

    @property
    def active(self) -> bool:
        return self.status in ("running", "waiting")


# -- building rows (on the engine's loop) ---------------------------------------------------


def rows(run: RunState) -> list[Row]:
    """Every step's row, in runbook order, as of the run's clock now."""
    now = run.clock.now()
    return [step_row(run, st, now) for st in run.states.values()]


def step_row(run: RunState, st: StepState, now: datetime) -> Row:
    fan_out = st.step.for_each is not None and bool(st.items)
    return Row(
        step_id=st.step.id,
        status=st.status,
        planned_start=st.planned_start,
        planned_finish=st.planned_finish,
        started=st.started,
        finished=st.finished,
        start_delta=start_delta(st, now),
        finish_delta=finish_delta(st, now),
        attempts=attempts(run, st),
        items_done=sum(1 for i in st.items if i.status == "succeeded") if fan_out else None,
        items_total=len(st.items) if fan_out else None,
        summary=summary(run, st),
    )


def start_delta(st: StepState, now: datetime) -> Delta | None:
    """Started minus planned start; for a step still waiting past its planned start, how
    late it is already."""
    if st.planned_start is None:
        return None
    if st.started is not None:
        return Delta((st.started - st.planned_start).total_seconds())
    if st.status in ("pending", "waiting") and now > st.planned_start:
        return Delta((now - st.planned_start).total_seconds(), at_least=True)
    return None


def finish_delta(st: StepState, now: datetime) -> Delta | None:
    """Finished minus planned finish; for a step still running past its planned finish (or
    not started by then), how late it is already."""
    if st.planned_finish is None:
        return None
    if st.finished is not None:
        return Delta((st.finished - st.planned_finish).total_seconds())
    if st.status in ("pending", "waiting", "running") and now > st.planned_finish:
        return Delta((now - st.planned_finish).total_seconds(), at_least=True)
    return None


def attempts(run: RunState, st: StepState) -> str:
    """How often the step's change was applied: a fan-out's items each once plus its
    retries (never the item count); a gate says how it was answered."""
    step = st.step
    if step.approval is not None:
        if _asking(run, st):
            return "asking"
        if st.status in ("succeeded", "dry_run"):
            return "go"
        if st.status == "failed":
            return "no-go"
        return ""
    if step.for_each is not None and st.items:
        tried = sum(1 for i in st.items if i.status != "pending")
        retries = max(0, st.attempts - tried)
        if retries:
            return f"+{retries} retr{'y' if retries == 1 else 'ies'}"
        return "1 each" if st.attempts else ""
    return str(st.attempts) if st.attempts else ""


def _asking(run: RunState, st: StepState) -> bool:
    return run.waiting is not None and run.waiting.question.step_id == st.step.id


def gate_words(run: RunState, st: StepState) -> str:
    """A gate in words: who may answer and until when, or who answered."""
    spec = st.step.approval
    assert spec is not None
    if run.waiting is not None and _asking(run, st):
        q = run.waiting.question
        who = ", ".join(q.approvers) or "any operator"
        so_far = f" ({len(q.approved_by)} of {q.quorum} so far)" if q.quorum > 1 else ""
        return (
            f"waiting for go/no-go from {who}{so_far} until {_hm(run.waiting.deadline, run, False)}"
        )
    if st.status in ("succeeded", "dry_run"):
        if run.opts.dry_run or run.opts.auto_approve:
            return f"go (auto-approved for {run.opts.started_by})"
        return f"go from {st.answered_by}" if st.answered_by else "go"
    if st.status == "failed":
        return st.error or "no-go"
    who = ", ".join(spec.approvers) or "any operator"
    return f"asks {who} (within {format_duration(spec.timeout)})"


def summary(run: RunState, st: StepState) -> str:
    """The step's one line: what it waits for, how its gate went, its error or its result."""
    if st.step.approval is not None:
        return gate_words(run, st)
    if run.waiting is not None and _asking(run, st):
        what = "a decision" if run.waiting.question.kind == "failure" else "confirmation"
        return f"waiting for {what} until {_hm(run.waiting.deadline, run, False)}"
    text = st.error or st.summary
    if not text and st.status == "running" and st.items:
        text = st.joined_summary()
    return one_line(text)


_PAIR = re.compile(r'"([^"\\]{1,40})"\s*:\s*("(?:[^"\\]|\\.)*"?|[^,{}\[\]"]+)')


def one_line(text: str) -> str:
    """Whitespace collapsed and JSON written as ``key=value`` pairs: a table cell, not a
    payload. A body cut short by the adapter keeps the pairs it still has."""
    text = " ".join(text.split())
    start = _json_start(text)
    if start is None:
        return text
    head, body = text[:start], text[start:]
    try:
        value, end = json.JSONDecoder().raw_decode(body)
    except ValueError:
        pairs = [f"{k}={_short(_unquote(v))}" for k, v in _PAIR.findall(body)]
        return (head + " ".join(pairs) + (" …" if pairs else "…")).strip()
    tail = body[end:]
    rest = one_line(tail)
    gap = " " if rest and tail[:1].isspace() else ""
    return (head + _flat(value) + gap + rest).strip()


def _json_start(text: str) -> int | None:
    match = re.search(r'(?:^|\s)([\[{])\s*["\[{\]}\d-]', text)
    return match.start(1) if match else None


def _unquote(raw: str) -> Any:
    raw = raw.strip()
    try:
        return json.loads(raw)
    except ValueError:
        return raw.strip('"')


def _flat(value: Any) -> str:
    if isinstance(value, dict):
        return " ".join(f"{k}={_short(v)}" for k, v in value.items()) or "{}"
    if isinstance(value, list):
        return f"[{len(value)} items]" if value else "[]"
    return _short(value)


def _short(value: Any, limit: int = 40) -> str:
    if isinstance(value, dict):
        text = "{…}"
    elif isinstance(value, list):
        text = f"[{len(value)}]"
    elif isinstance(value, bool) or value is None:
        text = json.dumps(value)
    else:
        text = str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: max(0, limit - 1)] + "…"


# -- words shared by both views ---------------------------------------------------------------


def _hm(when: datetime | None, run: RunState, seconds: bool = True) -> str:
    if when is None:
        return "—"
    return when.astimezone(run.rb.zone).strftime("%H:%M:%S" if seconds else "%H:%M")


def short_delta(delta: Delta | None) -> str:
    """``0``, ``+34m`` (late), ``-2m`` (early), ``≥+5m`` (late and growing), ``…`` unknown."""
    if delta is None:
        return "…"
    if delta.on_time:
        return "0"
    minutes = int(abs(delta.seconds) // 60)
    hours, minutes = divmod(minutes, 60)
    size = f"{hours}h{minutes:02d}m" if hours else f"{minutes}m"
    return ("≥" if delta.at_least else "") + ("-" if delta.seconds < 0 else "+") + size


def vs_plan(row: Row) -> str:
    """Start and finish against the plan in one cell: ``on time`` only when both are."""
    s, f = row.start_delta, row.finish_delta
    if s is None and f is None:
        return ""
    if s is not None and f is not None and s.on_time and f.on_time:
        return "on time"
    return f"{short_delta(s)}/{short_delta(f)}"


def delta_words(delta: Delta | None) -> str:
    """``on time``, ``34m late``, ``2m early``, ``at least 5m late``; empty when unknown."""
    if delta is None:
        return ""
    if delta.on_time:
        return "on time"
    size = format_duration(abs(delta.seconds))
    if delta.at_least:
        return f"at least {size} late"
    return f"{size} late" if delta.seconds > 0 else f"{size} early"


def progress(run: RunState) -> float:
    states = list(run.states.values())
    return sum(1 for s in states if s.status in SETTLED) / max(1, len(states))


def waiting_parts(run: RunState) -> tuple[str, str]:
    """What the run waits for (the question, since when, who may answer, the quorum so
    far, the deadline) and the exact command that answers it; empty when nothing waits."""
    w = run.waiting
    if w is None:
        return "", ""
    q = w.question
    what = {
        "gate": f"go/no-go {q.step_id}",
        "manual": f"confirmation of {q.step_id}",
        "failure": f"a decision on failed step {q.step_id}",
        "guard": "the deadline guard's go/no-go",
    }[q.kind]
    who = ", ".join(q.approvers) or "any operator, by name"
    quorum = (
        f" · quorum {len(q.approved_by)} of {q.quorum}"
        + (f" ({', '.join(q.approved_by)})" if q.approved_by else "")
        if q.kind == "gate" and q.quorum > 1
        else ""
    )
    answer = "--decision retry|skip|rollback" if q.kind == "failure" else "--approve|--reject"
    key = " --key FILE" if q.signed else ""
    rehearsal = " (rehearsal clock)" if run.clock.kind != "real" else ""
    return (
        f"waiting for {what} since {_hm(w.since, run)} · who may answer: {who}{quorum} · "
        f"answer by {_hm(w.deadline, run)}{rehearsal}",
        f"cutbook approve {run.opts.run_id} {q.step_id} --by NAME {answer}{key}",
    )


def waiting_line(run: RunState) -> str:
    """What the run waits for, in one line, ending with the command that answers it."""
    what, command = waiting_parts(run)
    return f"{what} · `{command}`" if what else ""


def guard_line(run: RunState) -> str:
    """The deadline guard's latest forecast in one line: planned and forecast finish, slack,
    and until when a no-go still fits."""
    fc = run.guard_forecast
    if fc is None:
        return ""
    slack = (
        f"{format_duration(fc.slack_s)} to spare"
        if fc.fits
        else f"OVERRUNS by {format_duration(-fc.slack_s)}"
    )
    if fc.point_of_no_return is not None:
        ponr = f"no-go fits until {_hm(fc.point_of_no_return, run)}"
    elif fc.irreversible_done:
        ponr = "past the point of no return (irreversible work done)"
    else:
        ponr = "past the point of no return"
    return (
        f"planned finish {_hm(fc.planned_finish, run)} · forecast {_hm(fc.finish, run)} · "
        f"{slack} · {ponr}"
    )


def clock_words(run: RunState) -> str:
    return (
        f"clock {run.clock.kind}"
        + (f" ×{run.clock.speed:g}" if run.clock.kind == "virtual" else "")
        + (" · DRY RUN" if run.opts.dry_run else "")
    )


# -- the Prefect artifact ---------------------------------------------------------------------


def _md(text: str) -> str:
    """A Markdown table cell: one line, pipes escaped, no HTML."""
    return " ".join(text.split()).replace("\\", "\\\\").replace("|", "\\|").replace("<", "&lt;")


def _span(a: datetime | None, b: datetime | None, run: RunState) -> str:
    if a is None and b is None:
        return "—"
    return f"{_hm(a, run)} → {_hm(b, run)}"


def items_words(row: Row) -> str:
    if row.items_total is None:
        return ""
    pct = 100 * (row.items_done or 0) // max(1, row.items_total)
    return f"{row.items_done}/{row.items_total} ({pct}%)"


def markdown_table(run: RunState) -> str:
    """The artifact: planned against actual start and finish, attempts, fan-out progress,
    gates' answers, one line of summary per step."""
    rb = run.rb
    lines = [
        f"# {rb.name}: planned versus actual",
        "",
        f"Run `{run.opts.run_id}` · {clock_words(run).replace('DRY RUN', '**DRY RUN**')} · "
        f"window {_hm(run.window_start, run)}–{_hm(run.window_end, run)} ({rb.timezone}) · "
        f"{sum(1 for s in run.states.values() if s.status in SETTLED)}/{len(run.states)} "
        "steps done",
        "",
    ]
    waiting = waiting_line(run)
    if waiting:
        lines += [f"**Waiting:** {_md(waiting)}", ""]
    guard = guard_line(run)
    if guard:
        lines += [f"**Deadline guard:** {guard}", ""]
    if run.refusals:
        lines += ["**Refused answers:**", ""] + [f"- {_md(r)}" for r in run.refusals[-5:]] + [""]
    lines += [
        "| step | status | planned start → finish | actual start → finish | start vs plan "
        "| finish vs plan | attempts | items | summary |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows(run):
        lines.append(
            "| "
            + " | ".join(
                _md(cell)
                for cell in (
                    row.step_id,
                    row.status,
                    _span(row.planned_start, row.planned_finish, run),
                    _span(row.started, row.finished, run),
                    delta_words(row.start_delta),
                    delta_words(row.finish_delta),
                    row.attempts,
                    items_words(row),
                    cut(row.summary, SUMMARY_CHARS),
                )
            )
            + " |"
        )
    if run.failure:
        lines += ["", f"**Failure:** {_md(run.failure)}"]
    return "\n".join(lines)
