"""Rebuild a run's state from its journal, so a crashed run can continue.

The journal is the source of truth: a step recorded as finished is not run
again; an item with an outcome keeps its result (rollback templates need it);
an item with an intent but no outcome is *uncertain* and is settled by its
step's verification, or applied again with the same idempotency key. Pure
Python: reading a journal needs no Prefect.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cutbook.adapter import Result
from cutbook.errors import UsageError

DONE = ("succeeded", "failed", "rolled_back", "skipped", "dry_run")


@dataclass
class RecoveredItem:
    result: Result | None = None
    uncertain: bool = False
    rolled_back: bool = False


@dataclass
class Recovered:
    started: dict[str, Any]
    statuses: dict[str, str] = field(default_factory=dict)
    errors: dict[str, str | None] = field(default_factory=dict)
    items: dict[str, dict[str, RecoveredItem]] = field(default_factory=dict)
    completed: list[str] = field(default_factory=list)
    times: dict[str, tuple[datetime | None, datetime | None]] = field(default_factory=dict)
    approved_gates: set[str] = field(default_factory=set)
    rollback_started: bool = False
    failure: str | None = None
    last_time: datetime | None = None
    flow_runs: list[str] = field(default_factory=list)

    @property
    def run_id(self) -> str:
        return str(self.started.get("run_id", ""))


def _when(value: object) -> datetime | None:
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            return None
    return None


def _item_key(record: Mapping[str, Any]) -> str:
    item = record.get("item")
    return "-" if item is None else str(item)


def reconstruct(records: Iterable[Mapping[str, Any]]) -> Recovered:
    """Fold the journal's events into the state the run had when it stopped."""
    rec: Recovered | None = None
    for r in records:
        event = r.get("event")
        if event == "run.started":
            rec = Recovered(started=dict(r))
            if r.get("flow_run_id"):
                rec.flow_runs.append(str(r["flow_run_id"]))
            continue
        if rec is None:
            continue
        if event == "run.finished":
            raise UsageError(
                f"run {r.get('run_id')} already finished ({r.get('outcome')}); nothing to resume"
            )
        if event in ("run.resumed", "run.flow") and r.get("flow_run_id"):
            rec.flow_runs.append(str(r["flow_run_id"]))
        step = r.get("step")
        if not isinstance(step, str):
            if event == "rollback.started":
                rec.rollback_started = True
                rec.failure = r.get("reason")
            continue
        items = rec.items.setdefault(step, {})
        key = _item_key(r)
        phase = r.get("phase")
        if event == "step.intent" and phase == "apply":
            items.setdefault(key, RecoveredItem()).uncertain = True
        elif event == "step.outcome" and phase == "apply" and r.get("ok"):
            items[key] = RecoveredItem(
                result=Result(
                    changed=bool(r.get("changed")),
                    summary=str(r.get("summary") or ""),
                    output=dict(r.get("output") or {}),
                )
            )
        elif event == "step.outcome" and phase == "rollback" and r.get("ok"):
            items.setdefault(key, RecoveredItem()).rolled_back = True
        elif event == "gate.answered" and r.get("approved"):
            rec.approved_gates.add(step)
        elif event == "step.finished":
            status = str(r.get("status"))
            rec.statuses[step] = status
            rec.errors[step] = r.get("error")
            started, finished = _when(r.get("started")), _when(r.get("finished"))
            if started or finished:
                rec.times[step] = (started, finished)
            for moment in (started, finished):
                if moment and (rec.last_time is None or moment > rec.last_time):
                    rec.last_time = moment
            if status in ("succeeded", "failed") and step not in rec.completed:
                rec.completed.append(step)
    if rec is None:
        raise UsageError(
            "the journal has no run.started record: the run stopped before it began and "
            "changed nothing; start it again with cutbook run"
        )
    return rec
