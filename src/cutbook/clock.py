"""Runbook time, real or compressed for rehearsal.

A rehearsal runs the whole timeline against real systems (the simulator)
with every wait divided by ``speed``: a six-hour window at speed 360 takes
about a minute. Adapters' I/O timeouts stay in real seconds, because the
systems behind them answer in real time. Pure Python.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

_CHUNK = 0.25
_REAL_KINDS = frozenset({"real", "wall"})


def is_real_clock(name: str | None) -> bool:
    """Whether a journalled clock kind means real time (absent: journals before clocks)."""
    return name is None or name in _REAL_KINDS


class RealClock:
    """Wall-clock time, optionally shifted so the window lands where ``--start`` says."""

    speed = 1.0
    kind = "real"

    def __init__(self, offset: timedelta = timedelta(0)) -> None:
        self.offset = offset

    def now(self) -> datetime:
        return datetime.now(UTC) + self.offset

    async def sleep(self, seconds: float) -> None:
        if seconds > 0:
            await asyncio.sleep(seconds)

    def real_seconds(self, runbook_seconds: float) -> float:
        return runbook_seconds


class VirtualClock:
    """Starts at ``origin`` and runs ``speed`` times faster than the wall clock."""

    kind = "virtual"

    def __init__(self, origin: datetime, speed: float = 360.0) -> None:
        if speed <= 0:
            raise ValueError("speed must be positive")
        self.origin = origin
        self.speed = float(speed)
        self._mono0 = time.monotonic()

    def now(self) -> datetime:
        return self.origin + timedelta(seconds=(time.monotonic() - self._mono0) * self.speed)

    def restart(self, origin: datetime | None = None) -> None:
        """Start the timeline now (at ``origin``): set-up time must not eat the first wait."""
        self.origin = origin or self.origin
        self._mono0 = time.monotonic()

    async def sleep(self, seconds: float) -> None:
        if seconds > 0:
            await asyncio.sleep(seconds / self.speed)

    def real_seconds(self, runbook_seconds: float) -> float:
        return runbook_seconds / self.speed


async def sleep_until(
    clock: RealClock | VirtualClock,
    when: datetime,
    *,
    stop: Callable[[], bool] = lambda: False,
) -> bool:
    """Sleep until ``when`` in runbook time; False if ``stop()`` turned true first.

    Sleeps in short chunks so a failure elsewhere can stop a waiting step, and
    re-checks the clock on waking so a step never starts early.
    """
    while True:
        if stop():
            return False
        remaining = (when - clock.now()).total_seconds()
        if remaining <= 0:
            return True
        await asyncio.sleep(min(clock.real_seconds(remaining), _CHUNK))
