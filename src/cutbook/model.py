"""The runbook language as typed data.

These models define what a runbook may say (and so the JSON Schema editors
use); cross-field rules that need the whole file (ids, cycles, times, targets,
adapters, templates) live in :mod:`cutbook.validation`, which can point at the
exact YAML node. Pure Python: no Prefect here.
"""

from __future__ import annotations

import re
from datetime import datetime, time, timedelta
from functools import cached_property
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, field_validator

from cutbook.durations import Duration

API_VERSION = "cutbook/v1"
STEP_ID = r"^[a-z0-9]+(-[a-z0-9]+)*$"
POOL_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$"
SECRET_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"

TimeText = Annotated[
    str,
    WithJsonSchema(
        {
            "type": "string",
            "description": "ISO date-time (2025-03-14T23:00, offset optional) "
            "or HH:MM, the first such moment at or after the window start",
        }
    ),
]

OnFailure = Literal["rollback", "abort", "continue", "pause"]

RUN_MILESTONES = (
    "run-scheduled",
    "run-started",
    "gate-waiting",
    "step-failed",
    "rollback-started",
    "run-finished",
    "guard-alarm",
)
"""Moments the run itself announces (run-scheduled and guard-alarm: by the scheduler and
the deadline guard, which fire them; a runbook may already subscribe)."""
STEP_MILESTONES = ("intake-stopped", "intake-reopened")
"""Moments a step announces when it succeeds (``milestone:``); a step may also name its own."""
MILESTONES = (
    "run-scheduled",
    "run-started",
    "intake-stopped",
    "gate-waiting",
    "step-failed",
    "rollback-started",
    "intake-reopened",
    "run-finished",
    "guard-alarm",
)
"""Every built-in milestone, in the order a night meets them."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class Window(_Strict):
    """The hard maintenance window: nothing may be planned outside it."""

    start: TimeText = Field(
        description="When the window opens: ISO date-time in the runbook's timezone "
        "(an explicit offset wins); quote it",
        examples=["2025-03-14T23:00", "2025-03-14T23:00+07:00"],
    )
    end: TimeText = Field(
        description="When everything, rollback included, must be over: ISO date-time, "
        "or HH:MM for the first such moment after the start",
        examples=["2025-03-15T05:00", "05:00"],
    )


class RetryPolicy(_Strict):
    """How to retry transient failures; attempts counts the first try too."""

    attempts: int = Field(
        3,
        ge=1,
        le=100,
        description="Tries in all, the first included; 1 means never retry",
        examples=[3, 1],
    )
    backoff: Literal["exponential", "fixed", "none"] = Field(
        "exponential",
        description="How the pause grows: exponential doubles it up to max_delay, fixed "
        "keeps delay, none retries at once",
        examples=["exponential", "fixed"],
    )
    delay: Duration = Field(
        timedelta(seconds=1),
        description="The first pause between tries",
        examples=["1s", "10s"],
    )
    max_delay: Duration = Field(
        timedelta(seconds=30),
        description="The longest pause exponential backoff grows to",
        examples=["30s", "2m"],
    )


class VerifySpec(_Strict):
    """A read-only check after ``apply``; omit ``action`` to use the adapter's own."""

    target: str | None = Field(
        None,
        description="Target to ask (a key of targets:); defaults to the step's own",
        examples=["vnaccs"],
    )
    action: str | None = Field(
        None,
        description="A read-only action of that target; omit it to use the adapter's own "
        "verification of the step's action",
        examples=["get", "query"],
    )
    with_: dict[str, Any] = Field(
        default_factory=dict,
        alias="with",
        description="The action's arguments (only with action); templates may use the "
        "step's own output",
        examples=[{"path": "/offices/{{ item.code }}"}],
    )
    expect: dict[str, Any] | None = Field(
        None,
        description="What the answer must contain; unmet, the step fails (and retries)",
        examples=[{"status": [200], "json": {"state": "active"}}],
    )


class PreflightSpec(_Strict):
    """A read-only precondition ``cutbook preflight`` checks for each item, before the night."""

    target: str | None = Field(
        None, description="Target to ask; defaults to the step's own", examples=["vnaccs"]
    )
    action: str = Field(
        description="A read-only action of that target (get, query, probe...); "
        "a changing action is refused",
        examples=["get", "probe"],
    )
    with_: dict[str, Any] = Field(
        default_factory=dict,
        alias="with",
        description="Its arguments; templates may use item, index, vars, data and secrets, "
        "not steps or output (the night has not happened yet)",
        examples=[{"path": "/offices/{{ item.code }}"}],
    )
    expect: dict[str, Any] | None = Field(
        None,
        description="What the answer must contain, as in verify; unmet, the step blocks",
        examples=[{"status": [200]}],
    )


