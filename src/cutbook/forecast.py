"""Re-forecast the rest of the night from where a run stands.

The plan is computed once, before anything happens. The deadline guard asks
the same questions again after every step: when will the night end now, given
what actually took how long; what would a no-go cost from here; until when
does a no-go still reopen intake inside the window. Pure Python, like the
plan it starts from: no engine, no Prefect.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from cutbook.planning import Plan, latest_moment

__all__ = ["Forecast", "Progress", "forecast"]

_DONE = frozenset({"succeeded", "failed", "skipped", "dry_run"})


@dataclass(frozen=True, slots=True)
class Progress:
    """Where one step stands: its status and, once known, its actual times."""

    status: str
    started: datetime | None = None
    finished: datetime | None = None
    items_done: int = 0
    items_total: int = 0
    """For a fan-out: items finished so far of all its items (the rate so far forecasts
    the rest better than the estimate once the first item is done)."""


@dataclass(frozen=True)
class Forecast:
    """The night as it looks now.

    ``point_of_no_return`` is the latest moment from now at which a no-go (undo
    what is done, then the ``always`` steps) still ends ``margin`` before the
    window's end; ``None`` once that moment has passed, or once an irreversible
    step has run (a no-go can no longer put everything back).
    """

    at: datetime
    planned_finish: datetime
    finish: datetime
    window_end: datetime
    margin_s: float
    rollback_s: float
    always_s: float
    no_go_finish: datetime
    point_of_no_return: datetime | None
    irreversible_ahead: tuple[str, ...]
    irreversible_done: tuple[str, ...]
    running: tuple[str, ...]

    @property
    def slack_s(self) -> float:
        """Window end minus forecast finish; negative: the night overruns."""
        return (self.window_end - self.finish).total_seconds()

    @property
    def fits(self) -> bool:
        return self.finish <= self.window_end

    @property
    def drift_s(self) -> float:
        """How much later than planned the night now ends (negative: earlier)."""
        return (self.finish - self.planned_finish).total_seconds()

    @property
    def no_go_fits(self) -> bool:
        """Whether a no-go given now would still reopen intake inside the window."""
        return self.no_go_finish <= self.window_end

    def to_json(self) -> dict[str, Any]:
        ponr = self.point_of_no_return
        return {
            "at": self.at.isoformat(),
            "planned_finish": self.planned_finish.isoformat(),
            "finish": self.finish.isoformat(),
            "window_end": self.window_end.isoformat(),
            "slack_s": round(self.slack_s, 3),
            "margin_s": self.margin_s,
            "rollback_s": round(self.rollback_s, 3),
            "always_s": round(self.always_s, 3),
            "no_go_finish": self.no_go_finish.isoformat(),
            "point_of_no_return": ponr.isoformat() if ponr is not None else None,
            "irreversible_ahead": list(self.irreversible_ahead),
            "irreversible_done": list(self.irreversible_done),
            "running": list(self.running),
        }


def forecast(
    plan: Plan,
    progress: Mapping[str, Progress],
    now: datetime,
    *,
    margin: timedelta = timedelta(0),
    window_end: datetime | None = None,
) -> Forecast:
    """Forecast the rest of ``plan`` from ``progress`` at ``now``.

    Finished steps keep their actual finish. A running step ends at its start
    plus its estimate, or now if it has already overrun (it may end any moment:
    the forecast moves later with every tick it runs on); a running fan-out with
    some items done ends when the rest would at the rate so far. A step still to run
    starts at the latest of now, its ``at`` and its dependencies' forecast ends,
    and takes its estimate. A step absent from ``progress`` counts as pending.
    """
    now = now.astimezone(UTC)
    end = (window_end or plan.window_end).astimezone(UTC)
    zone = plan.window_end.tzinfo
    finish_of: dict[str, datetime] = {}
    start_of: dict[str, datetime] = {}
    done_cost = 0.0
    always_s = 0.0
    completions: list[tuple[int, int]] = []
    irreversible_ahead: list[str] = []
    irreversible_done: list[str] = []
    running: list[str] = []
    cap: datetime | None = None
    for ps in plan.steps:  # topological order: dependencies come first
        p = progress.get(ps.id) or Progress("pending")
        estimate = timedelta(seconds=ps.estimate_s)
        if p.status in _DONE:
            begin = (p.started or p.finished or now).astimezone(UTC)
            ended = (p.finished or now).astimezone(UTC)
        elif p.status == "running" and p.started is not None:
            begin = p.started.astimezone(UTC)
            ended = max(begin + estimate, now)
            if 0 < p.items_done < p.items_total:
                # Throughput so far (concurrency included) times what is left.
                per_item = (now - begin) / p.items_done
                ended = now + per_item * (p.items_total - p.items_done)
            running.append(ps.id)
        else:
            begin = now
            if ps.at is not None:
                begin = max(begin, ps.at.astimezone(UTC))
            for dep in ps.depends_on:
                if dep in finish_of:
                    begin = max(begin, finish_of[dep])
            ended = begin + estimate
        start_of[ps.id] = begin
        finish_of[ps.id] = ended
        if ps.always:
            if p.status not in _DONE:
                always_s += (ended - max(begin, now)).total_seconds()
            continue
        if ps.irreversible:
            if p.status in ("succeeded", "running", "dry_run"):
                irreversible_done.append(ps.id)
            elif p.status not in _DONE:
                irreversible_ahead.append(ps.id)
                cap = begin if cap is None else min(cap, begin)
        if ps.rollback_s <= 0:
            continue
        if p.status in ("succeeded", "running", "dry_run") or (
            p.status == "failed" and p.started is not None
        ):
            done_cost += ps.rollback_s  # a failed step may have changed some items
        elif p.status not in _DONE:
            completions.append((_us(ended - now), _us(timedelta(seconds=ps.rollback_s))))
    finish = max(finish_of.values(), default=now)
    no_go_finish = now + timedelta(seconds=done_cost + always_s)
    ponr: datetime | None = None
    if not irreversible_done:
        budget = _us(end - timedelta(seconds=margin.total_seconds() + always_s + done_cost) - now)
        offset = latest_moment(
            completions, budget=budget, cap=_us(cap - now) if cap is not None else None
        )
        if offset is not None:
            ponr = now + timedelta(microseconds=offset)
    return Forecast(
        at=now.astimezone(zone),
        planned_finish=plan.finish,
        finish=finish.astimezone(zone),
        window_end=end.astimezone(zone),
        margin_s=margin.total_seconds(),
        rollback_s=done_cost,
        always_s=always_s,
        no_go_finish=no_go_finish.astimezone(zone),
        point_of_no_return=ponr.astimezone(zone) if ponr is not None else None,
        irreversible_ahead=tuple(irreversible_ahead),
        irreversible_done=tuple(irreversible_done),
        running=tuple(running),
    )


def _us(delta: timedelta) -> int:
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
