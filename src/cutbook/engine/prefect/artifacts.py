"""The run's table and progress as Prefect artifacts, for people watching the UI.

Best-effort presentation: the journal is the record. The table is rendered
on the engine's loop (it reads the run's state) at most about once a second,
and handed to the :class:`~cutbook.engine.prefect.reporter.Reporter`, which
keeps only the latest and sends it when the server answers.
"""

from __future__ import annotations

import asyncio
import time

from cutbook.engine.prefect.reporter import Reporter
from cutbook.engine.state import RunState
from cutbook.engine.view import markdown_table, progress

EVERY_S = 1.0


def artifact_key(run_id: str) -> str:
    """Artifact keys allow lower-case letters, digits and dashes only."""
    return "cutover-" + "".join(c if c.isalnum() else "-" for c in run_id.lower())


class Artifacts:
    """Coalesces updates: one rendering about a second, the last one never lost."""

    def __init__(self, reporter: Reporter) -> None:
        self.reporter = reporter
        self._last = 0.0
        self._later: asyncio.TimerHandle | None = None

    def changed(self, run: RunState) -> None:
        wait = EVERY_S - (time.monotonic() - self._last)
        if wait <= 0:
            self.flush(run)
        elif self._later is None:
            self._later = asyncio.get_running_loop().call_later(wait, self.flush, run)

    def flush(self, run: RunState) -> None:
        if self._later is not None:
            self._later.cancel()
            self._later = None
        self._last = time.monotonic()
        self.reporter.artifact(markdown_table(run), progress(run) * 100)

    def close(self, run: RunState) -> None:
        """The final table, whatever was coalesced before."""
        self.flush(run)
