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

    start: TimeText
    end: TimeText


class RetryPolicy(_Strict):
    """How to retry transient failures; attempts counts the first try too."""

    attempts: int = Field(3, ge=1, le=100)
    backoff: Literal["exponential", "fixed", "none"] = "exponential"
    delay: Duration = timedelta(seconds=1)
    max_delay: Duration = timedelta(seconds=30)


class VerifySpec(_Strict):
    """A read-only check after ``apply``; omit ``action`` to use the adapter's own."""

    target: str | None = None
    action: str | None = None
    with_: dict[str, Any] = Field(default_factory=dict, alias="with")
    expect: dict[str, Any] | None = None


class PreflightSpec(_Strict):
    """A read-only precondition ``cutbook preflight`` checks for each item, before the night."""

    target: str | None = Field(None, description="Target to ask; defaults to the step's own")
    action: str = Field(
        description="A read-only action of that target (get, query, probe...); "
        "a changing action is refused"
    )
    with_: dict[str, Any] = Field(
        default_factory=dict,
        alias="with",
        description="Its arguments; templates may use item, index, vars, data and secrets, "
        "not steps or output (the night has not happened yet)",
    )
    expect: dict[str, Any] | None = Field(
        None, description="What the answer must contain, as in verify; unmet, the step blocks"
    )


class RollbackSpec(_Strict):
    """How to undo a step; omit ``action`` to use the adapter's own rollback."""

    target: str | None = None
    action: str | None = None
    with_: dict[str, Any] = Field(default_factory=dict, alias="with")
    estimate: Duration | None = None


class ApprovalSpec(_Strict):
    """A go/no-go gate answered by a person in the Prefect UI or ``cutbook approve``."""

    approvers: list[str] = Field(
        default_factory=list, description="Who may answer; empty: anyone with a name"
    )
    timeout: Duration = timedelta(minutes=30)
    instructions: str = ""
    quorum: int = Field(
        1,
        ge=1,
        le=20,
        description="How many distinct approvers must say go; one no-go is enough to stop",
    )
    executor_may_approve: bool = Field(
        True,
        description="false: the person who started the run (cutbook run --as NAME, else the "
        "OS user) may not answer this gate (separation of duties)",
    )
    signed: bool = Field(
        False,
        description="Only answers signed with the approver's key count (cutbook approve "
        "--key FILE); the approvers need a key under the runbook's approvers:",
    )


_PUBLIC_KEY = re.compile(r"^ed25519:[A-Za-z0-9+/]{43}=$")


class Approver(_Strict):
    """A person who may answer gates, and the public key their signed answers verify with."""

    key: str | None = Field(
        None,
        description="Ed25519 public key, as printed by `cutbook keys new NAME`: ed25519:BASE64",
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

    id: str = Field(pattern=STEP_ID)
    name: str | None = None
    description: str = ""
    owner: str | None = None
    target: str | None = None
    action: str | None = None
    with_: dict[str, Any] = Field(default_factory=dict, alias="with")
    depends_on: list[str] = Field(default_factory=list)
    at: TimeText | None = None
    estimate: Duration | None = None
    timeout: Duration | None = None
    retries: RetryPolicy | None = None
    verify: VerifySpec | None = None
    preflight: PreflightSpec | None = Field(
        None,
        description="A precondition only `cutbook preflight` checks, for each item: "
        "'intake is open now', 'this office code exists'; unmet, the pre-flight blocks",
    )
    rollback: RollbackSpec | None = None
    irreversible: bool = False
    on_failure: OnFailure | None = None
    for_each: str | list[Any] | None = None
    item_key: str | None = None
    concurrency: int = Field(10, ge=1, le=1000)
    approval: ApprovalSpec | None = None
    always: bool = False
    milestone: str | None = Field(
        None,
        description="Announce this milestone to the notify: channels subscribed to it when the "
        "step succeeds: intake-stopped, intake-reopened, or a lowercase-dashed name of your own",
    )

    @property
    def title(self) -> str:
        return self.name or self.id

    @property
    def is_gate(self) -> bool:
        return self.approval is not None


class StepDefaults(_Strict):
    """Values every step gets unless it says otherwise."""

    estimate: Duration = timedelta(minutes=1)
    timeout: Duration | None = None
    retries: RetryPolicy = Field(default_factory=RetryPolicy)
    on_failure: OnFailure = "rollback"


class NotifyChannel(_Strict):
    """Who hears which milestones of the night, through apprise."""

    name: str | None = Field(
        None, description="How the journal and logs name the channel (never by its URLs)"
    )
    urls: list[str] = Field(
        default_factory=list,
        description="Apprise URLs (json://, mailto://, slack://...); templates may use vars "
        "and secrets: put tokens in secrets, never in the file",
        json_schema_extra={"minItems": 1},
    )
    on: list[str] = Field(
        default_factory=list,
        description="Milestones to send: run-scheduled, run-started, intake-stopped, "
        "gate-waiting, step-failed, rollback-started, intake-reopened, run-finished, "
        "guard-alarm, or a step's own milestone name",
    )


class GuardSpec(_Strict):
    """The deadline guard: re-forecasts the night after every step and asks go/no-go
    when it will not end inside the window. The defaults are the safe ones."""

    enabled: bool = Field(
        True, description="Turn the guard off only for a runbook with nothing to roll back"
    )
    margin: Duration = Field(
        timedelta(minutes=10),
        description="Time kept between a rolled-back night's end and the window's end, "
        "for rollback estimates that were optimistic",
    )
    answer_within: Duration = Field(
        timedelta(minutes=15),
        description="How long people get to answer an alarm; less when a later no-go "
        "would no longer fit. No answer in time is a no-go",
    )
    approvers: list[str] = Field(
        default_factory=list,
        description="Who may answer the guard's go/no-go; empty: anyone who may answer "
        "this run's gates",
    )
    interval: Duration = Field(
        timedelta(minutes=1),
        description="How often the forecast is renewed while steps run (also after every step)",
    )


class TargetSpec(BaseModel):
    """A named system: its adapter plus that adapter's own options."""

    model_config = ConfigDict(extra="allow")
    adapter: str

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class Runbook(_Strict):
    """A whole cutover: its window, its inputs, its systems and its steps."""

    api_version: Literal["cutbook/v1"] = Field(alias="apiVersion")
    name: str = Field(pattern=STEP_ID)
    description: str = ""
    timezone: str = "UTC"
    window: Window
    concurrency: int = Field(4, ge=1, le=256)
    vars: dict[str, Any] = Field(default_factory=dict)
    data: dict[str, str] = Field(default_factory=dict)
    secrets: list[Annotated[str, Field(pattern=SECRET_NAME)]] = Field(default_factory=list)
    defaults: StepDefaults = Field(default_factory=StepDefaults)
    targets: dict[str, TargetSpec] = Field(default_factory=dict)
    steps: list[Step] = Field(min_length=1)
    notify: list[NotifyChannel] = Field(
        default_factory=list, description="Channels told about milestones of the run"
    )
    approvers: dict[str, Approver] = Field(
        default_factory=dict,
        description="People who answer gates, with the public keys of those who sign",
    )
    guard: GuardSpec = Field(
        default_factory=GuardSpec,
        description="The deadline guard: when the night will not fit, it asks go/no-go",
    )
    pool: str | None = Field(
        None,
        pattern=POOL_NAME,
        description="The Prefect work pool whose workers run this runbook when it is "
        "scheduled: the workers that reach its targets (`cutbook serve --pool NAME`). "
        "`cutbook schedule --pool` overrides it; default `cutbook`",
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
