"""The terminal's live board: the rows of :mod:`cutbook.engine.view`, fitted to a screen.

A table that wraps or grows past the terminal cannot be redrawn in place, so the
board is cut to the terminal's width (columns dropped in order of importance, the
summary taking what is left) and height (running, failed and waiting steps first,
then the latest settled ones, and a count of the rest).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from cutbook.engine.view import (
    SETTLED,
    STATUS_GLYPH,
    STATUS_STYLE,
    Row,
    clock_words,
    guard_line,
    one_line,
    rows,
    vs_plan,
    waiting_parts,
)

if TYPE_CHECKING:
    from cutbook.engine.state import RunState


@dataclass(frozen=True)
class Board:
    """A run's state for the terminal, taken on the engine's loop: the refresh thread lays
    it out at the terminal's size of the moment without touching the run."""

    title: str
    rows: tuple[Row, ...]
    zone: ZoneInfo
    footers: tuple[str, ...]


def board(run: RunState) -> Board:
    now = run.clock.now()
    done = sum(1 for s in run.states.values() if s.status in SETTLED)
    title = (
        f"{run.rb.name} · {now.astimezone(run.rb.zone):%H:%M:%S} ({run.rb.timezone}) · "
        f"{done}/{len(run.states)} steps done · {clock_words(run)}"
    )
    what, command = waiting_parts(run)
    footers = [
        *([what, "  " + command] if what else []),
        *([f"failing: {run.failure}"] if run.failure else []),
        *([f"guard: {guard_line(run)}"] if run.guard_forecast is not None else []),
        *([f"refused: {run.refusals[-1]}"] if run.refusals else []),
    ]
    return Board(title, tuple(rows(run)), run.rb.zone, tuple(one_line(f) for f in footers))


def pick(all_rows: Sequence[Row], room: int) -> list[Row]:
    """At most ``room`` rows, in runbook order: failed and running or waiting steps first,
    then the latest settled ones, then the next ones to start."""
    if len(all_rows) <= room:
        return list(all_rows)
    order = list(range(len(all_rows)))
    urgent = [i for i in order if all_rows[i].active or all_rows[i].status == "failed"]
    settled = sorted(
        (i for i in order if all_rows[i].settled and i not in urgent),
        key=lambda i: (all_rows[i].finished is not None, all_rows[i].finished or 0, i),
        reverse=True,
    )
    upcoming = [i for i in order if not all_rows[i].settled and i not in urgent]
    chosen = (urgent + settled + upcoming)[: max(0, room)]
    return [all_rows[i] for i in sorted(chosen)]


_BAR = 8


def _bar(row: Row) -> Text:
    total = row.items_total or 0
    done = row.items_done or 0
    filled = round(_BAR * done / total) if total else 0
    text = Text("█" * filled, style="green")
    text.append("░" * (_BAR - filled), style="dim")
    text.append(f" {done}/{total}")
    return text


def _fit(text: str | Text, width: int) -> Text:
    """One line of at most ``width`` cells, cut with an ellipsis."""
    line = Text(text) if isinstance(text, str) else text.copy()
    line.no_wrap = True
    line.overflow = "ellipsis"
    if line.cell_len > width:
        line.truncate(max(0, width), overflow="ellipsis")
    return line


def render_board(b: Board, width: int, height: int) -> RenderableType:
    """The live view at ``width`` × ``height``: never a line wider, never more lines.

    One line per step (glyph, step, planned and actual start→finish, start/finish against
    the plan, attempts, items done, summary cut to what is left); when the steps do not
    fit, the running, waiting and failed ones, the latest settled ones and a
    ``… N more`` line.
    """
    width = max(10, width)
    room = max(1, height - 1)  # the cursor's line
    header_lines = 2  # title, column heads
    footers = list(b.footers)
    keep_rows = min(len(b.rows), 3)
    while footers and header_lines + keep_rows + len(footers) > room:
        footers.pop()
    row_room = room - header_lines - len(footers)
    shown = b.rows
    more = 0
    if len(b.rows) > row_room:
        shown = tuple(pick(b.rows, row_room - 1))
        more = len(b.rows) - len(shown)
    parts: list[RenderableType] = [_fit(Text(b.title, style="bold"), width)]
    if row_room > 0 and shown:
        parts.append(_table(b, shown, width))
    elif row_room > 0:
        parts.append(Text(""))
    if more:
        hidden = [r for r in b.rows if r not in shown]
        settled = sum(1 for r in hidden if r.settled)
        parts.append(
            _fit(
                Text(f"… {more} more ({settled} settled, {more - settled} to come)", style="dim"),
                width,
            )
        )
    parts += [_fit(line, width) for line in footers]
    return Group(*parts[: max(1, room)])


def _hm_zone(when: datetime | None, zone: ZoneInfo) -> str:
    return when.astimezone(zone).strftime("%H:%M") if when is not None else "--:--"


def _table(b: Board, shown: Sequence[Row], width: int) -> Table:
    fan_out = any(r.items_total is not None for r in shown)
    cells: dict[str, list[str | Text]] = {
        "": [
            Text(STATUS_GLYPH.get(r.status, "?"), style=STATUS_STYLE.get(r.status, ""))
            for r in shown
        ],
        "step": [Text(r.step_id, style=STATUS_STYLE.get(r.status, "")) for r in shown],
        "planned": [
            f"{_hm_zone(r.planned_start, b.zone)}→{_hm_zone(r.planned_finish, b.zone)}"
            for r in shown
        ],
        "actual": [
            ""
            if r.started is None
            else f"{_hm_zone(r.started, b.zone)}→"
            + (_hm_zone(r.finished, b.zone) if r.finished is not None else "…")
            for r in shown
        ],
        "vs plan": [vs_plan(r) for r in shown],
        "tries": [r.attempts for r in shown],
        "items": [_bar(r) if r.items_total is not None else "" for r in shown] if fan_out else [],
        "summary": [r.summary for r in shown],
    }
    if not fan_out:
        del cells["items"]

    def need(name: str) -> int:
        values = [Text(c).cell_len if isinstance(c, str) else c.cell_len for c in cells[name]]
        return max([len(name), *values])

    widths = {name: need(name) for name in cells}
    widths["step"] = min(widths["step"], 28)
    # What goes first when the terminal is narrow; the summary takes what is left.
    for drop in ("planned", "items", "tries", "actual", "vs plan"):
        left = width - sum(w for n, w in widths.items() if n != "summary") - (len(widths) - 1)
        if left >= 20 or drop not in widths:
            continue
        del widths[drop]
    left = width - sum(w for n, w in widths.items() if n != "summary") - (len(widths) - 1)
    if left < 6:
        shrink = min(widths["step"] - 6, 6 - left)
        widths["step"] -= max(0, shrink)
        left = width - sum(w for n, w in widths.items() if n != "summary") - (len(widths) - 1)
    if left < 6:
        del widths["summary"]
    else:
        widths["summary"] = left
    table = Table(
        box=None,
        padding=(0, 1, 0, 0),
        pad_edge=False,
        show_edge=False,
        header_style="bold",
        expand=False,
    )
    names = list(widths)
    for name in names:
        table.add_column(
            name,
            width=widths[name],
            no_wrap=True,
            overflow="ellipsis",
            justify="right" if name == "tries" else "left",
        )
    for i in range(len(shown)):
        table.add_row(*(_fit(cells[name][i], widths[name]) for name in names))
    return table


def live_table(run: RunState, width: int = 120, height: int = 40) -> RenderableType:
    """The live view of ``run`` laid out for a ``width`` × ``height`` terminal."""
    return render_board(board(run), width, height)
