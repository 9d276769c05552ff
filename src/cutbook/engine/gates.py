"""People in the loop: go/no-go gates, manual confirmations, failure decisions.

Every question goes through :meth:`Gates.ask`, so each is journalled the same
way (requested, refused, answered) whoever or whatever answers it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

import structlog

from cutbook.adapter import Confirmation
from cutbook.engine.state import Answer, Question, RunState
from cutbook.errors import GateRejected
from cutbook.journal.events import Event
from cutbook.model import Step

log = structlog.get_logger("cutbook.engine")


class StartHold:
    """Holds new step starts while a person is being asked.

    A paused flow run accepts no new task runs, and a half-finished change
    should not wait on a person: so a question waits until everyone still
    running has finished or is asking too, and nothing new starts meanwhile
    (``always`` steps excepted: they must run whatever happens).
    """

    def __init__(self, run: RunState) -> None:
        self.run = run
        self._running = 0
        self._asking = 0
        self._quiet = asyncio.Condition()

    async def enter(self, step: Step) -> None:
        async with self._quiet:
            await self._quiet.wait_for(
                lambda: self._asking == 0 or self.run.stopping() or step.always
            )
            self._running += 1

    async def leave(self) -> None:
        async with self._quiet:
            self._running -= 1
            self._quiet.notify_all()

    @asynccontextmanager
    async def asking(self, *, quiet: bool = True) -> AsyncIterator[None]:
        """Hold new starts while asking; ``quiet=False`` asks at once, without waiting for
        running steps to finish (the deadline guard: a step running late is why it asks)."""
        async with self._quiet:
            self._asking += 1
            if quiet:
                await self._quiet.wait_for(lambda: self._running <= self._asking)
        try:
            yield
        finally:
            async with self._quiet:
                self._asking -= 1
                self._quiet.notify_all()


class Gates:
    def __init__(self, run: RunState, hold: StartHold) -> None:
        self.run = run
        self.hold = hold
        self._one_at_a_time = asyncio.Lock()

    async def gate(self, step: Step) -> None:
        """An approval step: a no-go fails it like any other failure."""
        assert step.approval is not None
        answer = await self.ask(
            Question(
                step_id=step.id,
                title=step.title,
                instructions=step.approval.instructions or step.description,
                approvers=tuple(step.approval.approvers),
                timeout_s=step.approval.timeout.total_seconds(),
                kind="gate",
            )
        )
        if not answer.approved:
            raise GateRejected(
                f"no-go from {answer.by}" + (f": {answer.comment}" if answer.comment else "")
            )

    async def confirm(self, step: Step, title: str, instructions: str) -> Confirmation:
        """What the manual adapter calls: the same mechanism as approval gates."""
        answer = await self.ask(
            Question(
                step_id=step.id,
                title=title,
                instructions=instructions,
                kind="manual",
                timeout_s=(self.run.rb.timeout_of(step) or timedelta(hours=1)).total_seconds(),
            )
        )
        return Confirmation(
            by=answer.by, approved=answer.approved, comment=answer.comment, at=self.run.clock.now()
        )

    async def ask(self, q: Question) -> Answer:
        run = self.run
        run.journal.append(
            Event.GATE_REQUESTED,
            step=q.step_id,
            kind=q.kind,
            title=q.title,
            approvers=list(q.approvers),
            timeout_s=q.timeout_s,
        )
        if (run.opts.dry_run or run.opts.auto_approve) and q.kind != "guard":
            return self._automatic(q)
        async with (
            run.clock.idle(until=q.timeout_s),  # a person's answer is waited for, not work
            self.hold.asking(quiet=q.kind != "guard"),
            self._one_at_a_time,
        ):
            log.warning(f"waiting for a person: {q.title}", step=q.step_id)
            answer = await run.bridge.ask(q)
            while q.approvers and answer.by not in q.approvers and answer.by != "timeout":
                # Only a listed approver may decide; anyone else's answer is kept as
                # evidence and the question is asked again.
                run.journal.append(
                    Event.GATE_REFUSED,
                    step=q.step_id,
                    by=answer.by,
                    reason=f"not an approver ({', '.join(q.approvers)})",
                )
                log.warning(f"{answer.by} is not an approver of {q.step_id}; asking again")
                answer = await run.bridge.ask(q)
        run.journal.append(
            Event.GATE_ANSWERED,
            step=q.step_id,
            by=answer.by,
            approved=answer.approved,
            comment=answer.comment,
            auto=False,
            kind=q.kind,
            decision=answer.decision,
        )
        return answer

    def _automatic(self, q: Question) -> Answer:
        opts = self.run.opts
        why = "dry run" if opts.dry_run else "--auto-approve"
        answer = Answer(
            by=opts.started_by,
            approved=True,
            comment=f"auto-approved ({why})",
            decision="rollback" if q.kind == "failure" else None,
        )
        self.run.journal.append(
            Event.GATE_ANSWERED,
            step=q.step_id,
            by=answer.by,
            approved=True,
            comment=answer.comment,
            auto=True,
            kind=q.kind,
        )
        log.info(f"{q.kind} answered automatically ({why})", step=q.step_id)
        return answer
