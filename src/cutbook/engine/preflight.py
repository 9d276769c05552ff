"""Pre-flight: every step's read-only ``check`` against the real targets, now.

Days or hours before the night, an operations lead wants to know whether it
would go: targets reachable, credentials accepted, data that the targets know.
A pre-flight ignores ``at`` and the window, checks every step (a failing one
does not hide the next), changes nothing (adapters' ``check`` only reads), and is
journalled as a run of its own kind so an auditor can see it was done and when.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import structlog
from pydantic import ValidationError

from cutbook import templating
from cutbook.adapter import Call, Result, url_path_fields
from cutbook.engine.calls import idempotency_key
from cutbook.engine.session import Session
from cutbook.errors import CutbookError
from cutbook.journal.events import Event
from cutbook.model import Step

log = structlog.get_logger("cutbook.engine")

Verdict = Literal["ok", "blocks", "not checkable"]


@dataclass(frozen=True)
class StepCheck:
    """One step's answer: what a person reads in the table, and why it blocks."""

    step: str
    target: str | None
    verdict: Verdict
    detail: str
    items: int = 1
    """How many of the step's items were checked (all of them, for a fan-out)."""


class _NotCheckable(Exception):
    """A template needs what only the night provides (an earlier step's output)."""


def _night_only(step: Step) -> str:
    """What in the step's arguments exists only during the night (earlier steps' output)."""
    names: set[str] = set()
    for _, text in templating.walk_strings(step.with_):
        try:
            names |= templating.analyze(text).names
        except templating.TemplateProblem:
            continue  # validation already refused it; rendering will say why
    found = sorted(names & {"steps", "output"})
    return " and ".join(f"`{n}`" for n in found) + " (known only during the night)" if found else ""


