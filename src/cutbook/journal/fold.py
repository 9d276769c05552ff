"""The one reader of what records mean: fold a journal into the run's state.

Why one fold: the audit report, ``cutbook audit list`` and ``cutbook resume``
all read the same records; if each interpreted them itself, a record could
mean one thing to the auditor and another to the engine picking up a crashed
run. Every reader gets a :class:`RunSummary` from :func:`fold` and takes the
part it needs.

Tolerant by design: records from older or foreign writers fold too; unknown
events are counted (the report lists them), missing or odd fields are left
empty. Nothing here verifies: use :func:`~cutbook.journal.verify.verify`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final, Literal

from cutbook.clock import is_real_clock
from cutbook.durations import format_duration
from cutbook.journal.events import KNOWN_EVENTS, RESERVED_FIELDS, Event
from cutbook.journal.records import read_records

DEFAULT_LATE_TOLERANCE: Final = timedelta(minutes=1)


@dataclass
class Attempt:
    item: Any
    attempt: int | None
    error: str | None
    transient: bool | None
    next_delay_s: float | None
    ts: str | None


@dataclass
class Outcome:
    item: Any
    phase: str | None
    ok: bool | None
    changed: bool | None
    summary: str
    ts: str | None


@dataclass
class ItemState:
    """Where one item of a step stands: what a resumed run must not do twice."""

    uncertain: bool = False
    """An apply intent was written: the change may have happened."""
    applied: bool = False
    """An ok apply outcome was written; ``changed``, ``summary``, ``output`` are its result."""
    changed: bool = False
    summary: str = ""
    output: dict[str, Any] = field(default_factory=dict)
    rolled_back: bool = False
    output_unknown: str | None = None
    """Settled on resume without the apply's original output: why it could not be got."""


@dataclass
class StepSummary:
    id: str
    title: str
    critical: bool = False
    planned_start: datetime | None = None
    planned_finish: datetime | None = None
    actual_start: datetime | None = None
    actual_finish: datetime | None = None
    status: str | None = None
    error: str | None = None
    items: list[Any] = field(default_factory=list)
    waited_until: str | None = None
    attempts: list[Attempt] = field(default_factory=list)
    outcomes: list[Outcome] = field(default_factory=list)
    planned: bool = False
    recorded: tuple[datetime | None, datetime | None] | None = None
    """Start and finish as the engine's clock put them in step.finished (not host ``ts``)."""

    @property
    def start_delay(self) -> timedelta | None:
        if self.actual_start and self.planned_start:
            return self.actual_start - self.planned_start
        return None

    @property
    def retried(self) -> bool:
        return any(
            a.next_delay_s is not None or (a.attempt is not None and a.attempt > 1)
            for a in self.attempts
        )

    @property
    def changed(self) -> bool:
        return any(o.changed for o in self.outcomes)


@dataclass
class Approval:
    step: str
    approvers: list[str] = field(default_factory=list)
    requested_at: str | None = None
    timeout_s: float | None = None
    answered_at: str | None = None
    by: str | None = None
    approved: bool | None = None
    comment: str = ""
    auto: bool = False


@dataclass
class AnswerRecord:
    """One answer to one question, as the auditor reads it: counted, refused or timed out."""

    seq: int | None
    step: str
    at: str | None
    by: str | None
    outcome: str  # "go", "no-go", a failure decision, "timeout", "refused"
    reason: str = ""  # why it was refused
    comment: str = ""
    auto: bool = False
    signed: bool = False
    key: str | None = None
    runbook_sha256: str | None = None
    quorum: str | None = None
    via: str = ""


@dataclass
class Rollback:
    reason: str | None
    steps: list[str]
    started_at: str | None
    finished_at: str | None = None
    ok: bool | None = None


@dataclass
class Deviation:
    step: str | None
    kind: Literal[
        "late",
        "overran",
        "retried",
        "failed",
        "skipped",
        "rolled_back",
        "not_run",
        "unplanned",
        "run",
    ]
    detail: str


