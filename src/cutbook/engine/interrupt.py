"""Waits inside a step that end when the run turns to rollback.

A no-go (from the deadline guard, a gate or a failure elsewhere) must start
the rollback while intake can still reopen in time: a step that is merely
waiting (a ``wait`` sleep or poll, a retry back-off) gives way at once, failing
with a clear reason, instead of holding the rollback for hours. Work already
sent to a system is never cut off: only waiting ends early, where no request
is in flight. ``always`` steps and rollbacks wait on regardless.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from cutbook.clock import sleep_until
from cutbook.engine.state import RunState, StepFailed


class StepInterrupted(StepFailed):
    """A step's wait ended because the run is rolling back or aborting."""


class StepClock:
    """The clock a step's adapter calls and retries see (see the module docstring)."""

    def __init__(self, run: RunState, *, interruptible: bool) -> None:
        self._run = run
        self._clock = run.clock
        self._interruptible = interruptible

    @property
    def rehearsal(self) -> bool:
        return bool(getattr(self._clock, "rehearsal", self._clock.kind != "real"))

    def now(self) -> datetime:
        return self._clock.now()

    def _stopped(self) -> bool:
        return self._interruptible and self._run.mode != "normal"

    async def sleep(self, seconds: float) -> None:
        """Sleep ``seconds`` of runbook time, unless the run stops going forward first."""
        if self._stopped():
            raise StepInterrupted(self._why())
        if seconds <= 0:
            return
        until = self._clock.now() + timedelta(seconds=seconds)
        if not await sleep_until(self._clock, until, stop=self._stopped):
            raise StepInterrupted(self._why())

    def _why(self) -> str:
        mode = "rolling back" if self._run.mode == "rollback" else "aborting"
        return f"stopped waiting: the run is {mode} ({self._run.failure or 'no reason given'})"
