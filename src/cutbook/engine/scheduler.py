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

import structlog

from cutbook.clock import sleep_until
from cutbook.durations import format_duration
from cutbook.engine.context import TemplateContext
from cutbook.engine.executor import Executor
from cutbook.engine.gates import Gates, StartHold
from cutbook.engine.restore import Restorer
from cutbook.engine.rollback import Rollback
from cutbook.engine.state import Outcome, Question, RunState, StepFailed, StepReport
from cutbook.errors import AdapterError, GateRejected
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

    async def run_all(self) -> Outcome:
        run = self.run
        await self.restorer.check_resume_point()
        tasks: dict[str, asyncio.Task[StepReport]] = {}
        launched: set[str] = set()
        while True:
            if run.mode == "normal":
                for step in run.rb.steps:
                    if step.id in launched or not self._ready(step):
                        continue
                    launched.add(step.id)
                    tasks[step.id] = asyncio.create_task(self._launch(step), name=step.id)
                self._skip_blocked()
            if not tasks:
                break
            done, _ = await asyncio.wait(tasks.values(), return_when=asyncio.FIRST_COMPLETED)
            for finished in done:
                sid = finished.get_name()
                tasks.pop(sid)
                await self._settle(sid, finished.result())
                if run.states[sid].status == "pending" and run.mode == "normal":
                    launched.discard(sid)  # an operator chose to retry it
        normal = [s for s in run.rb.steps if not s.always]
        leftovers = [s.id for s in normal if run.states[s.id].status == "pending"]
        if run.mode == "normal" and leftovers:
            run.fail("steps could not run: " + ", ".join(leftovers), "abort")
        if run.mode == "rollback":
            await self.rollback.all()
        await self._run_always()
        run.outcome = run.final_outcome()
        return run.outcome

    def _ready(self, step: Step) -> bool:
        states = self.run.states
        if states[step.id].status != "pending":
            return False
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
        if step.at is not None:
            when = run.rb.resolve_at(step.at) + run.opts.shift
            wait = (when - run.clock.now()).total_seconds()
            if wait > 0:
                st.status = "waiting"
                local = when.astimezone(run.rb.zone)
                log.info(
                    f"waiting until {local:%H:%M} {local:%z}"[:-2] + f" ({format_duration(wait)})",
                    step=step.id,
                )
                run.journal.append(Event.STEP_WAITING, step=step.id, until=when.isoformat())
                run.publish()
                if not await sleep_until(run.clock, when, stop=run.stopping):
                    st.status = "pending"
                    return StepReport(step.id, "pending")
        async with self._slots:
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
        """The step boundary: whatever happens inside becomes this step's outcome."""
        run = self.run
        st = run.states[step.id]
        st.status = "running"
        st.started = run.clock.now()
        st.error = None
        run.journal.append(Event.STEP_STARTED, step=step.id, attempt_round=len(run.completed))
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
        except asyncio.CancelledError:
            st.status = "failed"
            st.error = "cancelled"
            raise
        except Exception as exc:  # the step boundary: an adapter bug fails its step, not the night
            st.status = "failed"
            st.error = f"unexpected {type(exc).__name__}: {exc}"
            log.exception("step crashed", step=step.id)
        st.finished = run.clock.now()
        st.summary = st.joined_summary()
        self.context.invalidate()
        run.journal.append(
            Event.STEP_FINISHED,
            step=step.id,
            status=st.status,
            error=st.error,
            started=st.started.isoformat(),
            finished=st.finished.isoformat(),
            summary=st.summary,
        )
        if st.status == "failed":
            log.error(f"step failed: {st.error}", step=step.id)
        else:
            log.info(f"step {st.status}", step=step.id, summary=st.summary)
        return StepReport(step.id, st.status, st.summary, st.error)

    async def _run_always(self) -> None:
        """``always`` steps, in dependency order among themselves, whatever happened before."""
        run = self.run
        pending = [s for s in run.rb.steps if s.always and run.states[s.id].status == "pending"]
        if not pending:
            return
        log.info("running always steps: " + ", ".join(s.id for s in pending))
        done: set[str] = set()
        ids = {s.id for s in pending}
        while pending:
            ready = [s for s in pending if all(d not in ids or d in done for d in s.depends_on)]
            if not ready:
                ready = pending[:1]
            for step in ready:
                pending.remove(step)
                await self.hold.enter(step)
                await self._run_step(step)
                done.add(step.id)