@dataclass
class RunSummary:
    run_id: str
    records: int = 0
    runbook_name: str | None = None
    runbook_path: str | None = None
    runbook_sha256: str | None = None
    started_by: str | None = None
    host: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    outcome: str | None = None
    error: str | None = None
    interrupted: dict[str, Any] | None = None
    """Set by ``run.interrupted`` until the run is resumed: how it was stopped and how
    to continue it."""
    timezone: str | None = None
    clock: str | None = None
    speed: float | None = None
    dry_run: bool = False
    preflight: bool = False
    window: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, Any] = field(default_factory=dict)
    variables: dict[str, Any] = field(default_factory=dict)
    plan_fits_window: bool | None = None
    plan_finish: str | None = None
    point_of_no_return: str | None = None
    steps: list[StepSummary] = field(default_factory=list)
    approvals: list[Approval] = field(default_factory=list)
    answers: list[AnswerRecord] = field(default_factory=list)
    """Every answer given, in order: counted, refused (with why) and timed out."""
    rollbacks: list[Rollback] = field(default_factory=list)
    resumes: list[dict[str, Any]] = field(default_factory=list)
    repairs: list[dict[str, Any]] = field(default_factory=list)
    deviations: list[Deviation] = field(default_factory=list)
    guard_forecasts: list[dict[str, Any]] = field(default_factory=list)
    """The deadline guard's forecasts, oldest first, as journalled."""
    guard_decisions: list[dict[str, Any]] = field(default_factory=list)
    """Its go/no-go alarms: the forecast that raised each, and who decided what."""
    unknown_events: dict[str, int] = field(default_factory=dict)
    item_states: dict[str, dict[str, ItemState]] = field(default_factory=dict)
    """Per step, per item key (see :func:`item_key`), in the order items first appeared."""
    started_record: dict[str, Any] | None = None
    """run.started as written: a resumed run takes its exact settings from it."""
    finished: bool = False
    """run.finished was written, even if a run.resumed follows: a finished run never resumes."""
    completed: list[str] = field(default_factory=list)
    """Steps that succeeded or failed, in the order they settled."""
    approved_steps: set[str] = field(default_factory=set)
    """Steps any answer approved, even if a later answer did not: the approval was given."""
    flow_runs: list[str] = field(default_factory=list)
    """Prefect flow run ids that carried this run, first to last."""
    last_step_time: datetime | None = None
    """The latest engine-clock time in a step.finished: where a resumed clock picks up."""

    @property
    def rehearsal(self) -> bool:
        """True when this was not a real run against real systems at real time."""
        return self.dry_run or not is_real_clock(self.clock)


def parse_ts(value: Any) -> datetime | None:
    """Lenient ISO parsing: the report must survive odd or missing times."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def item_key(item: Any) -> str:
    """The key an item is tracked by: the engine writes ``None`` for a step without for_each."""
    return "-" if item is None else str(item)


def _str(value: Any) -> str | None:
    return None if value is None else str(value)


def _float(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) else None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _quorum_met(value: Any) -> bool:
    """A gate answer's ``quorum`` ("1 of 2"): met, or absent (one answer opens the gate)."""
    if not isinstance(value, str) or " of " not in value:
        return True
    have, _, need = value.partition(" of ")
    return have.strip().isdigit() and need.strip().isdigit() and int(have) >= int(need)


def _bool(value: Any) -> bool | None:
    return value if isinstance(value, bool) else None


