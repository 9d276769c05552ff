"""The journal's vocabulary: every event type cutbook writes, and the fields of each.

Why an enum: the record format is the contract that must outlive every
version of cutbook, so event names live in exactly one place and writers
cannot invent a new one by typo. Why declared fields: :meth:`Journal.append`
refuses a field no declaration names, so what a record may hold is written
down here, next to its event, for the auditor and for every reader.

Fields are all optional (``total=False``): readers must cope with records
from older or foreign writers, and a writer may leave out what it does not
know. A field that only older versions wrote stays declared, so the readers
that still understand it have it on the contract.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum
from typing import Any, Final, Literal, TypedDict

from cutbook.errors import JournalContractError


class Event(StrEnum):
    RUN_STARTED = "run.started"
    RUN_RESUMED = "run.resumed"
    RUN_FLOW = "run.flow"
    STEP_WAITING = "step.waiting"
    STEP_STARTED = "step.started"
    STEP_ITEMS = "step.items"
    STEP_INTENT = "step.intent"
    STEP_ATTEMPT = "step.attempt"
    STEP_OUTCOME = "step.outcome"
    STEP_VERIFIED = "step.verified"
    STEP_DECISION = "step.decision"
    STEP_FINISHED = "step.finished"
    GATE_REQUESTED = "gate.requested"
    GATE_ANSWERED = "gate.answered"
    GATE_REFUSED = "gate.refused"
    ROLLBACK_STARTED = "rollback.started"
    ROLLBACK_FINISHED = "rollback.finished"
    RUN_FINISHED = "run.finished"
    RUN_INTERRUPTED = "run.interrupted"
    NOTIFICATION_SENT = "notification.sent"
    GUARD_FORECAST = "guard.forecast"
    GUARD_DECISION = "guard.decision"
    JOURNAL_REPAIRED = "journal.repaired"


StepStatus = Literal["succeeded", "failed", "skipped", "rolled_back", "dry_run"]
RunOutcome = Literal["succeeded", "failed", "rolled_back", "aborted"]
Phase = Literal["apply", "rollback", "verify", "check"]
GateKind = Literal["gate", "manual", "failure", "guard"]


class PlannedStep(TypedDict, total=False):
    id: str
    title: str
    start: str
    finish: str
    critical: bool


class Plan(TypedDict, total=False):
    fits_window: bool
    finish: str
    point_of_no_return: str | None
    steps: list[PlannedStep]


# ---------------------------------------------------------------- run level


class RunStarted(TypedDict, total=False):
    runbook_name: str
    runbook_path: str
    runbook_sha256: str
    runbook_text: str
    variables: dict[str, Any]
    started_by: str
    executor: str  # who runs it (cutbook run --as NAME, else the OS user): separation of duties
    host: str
    versions: dict[str, Any]
    window: dict[str, str]
    timezone: str
    clock: str
    speed: float
    dry_run: bool
    preflight: bool  # a pre-flight check (cutbook preflight): only read-only checks, no window
    auto_approve: bool
    plan: Plan
    flow_run_id: str | None  # before run.flow existed, the flow run was named here
    flow_run_url: str | None


class RunResumed(TypedDict, total=False):
    by: str
    host: str
    flow_run_id: str | None
    flow_run_url: str | None
    previous_flow_runs: list[str]
    reason: str
    resumed_at: str
    steps_done: list[str]


class RunFlow(TypedDict, total=False):
    """The Prefect flow run that carries this run: where to look in the UI."""

    flow_run_id: str | None
    flow_run_url: str | None


class RunFinished(TypedDict, total=False):
    outcome: RunOutcome
    error: str | None
    head_hmac: str  # added by the writer when it holds a key


class RunInterrupted(TypedDict, total=False):
    """The operator stopped the run (a signal) and left it for ``cutbook resume``: not an end."""

    signal: str
    hard: bool
    steps_done: list[str]
    steps_in_flight: list[str]
    changed: bool
    resume_command: str


class JournalRepaired(TypedDict, total=False):
    bytes: int
    offset: int
    fragment_sha256: str
    reason: str


# ---------------------------------------------------------------- steps


class StepWaiting(TypedDict, total=False):
    step: str
    until: str


class StepStarted(TypedDict, total=False):
    step: str
    attempt_round: int
    items: list[Any]  # the items, when the writer knows them up front
    at: str  # runbook-clock start, preferred to the host ``ts`` by reports
    started: str


class StepItems(TypedDict, total=False):
    """The keys a fan-out step works through, in order."""

    step: str
    items: list[str]


class StepIntent(TypedDict, total=False):
    step: str
    item: Any
    phase: Phase
    action: str
    target: str
    idempotency_key: str


class StepAttempt(TypedDict, total=False):
    step: str
    item: Any
    phase: Phase
    attempt: int
    error: str
    transient: bool
    next_delay_s: float | None
    gave_up: str | None  # why no further attempt follows


class StepOutcome(TypedDict, total=False):
    step: str
    item: Any
    phase: Phase
    ok: bool
    changed: bool
    summary: str
    output: dict[str, Any]
    recovered: bool  # settled on resume by reading back an uncertain change
    output_unknown: str  # why a recovered apply's output could not be got back


class StepVerified(TypedDict, total=False):
    """The read-back after an apply: did the change take?"""

    step: str
    item: Any
    ok: bool
    summary: str


class StepDecision(TypedDict, total=False):
    """What a person chose after a step failed: retry, skip or roll back."""

    step: str
    by: str
    decision: str
    comment: str


class StepFinished(TypedDict, total=False):
    step: str
    status: StepStatus
    error: str | None
    started: str
    finished: str
    summary: str


# ---------------------------------------------------------------- gates


class GateRequested(TypedDict, total=False):
    step: str
    kind: GateKind
    title: str
    approvers: list[str]
    timeout_s: float | None
    quorum: int  # distinct approvers who must say go
    signed: bool  # only signed answers count
    runbook_sha256: str  # what an answer approves (shown on the form)
    forecast: str  # the night's forecast when asked, in words (empty before the first)


class GateAnswered(TypedDict, total=False):
    step: str
    kind: GateKind
    by: str
    approved: bool
    comment: str
    auto: bool
    decision: str | None
    runbook_sha256: str  # the runbook hash the answer was given (and signed) for
    signature: str | None  # base64 Ed25519 signature of cutbook.signing.payload; None: unsigned
    signed_at: str | None  # when the approver signed, ISO 8601 with offset; part of the payload
    key: str | None  # fingerprint of the runbook key that verified the signature
    via: str  # where the answer came from: prefect (the UI form or cutbook approve), a bridge
    quorum: str | None  # for a gate: go's counted so far, "1 of 2"


class GateRefused(TypedDict, total=False):
    """An answer from someone who may not decide, kept as evidence."""

    step: str
    by: str
    reason: str
    via: str  # where the refused answer came from


# ---------------------------------------------------------------- rollback


class RollbackStarted(TypedDict, total=False):
    reason: str | None
    steps: list[str]


class RollbackFinished(TypedDict, total=False):
    ok: bool


# ---------------------------------------------------------------- notifications


class NotificationSent(TypedDict, total=False):
    """One milestone told to one ``notify:`` channel, or the attempt; never its URLs."""

    milestone: str
    channel: str  # the channel's name, or its position in notify: (from 1)
    ok: bool
    error: str | None  # why it was not delivered, scrubbed of secrets and URLs
    step: str | None  # the step the milestone is about, if any


# ---------------------------------------------------------------- the deadline guard


class GuardForecast(TypedDict, total=False):
    """The rest of the night re-forecast from where the run stands (``cutbook.forecast``)."""

    reason: str  # what prompted it: "run started", "step X succeeded", "tick"
    at: str
    planned_finish: str
    finish: str
    window_end: str
    slack_s: float  # window end minus forecast finish; negative: the night overruns
    margin_s: float
    rollback_s: float  # undoing what is done (and running), were it no-go now
    always_s: float  # always steps still to run
    no_go_finish: str  # when intake would reopen after a no-go now
    point_of_no_return: str | None  # latest no-go that still ends margin before the window
    irreversible_ahead: list[str]
    irreversible_done: list[str]
    running: list[str]


class GuardDecision(TypedDict, total=False):
    """A go/no-go the guard asked, who decided (or that nobody did in time), and why."""

    alarm: Literal["overrun", "point-of-no-return"]
    decision: Literal["go", "no-go"]
    by: str  # a person, "timeout" or "default" (--auto-approve and dry runs do not answer)
    comment: str
    asked_at: str
    deadline: str
    forecast: dict[str, Any]  # the forecast that raised the alarm, as in guard.forecast


FIELDS: Final[dict[Event, type]] = {
    Event.RUN_STARTED: RunStarted,
    Event.RUN_RESUMED: RunResumed,
    Event.RUN_FLOW: RunFlow,
    Event.STEP_WAITING: StepWaiting,
    Event.STEP_STARTED: StepStarted,
    Event.STEP_ITEMS: StepItems,
    Event.STEP_INTENT: StepIntent,
    Event.STEP_ATTEMPT: StepAttempt,
    Event.STEP_OUTCOME: StepOutcome,
    Event.STEP_VERIFIED: StepVerified,
    Event.STEP_DECISION: StepDecision,
    Event.STEP_FINISHED: StepFinished,
    Event.GATE_REQUESTED: GateRequested,
    Event.GATE_ANSWERED: GateAnswered,
    Event.GATE_REFUSED: GateRefused,
    Event.ROLLBACK_STARTED: RollbackStarted,
    Event.ROLLBACK_FINISHED: RollbackFinished,
    Event.RUN_FINISHED: RunFinished,
    Event.RUN_INTERRUPTED: RunInterrupted,
    Event.NOTIFICATION_SENT: NotificationSent,
    Event.GUARD_FORECAST: GuardForecast,
    Event.GUARD_DECISION: GuardDecision,
    Event.JOURNAL_REPAIRED: JournalRepaired,
}

KNOWN_EVENTS: Final = frozenset(e.value for e in Event)
"""Every event name this version understands, as the strings records hold."""

RESERVED_FIELDS: Final = frozenset({"seq", "ts", "run_id", "event", "prev", "hash"})
"""Set by the writer on every record; no event may declare or pass them."""


def _names(declaration: Any) -> frozenset[str]:
    """A TypedDict's field names (``Any``: typing has no type for "a TypedDict class")."""
    return frozenset(declaration.__required_keys__ | declaration.__optional_keys__)


DECLARED: Final[dict[Event, frozenset[str]]] = {e: _names(t) for e, t in FIELDS.items()}


def check_record(event: str, names: Iterable[str]) -> Event:
    """The event a writer asked for, or why it may not be written.

    A plain string equal to an event's value is accepted (``Event`` is a
    ``StrEnum``); anything else is a writer bug and raises
    :class:`JournalContractError` before a byte is written.
    """
    names = frozenset(names)
    clash = RESERVED_FIELDS & names
    if clash:
        raise JournalContractError(f"journal fields {sorted(clash)} are reserved")
    try:
        known = Event(event)
    except ValueError:
        raise JournalContractError(
            f"{event!r} is not a journal event; declare it in cutbook.journal.events"
        ) from None
    undeclared = names - DECLARED[known]
    if undeclared:
        raise JournalContractError(
            f"{known.value} has no field(s) {sorted(undeclared)}; declare them in "
            f"cutbook.journal.events.{FIELDS[known].__name__}"
        )
    return known
