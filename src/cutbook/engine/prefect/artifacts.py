"""The run's table and progress as Prefect artifacts, for people watching the UI.

Best-effort presentation: the journal is the record, so a failed artifact
write is logged and forgotten, never a reason to stop a run.
"""

from __future__ import annotations

import asyncio
import time
from uuid import UUID

import structlog
from prefect.artifacts import (
    acreate_markdown_artifact,
    acreate_progress_artifact,
    aupdate_progress_artifact,
)

from cutbook.engine.state import RunState
from cutbook.engine.view import markdown_table, progress

log = structlog.get_logger("cutbook.engine")


def artifact_key(run_id: str) -> str:
    """Artifact keys allow lower-case letters, digits and dashes only."""
    return "cutover-" + "".join(c if c.isalnum() else "-" for c in run_id.lower())


class Artifacts:
    """Coalesces updates: at most one artifact write in flight, about one a second."""

    def __init__(self, run_id: str) -> None:
        self.key = artifact_key(run_id)
        self._progress_id: UUID | None = None
        self._last = 0.0
        self._writing: asyncio.Task[None] | None = None
        self._dirty = False

    def changed(self, run: RunState) -> None:
        self._dirty = True
        if self._writing is not None and not self._writing.done():
            return
        self._writing = asyncio.get_running_loop().create_task(self._write_soon(run))

    async def _write_soon(self, run: RunState) -> None:
        while self._dirty:
            wait = 1.0 - (time.monotonic() - self._last)
            if wait > 0:
                await asyncio.sleep(wait)
            self._dirty = False
            self._last = time.monotonic()
            await self.flush(run)

    async def flush(self, run: RunState) -> None:
        try:
            await acreate_markdown_artifact(
                markdown=markdown_table(run),
                key=self.key,
                description="Planned versus actual, updated as steps finish",
            )
            pct = progress(run) * 100
            if self._progress_id is None:
                self._progress_id = await acreate_progress_artifact(
                    progress=pct, key=self.key + "-progress"
                )
            else:
                await aupdate_progress_artifact(self._progress_id, pct)
        except (OSError, RuntimeError, ValueError) as exc:
            log.warning(f"could not update the Prefect artifact: {exc}")

    async def close(self, run: RunState) -> None:
        """Wait for the write in flight, then write the final state."""
        if self._writing is not None:
            await asyncio.gather(self._writing, return_exceptions=True)
        await self.flush(run)
