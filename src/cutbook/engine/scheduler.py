"""The run's timeline: which step starts when, and what a failure means for the rest.

- a step starts when its dependencies succeeded and its ``at`` has come
  (never earlier), at most ``runbook.concurrency`` at a time;
- on failure, ``on_failure`` decides: roll back every completed change in
  reverse order, abort, continue without the dependants, or ask an operator;
- ``always`` steps run last in every case.

The step boundary (:meth:`Scheduler.step_body`) is the one place that catches
broad exceptions: an adapter bug must fail its step, not the night.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from typing import Any

import structlog

from cutbook.clock import sleep_until
from cutbook.durations import format_duration
from cutbook.engine.context import TemplateContext
from cutbook.engine.executor import Executor
from cutbook.engine.gates import Gates, StartHold
from cutbook.engine.guard import Guard
from cutbook.engine.restore import Restorer
from cutbook.engine.rollback import Rollback
from cutbook.engine.state import (
    Halt,
    Outcome,
    Question,
    RunState,
    StepFailed,
    StepReport,
    StepState,
)
from cutbook.errors import AdapterError, GateRejected, JournalWriteError
from cutbook.journal.events import Event
from cutbook.model import Step

log = structlog.get_logger("cutbook.engine")


class Scheduler:
    def __init__(
        self,
        run: RunState,
        context: TemplateContext,
        hold: StartHold,
        gates: Gates,
        executor: Executor,
        rollback: Rollback,
        restorer: Restorer,
    ) -> None:
        self.run = run
        self.context = context
        self.hold = hold
        self.gates = gates
        self.executor = executor
        self.rollback = rollback
        self.restorer = restorer
        self._slots = asyncio.Semaphore(run.rb.concurrency)
        self._inflight: set[asyncio.Task[Any]] = set()
        run.cancel_inflight = self.cancel_inflight
        self.guard = Guard(run, gates)

    async def run_all(self) -> Outcome | None:
        """Run to an outcome; ``None`` if the run halted (a signal, an unwritable journal)
        and is left for resume: then neither rollback nor ``always`` steps ran."""
        run = self.run
        if run.halted is not None:
            return None  # stopped before it started
        try:
            asked = run.rollback_requested is None  # going back needs no "go on?" question
            if asked and not await self._tracked(self.restorer.check_resume_point()):
                return None
            async with self._guarded():
                await self._main_loop()
            if run.halted is not None:
                return None
            if run.rollback_requested is not None:
                run.fail(run.rollback_requested, "rollback")
            normal = [s for s in run.rb.steps if not s.always]
            leftovers = [s.id for s in normal if run.states[s.id].status == "pending"]
            if run.mode == "normal" and leftovers:
                run.fail("steps could not run: " + ", ".join(leftovers), "abort")
            if run.mode == "rollback" and not await self._tracked(self.rollback.all()):
                return None
            await self._run_always()
            if run.halted is not None:
                return None
        except JournalWriteError as exc:
            self._journal_failed(exc)
            await self._drain()
            return None
        run.outcome = run.final_outcome()
        return run.outcome

    async def _main_loop(self) -> None:
        """Start what is ready, settle what finishes; once halted, only let in-flight work end.

        The loop is a participant of the rehearsal clock: busy while it decides,
        waiting while its steps run (see :mod:`cutbook.clock`)."""
        with self.run.clock.participate("scheduler"):
            await self._loop()

    async def _loop(self) -> None:
        run = self.run
        tasks: dict[str, asyncio.Task[StepReport]] = {}
        launched: set[str] = set()
        while True:
            if run.mode == "normal" and run.halted is None:
                for step in run.rb.steps:
                    if step.id in launched or not self._ready(step):
                        continue
                    launched.add(step.id)
                    task = run.clock.spawn(self._launch(step), name=step.id)
                    tasks[step.id] = task
                    self._inflight.add(task)
                self._skip_blocked()
            if not tasks:
                break
            async with run.clock.idle():
                done, _ = await asyncio.wait(tasks.values(), return_when=asyncio.FIRST_COMPLETED)
            run.clock.reap(*done)  # busy again first, then the finished steps let go
            for finished in done:
                sid = finished.get_name()
                tasks.pop(sid)
                self._inflight.discard(finished)
                if finished.cancelled():
                    continue  # a hard stop: left in flight for resume
                exc = finished.exception()
                if isinstance(exc, JournalWriteError):
                    self._journal_failed(exc)
                    continue
                if exc is not None:
                    raise exc
                if run.halted is not None:
                    continue  # no decisions, no rollback: resume takes it from here
                await self._settle(sid, finished.result())
                self.guard.poke(f"step {sid} {run.states[sid].status}")
                if run.states[sid].status == "pending" and run.mode == "normal":
                    launched.discard(sid)  # an operator chose to retry it

    @asynccontextmanager
    async def _guarded(self) -> AsyncIterator[None]:
        """The deadline guard watches while the main loop runs, and ends with it."""
        watcher = asyncio.create_task(self.guard.watch(), name="deadline-guard")
        self._inflight.add(watcher)
        try:
            yield
        finally:
            self.guard.stop()
            self._inflight.discard(watcher)
            if not watcher.done():
                watcher.cancel()
            await asyncio.wait([watcher])
            failed = None if watcher.cancelled() else watcher.exception()
            if failed is not None:
                raise failed

    async def _tracked(self, work: Coroutine[Any, Any, Any]) -> bool:
        """Run ``work`` so a hard stop can cancel it; False if it was cancelled."""
        clock = self.run.clock
        with clock.participate("scheduler"):
            task = clock.spawn(work)
            self._inflight.add(task)
            try:
                async with clock.idle():
                    await asyncio.wait([task])
            finally:
                clock.reap(task)
                self._inflight.discard(task)
        if task.cancelled():
            return False
        task.result()  # re-raises what it raised
        return True

    def cancel_inflight(self) -> None:
        """Stop now: cancel every step, rollback or question in flight (their intents are
        journalled, so resume settles each change by verification)."""
        for task in list(self._inflight):
            task.cancel()

    async def _drain(self) -> None:
        """After an unwritable journal: nothing in flight may act on; wait for it to end."""
        self.cancel_inflight()
        if self._inflight:
            await asyncio.wait(list(self._inflight))

    def _journal_failed(self, exc: JournalWriteError) -> None:
        self.run.halt(Halt("journal", str(exc)))

    def _ready(self, step: Step) -> bool:
        states = self.run.states
        if states[step.id].status != "pending":
            return False
        if self.run.rollback_requested is not None and not states[step.id].items:
            return False  # rolling back on resume: only settle what was left in flight
        deps = [states[d] for d in step.depends_on]
        return all(d.status in ("succeeded", "skipped", "dry_run") for d in deps)

    def _skip_blocked(self) -> None:
        """Under on_failure: continue, dependants of a failed step are skipped."""
        states = self.run.states
        changed = True
        while changed:
            changed = False
            for step in self.run.rb.steps:
                st = states[step.id]
                if st.status != "pending" or step.always:
                    continue
                if any(states[d].status == "failed" for d in step.depends_on) or any(
                    states[d].status == "skipped" and states[d].error for d in step.depends_on
                ):
                    st.status = "skipped"
                    st.error = "a step it depends on failed"
                    self.run.journal.append(
                        Event.STEP_FINISHED, step=step.id, status="skipped", error=st.error
                    )
                    changed = True

    async def _settle(self, sid: str, report: StepReport) -> None:
        run = self.run
        st = run.states[sid]
        step = st.step
        if report.status != "failed":
            return  # done, or not started because the run is stopping (still pending)
        policy = "continue" if step.always else run.rb.on_failure_of(step)
        if policy == "pause" and run.mode == "normal":
            answer = await self.gates.ask(
                Question(
                    step_id=sid,
                    title=f"Step {sid} failed: retry, skip or roll back?",
                    instructions=f"{step.title} failed: {report.error}",
                    kind="failure",
                )
            )
            decision = answer.decision or ("retry" if answer.approved else "rollback")
            run.journal.append(
                Event.STEP_DECISION,
                step=sid,
                by=answer.by,
                decision=decision,
                comment=answer.comment,
            )
            if decision == "retry":
                st.status = "pending"
                st.items = []
                return
            if decision == "skip":
                st.status = "skipped"
                return
            policy = "rollback"
        if policy == "continue":
            return
        run.fail(
            f"step {sid!r} failed: {report.error}", "rollback" if policy == "rollback" else "abort"
        )

    async def _launch(self, step: Step) -> StepReport:
        """Wait for the step's ``at`` and a free slot, then run it unless the night is over."""
        run = self.run
        st = run.states[step.id]
        # The window is a hard boundary: nothing starts before it opens, `at` or not.
        when = run.window_start
        if step.at is not None:
            when = max(when, run.rb.resolve_at(step.at) + run.opts.shift)
        wait = (when - run.clock.now()).total_seconds()
        if wait > 0:
            st.status = "waiting"
            local = when.astimezone(run.rb.zone)
            what = "for the window to open at" if when == run.window_start else "until"
            log.info(
                f"waiting {what} {local:%H:%M} {local:%z}"[:-2] + f" ({format_duration(wait)})",
                step=step.id,
            )
            run.journal.append(Event.STEP_WAITING, step=step.id, until=when.isoformat())
            run.publish()
            if not await sleep_until(run.clock, when, stop=run.stopping):
                st.status = "pending"
                return StepReport(step.id, "pending")
        async with self._slot():
            async with run.clock.idle():  # held for a person: waiting, not work
                await self.hold.enter(step)
            if run.stopping():
                st.status = "pending"
                return StepReport(step.id, "pending")
            if not step.always and run.clock.now() >= run.window_end:
                run.fail(
                    f"the window ended at {run.window_end.astimezone(run.rb.zone):%H:%M %z} "
                    f"before step {step.id!r} could start",
                    "rollback",
                )
                st.status = "pending"
                return StepReport(step.id, "pending")
            return await self._run_step(step)

    @asynccontextmanager
    async def _slot(self) -> AsyncIterator[None]:
        """One of ``concurrency`` slots; waiting for one (others hold them) is not work."""
        async with self.run.clock.idle():
            await self._slots.acquire()
        try:
            yield
        finally:
            self._slots.release()

    async def _run_step(self, step: Step) -> StepReport:
        """Run an admitted step as the bridge's task; the caller has entered the hold."""
        run = self.run
        st = run.states[step.id]
        try:
            return await run.bridge.task(step.id, lambda: self.step_body(step))
        finally:
            await self.hold.leave()
            if st.status in ("succeeded", "failed", "dry_run") and step.id not in run.completed:
                run.completed.append(step.id)
            run.publish()

    async def step_body(self, step: Step) -> StepReport:
        """The step boundary: whatever happens inside becomes this step's outcome.

        Two things do not: a journal that cannot be written halts the run (nothing
        may act unrecorded), and a cancellation while halting leaves the step in
        flight, unrecorded as finished, for resume to settle from its intents.
        """
        run = self.run
        st = run.states[step.id]
        try:
            return await self._step_body(step)
        except JournalWriteError as exc:
            self._journal_failed(exc)
            return StepReport(step.id, st.status, error=str(exc))
        except asyncio.CancelledError:
            if run.halted is None:
                raise
            log.warning("step cancelled by a hard stop; left in flight for resume", step=step.id)
            return StepReport(step.id, st.status, error="cancelled by a hard stop")

    async def _step_body(self, step: Step) -> StepReport:
        run = self.run
        st = run.states[step.id]
        st.status = "running"
        st.started = run.clock.now()
        st.error = None
        # Durable with the step's first intent (or its finish): nothing acts on it.
        run.journal.write(Event.STEP_STARTED, step=step.id, attempt_round=len(run.completed))
        run.publish()
        try:
            if step.approval is not None:
                await self.gates.gate(step)
            elif step.target is not None and step.action is not None:
                await self.executor.fan_out(step)
            st.status = "dry_run" if run.opts.dry_run and step.target else "succeeded"
        except (AdapterError, GateRejected, StepFailed) as exc:
            st.status = "failed"
            st.error = str(exc)
        except JournalWriteError:
            raise  # not the step's failure: the run halts (see step_body)
        except asyncio.CancelledError:
            if run.halted is None:  # halting leaves the step in flight, for resume
                st.status = "failed"
                st.error = "cancelled"
                self._record_finished(st)
            raise
        except Exception as exc:  # the step boundary: an adapter bug fails its step, not the night
            st.status = "failed"
            st.error = f"unexpected {type(exc).__name__}: {exc}"
            log.exception("step crashed", step=step.id)
        self._record_finished(st)
        if st.status == "failed":
            log.error(f"step failed: {st.error}", step=step.id)
        else:
            log.info(f"step {st.status}", step=step.id, summary=st.summary)
        return StepReport(step.id, st.status, st.summary, st.error)

    def _record_finished(self, st: StepState) -> None:
        run = self.run
        st.finished = run.clock.now()
        st.summary = st.joined_summary()
        self.context.invalidate()
        run.journal.append(
            Event.STEP_FINISHED,
            step=st.step.id,
            status=st.status,
            error=st.error,
            started=st.started.isoformat() if st.started else None,
            finished=st.finished.isoformat(),
            summary=st.summary,
        )

    async def _run_always(self) -> None:
        """``always`` steps, in dependency order among themselves, whatever happened before."""
        run = self.run
        pending = [s for s in run.rb.steps if s.always and run.states[s.id].status == "pending"]
        if not pending:
            return
        log.info("running always steps: " + ", ".join(s.id for s in pending))
        done: set[str] = set()
        ids = {s.id for s in pending}
        with run.clock.participate("scheduler"):
            while pending:
                ready = [s for s in pending if all(d not in ids or d in done for d in s.depends_on)]
                if not ready:
                    ready = pending[:1]
                for step in ready:
                    if self.run.halted is not None:
                        return
                    pending.remove(step)
                    async with run.clock.idle():
                        await self.hold.enter(step)
                    await self._tracked(self._run_step(step))
                    done.add(step.id)