class RollbackSpec(_Strict):
    """How to undo a step; omit ``action`` to use the adapter's own rollback."""

    target: str | None = Field(
        None,
        description="Target to call (a key of targets:); defaults to the step's own",
        examples=["vnaccs"],
    )
    action: str | None = Field(
        None,
        description="The action that undoes the step; omit it (rollback: {}) to use the "
        "adapter's own rollback of the step's action",
        examples=["delete", "run"],
    )
    with_: dict[str, Any] = Field(
        default_factory=dict,
        alias="with",
        description="The undoing action's arguments (only with action); templates may "
        "use the step's own output",
        examples=[{"path": "/offices/{{ item.code }}"}],
    )
    estimate: Duration | None = Field(
        None,
        description="How long undoing takes, when not as long as doing; the plan's point "
        "of no return counts it",
        examples=["10m", "1h 30m"],
    )


class ApprovalSpec(_Strict):
    """A go/no-go gate answered by a person in the Prefect UI or ``cutbook approve``."""

    approvers: list[str] = Field(
        default_factory=list,
        description="Who may answer; empty: anyone with a name",
        examples=[["duty-manager", "customs-lead"]],
    )
    timeout: Duration = Field(
        timedelta(minutes=30),
        description="How long to wait for an answer; no answer in time is a no-go",
        examples=["30m", "1h"],
    )
    instructions: str = Field(
        "",
        description="What the approvers should check before they answer; defaults to the "
        "step's description",
        examples=["Check the smoke tests on the dashboard, then say go or no-go"],
    )
    quorum: int = Field(
        1,
        ge=1,
        le=20,
        description="How many distinct approvers must say go; one no-go is enough to stop",
        examples=[1, 2],
    )
    executor_may_approve: bool = Field(
        True,
        description="false: the person who started the run (cutbook run --as NAME, else the "
        "OS user) may not answer this gate (separation of duties)",
        examples=[False],
    )
    signed: bool = Field(
        False,
        description="Only answers signed with the approver's key count (cutbook approve "
        "--key FILE); the approvers need a key under the runbook's approvers:",
        examples=[True],
    )


_PUBLIC_KEY = re.compile(r"^ed25519:[A-Za-z0-9+/]{43}=$")


class Approver(_Strict):
    """A person who may answer gates, and the public key their signed answers verify with."""

    key: str | None = Field(
        None,
        description="Ed25519 public key, as printed by `cutbook keys new NAME`: ed25519:BASE64",
        examples=["ed25519:" + "A" * 43 + "="],
        json_schema_extra={"pattern": _PUBLIC_KEY.pattern},
    )

    @field_validator("key")
    @classmethod
    def _looks_like_a_key(cls, value: str | None) -> str | None:
        if value is not None and not _PUBLIC_KEY.match(value):
            raise ValueError(
                "not an Ed25519 public key: paste the ed25519:... text `cutbook keys new NAME` "
                "(or `cutbook keys show FILE`) prints"
            )
        return value


