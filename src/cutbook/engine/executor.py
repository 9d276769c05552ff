"""Executing a step's change: fan-out, write-ahead intent, apply, verify.

Every mutating call is journalled before (intent) and after (outcome), so a
crash between the two leaves an *uncertain* item that a resume settles by
reading back, never by guessing.
"""

from __future__ import annotations

import asyncio

from cutbook.adapter import Result
from cutbook.engine.calls import Calls
from cutbook.engine.context import TemplateContext
from cutbook.engine.interrupt import StepInterrupted
from cutbook.engine.restore import recovered_items
from cutbook.engine.resume import UnknownOutput
from cutbook.engine.state import ItemState, RunState, StepFailed, item_field
from cutbook.errors import AdapterError, PermanentError, TransientError, VerificationFailed
from cutbook.journal.events import Event
from cutbook.model import Step


class Executor:
    def __init__(self, run: RunState, context: TemplateContext, calls: Calls) -> None:
        self.run = run
        self.context = context
        self.calls = calls

    async def fan_out(self, step: Step) -> None:
        """Run every item with the step's concurrency; fail the step if any item failed."""
        run = self.run
        st = run.states[step.id]
        known = run.recovered.items.get(step.id) if run.recovered else None
        st.items = recovered_items(step, known, self.context) if known else self.context.items(step)
        if step.for_each is not None:
            run.journal.append(Event.STEP_ITEMS, step=step.id, items=[i.key for i in st.items])
        gate = asyncio.Semaphore(step.concurrency)
        failures: list[str] = []
        not_started: list[str] = []

        async def one(item: ItemState) -> None:
            async with run.clock.idle():  # a free place among the items: waiting, not work
                await gate.acquire()
            try:
                await attempt(item)
            finally:
                gate.release()

        async def attempt(item: ItemState) -> None:
            if item.status == "succeeded" and item.result is not None:
                return  # done before the interruption
            if failures and run.rb.on_failure_of(step) != "continue":
                return
            if run.mode != "normal" and not step.always:
                not_started.append(item.key)  # a no-go: start nothing more, roll back sooner
                return
            try:
                await self.item(step, item)
            except (AdapterError, StepFailed) as exc:
                item.status = "failed"
                item.error = str(exc)
                failures.append(f"{item.key}: {exc}" if step.for_each else str(exc))

        # One rehearsal-clock participant per item; this step waits while they run.
        await run.clock.gather(one(i) for i in st.items)
        st.collect_output()
        if failures:
            done = sum(1 for i in st.items if i.status == "succeeded")
            prefix = (
                f"{len(failures)} of {len(st.items)} items failed ({done} done); "
                if step.for_each
                else ""
            )
            raise StepFailed(prefix + "; ".join(failures[:3]) + (" …" if len(failures) > 3 else ""))
        if not_started:
            raise StepInterrupted(
                f"{len(not_started)} of {len(st.items)} items not started: the run is "
                f"{'rolling back' if run.mode == 'rollback' else 'aborting'} "
                f"({run.failure or 'no reason given'})"
            )

    async def item(self, step: Step, item: ItemState) -> None:
        assert step.target is not None and step.action is not None
        run = self.run
        adapter = run.adapters[step.target]
        spec = adapter.actions[step.action]
        args = self.context.args(spec.args, step.with_, self.context.of(item))
        if run.opts.dry_run:
            result = await adapter.check(self.calls.make(step, item, step.action, args, "check"))
            item.result = result
            item.status = "succeeded"
            await self.calls.record(step, item, "check", result)
            return
        if item.status == "uncertain" and await self.already_applied(step, item):
            return
        call = self.calls.make(step, item, step.action, args, "apply")
        if spec.mutating:
            await self.calls.intend(step, item, call, step.target)
        item.status = "running"
        result = await self.calls.retrying(step, item, "apply", lambda: adapter.apply(call))
        item.result = result
        await self.calls.record(step, item, "apply", result, ok=True, output=True)
        await self.verify(step, item, result)
        item.status = "succeeded"

    async def already_applied(self, step: Step, item: ItemState) -> bool:
        """An intent without an outcome: did the change land before the interruption?

        Only an explicit read-back can say so; otherwise the item is applied again
        with the same idempotency key, which an idempotent system answers as a replay.
        A confirmed item also needs the apply's original output (rollback templates
        such as ``output.json.before`` and later steps read it): see :meth:`recover`.
        """
        if step.verify is None or step.verify.action is None:
            return False
        probe = Result(changed=True, summary="applied before the interruption")
        try:
            await self.verify(step, item, probe)
        except (VerificationFailed, PermanentError, TransientError):
            return False
        result = await self.recover(step, item, probe)
        item.result = result
        item.status = "succeeded"
        extra = {"output_unknown": result.why} if isinstance(result, UnknownOutput) else {}
        await self.calls.record(
            step, item, "apply", result, ok=True, output=True, recovered=True, **extra
        )
        return True

    async def recover(self, step: Step, item: ItemState, probe: Result) -> Result:
        """The original result of a change the read-back confirmed, or an honest blank.

        The apply is sent again with its original idempotency key: a system that keeps
        its answers per key (the http adapter's targets, the simulator) replays the
        stored reply and says so (``output.replayed``), and that reply is the original
        output. Any other answer may describe a second application (its ``before``
        would be the new value), so it is not taken for the original: the item is
        marked :class:`UnknownOutput` and rollback says it cannot undo it blind.
        """
        assert step.target is not None and step.action is not None
        adapter = self.run.adapters[step.target]
        why = "the system did not answer the replay with its stored reply"
        try:
            args = self.context.args(
                adapter.actions[step.action].args, step.with_, self.context.of(item)
            )
            call = self.calls.make(step, item, step.action, args, "apply")
            await self.calls.intend(step, item, call, step.target)
            replay = await self.calls.retrying(step, item, "apply", lambda: adapter.apply(call))
        except AdapterError as exc:
            replay, why = None, f"replaying the apply under its key failed: {exc}"
        if replay is not None and replay.output.get("replayed") is True:
            return Result(
                changed=replay.changed,
                summary=f"applied before the interruption; {replay.summary}",
                output=replay.output,
            )
        return UnknownOutput(changed=probe.changed, summary=probe.summary, why=why)

    async def verify(self, step: Step, item: ItemState, applied: Result) -> None:
        """The step's own ``verify:`` read-back if it has one, else the adapter's verify."""
        assert step.target is not None and step.action is not None
        run = self.run
        v = step.verify
        if v is not None and v.action is not None:
            adapter = run.adapters[v.target or step.target]
            raw = dict(v.with_)
            if v.expect is not None:
                raw["expect"] = v.expect
            args = self.context.args(
                adapter.actions[v.action].args, raw, self.context.of(item, applied)
            )
            call = self.calls.make(step, item, v.action, args, "verify", prior=applied)
            try:
                result = await self.calls.retrying(
                    step, item, "verify", lambda: adapter.apply(call)
                )
                ok, summary = result.ok, result.summary
            except PermanentError as exc:
                ok, summary = False, str(exc)
        else:
            adapter = run.adapters[step.target]
            args = self.context.args(
                adapter.actions[step.action].args, step.with_, self.context.of(item)
            )
            call = self.calls.make(step, item, step.action, args, "verify", prior=applied)
            result = await self.calls.retrying(step, item, "verify", lambda: adapter.verify(call))
            ok, summary = result.ok, result.summary
        run.journal.write(  # evidence, not a decision: durable with the next fsync
            Event.STEP_VERIFIED, step=step.id, item=item_field(step, item), ok=ok, summary=summary
        )
        if not ok:
            raise VerificationFailed(f"verification failed: {summary}")
