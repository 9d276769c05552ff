"""Undoing a failed night: every completed change, newest first, each journalled like apply.

A step that failed midway sits where it ended in the completion order, and
its applied items are undone like any other's. The run is reported
``rolled_back`` only when every change was undone; otherwise its failure names
each step and item left in place, and why.
"""

from __future__ import annotations

import asyncio
import functools

import structlog

from cutbook.engine.calls import Calls
from cutbook.engine.context import TemplateContext
from cutbook.engine.resume import UnknownOutput
from cutbook.engine.state import ItemState, RunState, StepReport, StepState, item_field
from cutbook.errors import AdapterError, PermanentError
from cutbook.journal.events import Event
from cutbook.model import Step

log = structlog.get_logger("cutbook.engine")


class Rollback:
    def __init__(self, run: RunState, context: TemplateContext, calls: Calls) -> None:
        self.run = run
        self.context = context
        self.calls = calls
        self.left: dict[str, tuple[list[str], str]] = {}
        """Per step: the items that could not be undone and the first reason."""

    async def all(self) -> None:
        run = self.run
        todo = [sid for sid in reversed(run.completed) if self.needed(run.states[sid])]
        run.journal.append(Event.ROLLBACK_STARTED, reason=run.failure, steps=todo)
        run.publish()  # watchers (the notifier) see the turn even with nothing to undo
        log.warning(f"rolling back {len(todo)} step(s): {', '.join(todo) or 'none'}")
        ok = True
        for sid in todo:
            report = await run.bridge.task(f"rollback-{sid}", functools.partial(self.step, sid))
            ok = ok and report.status == "rolled_back"
        run.journal.append(Event.ROLLBACK_FINISHED, ok=ok)
        if not ok:
            self.incomplete(todo)

    def incomplete(self, todo: list[str]) -> None:
        """Changes were left in place: the run must not be reported as rolled back."""
        run = self.run
        parts = []
        for sid in todo:
            if sid in self.left:
                keys, why = self.left[sid]
                which = f" item(s) {', '.join(keys)}" if keys else ""
                parts.append(f"step {sid}{which} could not be undone: {why}")
            elif run.states[sid].status != "rolled_back":
                parts.append(f"step {sid} was not rolled back: {run.states[sid].error}")
        detail = "rollback incomplete: " + "; ".join(parts)
        run.failure = f"{run.failure}; {detail}" if run.failure else detail
        run.rollback_incomplete = True  # the outcome is then failed, never rolled_back
        log.error(detail)

    def needed(self, st: StepState) -> bool:
        """Only reversible changes that actually changed something and are not undone yet."""
        step = st.step
        if step.target is None or step.action is None or step.always or step.irreversible:
            return False
        spec = self.run.adapters[step.target].actions[step.action]
        if not spec.mutating:
            return False
        if step.rollback is None and not spec.reversible:
            return False
        return any(
            i.result is not None and i.result.changed and not i.rolled_back for i in st.items
        )

    async def step(self, sid: str) -> StepReport:
        run = self.run
        st = run.states[sid]
        step = st.step
        errors: list[str] = []
        failed: list[str] = []
        todo = [
            i
            for i in reversed(st.items)
            if i.result is not None and i.result.changed and not i.rolled_back
        ]
        gate = asyncio.Semaphore(step.concurrency)

        async def one(item: ItemState) -> None:
            async with run.clock.idle():  # a free place among the items: waiting, not work
                await gate.acquire()
            try:
                await undo(item)
            finally:
                gate.release()

        async def undo(item: ItemState) -> None:
            try:
                await self.item(step, item)
            except AdapterError as exc:
                errors.append(f"{item.key}: {exc}")
                if step.for_each is not None:
                    failed.append(item.key)
                await run.journal.commit(
                    Event.STEP_OUTCOME,
                    step=sid,
                    item=item_field(step, item),
                    phase="rollback",
                    ok=False,
                    changed=False,
                    summary=str(exc),
                )

        # One rehearsal-clock participant per item; this task waits while they run.
        await run.clock.gather(one(i) for i in todo)
        if errors:
            self.left[sid] = (sorted(failed), errors[0].split(": ", 1)[-1])
            st.error = (st.error or "") + "; rollback failed: " + "; ".join(errors[:3])
            log.error(f"rollback incomplete: {'; '.join(errors[:3])}", step=sid)
            return StepReport(sid, "failed", error=st.error)
        st.status = "rolled_back"
        self.context.invalidate()
        run.journal.append(Event.STEP_FINISHED, step=sid, status="rolled_back", error=st.error)
        log.info("rolled back", step=sid)
        run.publish()
        return StepReport(sid, "rolled_back")

    async def item(self, step: Step, item: ItemState) -> None:
        """The step's own ``rollback:`` action if it has one, else the adapter's rollback."""
        assert step.target is not None and step.action is not None and item.result is not None
        run = self.run
        r = step.rollback
        blind = item.result.why if isinstance(item.result, UnknownOutput) else None
        if r is not None and r.action is not None:
            adapter = run.adapters[r.target or step.target]
            try:
                args = self.context.args(
                    adapter.actions[r.action].args, r.with_, self.context.of(item, item.result)
                )
            except PermanentError as exc:
                if blind is None:
                    raise
                raise PermanentError(
                    f"its apply's output was not recovered on resume ({blind}), and the "
                    f"rollback needs it: {exc}"
                ) from exc
            call = self.calls.make(step, item, r.action, args, "rollback", prior=item.result)
            undo = adapter.apply  # the runbook's own undo is an ordinary action
        else:
            if blind is not None:
                raise PermanentError(
                    f"its apply's output was not recovered on resume ({blind}), and the "
                    "adapter's rollback needs it"
                )
            adapter = run.adapters[step.target]
            args = self.context.args(
                adapter.actions[step.action].args, step.with_, self.context.of(item)
            )
            call = self.calls.make(step, item, step.action, args, "rollback", prior=item.result)
            undo = adapter.rollback
        await self.calls.intend(step, item, call, r.target if r and r.target else step.target)
        result = await self.calls.retrying(step, item, "rollback", lambda: undo(call))
        item.rolled_back = True
        await self.calls.record(step, item, "rollback", result, ok=True)