class _Folder:
    """The fold's working state; one public method per event that changes it."""

    def __init__(self, run_id: str) -> None:
        self.summary = RunSummary(run_id=run_id)
        self.steps: dict[str, StepSummary] = {}
        self.gates: dict[str, Approval] = {}

    def _step(self, step_id: Any) -> StepSummary:
        key = str(step_id)
        if key not in self.steps:
            self.steps[key] = StepSummary(id=key, title=key)
        return self.steps[key]

    def add(self, rec: Mapping[str, Any]) -> None:
        summary = self.summary
        summary.records += 1
        if "run_id" in rec and summary.records == 1:
            summary.run_id = str(rec["run_id"])
        event = rec.get("event")
        if not isinstance(event, str):
            return
        handler = _HANDLERS.get(event)
        if handler is not None:
            if event not in _STEP_SCOPED or "step" in rec:
                handler(self, rec, _str(rec.get("ts")))
        elif event not in KNOWN_EVENTS:
            summary.unknown_events[event] = summary.unknown_events.get(event, 0) + 1

    def _flow_run(self, rec: Mapping[str, Any]) -> None:
        if rec.get("flow_run_id"):
            self.summary.flow_runs.append(str(rec["flow_run_id"]))

    # -- run level

    def run_started(self, rec: Mapping[str, Any], ts: str | None) -> None:
        s = self.summary
        s.started_record = dict(rec)
        s.runbook_name = _str(rec.get("runbook_name"))
        s.runbook_path = _str(rec.get("runbook_path"))
        s.runbook_sha256 = _str(rec.get("runbook_sha256"))
        s.started_by = _str(rec.get("started_by"))
        s.host = _str(rec.get("host"))
        s.started_at = ts
        s.timezone = _str(rec.get("timezone"))
        s.clock = _str(rec.get("clock"))
        s.speed = _float(rec.get("speed"))
        s.dry_run = bool(rec.get("dry_run"))
        s.preflight = bool(rec.get("preflight"))
        for attr in ("window", "versions", "variables"):
            value = rec.get(attr)
            if isinstance(value, dict):
                setattr(s, attr, value)
        self._flow_run(rec)
        plan = rec.get("plan")
        if not isinstance(plan, dict):
            return
        s.plan_fits_window = _bool(plan.get("fits_window"))
        s.plan_finish = _str(plan.get("finish"))
        s.point_of_no_return = _str(plan.get("point_of_no_return"))
        for planned in plan.get("steps") or []:
            if not isinstance(planned, dict) or "id" not in planned:
                continue
            st = self._step(planned["id"])
            st.planned = True
            st.title = str(planned.get("title") or st.id)
            st.critical = bool(planned.get("critical"))
            st.planned_start = parse_ts(planned.get("start"))
            st.planned_finish = parse_ts(planned.get("finish"))

    def run_resumed(self, rec: Mapping[str, Any], ts: str | None) -> None:
        s = self.summary
        s.resumes.append({k: rec.get(k) for k in ("by", "host", "reason")} | {"ts": ts})
        s.outcome = None
        s.finished_at = None
        s.interrupted = None
        self._flow_run(rec)

    def run_flow(self, rec: Mapping[str, Any], ts: str | None) -> None:
        self._flow_run(rec)

    def run_interrupted(self, rec: Mapping[str, Any], ts: str | None) -> None:
        """Stopped on purpose and left for resume: not a crash, not an outcome."""
        self.summary.interrupted = {
            "ts": ts,
            "signal": rec.get("signal"),
            "resume_command": rec.get("resume_command"),
        }

    def run_finished(self, rec: Mapping[str, Any], ts: str | None) -> None:
        s = self.summary
        s.outcome = _str(rec.get("outcome"))
        s.error = _str(rec.get("error"))
        s.finished_at = ts
        s.finished = True

    def journal_repaired(self, rec: Mapping[str, Any], ts: str | None) -> None:
        self.summary.repairs.append(
            {"ts": ts, "bytes": rec.get("bytes"), "offset": rec.get("offset")}
        )

    # -- steps and items

    def step_waiting(self, rec: Mapping[str, Any], ts: str | None) -> None:
        self._step(rec["step"]).waited_until = _str(rec.get("until"))

    def step_started(self, rec: Mapping[str, Any], ts: str | None) -> None:
        st = self._step(rec["step"])
        items = rec.get("items")
        if isinstance(items, list):
            st.items = items
        start = parse_ts(rec.get("at") or rec.get("started"))
        if start is None and is_real_clock(self.summary.clock):
            start = parse_ts(ts)
        if start is not None and st.actual_start is None:
            st.actual_start = start

    def step_items(self, rec: Mapping[str, Any], ts: str | None) -> None:
        items = rec.get("items")
        if isinstance(items, list):
            self._step(rec["step"]).items = items

    def _items_of(self, step_id: Any) -> dict[str, ItemState]:
        return self.summary.item_states.setdefault(str(step_id), {})

    def step_intent(self, rec: Mapping[str, Any], ts: str | None) -> None:
        if rec.get("phase") == "apply":
            states = self._items_of(rec["step"])
            states.setdefault(item_key(rec.get("item")), ItemState()).uncertain = True

    def step_attempt(self, rec: Mapping[str, Any], ts: str | None) -> None:
        attempt = rec.get("attempt")
        self._step(rec["step"]).attempts.append(
            Attempt(
                item=rec.get("item"),
                attempt=attempt if isinstance(attempt, int) else None,
                error=_str(rec.get("error")),
                transient=_bool(rec.get("transient")),
                next_delay_s=_float(rec.get("next_delay_s")),
                ts=ts,
            )
        )

    def step_outcome(self, rec: Mapping[str, Any], ts: str | None) -> None:
        # The hot path of a 100k-record journal: plain gets, no helper calls.
        get = rec.get
        st = self._step(rec["step"])
        item, phase, ok, changed = get("item"), get("phase"), get("ok"), get("changed")
        summary = str(get("summary") or "")
        st.outcomes.append(
            Outcome(
                item=item,
                phase=None if phase is None else str(phase),
                ok=ok if isinstance(ok, bool) else None,
                changed=changed if isinstance(changed, bool) else None,
                summary=summary,
                ts=ts,
            )
        )
        if not ok:
            return
        if phase == "apply":  # the result replaces any doubt about this item
            output = get("output")
            self._items_of(st.id)[item_key(item)] = ItemState(
                applied=True,
                changed=bool(changed),
                summary=summary,
                output=output if isinstance(output, dict) else {},
                output_unknown=_str(get("output_unknown")),
            )
        elif phase == "rollback":
            self._items_of(st.id).setdefault(item_key(item), ItemState()).rolled_back = True

    def step_finished(self, rec: Mapping[str, Any], ts: str | None) -> None:
        s, st = self.summary, self._step(rec["step"])
        st.status = _str(rec.get("status"))
        st.error = _str(rec.get("error"))
        started, finished = parse_ts(rec.get("started")), parse_ts(rec.get("finished"))
        st.actual_start = started or st.actual_start
        st.actual_finish = finished or st.actual_finish
        if st.actual_finish is None and st.actual_start is not None and is_real_clock(s.clock):
            st.actual_finish = parse_ts(ts)
        if started or finished:
            st.recorded = (started, finished)
        for moment in (started, finished):
            if moment and (s.last_step_time is None or moment > s.last_step_time):
                s.last_step_time = moment
        if st.status in ("succeeded", "failed") and st.id not in s.completed:
            s.completed.append(st.id)

    # -- gates and rollback

    def gate_requested(self, rec: Mapping[str, Any], ts: str | None) -> None:
        approvers = rec.get("approvers")
        gate = Approval(
            step=str(rec["step"]),
            approvers=[str(a) for a in approvers] if isinstance(approvers, list) else [],
            requested_at=ts,
            timeout_s=_float(rec.get("timeout_s")),
        )
        self.gates[gate.step] = gate
        self.summary.approvals.append(gate)

    def gate_answered(self, rec: Mapping[str, Any], ts: str | None) -> None:
        gate = self.gates.get(str(rec["step"])) or Approval(step=str(rec["step"]))
        if gate not in self.summary.approvals:
            self.summary.approvals.append(gate)
        gate.answered_at = ts
        gate.by = _str(rec.get("by"))
        gate.approved = _bool(rec.get("approved"))
        gate.comment = str(rec.get("comment") or "")
        gate.auto = bool(rec.get("auto"))
        if rec.get("approved") and _quorum_met(rec.get("quorum")):
            self.summary.approved_steps.add(gate.step)
        by = _str(rec.get("by"))
        decision = _str(rec.get("decision"))
        outcome = "timeout" if by == "timeout" else decision or ("go" if gate.approved else "no-go")
        self.summary.answers.append(
            AnswerRecord(
                seq=_int(rec.get("seq")),
                step=gate.step,
                at=ts,
                by=by,
                outcome={"approve": "go", "reject": "no-go"}.get(outcome, outcome),
                comment=gate.comment,
                auto=gate.auto,
                signed=bool(rec.get("signature")),
                key=_str(rec.get("key")),
                runbook_sha256=_str(rec.get("runbook_sha256")),
                quorum=_str(rec.get("quorum")),
                via=str(rec.get("via") or ""),
            )
        )

    def gate_refused(self, rec: Mapping[str, Any], ts: str | None) -> None:
        self.summary.answers.append(
            AnswerRecord(
                seq=_int(rec.get("seq")),
                step=str(rec["step"]),
                at=ts,
                by=_str(rec.get("by")),
                outcome="refused",
                reason=str(rec.get("reason") or ""),
                via=str(rec.get("via") or ""),
            )
        )

    def rollback_started(self, rec: Mapping[str, Any], ts: str | None) -> None:
        steps = rec.get("steps")
        self.summary.rollbacks.append(
            Rollback(
                reason=_str(rec.get("reason")),
                steps=[str(s) for s in steps] if isinstance(steps, list) else [],
                started_at=ts,
            )
        )

    def rollback_finished(self, rec: Mapping[str, Any], ts: str | None) -> None:
        rollbacks = self.summary.rollbacks
        if rollbacks and rollbacks[-1].finished_at is None:
            rb = rollbacks[-1]
        else:
            rb = Rollback(reason=None, steps=[], started_at=None)
            rollbacks.append(rb)
        rb.finished_at = ts
        rb.ok = _bool(rec.get("ok"))

    # -- the deadline guard

    def guard_forecast(self, rec: Mapping[str, Any], ts: str | None) -> None:
        self.summary.guard_forecasts.append({k: v for k, v in rec.items() if k not in _META})

    def guard_decision(self, rec: Mapping[str, Any], ts: str | None) -> None:
        self.summary.guard_decisions.append({k: v for k, v in rec.items() if k not in _META})

    def result(self, late_tolerance: timedelta) -> RunSummary:
        summary = self.summary
        far = datetime.max.replace(tzinfo=UTC)
        summary.steps = sorted(
            self.steps.values(), key=lambda s: (s.planned_start or s.actual_start or far, s.id)
        )
        summary.deviations = _deviations(summary, late_tolerance)
        return summary