class Step(_Strict):
    """One timed unit of work, one task run in Prefect."""

    id: str = Field(
        pattern=STEP_ID,
        description="Unique, lowercase letters, digits and single dashes; depends_on, "
        "templates (steps['id']) and the journal name the step by it",
        examples=["stop-intake", "reissue-certificates"],
    )
    name: str | None = Field(
        None,
        description="A title for people (plan, UI, report); defaults to the id",
        examples=["Stop customs intake"],
    )
    description: str = Field(
        "",
        description="What the step does and why, for the people on the bridge",
        examples=["Closes declaration intake so no new filings arrive during the move"],
    )
    owner: str | None = Field(
        None,
        description="Who answers for the step on the night (a person or team)",
        examples=["dba-team"],
    )
    target: str | None = Field(
        None,
        description="The system to act on: a key of targets:",
        examples=["vnaccs", "people"],
    )
    action: str | None = Field(
        None,
        description="The action of the target's adapter (cutbook adapters lists them); "
        "with: completes from it",
        examples=["post", "confirm", "execute"],
    )
    with_: dict[str, Any] = Field(
        default_factory=dict,
        alias="with",
        description="The action's arguments; values may be templates ({{ item.code }})",
        examples=[{"path": "/intake/stop"}, {"instructions": "Tick the box in the console"}],
    )
    depends_on: list[str] = Field(
        default_factory=list,
        description="Ids of the steps that must succeed before this one starts",
        examples=[["stop-intake"], ["backup-db", "go-no-go"]],
    )
    at: TimeText | None = Field(
        None,
        description="Not before this time: ISO date-time or HH:MM (the first such moment "
        "at or after the window start)",
        examples=["01:30", "2025-03-15T01:30"],
    )
    estimate: Duration | None = Field(
        None,
        description="How long the step (one round of a fan-out) is expected to take; "
        "defaults.estimate otherwise",
        examples=["5m", "1h 30m"],
    )
    timeout: Duration | None = Field(
        None,
        description="Fail an attempt that runs longer; defaults.timeout otherwise",
        examples=["15m"],
    )
    retries: RetryPolicy | None = Field(
        None,
        description="How transient failures are retried; defaults.retries otherwise",
        examples=[{"attempts": 5, "backoff": "fixed", "delay": "10s"}],
    )
    verify: VerifySpec | None = Field(
        None,
        description="A read-only check that the change took, after each apply",
        examples=[{"action": "get", "expect": {"status": [200]}}],
    )
    preflight: PreflightSpec | None = Field(
        None,
        description="A precondition only `cutbook preflight` checks, for each item: "
        "'intake is open now', 'this office code exists'; unmet, the pre-flight blocks",
        examples=[{"action": "get", "with": {"path": "/intake"}, "expect": {"status": [200]}}],
    )
    rollback: RollbackSpec | None = Field(
        None,
        description="How to undo the step when the night rolls back; {} uses the adapter's "
        "own rollback",
        examples=[{}, {"action": "post", "with": {"path": "/intake/open"}}],
    )
    irreversible: bool = Field(
        False,
        description="true: the step cannot be undone and has no rollback (the plan's point "
        "of no return)",
        examples=[True],
    )
    on_failure: OnFailure | None = Field(
        None,
        description="What a failure does: rollback the night, abort without undoing, "
        "continue regardless, or pause for people; defaults.on_failure otherwise",
        examples=["pause", "continue"],
    )
    for_each: str | list[Any] | None = Field(
        None,
        description="Fan out: run once per item of this list, or of the list a template "
        "gives; item and index name the current one",
        examples=["{{ data.offices }}", ["north", "south"]],
    )
    item_key: str | None = Field(
        None,
        description="A template naming each item in the journal and the UI, unique per "
        "item; defaults to the item itself when it is text or a number, else #index",
        examples=["{{ item.code }}"],
    )
    concurrency: int = Field(
        10,
        ge=1,
        le=1000,
        description="How many items of a fan-out run at once",
        examples=[10, 1],
    )
    approval: ApprovalSpec | None = Field(
        None,
        description="Make this step a go/no-go gate that people answer; a gate has no "
        "target or action",
        examples=[{"approvers": ["duty-manager"], "timeout": "30m"}],
    )
    always: bool = Field(
        False,
        description="Run even when the night fails or rolls back (reopening intake)",
        examples=[True],
    )
    milestone: str | None = Field(
        None,
        description="Announce this milestone to the notify: channels subscribed to it when the "
        "step succeeds: intake-stopped, intake-reopened, or a lowercase-dashed name of your own",
        examples=["intake-stopped", "certificates-reissued"],
    )

    @property
    def title(self) -> str:
        return self.name or self.id

    @property
    def is_gate(self) -> bool:
        return self.approval is not None


class StepDefaults(_Strict):
    """Values every step gets unless it says otherwise."""

    estimate: Duration = Field(
        timedelta(minutes=1),
        description="The estimate of a step that gives none",
        examples=["1m", "5m"],
    )
    timeout: Duration | None = Field(
        None,
        description="The time limit of a step's attempt; none: only the adapters' own limits",
        examples=["15m"],
    )
    retries: RetryPolicy = Field(
        default_factory=RetryPolicy,
        description="How a step that says nothing retries transient failures",
        examples=[{"attempts": 3, "backoff": "exponential", "delay": "1s"}],
    )
    on_failure: OnFailure = Field(
        "rollback",
        description="What a failed step does unless it says otherwise",
        examples=["rollback", "pause"],
    )


