"""The vocabulary the engine's parts share: a run's state, steps, questions, the bridge.

Kept apart from the behaviour so every collaborator (scheduler, gates,
executor, rollback) and every reader (views, bridges, observers) can import it
without importing each other.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal, Protocol

import structlog

from cutbook.adapter import Adapter, Result
from cutbook.clock import RealClock, VirtualClock
from cutbook.engine.resume import Recovered
from cutbook.journal.events import Event
from cutbook.model import Runbook, Step
from cutbook.validation import LoadedRunbook

log = structlog.get_logger("cutbook.engine")

Status = Literal[
    "pending", "waiting", "running", "succeeded", "failed", "skipped", "rolled_back", "dry_run"
]
Outcome = Literal["succeeded", "failed", "rolled_back", "aborted"]
Decision = Literal["retry", "skip", "rollback"]
Choice = Literal["approve", "reject", "retry", "skip", "rollback"]
"""What a person may answer: approve or reject a gate, or a :data:`Decision` after a failure."""
Mode = Literal["normal", "rollback", "abort"]


class Recorder(Protocol):
    """Where every state change goes first: the journal (write-ahead)."""

    def append(self, event: Event, **fields: Any) -> Any: ...


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


@dataclass
class StepReport:
    step_id: str
    status: Status
    summary: str = ""
    error: str | None = None


class Bridge(Protocol):
    """What an orchestrator provides; the engine needs nothing else from it.

    ``task`` runs a step's body where the orchestrator can watch it, ``ask``
    puts a question to a person and waits, ``publish`` says the state changed
    (coalescing is the bridge's business). A plain implementation serves tests.
    """

    async def task(self, name: str, body: Callable[[], Awaitable[StepReport]]) -> StepReport: ...

    async def ask(self, question: Question) -> Answer: ...

    def publish(self, run: RunState) -> None: ...


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

    def collect_output(self) -> None:
        """What later steps template on: the single result, or every item's by key."""
        if self.step.for_each is not None:
            self.output = {"items": {i.key: dict(i.result.output) for i in self.items if i.result}}
        elif self.items and self.items[0].result is not None:
            self.output = dict(self.items[0].result.output)

    def joined_summary(self) -> str:
        """One line for the table: a fan-out of 1,000 items must not print 1,000 summaries."""
        parts = [i.result.summary for i in self.items if i.result is not None and i.result.summary]
        if not parts:
            return self.error or ""
        if len(parts) == 1:
            return parts[0]
        changed = sum(1 for i in self.items if i.result is not None and i.result.changed)
        return f"{len(parts)} items, {changed} changed; first: {parts[0]}"


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


class RunState:
    """One run's shared state: the collaborators read and change it, readers watch it."""

    def __init__(
        self,
        loaded: LoadedRunbook,
        adapters: Mapping[str, Adapter],
        journal: Recorder,
        bridge: Bridge,
        opts: RunOptions,
        plan: Mapping[str, tuple[datetime, datetime]] | None = None,
        point_of_no_return: datetime | None = None,
    ) -> None:
        self.loaded = loaded
        self.rb: Runbook = loaded.runbook
        self.adapters = adapters
        self.journal = journal
        self.bridge = bridge
        self.opts = opts
        self.clock = opts.clock
        self.states = {s.id: StepState(s) for s in self.rb.steps}
        for sid, (start, finish) in (plan or {}).items():
            if sid in self.states:
                self.states[sid].planned_start = start
                self.states[sid].planned_finish = finish
        self.completed: list[str] = []
        """Steps in the order they finished: rollback walks it backwards."""
        self.failure: str | None = None
        self.mode: Mode = "normal"
        self.outcome: Outcome | None = None
        self.window_start = self.rb.window_start + opts.shift
        self.window_end = self.rb.window_end + opts.shift
        self.point_of_no_return = point_of_no_return
        self.recovered: Recovered | None = None

    def publish(self) -> None:
        self.bridge.publish(self)

    def stopping(self) -> bool:
        return self.mode != "normal"

    def fail(self, reason: str, mode: Literal["rollback", "abort"]) -> None:
        """The first failure decides what happens next; later ones only add to the record."""
        if self.mode != "normal":
            return
        self.failure = reason
        self.mode = mode
        log.error("run failing", reason=reason, next=mode)

    def final_outcome(self) -> Outcome:
        if self.failure is None:
            failed = any(st.status == "failed" for st in self.states.values())
            return "failed" if failed else "succeeded"
        return "rolled_back" if self.mode == "rollback" else "aborted"


def item_field(step: Step, item: ItemState) -> str | None:
    """How the journal names an item: ``None`` for a step without ``for_each``."""
    return None if step.for_each is None else item.key
