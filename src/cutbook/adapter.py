"""The contract between cutbook and the systems it drives.

An adapter is a class registered under the entry-point group
``cutbook.adapters``. It declares its target options (``Config``) and its
actions (``actions``), each with a pydantic model for its arguments, so a
runbook is checked against it long before the weekend. At run time the engine
builds one instance per target and calls, for each step or fan-out item:

- ``check``   read-only: preconditions and what *would* change (dry runs, pre-flight)
- ``apply``   make the change; must be idempotent under ``call.idempotency_key``
- ``verify``  read-only: did the change take
- ``rollback`` undo what ``apply`` did, given its result; only for reversible actions
- ``aclose``  release connections once the run is over

Adapters raise :class:`~cutbook.errors.TransientError` for what may succeed
on another try and :class:`~cutbook.errors.PermanentError` for what never will;
the engine owns retries, so adapters never retry on their own.

This module is pure Python: validation imports it without Prefect.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import Annotated, Any, ClassVar, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from cutbook.redact import Redactor

_URL_PATH_MARK = {"cutbook": "url-path"}

UrlPath = Annotated[str, Field(json_schema_extra=_URL_PATH_MARK)]
"""An argument that is a URL path. The engine renders every ``{{ value }}`` in it as
one percent-encoded segment, so data (an office code with a ``/`` or ``..`` in it)
can never change which endpoint is called. ``{{ x | raw_path }}`` opts out for a
value the runbook itself vouches for as a whole path."""


def url_path_fields(model: type[BaseModel]) -> frozenset[str]:
    """The top-level fields of an argument model declared as :data:`UrlPath`."""
    return frozenset(
        name for name, f in model.model_fields.items() if f.json_schema_extra == _URL_PATH_MARK
    )


class Args(BaseModel):
    """Base for action argument models: unknown keys are errors, not ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class TargetConfig(BaseModel):
    """Base for an adapter's target options (``targets.<name>`` minus ``adapter``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class ActionSpec:
    """What one action takes and what kind of change it makes."""

    args: type[BaseModel]
    description: str = ""
    mutating: bool = True
    """False for read-only actions (``get``, queries): they need no rollback."""
    reversible: bool = True
    """False when the adapter cannot undo the action itself (the runbook may still
    give an explicit ``rollback:`` or declare ``irreversible: true``)."""


@dataclass(frozen=True)
class Result:
    """What an adapter reports about one call."""

    changed: bool = False
    summary: str = ""
    """Human-readable diff or summary: shown in the UI, journal and report."""
    output: Mapping[str, Any] = field(default_factory=dict)
    """Values later steps can template on: ``{{ steps['x'].output.serial }}``."""
    ok: bool = True
    """For ``check`` and ``verify``: whether the expectation holds."""


class Clock(Protocol):
    """Runbook time.

    Under rehearsal (``cutbook run --clock virtual``) time spent doing things,
    such as an adapter's I/O, passes as on the wall clock, while time spent
    waiting in :meth:`sleep` is skipped once everything else waits too. So
    adapters wait through ``call.clock.sleep`` (never ``asyncio.sleep``) and
    keep their I/O timeouts in real seconds.

    The engine's clocks also carry ``rehearsal: bool``, true under a rehearsal
    clock: an adapter that drives a simulator may then tell it the rehearsal's
    time (the http and wait adapters send ``Cutbook-Rehearsal-Time``). Read it as
    ``getattr(call.clock, "rehearsal", False)``: test clocks may not have it,
    and a real night must never send rehearsal headers.
    """

    def now(self) -> datetime: ...

    async def sleep(self, seconds: float) -> None:
        """Sleep ``seconds`` of runbook time."""
        ...


@dataclass(frozen=True)
class Confirmation:
    """A person's answer to a gate or a manual step: the evidence the journal keeps."""

    by: str
    approved: bool
    comment: str = ""
    at: datetime | None = None


Confirm = Callable[[str, str], Awaitable[Confirmation]]
"""``await confirm(title, instructions)`` asks a person and waits for the answer."""

Log = Callable[[str], None]


@dataclass(frozen=True)
class Call:
    """Everything one adapter invocation may use; built by the engine."""

    action: str
    args: BaseModel
    run_id: str
    step_id: str
    item_key: str | None
    idempotency_key: str
    """Stable across retries and resumes of the same run, step and item."""
    clock: Clock
    log: Log
    timeout: float | None = None
    """Seconds of runbook time left for this attempt; adapters enforce it themselves."""
    prior: Result | None = None
    """For ``verify`` and ``rollback``: the result ``apply`` returned."""
    confirm: Confirm | None = None
    phase: Literal["check", "apply", "verify", "rollback"] = "apply"


@runtime_checkable
class Adapter(Protocol):
    """What every adapter class satisfies, built-in or third-party."""

    name: ClassVar[str]
    Config: ClassVar[type[BaseModel]]
    actions: ClassVar[Mapping[str, ActionSpec]]

    async def check(self, call: Call) -> Result: ...

    async def apply(self, call: Call) -> Result: ...

    async def verify(self, call: Call) -> Result: ...

    async def rollback(self, call: Call) -> Result: ...

    async def aclose(self) -> None: ...


@dataclass(frozen=True)
class AdapterContext:
    """Given to an adapter's constructor: what it needs beyond its options."""

    clock: Clock
    log: Log
    secret_values: frozenset[str] = frozenset()
    """Resolved secret values, so an adapter can scrub captured output itself."""


class BaseAdapter:
    """Convenience base: stores config and context and gives safe defaults.

    Subclasses set ``name``, ``Config`` and ``actions`` and override what they
    support. The default ``check`` reports an unknown change, ``verify`` trusts
    ``apply``, and ``rollback`` refuses, which keeps a forgotten override safe.
    """

    name: ClassVar[str] = ""
    Config: ClassVar[type[BaseModel]] = TargetConfig
    actions: ClassVar[Mapping[str, ActionSpec]] = {}

    def __init__(self, config: BaseModel, context: AdapterContext) -> None:
        self.config = config
        self.context = context

    async def check(self, call: Call) -> Result:
        return Result(changed=self.actions[call.action].mutating, summary=f"would {call.action}")

    async def apply(self, call: Call) -> Result:  # pragma: no cover - abstract
        raise NotImplementedError

    async def verify(self, call: Call) -> Result:
        return Result(ok=True, summary="no verification defined; apply succeeded")

    async def rollback(self, call: Call) -> Result:
        from cutbook.errors import PermanentError

        raise PermanentError(f"{self.name}: action {call.action!r} cannot be rolled back")

    async def aclose(self) -> None:
        return None

    @cached_property
    def redactor(self) -> Redactor:
        """The run's secrets, scrubbed in every encoding the engine's redactor knows
        (base64, basic auth, percent- and JSON-escaped), not only as raw text."""
        return Redactor(self.context.secret_values, shapes=False)

    def scrub(self, text: str) -> str:
        """Replace every known secret in ``text`` before it leaves the adapter."""
        return self.redactor.scrub_text(text)