class NotifyChannel(_Strict):
    """Who hears which milestones of the night, through apprise."""

    name: str | None = Field(
        None,
        description="How the journal and logs name the channel (never by its URLs)",
        examples=["bridge-chat"],
    )
    urls: list[str] = Field(
        default_factory=list,
        description="Apprise URLs (json://, mailto://, slack://...); templates may use vars "
        "and secrets: put tokens in secrets, never in the file",
        examples=[["slack://{{ secrets.SLACK_TOKEN }}/#cutover"]],
        json_schema_extra={"minItems": 1},
    )
    on: list[str] = Field(
        default_factory=list,
        description="Milestones to send: run-scheduled, run-started, intake-stopped, "
        "gate-waiting, step-failed, rollback-started, intake-reopened, run-finished, "
        "guard-alarm, or a step's own milestone name",
        examples=[["run-started", "step-failed", "run-finished"]],
    )


class GuardSpec(_Strict):
    """The deadline guard: re-forecasts the night after every step and asks go/no-go
    when it will not end inside the window. The defaults are the safe ones."""

    enabled: bool = Field(
        True,
        description="Turn the guard off only for a runbook with nothing to roll back",
        examples=[True],
    )
    margin: Duration = Field(
        timedelta(minutes=10),
        description="Time kept between a rolled-back night's end and the window's end, "
        "for rollback estimates that were optimistic",
        examples=["10m", "30m"],
    )
    answer_within: Duration = Field(
        timedelta(minutes=15),
        description="How long people get to answer an alarm; less when a later no-go "
        "would no longer fit. No answer in time is a no-go",
        examples=["15m"],
    )
    approvers: list[str] = Field(
        default_factory=list,
        description="Who may answer the guard's go/no-go; empty: anyone who may answer "
        "this run's gates",
        examples=[["duty-manager"]],
    )
    interval: Duration = Field(
        timedelta(minutes=1),
        description="How often the forecast is renewed while steps run (also after every step)",
        examples=["1m", "30s"],
    )


class TargetSpec(BaseModel):
    """A named system: its adapter plus that adapter's own options."""

    model_config = ConfigDict(extra="allow")
    adapter: str = Field(
        description="The adapter that drives this system (cutbook adapters lists them); "
        "the other keys are its options",
        examples=["http", "manual", "sql"],
    )

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class Runbook(_Strict):
    """A whole cutover: its window, its inputs, its systems and its steps."""

    api_version: Literal["cutbook/v1"] = Field(
        alias="apiVersion",
        description="The version of the runbook language this file is written in",
        examples=["cutbook/v1"],
    )
    name: str = Field(
        pattern=STEP_ID,
        description="The runbook's id: lowercase letters, digits and single dashes; run "
        "ids and journals start with it",
        examples=["customs-reorg-2025"],
    )
    description: str = Field(
        "",
        description="What this cutover is and why, for the people who approve and run it",
        examples=["Merge the northern customs offices into one unit"],
    )
    timezone: str = Field(
        "UTC",
        description="IANA time zone that times without an offset are read in",
        examples=["Asia/Ho_Chi_Minh", "Europe/Berlin"],
    )
    window: Window = Field(
        description="The maintenance window: the plan must fit in it, rollback included",
        examples=[{"start": "2025-03-14T23:00", "end": "2025-03-15T05:00"}],
    )
    concurrency: int = Field(
        4,
        ge=1,
        le=256,
        description="How many steps may run at once across the night",
        examples=[4, 1],
    )
    vars: dict[str, Any] = Field(
        default_factory=dict,
        description="Values for templates ({{ vars.name }}); cutbook --var name=value "
        "overrides them",
        examples=[{"estate_url": "http://127.0.0.1:8765", "dry_run": False}],
    )
    data: dict[str, str] = Field(
        default_factory=dict,
        description="Data files (CSV, JSON, YAML) by name, relative to the runbook; "
        "templates read them as data.name",
        examples=[{"offices": "data/offices-2025.csv"}],
    )
    secrets: list[Annotated[str, Field(pattern=SECRET_NAME)]] = Field(
        default_factory=list,
        description="Names of secrets resolved when the run starts (environment, then a "
        "store), used as {{ secrets.NAME }}; never the values",
        examples=[["VNACCS_TOKEN", "DB_PASSWORD"]],
    )
    defaults: StepDefaults = Field(
        default_factory=StepDefaults,
        description="Values every step gets unless it says otherwise",
        examples=[{"estimate": "2m", "on_failure": "rollback"}],
    )
    targets: dict[str, TargetSpec] = Field(
        default_factory=dict,
        description="The systems steps act on, by the name steps use: each an adapter "
        "plus that adapter's options",
        examples=[{"vnaccs": {"adapter": "http", "base_url": "{{ vars.estate_url }}"}}],
    )
    steps: list[Step] = Field(
        min_length=1,
        description="The work, in any order: depends_on, at and the window decide when each runs",
        examples=[[{"id": "stop-intake", "target": "vnaccs", "action": "post"}]],
    )
    notify: list[NotifyChannel] = Field(
        default_factory=list,
        description="Channels told about milestones of the run",
        examples=[[{"urls": ["json://localhost:8080/hook"], "on": ["run-finished"]}]],
    )
    approvers: dict[str, Approver] = Field(
        default_factory=dict,
        description="People who answer gates, with the public keys of those who sign",
        examples=[{"duty-manager": {"key": "ed25519:" + "A" * 43 + "="}}],
    )
    guard: GuardSpec = Field(
        default_factory=GuardSpec,
        description="The deadline guard: when the night will not fit, it asks go/no-go",
        examples=[{"margin": "15m", "answer_within": "10m"}],
    )
    pool: str | None = Field(
        None,
        pattern=POOL_NAME,
        description="The Prefect work pool whose workers run this runbook when it is "
        "scheduled: the workers that reach its targets (`cutbook serve --pool NAME`). "
        "`cutbook schedule --pool` overrides it; default `cutbook`",
        examples=["customs-dc1"],
    )

    @cached_property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @cached_property
    def window_start(self) -> datetime:
        return parse_time(self.window.start, self.zone)

    @cached_property
    def window_end(self) -> datetime:
        return parse_time(self.window.end, self.zone, after=self.window_start)

    def resolve_at(self, text: str) -> datetime:
        return parse_time(text, self.zone, after=self.window_start)

    def step(self, step_id: str) -> Step:
        return self.steps_by_id[step_id]

    @cached_property
    def steps_by_id(self) -> dict[str, Step]:
        return {s.id: s for s in self.steps}

    def estimate_of(self, step: Step) -> timedelta:
        return step.estimate if step.estimate is not None else self.defaults.estimate

    def on_failure_of(self, step: Step) -> OnFailure:
        return step.on_failure or self.defaults.on_failure

    def retries_of(self, step: Step) -> RetryPolicy:
        return step.retries or self.defaults.retries

    def timeout_of(self, step: Step) -> timedelta | None:
        return step.timeout or self.defaults.timeout


