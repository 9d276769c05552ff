"""The deadline guard: keep the one promise, intake reopens inside the window.

After every step settles, and every ``guard.interval`` while steps run, the
guard re-forecasts the rest of the night from actual durations
(:mod:`cutbook.forecast`) and journals it. When the night will not end inside
the window, it asks people go/no-go like an approval gate, with a deadline that
still leaves time to roll back; no answer by then is a no-go. A no-go rolls
back what changed and runs the ``always`` steps; a go is journalled with the
forecast as a conscious decision to overrun.

``--auto-approve`` does not answer the guard: a rehearsal takes its default,
no-go, so a rehearsal shows what the night would do if nobody were there.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime, timedelta, tzinfo

import structlog

from cutbook.clock import sleep_until
from cutbook.durations import format_duration
from cutbook.engine.gates import Gates
from cutbook.engine.state import Answer, GuardAlarm, Question, RunState
from cutbook.forecast import Forecast, Progress, forecast
from cutbook.journal.events import Event
from cutbook.planning import Plan
from cutbook.planning import plan as make_plan
from cutbook.validation.dependencies import RESERVED_ID

log = structlog.get_logger("cutbook.engine")

QUESTION_ID = RESERVED_ID
"""What the guard's question is called: ``cutbook approve RUN guard --by NAME``."""
MIN_ANSWER = timedelta(minutes=1)
"""People always get at least this long, even when a no-go is already late."""
_ITEM_DONE = frozenset({"succeeded", "failed", "dry_run"})
_TICK_MOVE_S = 60.0
"""A tick is journalled only when the forecast finish moved at least this much."""


