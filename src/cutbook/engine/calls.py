"""Building adapter calls and retrying them.

Only :class:`TransientError` is retried, with exponential backoff and full
jitter through tenacity; a retry that would end past the step's timeout or
the window is not started, and every failed attempt is journalled with what
happens next.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import structlog
from pydantic import BaseModel
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type

from cutbook.adapter import Call, Result
from cutbook.engine.gates import Gates
from cutbook.engine.interrupt import StepClock
from cutbook.engine.state import ItemState, RunState, item_field
from cutbook.errors import TransientError
from cutbook.journal.events import Event
from cutbook.model import Step

log = structlog.get_logger("cutbook.engine")


def idempotency_key(run_id: str, step: str, item: str, phase: str) -> str:
    """Names the intended change: stable across retries and resumes of the same run,
    step, item and phase, so a target applies it once however often it is sent."""
    return hashlib.sha256(f"{run_id}:{step}:{item}:{phase}".encode()).hexdigest()[:32]


class Calls:
    def __init__(self, run: RunState, gates: Gates) -> None:
        self.run = run
        self.gates = gates

    def key(self, step: Step, item: ItemState, phase: str) -> str:
        return idempotency_key(self.run.opts.run_id, step.id, item.key, phase)

    def step_clock(self, step: Step, phase: str) -> StepClock:
        """Waits that give way to a rollback, except in ``always`` steps and rollbacks."""
        return StepClock(self.run, interruptible=phase != "rollback" and not step.always)

    @staticmethod
    def _narrator(step: Step, item: ItemState) -> Callable[[str], None]:
        """An adapter's running commentary: INFO for a step, DEBUG for a fan-out item.

        A thousand offices' "http PUT ..." lines would bury the night's story on the
        console and in the Prefect log; the journal has every item's intent and
        outcome, and ``CUTBOOK_LOG_LEVEL=debug`` shows the lines."""
        if step.for_each is None:
            return lambda msg: log.info(msg, step=step.id)
        return lambda msg: log.debug(msg, step=step.id, item=item.key)

    def make(
        self,
        step: Step,
        item: ItemState,
        action: str,
        args: BaseModel,
        phase: str,
        prior: Result | None = None,
    ) -> Call:
        timeout = self.run.rb.timeout_of(step)
        return Call(
            action=action,
            args=args,
            run_id=self.run.opts.run_id,
            step_id=step.id,
            item_key=item_field(step, item),
            # A check describes the change apply would make, so it carries apply's key.
            idempotency_key=self.key(step, item, "apply" if phase in ("apply", "check") else phase),
            clock=self.step_clock(step, phase),
            log=self._narrator(step, item),
            timeout=timeout.total_seconds() if timeout else None,
            prior=prior,
            confirm=lambda title, text: self.gates.confirm(step, title, text),
            phase=phase,  # type: ignore[arg-type]
        )

    async def record(
        self,
        step: Step,
        item: ItemState,
        phase: str,
        result: Result,
        *,
        ok: bool | None = None,
        output: bool = False,
        **extra: Any,
    ) -> None:
        """The outcome of a call, the intent's other half: durable before the item counts.

        ``ok`` overrides the result's own (an apply that returned has succeeded);
        ``output`` keeps the result's output, which rollback templates and resume read.

        A fan-out item counts as done when its own outcome is durable (group-committed
        with the other items'). A step's single item counts as done when the step does:
        its ``step.finished``, fsync'd, makes this record durable too, one disk flush
        instead of two (what happens in between, the verification, only reads)."""
        if step.for_each is None:
            self.run.journal.write(
                Event.STEP_OUTCOME,
                step=step.id,
                item=item_field(step, item),
                phase=phase,
                ok=result.ok if ok is None else ok,
                changed=result.changed,
                summary=result.summary,
                **({"output": dict(result.output)} if output else {}),
                **extra,
            )
            return
        await self.run.journal.commit(
            Event.STEP_OUTCOME,
            step=step.id,
            item=item_field(step, item),
            phase=phase,
            ok=result.ok if ok is None else ok,
            changed=result.changed,
            summary=result.summary,
            **({"output": dict(result.output)} if output else {}),
            **extra,
        )

    async def intend(self, step: Step, item: ItemState, call: Call, target: str | None) -> None:
        """Write-ahead: the intent is durable before the change is tried, so a crash
        in between leaves a record that resume settles instead of guessing.

        Concurrent items share their fsyncs (:meth:`Journal.commit`): each still
        waits until its own record is on disk."""
        await self.run.journal.commit(
            Event.STEP_INTENT,
            step=step.id,
            item=item_field(step, item),
            phase=call.phase,
            action=call.action,
            target=target,
            idempotency_key=call.idempotency_key,
        )

    async def retrying(
        self, step: Step, item: ItemState, phase: str, fn: Callable[[], Awaitable[Result]]
    ) -> Result:
        run = self.run
        policy = run.rb.retries_of(step)
        timeout = run.rb.timeout_of(step)
        started = run.clock.now()  # runbook time: back-off waits count, as on the night
        planned: dict[int, float] = {}

        def delay_for(state: RetryCallState) -> float:
            # tenacity asks for the delay twice (stop, then wait): draw the jitter once.
            n = state.attempt_number
            if n not in planned:
                base = policy.delay.total_seconds()
                cap = policy.max_delay.total_seconds()
                if policy.backoff == "exponential":
                    ceiling = min(cap, base * (2 ** (n - 1)))
                    d = random.uniform(0, ceiling)  # full jitter
                elif policy.backoff == "fixed":
                    d = base
                else:
                    d = 0.0
                exc = state.outcome.exception() if state.outcome else None
                if isinstance(exc, TransientError) and exc.retry_after is not None:
                    d = max(d, exc.retry_after)
                planned[n] = d
            return planned[n]

        def stop(state: RetryCallState) -> bool:
            exc = state.outcome.exception() if state.outcome else None
            n = state.attempt_number
            d = delay_for(state)
            reason = None
            if n >= policy.attempts:
                reason = f"gave up after {n} attempts"
            elif (
                timeout is not None
                and (run.clock.now() - started).total_seconds() + d >= timeout.total_seconds()
            ):
                reason = "no time left before the step's timeout for another attempt"
            elif run.clock.now() + timedelta(seconds=d) >= run.window_end:
                reason = "another attempt would end after the window"
            run.journal.append(
                Event.STEP_ATTEMPT,
                step=step.id,
                item=item_field(step, item),
                phase=phase,
                attempt=n,
                error=str(exc),
                transient=True,
                next_delay_s=None if reason else round(d, 3),
                gave_up=reason,
            )
            log.warning(
                f"attempt {n} failed: {exc}"
                + (f"; {reason}" if reason else f"; retrying in {d:.1f}s"),
                step=step.id,
                item=item.key,
            )
            return reason is not None

        retrying = AsyncRetrying(
            retry=retry_if_exception_type(TransientError),
            stop=stop,
            wait=delay_for,
            sleep=self.step_clock(step, phase).sleep,
            reraise=True,
        )
        st = run.states[step.id]
        async for attempt in retrying:
            with attempt:
                if phase == "apply":
                    st.attempts += 1
                return await fn()
        raise AssertionError("unreachable")  # pragma: no cover