_HHMM = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)(?::([0-5]\d))?$")


class TimeError(ValueError):
    """A wall-clock time that does not exist, or exists twice, in the zone."""


def parse_time(text: str, zone: ZoneInfo, *, after: datetime | None = None) -> datetime:
    """Turn runbook time text into an aware datetime.

    Naive times are in the runbook's zone; a local time skipped or repeated by
    a daylight-saving change is refused rather than guessed. ``HH:MM`` means
    the first such moment at or after ``after`` (the window start).
    """
    m = _HHMM.match(text.strip())
    if m:
        if after is None:
            raise TimeError(f"{text!r} needs a date: write 2025-03-14T{text}")
        local_after = after.astimezone(zone)
        clock = time(int(m.group(1)), int(m.group(2)), int(m.group(3) or 0))
        candidate = datetime.combine(local_after.date(), clock)
        if _localize(candidate, zone) < after:
            candidate += timedelta(days=1)
        return _localize(candidate, zone)
    try:
        parsed = datetime.fromisoformat(text.strip())
    except ValueError:
        raise TimeError(
            f"{text!r} is not a time; write 2025-03-14T23:00 or 2025-03-14T23:00+07:00"
        ) from None
    if parsed.tzinfo is not None:
        return parsed
    return _localize(parsed, zone)


def _localize(naive: datetime, zone: ZoneInfo) -> datetime:
    early = naive.replace(tzinfo=zone, fold=0)
    # A skipped time also has two candidate offsets, so test for the gap first.
    roundtrip = early.astimezone(ZoneInfo("UTC")).astimezone(zone).replace(tzinfo=None)
    if roundtrip != naive:
        raise TimeError(
            f"{naive.isoformat(timespec='minutes')} does not exist in {zone.key} "
            "(clocks go forward); pick another time or add an explicit UTC offset"
        )
    late = naive.replace(tzinfo=zone, fold=1)
    if early.utcoffset() != late.utcoffset():
        raise TimeError(
            f"{naive.isoformat(timespec='minutes')} happens twice in {zone.key} "
            "(clocks go back); add an explicit UTC offset"
        )
    return early
