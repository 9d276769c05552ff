"""What a person at the terminal sees while a run goes: where to look, and a live table.

Both are observers of the engine: they read the run's state and never change it.
"""

from __future__ import annotations

import asyncio
import io
import logging
import os
import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TextIO

from rich.console import Console, RenderableType
from rich.live import Live
from rich.text import Text

from cutbook.cli.console import err, out
from cutbook.engine.board import Board, board, render_board
from cutbook.engine.observe import RunObserver

if TYPE_CHECKING:
    from cutbook.engine.state import Outcome, RunState

REFRESH_PER_SECOND = 2.0
"""Redraws a second: enough for a clock in seconds, cheap on a slow SSH link."""
TICK_S = 1.0
"""How often the loop re-reads a quiet run (a long wait changes nothing but the time)."""


class _Announcer(RunObserver):
    """Says where to look: the run id once prepared, the flow run once it starts."""

    def __init__(self, console: Console) -> None:
        self.console = console

    def run_prepared(self, run_id: str) -> None:
        self.console.print(f"run id: {run_id}", markup=False)

    def run_started(self, run: RunState, where: str | None) -> None:
        if where is not None:
            self.console.print(f"flow run: {where}", markup=False)


def terminal_observers() -> list[RunObserver]:
    return [_Announcer(out), LiveView(err)]


def terminal_size(console: Console) -> tuple[int, int]:
    """The terminal's size now, asked of the terminal itself: a stale ``COLUMNS`` or
    ``LINES`` in the environment must not make the table wider than the window."""
    try:
        size = os.get_terminal_size(console.file.fileno())
    except (AttributeError, OSError, ValueError):
        return console.size.width, console.size.height
    return size.columns, size.lines


class _Lines(io.TextIOBase):
    """Where log handlers write while the table is live: lines are only kept here, and
    the refresh thread prints them above the table a batch at a time, so logging never
    waits for the table to be drawn (at INFO a fan-out logs hundreds of lines)."""

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._partial = ""
        self._lines: list[str] = []

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return True

    def write(self, text: str) -> int:
        with self._lock:
            *done, self._partial = (self._partial + text).split("\n")
            self._lines.extend(done)
        return len(text)

    def take(self, everything: bool = False) -> list[str]:
        with self._lock:
            lines, self._lines = self._lines, []
            if everything and self._partial:
                lines.append(self._partial)
                self._partial = ""
        return lines


class _Live(Live):
    """rich's Live that prints the log lines written since the last redraw above the
    table, and skips a redraw when nothing changed (a redraw costs the engine's process
    tens of milliseconds of CPU)."""

    def __init__(self, lines: _Lines, changed: Callable[[], object], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.lines = lines
        self.changed = changed
        self._drawn: object = None

    def refresh(self) -> None:
        with self._lock:
            lines = self.lines.take()
            state = self.changed()
            if not lines and state == self._drawn and self._started:
                return
            self._drawn = state
            if lines and self._started and self.console.is_terminal:
                # Printing while live draws the table below the lines: one redraw for both.
                self._live_render.set_renderable(self.renderable)
                self._print(lines)
            else:
                self._print(lines)
                super().refresh()

    def print_lines(self, everything: bool = False) -> None:
        self._print(self.lines.take(everything))

    def _print(self, lines: list[str]) -> None:
        if lines:
            self.console.print(Text("\n").join(Text.from_ansi(line) for line in lines))


class LiveView(RunObserver):
    """One table redrawn in place on a terminal; when stdout or stderr is not a terminal
    (a pipe, CI, a log file) nothing: the log lines suffice, and nothing printed to the
    pipe can land in the middle of the table.

    The run's state is read on the engine's loop into a :class:`Board` (at every change
    and every :data:`TICK_S`); rich's refresh thread lays the latest board out at the
    terminal's size of the moment, so the table follows a resized window and never has
    a line wider or more lines than the terminal. Log lines written meanwhile are
    printed above the table instead of through it.
    """

    def __init__(
        self,
        console: Console,
        refresh_per_second: float = REFRESH_PER_SECOND,
        stdout_is_terminal: bool | None = None,
    ) -> None:
        self.console = console
        self.stdout_is_terminal = stdout_is_terminal
        """None: ask ``sys.stdout`` when the run starts."""
        self.refresh_per_second = refresh_per_second
        self.live: _Live | None = None
        self._board: Board | None = None
        self._boards = 0
        self._run: RunState | None = None
        self._tick: asyncio.TimerHandle | None = None
        self._streams: list[tuple[logging.StreamHandler[TextIO], TextIO]] = []

    def render(self) -> RenderableType:
        """The latest board at the terminal's current size (rich's refresh thread)."""
        width, height = terminal_size(self.console)
        if self._board is None:
            return ""
        return render_board(self._board, width, height)

    def _drawn_from(self) -> tuple[int, tuple[int, int]]:
        """What a redraw depends on: the board taken last and the terminal's size."""
        return self._boards, terminal_size(self.console)

    def _take(self, run: RunState) -> None:
        self._board = board(run)
        self._boards += 1

    def run_started(self, run: RunState, where: str | None) -> None:
        tty_out = self.stdout_is_terminal
        if tty_out is None:
            tty_out = _isatty(sys.stdout)
        if not (self.console.is_terminal and tty_out):
            return  # output piped or logged: the log lines tell the story
        self._run = run
        self._take(run)
        self.live = _Live(
            _Lines(),
            self._drawn_from,
            console=self.console,
            get_renderable=self.render,
            refresh_per_second=self.refresh_per_second,
            transient=False,
            redirect_stdout=True,
            redirect_stderr=True,
            vertical_overflow="crop",
        )
        self._route_logs(self.live.lines)
        self.live.start()
        try:
            self._tick = asyncio.get_running_loop().call_later(TICK_S, self._ticked)
        except RuntimeError:  # not on a loop (embedding code): changes still redraw
            self._tick = None

    def _ticked(self) -> None:
        if self.live is None or self._run is None:
            return
        self._take(self._run)
        self._tick = asyncio.get_running_loop().call_later(TICK_S, self._ticked)

    def run_changed(self, run: RunState) -> None:
        if self.live is not None:
            self._take(run)

    def run_finished(self, run: RunState, outcome: Outcome | None) -> None:
        if self.live is None:
            return
        if self._tick is not None:
            self._tick.cancel()
            self._tick = None
        self._take(run)
        try:
            self.live.print_lines(everything=True)
            self.live.refresh()
            self.live.stop()
        finally:
            self._restore_logs()
            self.live = None
            self._run = None

    def _route_logs(self, lines: _Lines) -> None:
        """Log handlers that write to the terminal (cutbook's, Prefect's, anyone's) write
        to ``lines`` instead, printed above the table; a line written past the live
        display would push the table down and leave a copy of it behind."""
        terminal = {id(s) for s in (sys.stderr, sys.__stderr__, sys.stdout, sys.__stdout__)}
        loggers = [logging.getLogger()] + [
            logger
            for logger in list(logging.Logger.manager.loggerDict.values())
            if isinstance(logger, logging.Logger)
        ]
        for logger in loggers:
            for handler in list(logger.handlers):
                if not isinstance(handler, logging.StreamHandler):
                    continue
                stream = handler.stream
                if id(stream) in terminal:
                    handler.setStream(lines)
                    self._streams.append((handler, stream))

    def _restore_logs(self) -> None:
        for handler, stream in self._streams:
            handler.setStream(stream)
        self._streams.clear()


def _isatty(stream: TextIO | None) -> bool:
    try:
        return stream is not None and stream.isatty()
    except (AttributeError, ValueError, OSError):
        return False
