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
from cutbook.forecast import Forecast
from cutbook.journal.events import Event
from cutbook.model import Runbook, Step
from cutbook.planning import Plan
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

    async def commit(self, event: Event, **fields: Any) -> Any:
        """``append`` for concurrent coroutines: durable on return, fsyncs shared."""

    def write(self, event: Event, **fields: Any) -> Any:
        """Written now, durable with the next fsync: for records nothing acts upon."""


@dataclass(frozen=True)
class Question:
    """A question for a person: a go/no-go gate, a manual step, or what to do after a failure."""

    step_id: str
    title: str
    instructions: str
    approvers: tuple[str, ...] = ()
    timeout_s: float = 1800.0
    kind: Literal["gate", "manual", "failure", "guard"] = "gate"
    quorum: int = 1
    """Distinct approvers who must say go; one no-go is enough to stop."""
    signed: bool = False
    """Only answers signed with the approver's key count."""
    approved_by: tuple[str, ...] = ()
    """Who has said go so far (a quorum question is asked again until it is met)."""
    runbook_sha256: str = ""
    """What an answer approves: the form shows it and the answer must carry it back."""
    forecast: str = ""
    """The night's forecast at the moment of asking, in words, shown with the question."""


@dataclass(frozen=True)
class Answer:
    by: str
    approved: bool
    comment: str = ""
    decision: Decision | None = None
    runbook_sha256: str | None = None
    """The runbook the answer says it approves (the form's and ``cutbook approve``'s)."""
    signature: str | None = None
    """Ed25519 over the answer's payload (:func:`cutbook.signing.payload`), base64."""
    signed_at: str | None = None
    via: str = ""
    """Where it came from (``cli``, ``ui``): evidence for the report."""
    problem: str | None = None
    """Set by a bridge when what arrived was not a usable answer (no decision, say)."""


@dataclass(frozen=True)
class Waiting:
    """A question people are being asked right now: what the on-call view shows."""

    question: Question
    since: datetime
    deadline: datetime


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
    answered_by: str = ""
    """Who answered the step's gate (the live view and the artifact say who said go)."""

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
    executor: str = ""
    """Who runs it (``--as NAME``, else the OS user): a gate may forbid them to approve."""
    dry_run: bool = False
    auto_approve: bool = False
    secrets: Mapping[str, str] = field(default_factory=dict)
    shift: timedelta = timedelta(0)
    """How far ``--start`` moved the window from where the runbook wrote it."""


@dataclass
class Halt:
    """Why a run stops without finishing and is left for ``cutbook resume``.

    A signal is the operator choosing to stop safely; a journal that cannot be
    written is the engine refusing to act without its record. Neither rolls
    back nor runs ``always`` steps: both would act, and resume does it right.
    """

    cause: Literal["signal", "journal"]
    detail: str
    """The signal's name (``SIGINT``) or the journal's error."""
    hard: bool = False
    """Work in flight was cancelled (a second signal, or the grace period ran out)."""

    @property
    def signal(self) -> str | None:
        return self.detail if self.cause == "signal" else None


@dataclass(frozen=True)
class GuardAlarm:
    """A go/no-go the deadline guard raised: what people are told about it."""

    key: str
    kind: str
    text: str


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
        self.rollback_incomplete = False
        """Some change could not be undone: the run failed, whatever its mode says."""
        self.outcome: Outcome | None = None
        self.window_start = self.rb.window_start + opts.shift
        self.window_end = self.rb.window_end + opts.shift
        self.point_of_no_return = point_of_no_return
        self.recovered: Recovered | None = None
        self.rollback_requested: str | None = None
        """``resume --rollback``: finish the steps left in flight (so verification settles
        their uncertain changes), start nothing else, then roll back for this reason."""
        self.halted: Halt | None = None
        """Set when the run must stop without finishing (see :class:`Halt`)."""
        self.cancel_inflight: Callable[[], None] = lambda: None
        """Set by the scheduler: cancels every step, rollback or question in flight."""
        self.forecast_plan: Plan | None = None
        """The whole plan this run started from, for the deadline guard (None: it plans)."""
        self.guard_forecast: Forecast | None = None
        """The deadline guard's latest forecast, for the live view and the Prefect artifact."""
        self.waiting: Waiting | None = None
        """The question people are asked now, if any (the live view and the artifact)."""
        self.refusals: list[str] = []
        """Answers refused so far, in words, newest last (shown in the Prefect artifact)."""
        self.guard_alarm: GuardAlarm | None = None
        """The guard's latest go/no-go alarm, for the notifier (see :mod:`.guard`)."""

    def publish(self) -> None:
        self.bridge.publish(self)

    def stopping(self) -> bool:
        return self.mode != "normal" or self.halted is not None

    def halt(self, halt: Halt) -> None:
        """Stop starting work; the first reason is kept, a hard stop cancels what runs."""
        if self.halted is None:
            self.halted = halt
            log.warning("run stopping, left for resume", cause=halt.cause, detail=halt.detail)
        if halt.hard and not self.halted.hard:
            self.halted.hard = True
        if self.halted.hard:
            self.cancel_inflight()

    def in_flight(self) -> list[str]:
        """Steps that started and have not finished: resume settles them from their intents."""
        return [sid for sid, st in self.states.items() if st.status == "running"]

    def done(self) -> list[str]:
        return [
            sid
            for sid, st in self.states.items()
            if st.status in ("succeeded", "failed", "skipped", "rolled_back", "dry_run")
        ]

    def changed(self) -> bool:
        """Past the first change to the estate: an item that changed something, or a
        mutating step that started (its change may have landed)."""
        for st in self.states.values():
            if any(i.result is not None and i.result.changed for i in st.items):
                return True
            step = st.step
            if st.status == "running" and step.target is not None and step.action is not None:
                adapter = self.adapters.get(step.target)
                spec = adapter.actions.get(step.action) if adapter is not None else None
                if spec is None or spec.mutating:
                    return True
        return False

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
        if self.rollback_incomplete:
            return "failed"
        return "rolled_back" if self.mode == "rollback" else "aborted"


def item_field(step: Step, item: ItemState) -> str | None:
    """How the journal names an item: ``None`` for a step without ``for_each``."""
    return None if step.for_each is None else item.key
