"""Watching a run in-process: the terminal's live table, embedding code, tests.

Modelled on nornir's processors: an observer is called at fixed points of a
run with what is known there. Unlike nornir's, every hook has a default that
does nothing, so an observer implements only what it shows. Observers only
watch: the journal is the record and the bridge is the orchestrator, so a
hook gets the state to read, never a way to change the run. Hooks run on the
engine's event loop and must return quickly.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from cutbook.engine.state import Answer, Bridge, Outcome, Question, RunState, StepReport


class RunObserver:
    def run_prepared(self, run_id: str) -> None:
        """Secrets resolved, adapters built, journal open; nothing has acted yet."""

    def run_started(self, run: RunState, where: str | None) -> None:
        """The run is about to start its first step; ``where`` is the orchestrator's page
        for it (the Prefect UI's flow run), if there is one."""

    def run_changed(self, run: RunState) -> None:
        """A step waited, started, finished or rolled back (every change the UI sees)."""

    def asking(self, question: Question) -> None:
        """A person is being asked (a gate, a manual step, a failed step's decision); the
        run waits for the answer."""

    def run_finished(self, run: RunState, outcome: Outcome | None) -> None:
        """The run is over (``None``: it stopped without an outcome); the journal is closed."""


class Watched:
    """A bridge that also tells observers about every change it publishes."""

    def __init__(self, inner: Bridge, observers: Sequence[RunObserver]) -> None:
        self.inner = inner
        self.observers = observers

    async def task(self, name: str, body: Callable[[], Awaitable[StepReport]]) -> StepReport:
        return await self.inner.task(name, body)

    async def ask(self, question: Question) -> Answer:
        for observer in self.observers:
            observer.asking(question)
        return await self.inner.ask(question)

    def publish(self, run: RunState) -> None:
        self.inner.publish(run)
        for observer in self.observers:
            observer.run_changed(run)
