"""Runbook time: real, or a rehearsal clock that skips the waiting.

A rehearsal runs the whole timeline against real systems (the simulator).
Its :class:`VirtualClock` follows the model of a time-skipping test server:
time spent *doing* things (adapter calls, engine work) passes at the wall
clock's rate, so rehearsal actuals mean something; time spent *waiting* on
the clock (a step's ``at``, retry back-off, ``wait`` sleeps and polls, a
question's deadline) is compressed: while every participant waits, runbook
time runs ``speed`` times faster, never past the earliest pending timer.

The engine tells the clock who is busy. A *participant* is one unit of engine
work (a step task, a fan-out item, a rollback task, the scheduler's loop); the
current one lives in a context variable, so ``clock.sleep`` called deep inside
an adapter knows whose wait it is. The hand-off rule keeps the count from
dropping to zero between one step ending and the next starting: a parent takes
a child's token before the child task exists (:meth:`VirtualClock.spawn`),
is idle while it awaits children (:meth:`VirtualClock.idle`), and releases a
finished child's token only once it runs again (:meth:`VirtualClock.reap`).
:class:`RealClock` has the same methods as no-ops. Pure Python.
"""

from __future__ import annotations

import asyncio
import contextvars
import heapq
import itertools
import time
from collections.abc import Callable, Coroutine, Iterable
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any, TypeVar

_CHUNK = 0.25
"""Real seconds between ``stop()`` checks while sleeping until a moment."""
_REAL_KINDS = frozenset({"real", "wall"})
_QUIET_HOPS = 2
"""Event-loop turns everyone must stay waiting before skipping starts (belt and braces)."""
_LATE_TOLERANCE = 0.001
"""A timer firing this many real seconds early at 1x counts as on time (loop rounding)."""

T = TypeVar("T")


def is_real_clock(name: str | None) -> bool:
    """Whether a journalled clock kind means real time (absent: journals before clocks)."""
    return name is None or name in _REAL_KINDS


class Participant:
    """One unit of engine work the rehearsal clock counts as busy unless it waits."""

    __slots__ = ("clock", "name", "pauses", "released")

    def __init__(self, clock: VirtualClock, name: str) -> None:
        self.clock = clock
        self.name = name
        self.pauses = 0
        """Waits in effect (nested ``idle`` blocks, a sleep): busy only at zero."""
        self.released = False

    @property
    def busy(self) -> bool:
        return not self.released and self.pauses == 0

    def __repr__(self) -> str:
        state = "released" if self.released else "busy" if self.busy else "waiting"
        return f"<Participant {self.name} {state}>"


_current: contextvars.ContextVar[Participant | None] = contextvars.ContextVar(
    "cutbook_clock_participant", default=None
)


class _Timer:
    """A point in runbook time: wakes a sleeper and/or marks its participant busy again."""

    __slots__ = ("due", "fired", "future", "owner", "seq")

    def __init__(
        self,
        due: float,
        seq: int,
        owner: Participant | None,
        future: asyncio.Future[None] | None,
    ) -> None:
        self.due = due
        self.seq = seq
        self.owner = owner
        self.future = future
        self.fired = False

    def __lt__(self, other: _Timer) -> bool:
        return (self.due, self.seq) < (other.due, other.seq)


class _Quiet:
    """What ``idle()`` returns: a ``with`` / ``async with`` block that pauses its participant."""

    def __init__(self, enter: Callable[[], None], leave: Callable[[], None]) -> None:
        self._enter = enter
        self._leave = leave

    def __enter__(self) -> None:
        self._enter()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._leave()

    async def __aenter__(self) -> None:
        self._enter()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._leave()


def _nothing() -> None:
    return None