class Guard:
    def __init__(self, run: RunState, gates: Gates) -> None:
        self.run = run
        self.gates = gates
        self.spec = run.rb.guard
        self._poked = asyncio.Event()
        self._reasons: list[str] = []
        self._stopped = False
        self._accepted: datetime | None = None
        """The forecast finish a go accepted: the guard asks again only if it gets worse."""
        self._last_ponr: datetime | None = None
        self._asked_ponr = False
        self._journalled: Forecast | None = None
        self._plan: Plan | None = None

    @property
    def active(self) -> bool:
        run = self.run
        return self.spec.enabled and run.rollback_requested is None and run.mode == "normal"

    def poke(self, reason: str) -> None:
        """A step settled: re-forecast now."""
        self._reasons.append(reason)
        self._poked.set()

    def stop(self) -> None:
        self._stopped = True
        self._poked.set()

    async def watch(self) -> None:
        """Forecast on every poke and tick until stopped; ask when the night will not fit."""
        if not self.active:
            return
        await self.check("run started")
        interval = self.spec.interval.total_seconds()
        while not self._stopped and self.active and self.run.halted is None:
            await self._next(interval)
            if self._stopped or not self.active or self.run.halted is not None:
                return
            reasons, self._reasons = self._reasons, []
            await self.check("; ".join(reasons) if reasons else "tick")

    async def _next(self, interval: float) -> None:
        """Until poked, or ``interval`` of runbook time has passed (a rehearsal skips it)."""
        if self._poked.is_set():
            self._poked.clear()
            return
        poked = asyncio.ensure_future(self._poked.wait())
        tick = asyncio.ensure_future(self.run.clock.sleep(interval))
        try:
            await asyncio.wait({poked, tick}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (poked, tick):
                task.cancel()
            for task in (poked, tick):
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._poked.clear()

    # -- forecasting

    def plan(self) -> Plan:
        run = self.run
        if self._plan is None:
            self._plan = run.forecast_plan or make_plan(
                run.rb,
                start=run.window_start,
                item_counts=run.loaded.item_counts,
                read_only=run.loaded.read_only_steps(),
            )
        return self._plan

    def forecast(self) -> Forecast:
        run = self.run
        progress: dict[str, Progress] = {}
        for sid, st in run.states.items():
            # Only a running fan-out's rate matters; counting every settled step's
            # items on every forecast made a long night's guard quadratic.
            fan = st.step.for_each is not None and st.status == "running"
            progress[sid] = Progress(
                _status(st.status),
                st.started,
                st.finished,
                items_done=sum(1 for i in st.items if i.status in _ITEM_DONE) if fan else 0,
                items_total=len(st.items) if fan else 0,
            )
        return forecast(
            self.plan(),
            progress,
            run.clock.now(),
            margin=self.spec.margin,
            window_end=run.window_end,
        )

    async def check(self, reason: str) -> None:
        """One forecast: journal it, show it, and ask go/no-go if it calls for that."""
        run = self.run
        fc = self.forecast()
        run.guard_forecast = fc
        if reason != "tick" or self._moved(fc):
            # A forecast, not a decision: durable with the next fsync.
            run.journal.write(Event.GUARD_FORECAST, reason=reason, **fc.to_json())
            self._journalled = fc
            run.publish()
        alarm = self._alarm(fc)
        self._last_ponr = fc.point_of_no_return
        if alarm is not None:
            await self._ask(fc, alarm)

    def _moved(self, fc: Forecast) -> bool:
        last = self._journalled
        if last is None or last.fits != fc.fits:
            return True
        if (last.point_of_no_return is None) != (fc.point_of_no_return is None):
            return True
        return abs((fc.finish - last.finish).total_seconds()) >= _TICK_MOVE_S

    def _alarm(self, fc: Forecast) -> str | None:
        """``overrun``: the forecast ends after the window (again, and worse than a go
        accepted). ``point-of-no-return``: the last moment a no-go fits just passed, the
        night still does not fit and irreversible work is ahead."""
        if fc.fits:
            return None
        margin = self.spec.margin
        if self._accepted is None:
            return "overrun"
        if fc.finish > self._accepted + margin:
            return "overrun"
        crossed = self._last_ponr is not None and fc.point_of_no_return is None
        if crossed and fc.irreversible_ahead and not self._asked_ponr:
            self._asked_ponr = True
            return "point-of-no-return"
        return None

    # -- asking

    def _deadline(self, fc: Forecast) -> datetime:
        """The answer must come while a no-go still fits; never less than a minute."""
        now = fc.at
        latest = fc.point_of_no_return or now
        return max(min(now + self.spec.answer_within, latest), now + MIN_ANSWER)

    def _approvers(self) -> tuple[str, ...]:
        if self.spec.approvers:
            return tuple(self.spec.approvers)
        names: list[str] = []
        for step in self.run.rb.steps:
            if step.approval is not None:
                names.extend(n for n in step.approval.approvers if n not in names)
        return tuple(names)

    async def _ask(self, fc: Forecast, alarm: str) -> None:
        run = self.run
        deadline = self._deadline(fc)
        zone = run.rb.zone
        text = _explain(fc, alarm, deadline, zone, run.opts.run_id)
        title = (
            "Deadline guard: the night will not end inside the window. Go on (overrun) "
            "or no-go (roll back now)?"
        )
        question = Question(
            step_id=QUESTION_ID,
            title=title,
            instructions=text,
            approvers=self._approvers(),
            timeout_s=max(1.0, (deadline - fc.at).total_seconds()),
            kind="guard",
        )
        log.error(f"deadline guard: {text.splitlines()[0]}")
        run.guard_alarm = GuardAlarm(key=f"{alarm}@{fc.at.isoformat()}", kind=alarm, text=text)
        run.publish()
        answer = await self._answer(question, deadline)
        decision = "go" if answer.approved else "no-go"
        run.journal.append(
            Event.GUARD_DECISION,
            alarm=alarm,
            decision=decision,
            by=answer.by,
            comment=answer.comment,
            asked_at=fc.at.isoformat(),
            deadline=deadline.isoformat(),
            forecast=fc.to_json(),
        )
        if answer.approved:
            self._accepted = fc.finish
            log.warning(
                f"deadline guard: go from {answer.by}: the night is expected to end "
                f"{_hm(fc.finish, zone)}, {format_duration(-fc.slack_s)} after the window"
            )
            return
        run.fail(
            f"deadline guard: no-go from {answer.by} ({alarm}): the forecast finish "
            f"{_hm(fc.finish, zone)} is after the window's end {_hm(fc.window_end, zone)}",
            "rollback",
        )
        run.publish()

    async def _answer(self, question: Question, deadline: datetime) -> Answer:
        """A person's answer, or no-go at the deadline (--auto-approve takes the default)."""
        run = self.run
        asking = asyncio.ensure_future(self.gates.ask(question))
        timer = asyncio.ensure_future(sleep_until(run.clock, deadline))
        try:
            await asyncio.wait({asking, timer}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            timer.cancel()
        if asking.done() and not asking.cancelled():
            return asking.result()
        asking.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asking
        answer = Answer(
            by="timeout",
            approved=False,
            comment=f"no answer by {_hm(deadline, run.rb.zone)}",
        )
        self.gates.record(question, answer, accepted=False, quorum=0)
        return answer


def _status(status: str) -> str:
    return "pending" if status == "waiting" else status


def _hm(moment: datetime, zone: tzinfo) -> str:
    local = moment.astimezone(zone)
    return local.strftime("%H:%M:%S" if local.second else "%H:%M")


def _explain(fc: Forecast, alarm: str, deadline: datetime, zone: tzinfo, run_id: str) -> str:
    """What people need to decide, first line first (it is also the log line)."""
    lines = [
        f"Forecast finish {_hm(fc.finish, zone)}, {format_duration(-fc.slack_s)} after the "
        f"window's end {_hm(fc.window_end, zone)} (planned finish {_hm(fc.planned_finish, zone)}).",
    ]
    if alarm == "point-of-no-return":
        lines.append("This is the last call: after now a no-go no longer fits the window.")
    if fc.no_go_fits:
        lines.append(
            f"No-go now: roll back {format_duration(fc.rollback_s)} of changes and run "
            f"{format_duration(fc.always_s)} of always steps; intake reopens about "
            f"{_hm(fc.no_go_finish, zone)}."
        )
    else:
        lines.append(
            f"No-go now still ends about {_hm(fc.no_go_finish, zone)}, after the window: "
            "both choices overrun; a no-go restores the old model."
        )
    if fc.irreversible_ahead:
        lines.append("Irreversible work ahead: " + ", ".join(fc.irreversible_ahead) + ".")
    lines.append(
        f"Answer by {_hm(deadline, zone)}; no answer by then is a no-go. "
        f"Go: `cutbook approve {run_id} {QUESTION_ID} --by NAME --approve`; "
        f"no-go: `... --reject`."
    )
    return "\n".join(lines)
