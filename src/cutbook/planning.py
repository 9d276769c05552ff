"""Forecast a runbook's timeline before anyone touches production.

``cutbook plan`` answers the questions an operations lead asks the day before:
when does each step run, which steps cannot slip, does it fit the window, and
until when can we still back out. Pure Python and cheap to import (no Prefect,
no rich), because ``validate``/``plan`` must answer in well under half a second.

All arithmetic is done in whole microseconds from the plan start, in UTC:
adding a ``timedelta`` to a zone-aware datetime moves the *wall clock*, which
would be wrong across a daylight-saving change, and integers make "slack is
exactly zero" an exact test rather than a float comparison.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from cutbook import graph
from cutbook.errors import RunbookError
from cutbook.model import Runbook, Step, TimeError

__all__ = ["DependencyCycle", "Plan", "PlannedStep", "latest_moment", "plan"]

_US_PER_S = 1_000_000


class DependencyCycle(RunbookError):
    """Steps wait for each other in a circle, so none of them could ever start."""

    def __init__(self, cycle: list[str]) -> None:
        self.cycle = cycle
        super().__init__(
            "dependency cycle: " + " → ".join(cycle) + " (each step must finish before the next)"
        )


@dataclass(frozen=True, slots=True)
class PlannedStep:
    """One step's place in the forecast; times are aware, in the runbook's zone.

    ``estimate_s`` is the time the plan allots to the step, fan-out included
    (``finish - start``). ``slack_s`` is how far it may slip without moving the
    plan's finish; ``window_slack_s`` how far before the finish overruns the
    window. ``rollback_s`` is what undoing it would cost once it has completed
    (0 for gates, steps without a target, read-only, ``always`` and irreversible
    steps). ``no_go_by`` is the latest moment at which a no-go given once this
    step has finished still reopens intake the guard's margin before the window
    ends (undo everything finished by then, run the ``always`` steps); ``None``
    for ``always`` steps and from the first irreversible step on.
    """

    id: str
    title: str
    start: datetime
    finish: datetime
    earliest_start: datetime
    latest_start: datetime
    slack_s: float
    critical: bool
    estimate_s: float
    items: int | None
    items_unknown: bool
    at: datetime | None
    always: bool
    gate: bool
    irreversible: bool
    depends_on: list[str]
    window_slack_s: float = 0.0
    rollback_s: float = 0.0
    no_go_by: datetime | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "start": self.start.isoformat(),
            "finish": self.finish.isoformat(),
            "earliest_start": self.earliest_start.isoformat(),
            "latest_start": self.latest_start.isoformat(),
            "critical": self.critical,
            "slack_s": self.slack_s,
            "window_slack_s": self.window_slack_s,
            "estimate_s": self.estimate_s,
            "items": self.items,
            "items_unknown": self.items_unknown,
            "at": self.at.isoformat() if self.at is not None else None,
            "always": self.always,
            "gate": self.gate,
            "irreversible": self.irreversible,
            "rollback_s": self.rollback_s,
            "no_go_by": self.no_go_by.isoformat() if self.no_go_by is not None else None,
            "depends_on": list(self.depends_on),
        }


@dataclass(frozen=True)
class Plan:
    """The whole forecast. ``steps`` are in topological order, ties in file order.

    ``margin_s`` (also ``window_slack_s``) is window end minus finish, negative
    when the plan overruns. ``point_of_no_return`` is the latest moment at which
    abandoning (roll back what is done, then run the ``always`` steps) still
    ends inside the window; None when even abandoning at the start does not.
    ``ponr_limited_by`` names the irreversible step that caps it, if one does.
    """

    start: datetime
    finish: datetime
    window_start: datetime
    window_end: datetime
    fits_window: bool
    margin_s: float
    point_of_no_return: datetime | None
    critical_path: list[str]
    steps: list[PlannedStep]
    runbook: str = ""
    timezone: str = "UTC"
    always_s: float = 0.0
    ponr_limited_by: str | None = None
    _by_id: dict[str, PlannedStep] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    @property
    def window_slack_s(self) -> float:
        return self.margin_s

    @property
    def duration_s(self) -> float:
        # In UTC: both share a zone, so plain `-` would measure wall-clock time (DST).
        return (self.finish.astimezone(UTC) - self.start.astimezone(UTC)).total_seconds()

    def step(self, step_id: str) -> PlannedStep:
        """The planned step with this id (KeyError if there is none)."""
        if not self._by_id:
            self._by_id.update((s.id, s) for s in self.steps)
        return self._by_id[step_id]

    def rollback_cost_s(self, at: datetime) -> float:
        """Seconds needed to undo every step forecast to have finished *before* ``at``.

        A step finishing exactly at ``at`` counts as not yet done: the cost is
        constant on each interval (one completion, the next], so the point of no
        return is a moment that is actually reachable, not a limit.
        """
        moment = at.astimezone(UTC)  # compare instants, not wall clocks (DST)
        return sum(s.rollback_s for s in self.steps if s.finish.astimezone(UTC) < moment)

    def to_json(self) -> dict[str, Any]:
        ponr = self.point_of_no_return
        return {
            "runbook": self.runbook,
            "timezone": self.timezone,
            "start": self.start.isoformat(),
            "finish": self.finish.isoformat(),
            "window": {"start": self.window_start.isoformat(), "end": self.window_end.isoformat()},
            "fits_window": self.fits_window,
            "margin_s": self.margin_s,
            "window_slack_s": self.window_slack_s,
            "point_of_no_return": ponr.isoformat() if ponr is not None else None,
            "point_of_no_return_limited_by": self.ponr_limited_by,
            "always_s": self.always_s,
            "critical_path": list(self.critical_path),
            "steps": [s.to_json() for s in self.steps],
        }


def _us(delta: timedelta) -> int:
    """A timedelta as an exact whole number of microseconds."""
    return (delta.days * 86_400 + delta.seconds) * _US_PER_S + delta.microseconds


def _seconds(us: int) -> float:
    return us / _US_PER_S


def plan(
    runbook: Runbook,
    *,
    start: datetime | None = None,
    item_counts: Mapping[str, int] | None = None,
    read_only: Collection[str] = (),
) -> Plan:
    """Forecast ``runbook``: start/finish per step, critical path, slack, fit and PONR.

    ``start`` re-places the whole timeline: the window and every ``at`` move by
    ``start - window start`` so relative timing is kept (a naive ``start`` is
    read in the runbook's zone). ``item_counts`` gives the number of items each
    ``for_each`` step will see; a step missing from it counts as one item and is
    flagged ``items_unknown`` (a literal list in the runbook is counted here).
    ``read_only`` names steps whose action changes nothing (the adapter says so):
    they cost nothing to abandon, so they do not move the point of no return.
    """
    steps = runbook.steps
    n = len(steps)
    zone = runbook.zone
    counts: Mapping[str, int] = item_counts or {}

    index: dict[str, int] = {}
    for i, step in enumerate(steps):
        if step.id in index:
            raise RunbookError(f"step id {step.id!r} is used by more than one step")
        index[step.id] = i
    deps: list[list[int]] = []
    for step in steps:
        mine: list[int] = []
        for dep in step.depends_on:
            j = index.get(dep)
            if j is None:
                raise RunbookError(f"step {step.id!r} depends on unknown step {dep!r}")
            mine.append(j)
        deps.append(mine)
    try:
        order = graph.topological_order(dict(enumerate(deps)))
    except graph.Cycle as exc:
        raise DependencyCycle(_planner_cycle([steps[i].id for i in exc.members])) from None

    try:
        window_start_utc = runbook.window_start.astimezone(UTC)
        window_end_utc = runbook.window_end.astimezone(UTC)
    except TimeError as exc:
        raise RunbookError(f"window: {exc}") from None
    if start is None:
        origin = window_start_utc
    else:
        anchor = start if start.tzinfo is not None else start.replace(tzinfo=zone)
        origin = anchor.astimezone(UTC)
    # Everything below is microseconds after the (possibly shifted) window start;
    # shifting window and `at`s alike means both are measured from the old start.
    end_us = _us(window_end_utc - window_start_utc)

    dur = [0] * n
    rollback = [0] * n
    at_us: list[int | None] = [None] * n
    items: list[int | None] = [None] * n
    unknown = [False] * n
    at_cache: dict[str, int] = {}
    for i, step in enumerate(steps):
        unit = _us(runbook.estimate_of(step))
        batches = 1
        if step.for_each is not None:
            count: int
            if step.id in counts:
                count = int(counts[step.id])
                if count < 0:
                    raise RunbookError(f"step {step.id!r}: item count cannot be negative")
            elif isinstance(step.for_each, list):
                count = len(step.for_each)
            else:
                count = 1
                unknown[i] = True
            items[i] = count
            batches = -(-count // step.concurrency)
        dur[i] = batches * unit
        if step.at is not None:
            cached = at_cache.get(step.at)
            if cached is None:
                try:
                    moment = runbook.resolve_at(step.at)
                except TimeError as exc:
                    raise RunbookError(f"step {step.id!r}: at: {exc}") from None
                cached = _us(moment.astimezone(UTC) - window_start_utc)
                at_cache[step.at] = cached
            at_us[i] = cached
        if _reversible(step) and step.id not in read_only:
            spec = step.rollback
            undo = spec.estimate if spec is not None and spec.estimate is not None else None
            rollback[i] = batches * (_us(undo) if undo is not None else unit)

    # Forward pass: earliest start is the latest of plan start, `at`, dependencies.
    es = [0] * n
    ef = [0] * n
    for i in order:
        t = 0
        anchor_at = at_us[i]
        if anchor_at is not None and anchor_at > t:
            t = anchor_at
        for j in deps[i]:
            if ef[j] > t:
                t = ef[j]
        es[i] = t
        ef[i] = t + dur[i]
    finish_us = max(ef)

    # Backward pass from the plan's finish: a step must end before any successor's
    # latest start. `at` needs no special case: a successor's latest start is never
    # earlier than its `at`, so a step feeding a pinned step gets slack up to it.
    lf = [finish_us] * n
    for i in reversed(order):
        ls_i = lf[i] - dur[i]
        for j in deps[i]:
            if ls_i < lf[j]:
                lf[j] = ls_i
    ls = [lf[i] - dur[i] for i in range(n)]

    critical_path = _critical_path(order, deps, es, ef, finish_us, steps)

    always_us = sum(dur[i] for i in range(n) if steps[i].always)
    cap_us: int | None = None
    cap_id: str | None = None
    for i in order:
        step = steps[i]
        if step.irreversible and not step.always and (cap_us is None or es[i] < cap_us):
            cap_us, cap_id = es[i], step.id
    ponr_us = latest_moment(
        [(ef[i], rollback[i]) for i in range(n) if rollback[i] > 0],
        budget=end_us - always_us,
        cap=cap_us,
    )
    limited_by = cap_id if ponr_us is not None and ponr_us == cap_us else None

    cache: dict[int, datetime] = {}

    def when(us: int) -> datetime:
        moment = cache.get(us)
        if moment is None:
            moment = (origin + timedelta(microseconds=us)).astimezone(zone)
            cache[us] = moment
        return moment

    margin_us = end_us - finish_us
    no_go_us = _no_go_by(
        steps, order, ef, es, rollback, end_us - always_us - _us(runbook.guard.margin)
    )
    planned: list[PlannedStep] = []
    for i in order:
        step = steps[i]
        slack = ls[i] - es[i]
        begin = when(es[i])
        a = at_us[i]
        planned.append(
            PlannedStep(
                id=step.id,
                title=step.title,
                start=begin,
                finish=when(ef[i]),
                earliest_start=begin,
                latest_start=when(ls[i]),
                slack_s=_seconds(slack),
                critical=slack == 0,
                estimate_s=_seconds(dur[i]),
                items=items[i],
                items_unknown=unknown[i],
                at=when(a) if a is not None else None,
                always=step.always,
                gate=step.is_gate,
                irreversible=step.irreversible,
                depends_on=list(step.depends_on),
                window_slack_s=_seconds(slack + margin_us),
                rollback_s=_seconds(rollback[i]),
                no_go_by=None if (by := no_go_us[i]) is None else when(by),
            )
        )
    return Plan(
        start=when(0),
        finish=when(finish_us),
        window_start=when(0),
        window_end=when(end_us),
        fits_window=finish_us <= end_us,
        margin_s=_seconds(margin_us),
        point_of_no_return=when(ponr_us) if ponr_us is not None else None,
        critical_path=critical_path,
        steps=planned,
        runbook=runbook.name,
        timezone=runbook.timezone,
        always_s=_seconds(always_us),
        ponr_limited_by=limited_by,
    )


def _reversible(step: Step) -> bool:
    """Whether completing this step leaves something that abandoning must undo."""
    return not (step.always or step.irreversible or step.is_gate or step.target is None)


def _no_go_by(
    steps: list[Step],
    order: list[int],
    ef: list[int],
    es: list[int],
    rollback: list[int],
    budget: int,
) -> list[int | None]:
    """Per step: the latest no-go moment once it has finished (see :class:`PlannedStep`).

    Everything finished by then is undone, so the cost is the rollback of every
    step finishing no later than this one; an irreversible step started by then
    means a no-go can no longer put everything back.
    """
    cap: int | None = None
    for i in order:
        if steps[i].irreversible and not steps[i].always:
            cap = es[i] if cap is None else min(cap, es[i])
    by_finish = sorted(range(len(steps)), key=lambda i: ef[i])
    cost_through: dict[int, int] = {}
    total = 0
    k = 0
    for i in by_finish:
        while k < len(by_finish) and ef[by_finish[k]] <= ef[i]:
            total += rollback[by_finish[k]]
            k += 1
        cost_through[i] = total
    out: list[int | None] = [None] * len(steps)
    for i in order:
        if steps[i].always or (cap is not None and cap < ef[i]) or steps[i].irreversible:
            continue
        out[i] = budget - cost_through[i]
    return out


def _planner_cycle(members: list[str]) -> list[str]:
    """The loop started one step later than validation names it, as the planner always has."""
    return [*members[1:], members[1]]


def _critical_path(
    order: list[int],
    deps: list[list[int]],
    es: list[int],
    ef: list[int],
    finish_us: int,
    steps: list[Step],
) -> list[str]:
    """One chain of zero-slack steps ending at the plan's finish.

    Walk back from the last step to finish, each time to a dependency whose
    finish is exactly this step's start; stop when the start is set by the
    step's ``at`` or the plan start instead (its anchor).
    """
    current = next(i for i in reversed(order) if ef[i] == finish_us)
    chain = [current]
    while True:
        prev = next((j for j in deps[current] if ef[j] == es[current]), None)
        if prev is None:
            break
        chain.append(prev)
        current = prev
    chain.reverse()
    return [steps[i].id for i in chain]


def latest_moment(
    completions: list[tuple[int, int]], *, budget: int, cap: int | None
) -> int | None:
    """Latest t ≥ 0 with t + rollback(t) ≤ budget and t ≤ cap, or None.

    ``completions`` are (finish, rollback cost) of reversible steps; rollback(t)
    sums those finishing strictly before t, so it is constant on each interval
    (previous completion, next completion] and t + rollback(t) only grows: the
    answer is found scanning the intervals in time order.
    """
    if budget < 0:
        return None
    completions.sort()
    best: int | None = None
    low = 0
    cost = 0
    k = 0
    total = len(completions)
    while True:
        upper = completions[k][0] if k < total else None  # end of this interval
        limit = budget - cost
        if cap is not None and cap < limit:
            limit = cap
        if upper is not None and upper < limit:
            limit = upper
        if limit >= low:
            best = limit
        if upper is None or limit < upper:
            return best
        # Cross the completion(s) at `upper`: from just after it they must be undone.
        while k < total and completions[k][0] == upper:
            cost += completions[k][1]
            k += 1
        low = upper