class RealClock:
    """Wall-clock time, optionally shifted so the window lands where ``--start`` says.

    It has the rehearsal clock's bookkeeping methods as no-ops, so the engine
    is written once for both.
    """

    speed = 1.0
    kind = "real"
    rehearsal = False

    def __init__(self, offset: timedelta = timedelta(0)) -> None:
        self.offset = offset

    def now(self) -> datetime:
        return datetime.now(UTC) + self.offset

    async def sleep(self, seconds: float) -> None:
        if seconds > 0:
            await asyncio.sleep(seconds)

    async def sleep_until(self, when: datetime, *, stop: Callable[[], bool] = bool) -> bool:
        """Sleep until ``when``; False if ``stop()`` turned true first (checked every 0.25 s)."""
        while True:
            if stop():
                return False
            remaining = (when - self.now()).total_seconds()
            if remaining <= 0:
                return True
            await asyncio.sleep(min(remaining, _CHUNK))

    def real_seconds(self, runbook_seconds: float) -> float:
        return runbook_seconds

    def spawn(self, coro: Coroutine[Any, Any, T], *, name: str | None = None) -> asyncio.Task[T]:
        return asyncio.create_task(coro, name=name)

    def reap(self, *tasks: asyncio.Future[Any]) -> None:
        return None

    async def gather(self, coros: Iterable[Coroutine[Any, Any, T]]) -> list[T]:
        return list(await asyncio.gather(*coros))

    def idle(self, until: float | None = None) -> _Quiet:
        return _Quiet(_nothing, _nothing)

    def participate(self, name: str) -> _Quiet:
        return _Quiet(_nothing, _nothing)