_META: Final = RESERVED_FIELDS

_Handler = Callable[[_Folder, Mapping[str, Any], str | None], None]

# One method per event it folds, named after the event (run.started: run_started).
# step.verified and step.decision are evidence the report does not fold (yet):
# known, so not counted as unknown, and changing no state.
_HANDLERS: Final[dict[str, _Handler]] = {
    e.value: getattr(_Folder, e.value.replace(".", "_"))
    for e in Event
    if hasattr(_Folder, e.value.replace(".", "_"))
}
_STEP_SCOPED: Final = frozenset(e for e in _HANDLERS if e.startswith(("step.", "gate.")))
"""Folded only with a ``step`` field: without one there is nothing to attach them to."""


def fold(
    records: Iterable[Mapping[str, Any]],
    *,
    run_id: str = "",
    late_tolerance: timedelta = DEFAULT_LATE_TOLERANCE,
) -> RunSummary:
    """Fold records, in journal order, into what happened, step by step, against the plan.

    ``records`` may be a selection (see ``read_records(events=...)``): the
    fold then knows only what those records say.
    """
    folder = _Folder(run_id)
    for rec in records:
        folder.add(rec)
    return folder.result(late_tolerance)


def summarize(
    path: Path | str, *, late_tolerance: timedelta = DEFAULT_LATE_TOLERANCE
) -> RunSummary:
    """Fold one journal file; unreadable lines are skipped so a damaged journal still reports."""
    path = Path(path)
    return fold(read_records(path, skip_bad=True), run_id=path.stem, late_tolerance=late_tolerance)


