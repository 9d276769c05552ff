"""What a run looks like to people: the terminal's live table and the UI's markdown."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from rich.console import Console, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from cutbook.durations import format_duration

if TYPE_CHECKING:
    from cutbook.engine.runner import Runner, StepState

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


def _hm(when: datetime | None, runner: Runner) -> str:
    return when.astimezone(runner.rb.zone).strftime("%H:%M:%S") if when else "—"


def _late(st: StepState) -> str:
    if st.started is None or st.planned_start is None:
        return ""
    delta = (st.started - st.planned_start).total_seconds()
    if abs(delta) < 60:
        return "on time"
    return ("+" if delta > 0 else "-") + format_duration(abs(delta))


def progress(runner: Runner) -> float:
    states = list(runner.states.values())
    return sum(1 for s in states if s.status in _DONE) / max(1, len(states))


def markdown_table(runner: Runner) -> str:
    rb = runner.rb
    lines = [
        f"# {rb.name}: planned versus actual",
        "",
        f"Run `{runner.opts.run_id}` · clock {runner.clock.kind}"
        + (f" ×{runner.clock.speed:g}" if runner.clock.kind == "virtual" else "")
        + (" · **DRY RUN**" if runner.opts.dry_run else "")
        + f" · window {_hm(runner.window_start, runner)}–{_hm(runner.window_end, runner)} "
        f"({rb.timezone})",
        "",
        "| step | status | planned | actual start | actual finish | vs plan | attempts | summary |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for st in runner.states.values():
        summary = (st.error or st.summary or "").replace("|", "\\|").replace("\n", " ")[:120]
        planned = f"{_hm(st.planned_start, runner)}–{_hm(st.planned_finish, runner)}"
        lines.append(
            f"| {st.step.id} | {st.status} | {planned} | {_hm(st.started, runner)} | "
            f"{_hm(st.finished, runner)} | {_late(st)} | {st.attempts} | {summary} |"
        )
    if runner.failure:
        lines += ["", f"**Failure:** {runner.failure}"]
    return "\n".join(lines)


def live_table(runner: Runner) -> RenderableType:
    table = Table(
        title=f"{runner.rb.name} — {runner.clock.now().astimezone(runner.rb.zone):%H:%M:%S}",
        title_justify="left",
        expand=False,
    )
    for col in ("step", "status", "planned", "started", "finished", "vs plan", "tries", "summary"):
        table.add_column(col, overflow="ellipsis", no_wrap=col != "summary", max_width=60)
    for st in runner.states.values():
        items = (
            f" [{sum(1 for i in st.items if i.status == 'succeeded')}/{len(st.items)}]"
            if st.step.for_each and st.items
            else ""
        )
        table.add_row(
            st.step.id,
            Text(st.status + items, style=_STYLE.get(st.status, "")),
            f"{_hm(st.planned_start, runner)}–{_hm(st.planned_finish, runner)}",
            _hm(st.started, runner),
            _hm(st.finished, runner),
            _late(st),
            str(st.attempts or ""),
            (st.error or st.summary or "")[:80],
        )
    done = sum(1 for s in runner.states.values() if s.status in _DONE)
    table.caption = f"{done}/{len(runner.states)} steps done" + (
        f" · failing: {runner.failure}" if runner.failure else ""
    )
    return table


class LiveView:
    """A live table on a terminal; on a pipe (CI, logs) nothing: the log lines suffice."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.live: Live | None = None

    def start(self, runner: Runner) -> None:
        if self.console.is_terminal:
            self.live = Live(
                live_table(runner), console=self.console, refresh_per_second=4, transient=False
            )
            self.live.start()

    def update(self, runner: Runner) -> None:
        if self.live is not None:
            self.live.update(live_table(runner))

    def stop(self, runner: Runner) -> None:
        if self.live is not None:
            self.live.update(live_table(runner))
            self.live.stop()
            self.live = None
