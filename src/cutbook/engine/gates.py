"""People in the loop: go/no-go gates, manual confirmations, failure decisions.

Every question goes through :meth:`Gates.ask`, so each is journalled the same
way (requested, refused, answered) whoever or whatever answers it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import datetime, timedelta

import structlog

from cutbook import signing
from cutbook.adapter import Confirmation
from cutbook.durations import format_duration
from cutbook.engine.answers import approver_key, refusal
from cutbook.engine.state import Answer, Question, RunState, Waiting
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
        spec = step.approval
        assert spec is not None
        forbidden = () if spec.executor_may_approve else (self.run.opts.executor,)
        answer = await self.ask(
            Question(
                step_id=step.id,
                title=step.title,
                instructions=spec.instructions or step.description,
                approvers=tuple(a for a in spec.approvers if a not in forbidden),
                timeout_s=spec.timeout.total_seconds(),
                kind="gate",
                quorum=spec.quorum,
                signed=spec.signed,
            ),
            forbidden=forbidden,
        )
        self.run.states[step.id].answered_by = answer.by
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

    async def ask(self, q: Question, *, forbidden: tuple[str, ...] = ()) -> Answer:
        """Ask until the question is settled: a quorum of distinct go's, one no-go, or the
        deadline. An answer that may not count is refused, journalled and asked again."""
        run = self.run
        q = replace(q, runbook_sha256=run.loaded.sha256, forecast=self._forecast_text())
        run.journal.append(
            Event.GATE_REQUESTED,
            step=q.step_id,
            kind=q.kind,
            title=q.title,
            approvers=list(q.approvers),
            timeout_s=q.timeout_s,
            quorum=q.quorum,
            signed=q.signed,
            runbook_sha256=q.runbook_sha256,
            forecast=q.forecast,
        )
        if run.opts.dry_run or run.opts.auto_approve:
            return self._automatic(q)
        now = run.clock.now()
        deadline = now + timedelta(seconds=q.timeout_s)
        async with (
            run.clock.idle(until=q.timeout_s),  # a person's answer is waited for, not work
            self.hold.asking(quiet=q.kind != "guard"),
            self._one_at_a_time,
        ):
            log.warning(f"waiting for a person: {q.title}", step=q.step_id)
            try:
                return await self._settle(q, now, deadline, forbidden)
            finally:
                run.waiting = None
                run.publish()

    async def _settle(
        self, q: Question, since: datetime, deadline: datetime, forbidden: tuple[str, ...]
    ) -> Answer:
        run = self.run
        yes: list[Answer] = []
        while True:
            left = (deadline - run.clock.now()).total_seconds()
            asked = replace(q, timeout_s=max(1.0, left), approved_by=tuple(a.by for a in yes))
            run.waiting = Waiting(asked, since, deadline)
            run.publish()
            answer = await run.bridge.ask(asked) if left > 0 else _timed_out(q)
            if answer.by == "timeout":
                self.record(q, answer, accepted=False, quorum=len(yes))
                return answer
            why = refusal(run, asked, answer, forbidden, yes)
            if why is not None:
                self._refuse(q, answer, why)
                continue
            if answer.approved and q.kind == "gate":
                yes.append(answer)
            self.record(q, answer, accepted=True, quorum=len(yes))
            if not answer.approved or q.kind != "gate" or len(yes) >= q.quorum:
                if answer.approved and len(yes) > 1:
                    names = ", ".join(a.by for a in yes)
                    return replace(answer, by=names, comment=f"quorum of {len(yes)}: {names}")
                return answer
            log.info(
                f"{answer.by} says go ({len(yes)} of {q.quorum}); asking the others",
                step=q.step_id,
            )

    def _refuse(self, q: Question, answer: Answer, why: str) -> None:
        run = self.run
        run.journal.append(
            Event.GATE_REFUSED, step=q.step_id, by=answer.by, reason=why, via=answer.via
        )
        text = f"answer from {answer.by or '(no name)'} to {q.step_id} refused: {why}"
        run.refusals.append(f"{run.clock.now().astimezone(run.rb.zone):%H:%M:%S} {text}")
        log.warning(text + "; asking again", step=q.step_id)
        run.publish()

    def record(self, q: Question, answer: Answer, *, accepted: bool, quorum: int) -> None:
        decision = answer.decision or ("approve" if answer.approved else "reject")
        fingerprint = None
        if answer.signature:
            key = approver_key(self.run, answer.by)
            fingerprint = signing.fingerprint(key) if key else None
        self.run.journal.append(
            Event.GATE_ANSWERED,
            step=q.step_id,
            by=answer.by,
            approved=answer.approved,
            comment=answer.comment,
            auto=False,
            kind=q.kind,
            decision=decision,
            runbook_sha256=answer.runbook_sha256,
            signature=answer.signature,
            signed_at=answer.signed_at,
            key=fingerprint,
            via=answer.via,
            quorum=f"{quorum} of {q.quorum}" if q.kind == "gate" else None,
        )

    def _forecast_text(self) -> str:
        fc = self.run.guard_forecast
        if fc is None:
            return ""
        zone = self.run.rb.zone
        slack = (
            f"{format_duration(fc.slack_s)} to spare"
            if fc.fits
            else f"{format_duration(-fc.slack_s)} over the window"
        )
        return f"forecast finish {fc.finish.astimezone(zone):%H:%M}, {slack}"

    def _automatic(self, q: Question) -> Answer:
        """Dry runs and --auto-approve answer for people, except the deadline guard's
        question: a rehearsal takes its default, no-go."""
        opts = self.run.opts
        why = "dry run" if opts.dry_run else "--auto-approve"
        if q.kind == "guard":
            answer = Answer(by="default", approved=False, comment=f"no-go by default ({why})")
        else:
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
            approved=answer.approved,
            comment=answer.comment,
            auto=True,
            kind=q.kind,
            decision=answer.decision or ("approve" if answer.approved else "reject"),
            runbook_sha256=q.runbook_sha256,
        )
        log.info(f"{q.kind} answered automatically ({why})", step=q.step_id)
        return answer


def _timed_out(q: Question) -> Answer:
    return Answer(by="timeout", approved=False, comment="no answer before the deadline")