class VirtualClock:
    """A rehearsal clock starting at ``origin``: doing counts at 1x, waiting is skipped.

    While at least one participant is busy, or no timer is pending, runbook time
    runs at the wall clock's rate. While all of them wait on the clock, it runs
    ``speed`` times faster, clamped to the earliest timer (at a very high speed
    it jumps from timer to timer). A firing timer marks its waiter busy at once,
    before the waiter's task resumes, so nothing is skipped in between.
    """

    kind = "virtual"
    rehearsal = True

    def __init__(self, origin: datetime, speed: float = 360.0) -> None:
        if speed <= 0:
            raise ValueError("speed must be positive")
        self.origin = origin
        self.speed = float(speed)
        self._at = 0.0
        """Runbook seconds since ``origin`` at ``_mark``."""
        self._mark = time.monotonic()
        self._skipping = False
        self._busy = 0
        self._timers: list[_Timer] = []
        """Pending waits, earliest first: skipping needs one and never passes the first."""
        self._seq = itertools.count()
        self._generation = 0
        self._handle: asyncio.TimerHandle | None = None
        self._tokens: dict[asyncio.Future[Any], Participant] = {}

    # -- reading the time ----------------------------------------------------

    def _position(self) -> float:
        elapsed = time.monotonic() - self._mark
        if not self._skipping:
            return self._at + elapsed
        at = self._at + elapsed * self.speed
        if self._timers:
            at = min(at, self._timers[0].due)
        return max(at, self._at)

    def _settle(self) -> None:
        """Fix the position before anything changes: the rate and the clamp may change next."""
        self._at = self._position()
        self._mark = time.monotonic()

    def now(self) -> datetime:
        return self.origin + timedelta(seconds=self._position())

    def restart(self, origin: datetime | None = None) -> None:
        """Start the timeline now (at ``origin``): set-up time must not eat the first wait."""
        shift = self._position()
        self._skipping = False
        self.origin = origin or self.origin
        self._at = 0.0
        self._mark = time.monotonic()
        for timer in self._timers:
            timer.due -= shift
        self._replan()

    def real_seconds(self, runbook_seconds: float) -> float:
        """Real seconds a wait of ``runbook_seconds`` takes at full speed (people's deadlines)."""
        return runbook_seconds / self.speed

    @property
    def skipping(self) -> bool:
        """Whether runbook time is running at ``speed`` right now (everyone waits)."""
        return self._skipping

    @property
    def busy(self) -> int:
        """How many participants are doing something (not waiting on the clock)."""
        return self._busy

    # -- participants ----------------------------------------------------------

    def join(self, name: str = "") -> Participant:
        """A new participant, busy from now on: take it *before* its task exists."""
        token = Participant(self, name)
        self._settle()
        self._busy += 1
        self._replan()
        return token

    def leave(self, token: Participant) -> None:
        """The participant has finished; idempotent."""
        if token.released:
            return
        was_busy = token.busy
        token.released = True
        if was_busy:
            self._settle()
            self._busy -= 1
            self._replan()

    def current(self) -> Participant | None:
        """The participant whose work is running here (None outside the engine)."""
        token = _current.get()
        return token if token is not None and token.clock is self else None

    def spawn(self, coro: Coroutine[Any, Any, T], *, name: str | None = None) -> asyncio.Task[T]:
        """Start ``coro`` as a task with a participant of its own, busy before it exists.

        The token stays busy after the task ends, until the parent calls :meth:`reap`
        on waking: so the count never dips to zero during a hand-off.
        """
        token = self.join(name or "")
        context = contextvars.copy_context()
        context.run(_current.set, token)
        task = asyncio.create_task(coro, name=name, context=context)
        self._tokens[task] = token
        return task

    def reap(self, *tasks: asyncio.Future[Any]) -> None:
        """Release spawned tasks' participants: now if done, else when each ends.

        Call it once the caller is busy again, after awaiting them: that is the
        hand-off that keeps the count above zero between one step and the next.
        """
        for task in tasks:
            token = self._tokens.get(task)
            if token is None:
                continue
            if task.done():
                del self._tokens[task]
                self.leave(token)
            else:
                task.add_done_callback(self.reap)

    async def gather(self, coros: Iterable[Coroutine[Any, Any, T]]) -> list[T]:
        """``asyncio.gather`` with one participant per coroutine and the hand-off rule.

        The caller waits meanwhile. A child that ends while siblings still run
        releases its token at once (there is nothing left for it to do); the last
        one's is released by the caller once it runs again.
        """
        tasks = [self.spawn(coro) for coro in coros]
        left = len(tasks)

        def ended(task: asyncio.Future[Any]) -> None:
            nonlocal left
            left -= 1
            if left:
                self.reap(task)

        for task in tasks:
            task.add_done_callback(ended)
        try:
            with self.idle():
                return list(await asyncio.gather(*tasks))
        finally:
            for task in tasks:
                self.reap(task)  # the last one now; any still running when it ends

    def participate(self, name: str) -> _Quiet:
        """A block that counts as a participant's work; inside one already, nothing changes."""
        taken: list[tuple[Participant, contextvars.Token[Participant | None]]] = []

        def enter() -> None:
            if self.current() is None:
                token = self.join(name)
                taken.append((token, _current.set(token)))

        def leave() -> None:
            if taken:
                token, reset = taken.pop()
                _current.reset(reset)
                self.leave(token)

        return _Quiet(enter, leave)

    def idle(self, until: float | None = None) -> _Quiet:
        """A block in which the current participant waits (for children, a slot, a person).

        With ``until`` (runbook seconds from now) it is a wait with a deadline: at
        that moment the participant counts as busy again even if the block goes
        on, so skipping never runs past it.
        """
        state: list[tuple[Participant, _Timer | None]] = []

        def enter() -> None:
            token = self.current()
            if token is None:
                return
            timer = None
            if until is not None:
                timer = self._add(self._position() + max(0.0, until), token, None)
            self._pause(token)
            state.append((token, timer))

        def leave() -> None:
            if not state:
                return
            token, timer = state.pop()
            if timer is not None and timer.fired:
                return  # the deadline already made it busy again
            if timer is not None:
                self._remove(timer)
            self._resume(token)

        return _Quiet(enter, leave)

    def _pause(self, token: Participant) -> None:
        if token.released:
            return
        self._settle()
        token.pauses += 1
        if token.pauses == 1:
            self._busy -= 1
        self._replan()

    def _resume(self, token: Participant) -> None:
        if token.pauses <= 0:
            return
        self._settle()
        token.pauses -= 1
        if token.pauses == 0 and not token.released:
            self._busy += 1
        self._replan()

    # -- waiting -------------------------------------------------------------

    async def sleep(self, seconds: float) -> None:
        """Sleep ``seconds`` of runbook time; the current participant waits meanwhile."""
        if seconds > 0:
            await self._wait(self._position() + seconds)

    async def sleep_until(self, when: datetime, *, stop: Callable[[], bool] = bool) -> bool:
        """Sleep until ``when``; False if ``stop()`` turned true first.

        ``stop()`` is checked every 0.25 real seconds, so a failure elsewhere can
        stop a waiting step; the clock is re-read on waking, so it never ends early.
        """
        while True:
            if stop():
                return False
            due = (when - self.origin).total_seconds()
            if due <= self._position():
                return True
            if not await self._wait(due, stop):
                return False

    async def _wait(self, due: float, stop: Callable[[], bool] | None = None) -> bool:
        loop = asyncio.get_running_loop()
        token = self.current()
        future: asyncio.Future[None] = loop.create_future()
        timer = self._add(due, token, future)
        if token is not None:
            self._pause(token)
        try:
            if stop is None:
                await future
                return True
            while not future.done():
                await asyncio.wait({future}, timeout=_CHUNK)
                if not future.done() and stop():
                    return False
            return True
        finally:
            if not timer.fired:
                self._remove(timer)
                if token is not None:
                    self._resume(token)

    def _add(
        self, due: float, owner: Participant | None, future: asyncio.Future[None] | None
    ) -> _Timer:
        timer = _Timer(due, next(self._seq), owner, future)
        self._settle()
        heapq.heappush(self._timers, timer)
        self._replan()
        return timer

    def _remove(self, timer: _Timer) -> None:
        if timer not in self._timers:
            return
        self._settle()
        self._timers.remove(timer)
        heapq.heapify(self._timers)
        self._replan()

    def _fire(self) -> None:
        """The loop's alarm: runbook time reached the earliest timer; wake what is due."""
        self._handle = None
        at = self._position()
        if self._skipping and self._timers:
            at = max(at, self._timers[0].due)  # scheduled for exactly then; loop rounding
        self._at = at
        self._mark = time.monotonic()
        self._skipping = False  # someone is woken: decide afresh (the clamp goes with the timer)
        while self._timers and self._timers[0].due <= at + _LATE_TOLERANCE:
            timer = heapq.heappop(self._timers)
            timer.fired = True
            if timer.owner is not None and timer.owner.pauses > 0:
                # Busy again now, before its task resumes: no skipping in the gap.
                timer.owner.pauses -= 1
                if timer.owner.pauses == 0 and not timer.owner.released:
                    self._busy += 1
            if timer.future is not None and not timer.future.done():
                timer.future.set_result(None)
        self._replan()

    # -- deciding the rate -------------------------------------------------------

    def _replan(self) -> None:
        """After any change (the position settled first): choose the rate, set the alarm."""
        self._generation += 1
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop, so no timers to serve
        quiet = self._busy <= 0 and bool(self._timers)
        if not quiet:
            self._skipping = False
        elif not self._skipping:
            loop.call_soon(self._quiet_hop, self._generation, _QUIET_HOPS)
        self._alarm(loop)

    def _quiet_hop(self, generation: int, hops: int) -> None:
        """Skip only once everyone has stayed waiting for a few loop turns."""
        if generation != self._generation or self._skipping:
            return
        if hops > 1:
            asyncio.get_running_loop().call_soon(self._quiet_hop, generation, hops - 1)
            return
        self._settle()
        self._skipping = True
        self._alarm(asyncio.get_running_loop())

    def _alarm(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        if not self._timers:
            return
        rate = self.speed if self._skipping else 1.0
        delay = max(0.0, (self._timers[0].due - self._at) / rate)
        self._handle = loop.call_later(delay, self._fire)


async def sleep_until(
    clock: RealClock | VirtualClock,
    when: datetime,
    *,
    stop: Callable[[], bool] = bool,
) -> bool:
    """Sleep until ``when`` in runbook time; False if ``stop()`` turned true first."""
    return await clock.sleep_until(when, stop=stop)
