"""The estate's own time, which follows a rehearsal's.

A rehearsal skips its waits: twenty minutes of "wait for the queue to drain"
may pass in a few milliseconds. The estate must see those minutes pass too, or
the queue never drains. Clients under a rehearsal clock send
``Cutbook-Rehearsal-Time`` (ISO 8601) with each request; the estate keeps its
clock at wall time plus a *skew* that only ever moves forward, so that from
the first such header on, the estate ages at least as much as the rehearsal.

The rehearsal's absolute time is usually in the past (the runbook's window),
so the estate follows its *progress*, not its date: the first header anchors
the rehearsal time to the estate's current time, and each later one moves the
estate forward to ``anchor + (rehearsal time - anchor's rehearsal time)`` if
that is ahead. A header earlier than the latest one seen (a new rehearsal, or
two concurrent requests crossing) re-anchors; nothing ever moves backwards
except a reset.

``CUTBOOK_SIMULATOR_SPEED`` (``--speed``) still makes a standalone estate age
faster than the wall clock, for manual experiments without a rehearsal clock.
"""

from __future__ import annotations

import datetime as dt
import os
import threading
import time
from collections.abc import Callable
from typing import Any

__all__ = ["REHEARSAL_HEADER", "EstateClock", "parse_rehearsal_time", "speed_from_env"]

REHEARSAL_HEADER = "cutbook-rehearsal-time"
"""The request header (lower case, as ASGI gives it) carrying the rehearsal's time."""


def speed_from_env() -> float:
    """``CUTBOOK_SIMULATOR_SPEED``: how much faster than the wall clock a standalone estate ages."""
    try:
        return max(0.001, float(os.environ.get("CUTBOOK_SIMULATOR_SPEED", "1")))
    except ValueError:
        return 1.0


def parse_rehearsal_time(value: str) -> float:
    """A header value as a POSIX timestamp; naive means UTC. ValueError if not ISO 8601."""
    when = dt.datetime.fromisoformat(value.strip())
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.timestamp()


class EstateClock:
    """Wall time (optionally faster) plus a forward-only skew that follows a rehearsal."""

    def __init__(self, speed: float | None = None, wall: Callable[[], float] = time.time) -> None:
        self.speed = speed_from_env() if speed is None else speed
        self._wall = wall
        self._lock = threading.Lock()
        self._origin = wall()
        self._skew = 0.0
        self._anchor: tuple[float, float] | None = None
        """(rehearsal time, estate time) when the current rehearsal was first seen."""
        self._latest: float | None = None
        """The latest rehearsal time seen since the anchor."""

    def _base(self) -> float:
        wall = self._wall()
        if self.speed == 1.0:
            return wall
        return self._origin + (wall - self._origin) * self.speed

    def now(self) -> float:
        """The estate's time as a POSIX timestamp: what every time-based behaviour reads."""
        with self._lock:
            return self._base() + self._skew

    @property
    def skew(self) -> float:
        """Seconds the estate's clock is ahead of its own (wall or sped-up) time."""
        with self._lock:
            return self._skew

    def follow(self, rehearsal: float) -> float:
        """Move forward to keep up with a rehearsal at ``rehearsal``; the new skew."""
        with self._lock:
            base = self._base()
            if self._anchor is None or self._latest is None or rehearsal < self._latest:
                self._anchor = (rehearsal, base + self._skew)
            self._latest = rehearsal
            seen, estate = self._anchor
            self._skew = max(self._skew, estate + (rehearsal - seen) - base)
            return self._skew

    def reset(self) -> None:
        """Back to plain wall time (a fresh estate): the skew and the anchor are dropped."""
        with self._lock:
            self._origin = self._wall()
            self._skew = 0.0
            self._anchor = None
            self._latest = None

    def describe(self) -> dict[str, Any]:
        with self._lock:
            now = self._base() + self._skew
            latest = self._latest
            return {
                "now": _iso(now),
                "skew_s": round(self._skew, 6),
                "speed": self.speed,
                "rehearsal_time": None if latest is None else _iso(latest),
            }


def _iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat()
