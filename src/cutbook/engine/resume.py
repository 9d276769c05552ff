"""Rebuild a run's state from its journal, so a crashed run can continue.

The journal is the source of truth: a step recorded as finished is not run
again; an item with an outcome keeps its result (rollback templates need it);
an item with an intent but no outcome is *uncertain* and is settled by its
step's verification, or applied again with the same idempotency key. Pure
Python: reading a journal needs no Prefect.

What a record means is decided once, in :func:`cutbook.journal.fold`, for the
audit report and for resuming alike; this module only turns that state into
the runner's terms (adapter :class:`Result` values).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cutbook.adapter import Result
from cutbook.errors import UsageError
from cutbook.journal.fold import ItemState, fold

DONE = ("succeeded", "failed", "rolled_back", "skipped", "dry_run")


@dataclass(frozen=True)
class UnknownOutput(Result):
    """A change known to have landed whose original result could not be got back.

    Rollback must not guess what was there before: it undoes such an item only
    when its undo needs no output, and otherwise says that it could not.
    """

    why: str = ""


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


def _item(state: ItemState) -> RecoveredItem:
    """An applied item keeps its result: rollback templates and later steps need it."""
    result: Result | None = None
    if state.applied and state.output_unknown is not None:
        result = UnknownOutput(
            changed=state.changed,
            summary=state.summary,
            output=dict(state.output),
            why=state.output_unknown,
        )
    elif state.applied:
        result = Result(changed=state.changed, summary=state.summary, output=dict(state.output))
    return RecoveredItem(result=result, uncertain=state.uncertain, rolled_back=state.rolled_back)


def reconstruct(records: Iterable[Mapping[str, Any]]) -> Recovered:
    """The state the run had when it stopped, from the journal's shared fold."""
    state = fold(records)
    started = state.started_record
    if started is None:
        raise UsageError(
            "the journal has no run.started record: the run stopped before it began and "
            "changed nothing; start it again with cutbook run"
        )
    if state.finished:
        raise UsageError(
            f"run {started.get('run_id')} already finished ({state.outcome}); nothing to resume"
        )
    rollbacks = [rb for rb in state.rollbacks if rb.started_at is not None]
    return Recovered(
        started=dict(started),
        statuses={s.id: s.status for s in state.steps if s.status is not None},
        errors={s.id: s.error for s in state.steps if s.status is not None},
        items={
            step: {key: _item(item) for key, item in items.items()}
            for step, items in state.item_states.items()
        },
        completed=list(state.completed),
        times={s.id: s.recorded for s in state.steps if s.recorded is not None},
        approved_gates=set(state.approved_steps),
        rollback_started=bool(rollbacks),
        failure=rollbacks[-1].reason if rollbacks else None,
        last_time=state.last_step_time,
        flow_runs=list(state.flow_runs),
    )
