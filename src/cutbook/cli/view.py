"""What a person at the terminal sees while a run goes: where to look, and a live table.

Both are observers of the engine: they read the run's state and never change it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.console import Console
from rich.live import Live

from cutbook.cli.console import err, out
from cutbook.engine.observe import RunObserver
from cutbook.engine.view import live_table

if TYPE_CHECKING:
    from cutbook.engine.state import Outcome, RunState


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


class LiveView(RunObserver):
    """A live table on a terminal; on a pipe (CI, logs) nothing: the log lines suffice."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.live: Live | None = None

    def run_started(self, run: RunState, where: str | None) -> None:
        if self.console.is_terminal:
            self.live = Live(
                live_table(run), console=self.console, refresh_per_second=4, transient=False
            )
            self.live.start()

    def run_changed(self, run: RunState) -> None:
        if self.live is not None:
            self.live.update(live_table(run))

    def run_finished(self, run: RunState, outcome: Outcome | None) -> None:
        if self.live is not None:
            self.live.update(live_table(run))
            self.live.stop()
            self.live = None
