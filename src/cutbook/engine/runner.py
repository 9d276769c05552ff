"""Run a validated runbook: schedule steps, call adapters, verify, roll back.

This module is plain asyncio. Prefect reaches it only through the
:class:`Bridge` (task runs, pauses for human input, artifacts), so the
semantics can be read here in one place:

- a step starts when its dependencies succeeded and its ``at`` has come
  (never earlier), at most ``runbook.concurrency`` at a time;
- fan-out items run inside their step with bounded concurrency, each with its
  own idempotency key, journal records and rollback;
- only :class:`TransientError` is retried, with exponential backoff and full
  jitter through tenacity; a retry that would end past the step's timeout or
  the window is not started;
- every mutating call is journalled before (intent) and after (outcome);
- on failure, ``on_failure`` decides: roll back every completed change in
  reverse order, abort, continue without the dependants, or ask an operator;
  ``always`` steps run last in every case.

The step boundary (:meth:`Runner._step_body`) is the one place that catches
broad exceptions: an adapter bug must fail its step, not the night.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal, Protocol

import structlog
from pydantic import BaseModel, ValidationError
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type

from cutbook import templating
from cutbook.adapter import Adapter, Call, Confirmation, Result
from cutbook.clock import RealClock, VirtualClock, sleep_until
from cutbook.durations import format_duration
from cutbook.engine.resume import DONE, Recovered, RecoveredItem
from cutbook.errors import (
    AdapterError,
    GateRejected,
    PermanentError,
    TransientError,
    VerificationFailed,
)
from cutbook.model import Runbook, Step
from cutbook.validation import LoadedRunbook

log = structlog.get_logger("cutbook.engine")

Status = Literal[
    "pending", "waiting", "running", "succeeded", "failed", "skipped", "rolled_back", "dry_run"
]
Outcome = Literal["succeeded", "failed", "rolled_back", "aborted"]
Decision = Literal["retry", "skip", "rollback"]


class Recorder(Protocol):
    """Where every state change goes first: the journal (write-ahead)."""

    def append(self, event: str, **fields: Any) -> Any: ...


@dataclass(frozen=True)
class Question:
    """A question for a person: a go/no-go gate, a manual step, or what to do after a failure."""

    step_id: str
    title: str
    instructions: str
    approvers: tuple[str, ...] = ()
    timeout_s: float = 1800.0
    kind: Literal["gate", "manual", "failure"] = "gate"


@dataclass(frozen=True)
class Answer:
    by: str
    approved: bool
    comment: str = ""
    decision: Decision | None = None


class Bridge(Protocol):
    """What the orchestrator (Prefect) provides; a plain implementation serves tests."""

    async def task(self, name: str, body: Callable[[], Awaitable[StepReport]]) -> StepReport: ...

    async def ask(self, question: Question) -> Answer: ...

    def publish(self, runner: Runner) -> None: ...


@dataclass
class ItemState:
    key: str
    item: Any
    index: int
    result: Result | None = None
    status: Status | Literal["uncertain"] = "pending"
    error: str | None = None
    rolled_back: bool = False


@dataclass
class StepState:
    step: Step
    status: Status = "pending"
    planned_start: datetime | None = None
    planned_finish: datetime | None = None
    started: datetime | None = None
    finished: datetime | None = None
    items: list[ItemState] = field(default_factory=list)
    attempts: int = 0
    error: str | None = None
    summary: str = ""
    output: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class StepReport:
    step_id: str
    status: Status
    summary: str = ""
    error: str | None = None


@dataclass
class RunOptions:
    run_id: str
    started_by: str
    clock: RealClock | VirtualClock
    dry_run: bool = False
    auto_approve: bool = False
    secrets: Mapping[str, str] = field(default_factory=dict)
    shift: timedelta = timedelta(0)
    """How far ``--start`` moved the window from where the runbook wrote it."""


class StepFailed(Exception):
    """Internal: a step ended in failure; carries the message for the record."""


class Runner:
    def __init__(
        self,
        loaded: LoadedRunbook,
        adapters: Mapping[str, Adapter],
        recorder: Recorder,
        bridge: Bridge,
        options: RunOptions,
        plan: Mapping[str, tuple[datetime, datetime]] | None = None,
    ) -> None:
        self.loaded = loaded
        self.rb: Runbook = loaded.runbook
        self.adapters = adapters
        self.journal = recorder
        self.bridge = bridge
        self.opts = options
        self.clock = options.clock
        self.states = {s.id: StepState(s) for s in self.rb.steps}
        for sid, (start, finish) in (plan or {}).items():
            if sid in self.states:
                self.states[sid].planned_start = start
                self.states[sid].planned_finish = finish
        self.completed: list[str] = []
        self.failure: str | None = None
        self.mode: Literal["normal", "rollback", "abort"] = "normal"
        self.outcome: Outcome | None = None
        self._slots = asyncio.Semaphore(self.rb.concurrency)
        self._running = 0
        self._asking = 0
        self._quiet = asyncio.Condition()
        self._ask_lock = asyncio.Lock()
        self.shift = options.shift
        self.window_start = self.rb.window_start + self.shift
        self.window_end = self.rb.window_end + self.shift
        self.point_of_no_return: datetime | None = None
        self.recovered: Recovered | None = None
        self._base_context: dict[str, Any] | None = None
        """Templates' view of vars, data and finished steps; rebuilt when a step settles,
        not for every item (a 1,000-item fan-out would copy it a million times)."""

    # -- context for templates --------------------------------------------
    def _context(
        self, item: ItemState | None = None, output: Result | None = None
    ) -> dict[str, Any]:
        if self._base_context is None:
            base = self.loaded.static_context(self.opts.secrets)
            base["run"] = {"id": self.opts.run_id, "dry_run": self.opts.dry_run}
            base["steps"] = {
                sid: {
                    "status": st.status,
                    "output": st.output,
                    "items": {i.key: dict(i.result.output) if i.result else {} for i in st.items},
                }
                for sid, st in self.states.items()
            }
            self._base_context = base
        ctx = dict(self._base_context)
        if item is not None:
            ctx["item"] = item.item
            ctx["index"] = item.index
        if output is not None:
            ctx["output"] = dict(output.output)
        return ctx

    def _args(
        self, model: type[BaseModel], raw: Mapping[str, Any], ctx: Mapping[str, Any]
    ) -> BaseModel:
        rendered = templating.render(dict(raw), ctx)
        try:
            return model.model_validate(rendered)
        except ValidationError as exc:
            first = exc.errors(include_url=False)[0]
            where = ".".join(str(p) for p in first["loc"])
            raise PermanentError(f"argument {where}: {first['msg']}") from None

    # -- resuming ----------------------------------------------------------
    def restore(self, rec: Recovered) -> None:
        """Take the state a crashed run had: finished steps stay finished, applied items
        keep their results (rollback needs them), half-done items are uncertain."""
        self.recovered = rec
        self._base_context = None
        for sid, st in self.states.items():
            status = rec.statuses.get(sid)
            if status in DONE:
                st.status = status  # type: ignore[assignment]
                st.error = rec.errors.get(sid)
                st.started, st.finished = rec.times.get(sid, (None, None))
            elif sid in rec.approved_gates:
                st.status = "succeeded"
        self.completed = [sid for sid in rec.completed if sid in self.states]
        for step in self.rb.steps:
            known = rec.items.get(step.id)
            if known and step.target is not None:
                self.states[step.id].items = self._merge(step, known)
                self._collect_output(step)
        if rec.rollback_started:
            self.failure = rec.failure or "the run was rolling back when it stopped"
            self.mode = "rollback"

    def _merge(self, step: Step, known: Mapping[str, RecoveredItem]) -> list[ItemState]:
        try:
            items = self._items(step)
        except (AdapterError, templating.TemplateError):
            items = [ItemState(key=k, item=None, index=i) for i, k in enumerate(known)]
        for item in items:
            got = known.get(item.key)
            if got is None:
                continue
            item.rolled_back = got.rolled_back
            if got.result is not None:
                item.result = got.result
                item.status = "succeeded"
            elif got.uncertain:
                item.status = "uncertain"
        return items

    async def _check_resume_point(self) -> None:
        """Resumed past the point of no return or the window: roll back unless told to go on."""
        if self.recovered is None or self.mode != "normal":
            return
        now = self.clock.now()
        late = now >= self.window_end or (
            self.point_of_no_return is not None and now > self.point_of_no_return
        )
        left = [s for s in self.rb.steps if not s.always and self.states[s.id].status == "pending"]
        if not late or not left:
            return
        what = "the window has ended" if now >= self.window_end else "past the point of no return"
        answer = await self._ask(
            Question(
                step_id="resume",
                title=f"Resumed {what}: go on?",
                instructions=f"Resumed at {now.astimezone(self.rb.zone):%H:%M %z} with "
                f"{len(left)} step(s) left. Approve to go on; reject to roll back.",
                kind="gate",
            )
        )
        if not answer.approved:
            self._fail(f"resumed {what}; {answer.by} chose to roll back", "rollback")

    # -- the whole run ----------------------------------------------------
    async def run(self) -> Outcome:
        await self._check_resume_point()
        normal = [s for s in self.rb.steps if not s.always]
        tasks: dict[str, asyncio.Task[StepReport]] = {}
        launched: set[str] = set()
        while True:
            if self.mode == "normal":
                for step in self.rb.steps:
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
                if self.states[sid].status == "pending" and self.mode == "normal":
                    launched.discard(sid)  # an operator chose to retry it
        leftovers = [s.id for s in normal if self.states[s.id].status == "pending"]
        if self.mode == "normal" and leftovers:
            self._fail("steps could not run: " + ", ".join(leftovers), "abort")
        if self.mode == "rollback":
            await self._rollback_all()
        await self._run_always()
        self.outcome = self._outcome()
        return self.outcome

    def _ready(self, step: Step) -> bool:
        if self.states[step.id].status != "pending":
            return False
        deps = [self.states[d] for d in step.depends_on]
        return all(d.status in ("succeeded", "skipped", "dry_run") for d in deps)

    def _skip_blocked(self) -> None:
        """Under on_failure: continue, dependants of a failed step are skipped."""
        changed = True
        while changed:
            changed = False
            for step in self.rb.steps:
                st = self.states[step.id]
                if st.status != "pending" or step.always:
                    continue
                if any(self.states[d].status == "failed" for d in step.depends_on) or any(
                    self.states[d].status == "skipped" and self.states[d].error
                    for d in step.depends_on
                ):
                    st.status = "skipped"
                    st.error = "a step it depends on failed"
                    self.journal.append(
                        "step.finished", step=step.id, status="skipped", error=st.error
                    )
                    changed = True

    async def _settle(self, sid: str, report: StepReport) -> None:
        st = self.states[sid]
        step = st.step
        if report.status != "failed":
            return  # done, or not started because the run is stopping (still pending)
        policy = self.rb.on_failure_of(step)
        if step.always:
            policy = "continue"
        if policy == "pause" and self.mode == "normal":
            answer = await self._ask(
                Question(
                    step_id=sid,
                    title=f"Step {sid} failed: retry, skip or roll back?",
                    instructions=f"{step.title} failed: {report.error}",
                    kind="failure",
                )
            )
            decision = answer.decision or ("retry" if answer.approved else "rollback")
            self.journal.append(
                "step.decision", step=sid, by=answer.by, decision=decision, comment=answer.comment
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
        self._fail(
            f"step {sid!r} failed: {report.error}", "rollback" if policy == "rollback" else "abort"
        )

    def _fail(self, reason: str, mode: Literal["rollback", "abort"]) -> None:
        if self.mode != "normal":
            return
        self.failure = reason
        self.mode = mode
        log.error("run failing", reason=reason, next=mode)

    def _outcome(self) -> Outcome:
        if self.failure is None:
            failed = any(st.status == "failed" for st in self.states.values())
            return "failed" if failed else "succeeded"
        return "rolled_back" if self.mode == "rollback" else "aborted"

    # -- launching and waiting ---------------------------------------------
    def _stopping(self) -> bool:
        return self.mode != "normal"

    async def _launch(self, step: Step) -> StepReport:
        st = self.states[step.id]
        if step.at is not None:
            when = self.rb.resolve_at(step.at) + self.shift
            wait = (when - self.clock.now()).total_seconds()
            if wait > 0:
                st.status = "waiting"
                local = when.astimezone(self.rb.zone)
                log.info(
                    f"waiting until {local:%H:%M} {local:%z}"[:-2] + f" ({format_duration(wait)})",
                    step=step.id,
                )
                self.journal.append("step.waiting", step=step.id, until=when.isoformat())
                self.bridge.publish(self)
                if not await sleep_until(self.clock, when, stop=self._stopping):
                    st.status = "pending"
                    return StepReport(step.id, "pending")
        async with self._slots:
            await self._may_start(step)
            if self._stopping():
                st.status = "pending"
                return StepReport(step.id, "pending")
            if not step.always and self.clock.now() >= self.window_end:
                self._fail(
                    f"the window ended at {self.window_end.astimezone(self.rb.zone):%H:%M %z} "
                    f"before step {step.id!r} could start",
                    "rollback",
                )
                st.status = "pending"
                return StepReport(step.id, "pending")
            return await self._run_step(step)

    async def _may_start(self, step: Step) -> None:
        """Hold new starts while a person is being asked, so the flow can pause cleanly."""
        async with self._quiet:
            await self._quiet.wait_for(lambda: self._asking == 0 or self._stopping() or step.always)
            self._running += 1

    async def _run_step(self, step: Step) -> StepReport:
        st = self.states[step.id]
        try:
            return await self.bridge.task(step.id, lambda: self._step_body(step))
        finally:
            async with self._quiet:
                self._running -= 1
                self._quiet.notify_all()
            if st.status in ("succeeded", "failed", "dry_run") and step.id not in self.completed:
                self.completed.append(step.id)
            self.bridge.publish(self)

    async def _step_body(self, step: Step) -> StepReport:
        """The step boundary: whatever happens inside becomes this step's outcome."""
        st = self.states[step.id]
        st.status = "running"
        st.started = self.clock.now()
        st.error = None
        self.journal.append("step.started", step=step.id, attempt_round=len(self.completed))
        self.bridge.publish(self)
        try:
            if step.approval is not None:
                await self._gate(step)
            elif step.target is not None and step.action is not None:
                await self._fan_out(step)
            st.status = "dry_run" if self.opts.dry_run and step.target else "succeeded"
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
        st.finished = self.clock.now()
        st.summary = _join_summaries(st)
        self._base_context = None
        self.journal.append(
            "step.finished",
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

    # -- gates and people --------------------------------------------------
    async def _gate(self, step: Step) -> None:
        assert step.approval is not None
        q = Question(
            step_id=step.id,
            title=step.title,
            instructions=step.approval.instructions or step.description,
            approvers=tuple(step.approval.approvers),
            timeout_s=step.approval.timeout.total_seconds(),
            kind="gate",
        )
        answer = await self._ask(q)
        if not answer.approved:
            raise GateRejected(
                f"no-go from {answer.by}" + (f": {answer.comment}" if answer.comment else "")
            )

    async def confirm(self, step: Step, title: str, instructions: str) -> Confirmation:
        """What the manual adapter calls: the same mechanism as approval gates."""
        answer = await self._ask(
            Question(
                step_id=step.id,
                title=title,
                instructions=instructions,
                kind="manual",
                timeout_s=(self.rb.timeout_of(step) or timedelta(hours=1)).total_seconds(),
            )
        )
        return Confirmation(
            by=answer.by, approved=answer.approved, comment=answer.comment, at=self.clock.now()
        )

    async def _ask(self, q: Question) -> Answer:
        self.journal.append(
            "gate.requested",
            step=q.step_id,
            kind=q.kind,
            title=q.title,
            approvers=list(q.approvers),
            timeout_s=q.timeout_s,
        )
        if self.opts.dry_run or self.opts.auto_approve:
            why = "dry run" if self.opts.dry_run else "--auto-approve"
            answer = Answer(
                by=self.opts.started_by,
                approved=True,
                comment=f"auto-approved ({why})",
                decision="rollback" if q.kind == "failure" else None,
            )
            self.journal.append(
                "gate.answered",
                step=q.step_id,
                by=answer.by,
                approved=True,
                comment=answer.comment,
                auto=True,
                kind=q.kind,
            )
            log.info(f"{q.kind} answered automatically ({why})", step=q.step_id)
            return answer
        async with self._quiet:
            self._asking += 1
            # Everyone still running must finish or be asking too: a paused flow run
            # accepts no new task runs, and a half-finished change should not wait on a person.
            await self._quiet.wait_for(lambda: self._running <= self._asking)
        try:
            async with self._ask_lock:
                log.warning(f"waiting for a person: {q.title}", step=q.step_id)
                answer = await self.bridge.ask(q)
                while q.approvers and answer.by not in q.approvers and answer.by != "timeout":
                    # Only a listed approver may decide; anyone else's answer is kept as
                    # evidence and the question is asked again.
                    self.journal.append(
                        "gate.refused",
                        step=q.step_id,
                        by=answer.by,
                        reason=f"not an approver ({', '.join(q.approvers)})",
                    )
                    log.warning(f"{answer.by} is not an approver of {q.step_id}; asking again")
                    answer = await self.bridge.ask(q)
        finally:
            async with self._quiet:
                self._asking -= 1
                self._quiet.notify_all()
        self.journal.append(
            "gate.answered",
            step=q.step_id,
            by=answer.by,
            approved=answer.approved,
            comment=answer.comment,
            auto=False,
            kind=q.kind,
            decision=answer.decision,
        )
        return answer

    # -- fan-out and items -------------------------------------------------
    def _items(self, step: Step) -> list[ItemState]:
        if step.for_each is None:
            return [ItemState(key="-", item=None, index=0)]
        values = templating.render(step.for_each, self._context())
        if not isinstance(values, list):
            raise PermanentError(f"for_each gave {type(values).__name__}, not a list")
        items = []
        seen: set[str] = set()
        for i, value in enumerate(values):
            probe = ItemState(key="", item=value, index=i)
            if step.item_key:
                key = str(templating.render(step.item_key, self._context(probe)))
            elif isinstance(value, str | int | float):
                key = str(value)
            else:
                key = f"#{i}"
            if key in seen:
                raise PermanentError(f"item key {key!r} repeats; set item_key to something unique")
            seen.add(key)
            probe.key = key
            items.append(probe)
        return items

    async def _fan_out(self, step: Step) -> None:
        st = self.states[step.id]
        known = self.recovered.items.get(step.id) if self.recovered else None
        st.items = self._merge(step, known) if known else self._items(step)
        if step.for_each is not None:
            self.journal.append("step.items", step=step.id, items=[i.key for i in st.items])
        gate = asyncio.Semaphore(step.concurrency)
        failures: list[str] = []

        async def one(item: ItemState) -> None:
            async with gate:
                if item.status == "succeeded" and item.result is not None:
                    return  # done before the interruption
                if failures and self.rb.on_failure_of(step) != "continue":
                    return
                try:
                    await self._item(step, item)
                except (AdapterError, StepFailed) as exc:
                    item.status = "failed"
                    item.error = str(exc)
                    failures.append(f"{item.key}: {exc}" if step.for_each else str(exc))

        await asyncio.gather(*(one(i) for i in st.items))
        self._collect_output(step)
        if failures:
            done = sum(1 for i in st.items if i.status == "succeeded")
            prefix = (
                f"{len(failures)} of {len(st.items)} items failed ({done} done); "
                if step.for_each
                else ""
            )
            raise StepFailed(prefix + "; ".join(failures[:3]) + (" …" if len(failures) > 3 else ""))

    def _collect_output(self, step: Step) -> None:
        st = self.states[step.id]
        if step.for_each is not None:
            st.output = {"items": {i.key: dict(i.result.output) for i in st.items if i.result}}
        elif st.items and st.items[0].result is not None:
            st.output = dict(st.items[0].result.output)

    def _key(self, step: Step, item: ItemState, phase: str) -> str:
        raw = f"{self.opts.run_id}:{step.id}:{item.key}:{phase}"
        return hashlib.sha256(raw.encode()).hexdigest()[:32]

    def _call(
        self,
        step: Step,
        item: ItemState,
        action: str,
        args: BaseModel,
        phase: str,
        prior: Result | None = None,
    ) -> Call:
        timeout = self.rb.timeout_of(step)
        return Call(
            action=action,
            args=args,
            run_id=self.opts.run_id,
            step_id=step.id,
            item_key=None if step.for_each is None else item.key,
            idempotency_key=self._key(
                step, item, "apply" if phase in ("apply", "check") else phase
            ),
            clock=self.clock,
            log=lambda msg: log.info(msg, step=step.id, item=item.key),
            timeout=timeout.total_seconds() if timeout else None,
            prior=prior,
            confirm=lambda title, text: self.confirm(step, title, text),
            phase=phase,  # type: ignore[arg-type]
        )

    async def _item(self, step: Step, item: ItemState) -> None:
        assert step.target is not None and step.action is not None
        adapter = self.adapters[step.target]
        spec = adapter.actions[step.action]
        ctx = self._context(item)
        args = self._args(spec.args, step.with_, ctx)
        item_field = None if step.for_each is None else item.key
        if self.opts.dry_run:
            result = await adapter.check(self._call(step, item, step.action, args, "check"))
            item.result = result
            item.status = "succeeded"
            self.journal.append(
                "step.outcome",
                step=step.id,
                item=item_field,
                phase="check",
                ok=result.ok,
                changed=result.changed,
                summary=result.summary,
            )
            return
        if item.status == "uncertain" and await self._already_applied(step, item):
            return
        call = self._call(step, item, step.action, args, "apply")
        if spec.mutating:  # write-ahead: the intent is durable before the change is tried
            self.journal.append(
                "step.intent",
                step=step.id,
                item=item_field,
                phase="apply",
                action=step.action,
                target=step.target,
                idempotency_key=call.idempotency_key,
            )
        item.status = "running"
        result = await self._retrying(step, item, "apply", lambda: adapter.apply(call))
        item.result = result
        self.journal.append(
            "step.outcome",
            step=step.id,
            item=item_field,
            phase="apply",
            ok=True,
            changed=result.changed,
            summary=result.summary,
            output=dict(result.output),
        )
        await self._verify(step, item, result)
        item.status = "succeeded"

    async def _already_applied(self, step: Step, item: ItemState) -> bool:
        """An intent without an outcome: did the change land before the interruption?

        Only an explicit read-back can say so; otherwise the item is applied again
        with the same idempotency key, which an idempotent system answers as a replay.
        """
        if step.verify is None or step.verify.action is None:
            return False
        probe = Result(changed=True, summary="applied before the interruption")
        try:
            await self._verify(step, item, probe)
        except (VerificationFailed, PermanentError, TransientError):
            return False
        item.result = probe
        item.status = "succeeded"
        self.journal.append(
            "step.outcome",
            step=step.id,
            item=None if step.for_each is None else item.key,
            phase="apply",
            ok=True,
            changed=True,
            summary=probe.summary,
            recovered=True,
        )
        return True

    async def _verify(self, step: Step, item: ItemState, applied: Result) -> None:
        assert step.target is not None and step.action is not None
        item_field = None if step.for_each is None else item.key
        v = step.verify
        if v is not None and v.action is not None:
            target = v.target or step.target
            adapter = self.adapters[target]
            raw = dict(v.with_)
            if v.expect is not None:
                raw["expect"] = v.expect
            args = self._args(adapter.actions[v.action].args, raw, self._context(item, applied))
            call = self._call(step, item, v.action, args, "verify", prior=applied)
            try:
                result = await self._retrying(step, item, "verify", lambda: adapter.apply(call))
                ok, summary = result.ok, result.summary
            except PermanentError as exc:
                ok, summary = False, str(exc)
        else:
            adapter = self.adapters[step.target]
            args = self._args(adapter.actions[step.action].args, step.with_, self._context(item))
            call = self._call(step, item, step.action, args, "verify", prior=applied)
            result = await self._retrying(step, item, "verify", lambda: adapter.verify(call))
            ok, summary = result.ok, result.summary
        self.journal.append("step.verified", step=step.id, item=item_field, ok=ok, summary=summary)
        if not ok:
            raise VerificationFailed(f"verification failed: {summary}")

    # -- retries -------------------------------------------------------------
    async def _retrying(
        self, step: Step, item: ItemState, phase: str, fn: Callable[[], Awaitable[Result]]
    ) -> Result:
        policy = self.rb.retries_of(step)
        timeout = self.rb.timeout_of(step)
        started = time.monotonic()
        planned: dict[int, float] = {}
        item_field = None if step.for_each is None else item.key

        def delay_for(state: RetryCallState) -> float:
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
                and (time.monotonic() - started) + self.clock.real_seconds(d)
                >= timeout.total_seconds()
            ):
                reason = "no time left before the step's timeout for another attempt"
            elif self.clock.now() + timedelta(seconds=d) >= self.window_end:
                reason = "another attempt would end after the window"
            self.journal.append(
                "step.attempt",
                step=step.id,
                item=item_field,
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
            sleep=self.clock.sleep,
            reraise=True,
        )
        st = self.states[step.id]
        async for attempt in retrying:
            with attempt:
                if phase == "apply":
                    st.attempts += 1
                return await fn()
        raise AssertionError("unreachable")  # pragma: no cover

    # -- rollback and always -------------------------------------------------
    async def _rollback_all(self) -> None:
        # Newest first; a step that failed midway sits where it ended and its applied
        # items are undone like any other's.
        todo = [sid for sid in reversed(self.completed) if self._rollbackable(self.states[sid])]
        self.journal.append("rollback.started", reason=self.failure, steps=todo)
        log.warning(f"rolling back {len(todo)} step(s): {', '.join(todo) or 'none'}")
        ok = True
        for sid in todo:
            report = await self.bridge.task(
                f"rollback-{sid}", functools.partial(self._rollback_step, sid)
            )
            ok = ok and report.status == "rolled_back"
        self.journal.append("rollback.finished", ok=ok)

    def _rollbackable(self, st: StepState) -> bool:
        step = st.step
        if step.target is None or step.action is None or step.always or step.irreversible:
            return False
        spec = self.adapters[step.target].actions[step.action]
        if not spec.mutating:
            return False
        if step.rollback is None and not spec.reversible:
            return False
        return any(
            i.result is not None and i.result.changed and not i.rolled_back for i in st.items
        )

    async def _rollback_step(self, sid: str) -> StepReport:
        st = self.states[sid]
        step = st.step
        assert step.target is not None and step.action is not None
        errors: list[str] = []
        todo = [i for i in reversed(st.items) if i.result is not None and i.result.changed]
        gate = asyncio.Semaphore(step.concurrency)

        async def one(item: ItemState) -> None:
            async with gate:
                try:
                    await self._rollback_item(step, item)
                except AdapterError as exc:
                    errors.append(f"{item.key}: {exc}")
                    self.journal.append(
                        "step.outcome",
                        step=sid,
                        item=item.key,
                        phase="rollback",
                        ok=False,
                        changed=False,
                        summary=str(exc),
                    )

        await asyncio.gather(*(one(i) for i in todo))
        if errors:
            st.error = (st.error or "") + "; rollback failed: " + "; ".join(errors[:3])
            log.error(f"rollback incomplete: {'; '.join(errors[:3])}", step=sid)
            return StepReport(sid, "failed", error=st.error)
        st.status = "rolled_back"
        self._base_context = None
        self.journal.append("step.finished", step=sid, status="rolled_back", error=st.error)
        log.info("rolled back", step=sid)
        self.bridge.publish(self)
        return StepReport(sid, "rolled_back")

    async def _rollback_item(self, step: Step, item: ItemState) -> None:
        assert step.target is not None and step.action is not None and item.result is not None
        item_field = None if step.for_each is None else item.key
        r = step.rollback
        if r is not None and r.action is not None:
            target = r.target or step.target
            adapter = self.adapters[target]
            args = self._args(
                adapter.actions[r.action].args, r.with_, self._context(item, item.result)
            )
            call = self._call(step, item, r.action, args, "rollback", prior=item.result)
            action, fn = r.action, (lambda: adapter.apply(call))
        else:
            adapter = self.adapters[step.target]
            args = self._args(adapter.actions[step.action].args, step.with_, self._context(item))
            call = self._call(step, item, step.action, args, "rollback", prior=item.result)
            action, fn = step.action, (lambda: adapter.rollback(call))
        self.journal.append(
            "step.intent",
            step=step.id,
            item=item_field,
            phase="rollback",
            action=action,
            target=r.target if r and r.target else step.target,
            idempotency_key=call.idempotency_key,
        )
        result = await self._retrying(step, item, "rollback", fn)
        item.rolled_back = True
        self.journal.append(
            "step.outcome",
            step=step.id,
            item=item_field,
            phase="rollback",
            ok=True,
            changed=result.changed,
            summary=result.summary,
        )

    async def _run_always(self) -> None:
        pending = [s for s in self.rb.steps if s.always and self.states[s.id].status == "pending"]
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
                await self._may_start(step)
                await self._run_step(step)
                done.add(step.id)


def _join_summaries(st: StepState) -> str:
    parts = [i.result.summary for i in st.items if i.result is not None and i.result.summary]
    if not parts:
        return st.error or ""
    if len(parts) == 1:
        return parts[0]
    changed = sum(1 for i in st.items if i.result is not None and i.result.changed)
    return f"{len(parts)} items, {changed} changed; first: {parts[0]}"