class Preflight:
    """Checks a prepared :class:`Session`'s steps, journalling each answer."""

    def __init__(self, session: Session, *, concurrency: int = 8) -> None:
        self.session = session
        self._slots = asyncio.Semaphore(concurrency)

    async def run(self) -> list[StepCheck]:
        results = [await self._step(step) for step in self.session.loaded.runbook.steps]
        blocking = [r.step for r in results if r.verdict == "blocks"]
        await self.session.finish(
            "failed" if blocking else "succeeded",
            f"would block the night: {', '.join(blocking)}" if blocking else None,
        )
        return results

    async def _step(self, step: Step) -> StepCheck:
        journal = self.session.journal
        assert journal is not None
        journal.append(Event.STEP_STARTED, step=step.id)
        check = await self._check(step)
        status = "failed" if check.verdict == "blocks" else "dry_run"
        journal.append(Event.STEP_FINISHED, step=step.id, status=status, summary=check.detail)
        log.info(f"preflight: {check.verdict}: {check.detail}", step=step.id)
        return check

    async def _check(self, step: Step) -> StepCheck:
        if step.is_gate or step.target is None or step.action is None:
            who = ", ".join(step.approval.approvers) if step.approval else "anyone"
            return StepCheck(step.id, None, "ok", f"a person will be asked ({who} may answer)")
        later = _night_only(step)
        if later:
            return StepCheck(
                step.id, step.target, "not checkable", f"its arguments need {later}", 0
            )
        session = self.session
        ctx = session.loaded.static_context(session.secrets)
        try:
            items = self._items(step, ctx)
        except _NotCheckable as exc:
            return StepCheck(step.id, step.target, "not checkable", str(exc), 0)
        except CutbookError as exc:
            return StepCheck(step.id, step.target, "blocks", str(exc), 0)
        answers = await asyncio.gather(
            *(self._item(step, key, value, index, ctx) for index, (key, value) in enumerate(items))
        )
        blocked = [(key, why) for key, ok, why in answers if not ok]
        if blocked:
            shown = "; ".join(f"{k}: {w}" if step.for_each else w for k, w in blocked[:3])
            more = f" (+{len(blocked) - 3} more)" if len(blocked) > 3 else ""
            return StepCheck(step.id, step.target, "blocks", shown + more, len(items))
        first = answers[0][2] if answers else "no items"
        detail = f"{len(items)} items; first: {first}" if step.for_each else first
        return StepCheck(step.id, step.target, "ok", detail, len(items))

    def _items(self, step: Step, ctx: Mapping[str, Any]) -> list[tuple[str, Any]]:
        if step.for_each is None:
            return [("-", None)]
        values = self._render(step.for_each, ctx)
        if not isinstance(values, list):
            raise CutbookError(f"for_each gave {type(values).__name__}, not a list")
        items = []
        for index, value in enumerate(values):
            if step.item_key:
                key = str(self._render(step.item_key, {**ctx, "item": value, "index": index}))
            else:
                key = str(value) if isinstance(value, str | int | float) else f"#{index}"
            items.append((key, value))
        return items

    async def _item(
        self, step: Step, key: str, value: Any, index: int, ctx: Mapping[str, Any]
    ) -> tuple[str, bool, str]:
        assert step.target is not None and step.action is not None
        item_ctx = {**ctx, "item": value, "index": index}
        item = None if step.for_each is None else key
        result = await self._call(step, step.target, step.action, step.with_, item_ctx, key)
        if result.ok and step.preflight is not None:
            pre = step.preflight
            raw = dict(pre.with_)
            if pre.expect is not None:
                raw["expect"] = pre.expect
            target = pre.target or step.target
            ask = await self._call(step, target, pre.action, raw, item_ctx, key, precondition=True)
            result = Result(
                ok=ask.ok,
                changed=result.changed,
                summary=f"{result.summary}; precondition: {ask.summary}"
                if ask.ok
                else f"precondition not met: {ask.summary}",
            )
        assert self.session.journal is not None
        self.session.journal.append(
            Event.STEP_OUTCOME,
            step=step.id,
            item=item,
            phase="check",
            ok=result.ok,
            changed=result.changed,
            summary=result.summary,
        )
        return key, result.ok, result.summary

    async def _call(
        self,
        step: Step,
        target: str,
        action: str,
        raw_args: Mapping[str, Any],
        item_ctx: Mapping[str, Any],
        key: str,
        *,
        precondition: bool = False,
    ) -> Result:
        """One adapter ``check``: the step's own call, or its ``preflight:`` precondition
        (a read-only action, whose ``check`` performs it and judges ``expect``)."""
        session = self.session
        adapter = session.adapters[target]
        spec = adapter.actions[action]
        if precondition and spec.mutating:
            # Validation refuses this; never send a change from a pre-flight regardless.
            return Result(ok=False, summary=f"preflight action {action!r} would change things")
        try:
            raw = templating.render_args(raw_args, item_ctx, url_path_fields(spec.args))
            args = spec.args.model_validate(raw)
        except templating.TemplateError as exc:
            return Result(ok=False, summary=str(exc))
        except ValidationError as exc:
            first = exc.errors(include_url=False)[0]
            where = ".".join(str(p) for p in first["loc"])
            return Result(ok=False, summary=f"argument {where}: {first['msg']}")
        call = Call(
            action=action,
            args=args,
            run_id=session.run_id,
            step_id=step.id,
            item_key=None if step.for_each is None else key,
            idempotency_key=idempotency_key(session.run_id, step.id, key, "apply"),
            clock=session.clock,
            log=lambda msg: log.info(msg, step=step.id, item=key),
            timeout=30.0,
            phase="check",
        )
        async with self._slots:
            try:
                return await adapter.check(call)
            except CutbookError as exc:
                return Result(ok=False, summary=str(exc))

    @staticmethod
    def _render(text: Any, ctx: Mapping[str, Any]) -> Any:
        try:
            return templating.render(text, ctx)
        except templating.TemplateError as exc:
            raise _NotCheckable(f"items known only during the night: {exc}") from None
