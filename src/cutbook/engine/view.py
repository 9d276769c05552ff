"""What a run looks like to people: the terminal's live table and the UI's markdown."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from rich.console import RenderableType
from rich.table import Table
from rich.text import Text

from cutbook.durations import format_duration

if TYPE_CHECKING:
    from cutbook.engine.state import RunState, StepState

_STYLE = {
    "succeeded": "green",
    "dry_run": "cyan",
    "failed": "bold red",
    "rolled_back": "magenta",
    "skipped": "dim",
    "running": "bold yellow",
    "waiting": "blue",
    "pending": "dim",
}
_DONE = ("succeeded", "failed", "rolled_back", "skipped", "dry_run")


def _hm(when: datetime | None, run: RunState) -> str:
    return when.astimezone(run.rb.zone).strftime("%H:%M:%S") if when else "—"


def _late(st: StepState) -> str:
    if st.started is None or st.planned_start is None:
        return ""
    delta = (st.started - st.planned_start).total_seconds()
    if abs(delta) < 60:
        return "on time"
    return ("+" if delta > 0 else "-") + format_duration(abs(delta))


def progress(run: RunState) -> float:
    states = list(run.states.values())
    return sum(1 for s in states if s.status in _DONE) / max(1, len(states))


def markdown_table(run: RunState) -> str:
    rb = run.rb
    lines = [
        f"# {rb.name}: planned versus actual",
        "",
        f"Run `{run.opts.run_id}` · clock {run.clock.kind}"
        + (f" ×{run.clock.speed:g}" if run.clock.kind == "virtual" else "")
        + (" · **DRY RUN**" if run.opts.dry_run else "")
        + f" · window {_hm(run.window_start, run)}–{_hm(run.window_end, run)} "
        f"({rb.timezone})",
        "",
    ]
    waiting = waiting_line(run)
    if waiting:
        lines += [f"**Waiting:** {waiting}", ""]
    guard = guard_line(run)
    if guard:
        lines += [f"**Deadline guard:** {guard}", ""]
    if run.refusals:
        lines += ["**Refused answers:**", ""] + [f"- {r}" for r in run.refusals[-5:]] + [""]
    lines += [
        "| step | status | planned | actual start | actual finish | vs plan | attempts | summary |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for st in run.states.values():
        summary = (st.error or st.summary or "").replace("|", "\\|").replace("\n", " ")[:120]
        planned = f"{_hm(st.planned_start, run)}–{_hm(st.planned_finish, run)}"
        lines.append(
            f"| {st.step.id} | {st.status} | {planned} | {_hm(st.started, run)} | "
            f"{_hm(st.finished, run)} | {_late(st)} | {st.attempts} | {summary} |"
        )
    if run.failure:
        lines += ["", f"**Failure:** {run.failure}"]
    return "\n".join(lines)


def waiting_line(run: RunState) -> str:
    """What the run waits for, in one line: the question, since when, who may answer, the
    quorum so far, the deadline, and the exact command that answers it."""
    w = run.waiting
    if w is None:
        return ""
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
        f"answer by {_hm(w.deadline, run)}{rehearsal} · "
        f"`cutbook approve {run.opts.run_id} {q.step_id} --by NAME {answer}{key}`"
    )


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


def live_table(run: RunState) -> RenderableType:
    table = Table(
        title=f"{run.rb.name} — {run.clock.now().astimezone(run.rb.zone):%H:%M:%S}",
        title_justify="left",
        expand=False,
    )
    for col in ("step", "status", "planned", "started", "finished", "vs plan", "tries", "summary"):
        table.add_column(col, overflow="ellipsis", no_wrap=col != "summary", max_width=60)
    for st in run.states.values():
        items = (
            f" [{sum(1 for i in st.items if i.status == 'succeeded')}/{len(st.items)}]"
            if st.step.for_each and st.items
            else ""
        )
        table.add_row(
            st.step.id,
            Text(st.status + items, style=_STYLE.get(st.status, "")),
            f"{_hm(st.planned_start, run)}–{_hm(st.planned_finish, run)}",
            _hm(st.started, run),
            _hm(st.finished, run),
            _late(st),
            str(st.attempts or ""),
            (st.error or st.summary or "")[:80],
        )
    done = sum(1 for s in run.states.values() if s.status in _DONE)
    guard = guard_line(run)
    waiting = waiting_line(run)
    table.caption = (
        f"{done}/{len(run.states)} steps done"
        + (f"\n{waiting}" if waiting else "")
        + (f"\nrefused: {run.refusals[-1]}" if run.refusals else "")
        + (f" · guard: {guard}" if guard else "")
        + (f" · failing: {run.failure}" if run.failure else "")
    )
    return table
