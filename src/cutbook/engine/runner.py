"""Run a validated runbook: the parts that schedule, ask, execute and undo, wired together.

Plain asyncio: Prefect reaches a run only through the :class:`Bridge` (task
runs, pauses for human input, artifacts), so the semantics read the same with
or without an orchestrator. Each job has its own module:

- :mod:`~cutbook.engine.state`: what the parts share (steps, items, questions);
- :mod:`~cutbook.engine.scheduler`: the timeline, failure policy and ``always``;
- :mod:`~cutbook.engine.gates`: people (gates, manual confirmations, decisions);
- :mod:`~cutbook.engine.executor`: fan-out, write-ahead intent, apply, verify;
- :mod:`~cutbook.engine.calls`: adapter calls, idempotency keys and retries;
- :mod:`~cutbook.engine.rollback`: undoing completed changes, newest first;
- :mod:`~cutbook.engine.restore`: continuing a crashed run from its journal;
- :mod:`~cutbook.engine.context`: what templates see.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from cutbook.adapter import Adapter
from cutbook.engine.calls import Calls
from cutbook.engine.context import TemplateContext
from cutbook.engine.executor import Executor
from cutbook.engine.gates import Gates, StartHold
from cutbook.engine.restore import Restorer
from cutbook.engine.resume import Recovered
from cutbook.engine.rollback import Rollback
from cutbook.engine.scheduler import Scheduler
from cutbook.engine.state import (
    Answer,
    Bridge,
    Outcome,
    Question,
    Recorder,
    RunOptions,
    RunState,
    StepReport,
    StepState,
)
from cutbook.model import Runbook
from cutbook.planning import Plan
from cutbook.validation import LoadedRunbook

__all__ = ["Answer", "Bridge", "Question", "RunOptions", "RunState", "Runner", "StepReport"]


class Runner:
    """One run of one runbook; build it, optionally :meth:`restore`, then :meth:`run` once."""

    def __init__(
        self,
        loaded: LoadedRunbook,
        adapters: Mapping[str, Adapter],
        recorder: Recorder,
        bridge: Bridge,
        options: RunOptions,
        plan: Mapping[str, tuple[datetime, datetime]] | None = None,
        point_of_no_return: datetime | None = None,
        forecast_plan: Plan | None = None,
    ) -> None:
        self.state = RunState(loaded, adapters, recorder, bridge, options, plan, point_of_no_return)
        self.state.forecast_plan = forecast_plan
        context = TemplateContext(self.state)
        hold = StartHold(self.state)
        self.gates = Gates(self.state, hold)
        calls = Calls(self.state, self.gates)
        self.restorer = Restorer(self.state, context, self.gates)
        self.scheduler = Scheduler(
            self.state,
            context,
            hold,
            self.gates,
            Executor(self.state, context, calls),
            Rollback(self.state, context, calls),
            self.restorer,
        )

    async def run(self) -> Outcome | None:
        """The outcome; ``None`` when the run halted and is left for resume."""
        return await self.scheduler.run_all()

    def restore(self, rec: Recovered) -> None:
        self.restorer.restore(rec)

    # What people and tests read; the state itself is ``self.state``.
    @property
    def rb(self) -> Runbook:
        return self.state.rb

    @property
    def states(self) -> dict[str, StepState]:
        return self.state.states

    @property
    def outcome(self) -> Outcome | None:
        return self.state.outcome

    @property
    def failure(self) -> str | None:
        """Why the run did not succeed; for a halted run, that it stopped and how to resume."""
        halt = self.state.halted
        if self.state.outcome is None and halt is not None:
            why = f"stopped by {halt.detail}" if halt.cause == "signal" else halt.detail
            return f"{why}; left for resume: cutbook resume {self.state.opts.run_id}"
        return self.state.failure