def _deviations(summary: RunSummary, tolerance: timedelta) -> list[Deviation]:
    out: list[Deviation] = []
    for st in summary.steps:
        delay = st.start_delay
        if delay is not None and delay > tolerance:
            out.append(Deviation(st.id, "late", f"started {format_duration(delay)} after plan"))
        if st.actual_finish and st.planned_finish:
            over = st.actual_finish - st.planned_finish
            if over > tolerance:
                detail = f"finished {format_duration(over)} after plan"
                out.append(Deviation(st.id, "overran", detail))
        if st.retried:
            errors = [a.error for a in st.attempts if a.error]
            detail = f"{len(st.attempts)} failed attempt(s)"
            if errors:
                detail += f"; last error: {errors[-1]}"
            out.append(Deviation(st.id, "retried", detail))
        if st.status == "failed":
            out.append(Deviation(st.id, "failed", st.error or "failed"))
        elif st.status == "skipped":
            out.append(Deviation(st.id, "skipped", st.error or "skipped"))
        elif st.status == "rolled_back":
            out.append(Deviation(st.id, "rolled_back", st.error or "rolled back"))
        elif st.planned and st.status is None and summary.outcome is not None:
            out.append(Deviation(st.id, "not_run", "planned but never finished"))
        if not st.planned and summary.plan_finish is not None:
            out.append(Deviation(st.id, "unplanned", "ran but was not in the plan"))
    if summary.outcome not in (None, "succeeded"):
        out.append(
            Deviation(None, "run", f"run {summary.outcome}: {summary.error or 'no error given'}")
        )
    return out
