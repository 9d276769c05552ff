"""The ``wait`` adapter: pauses and polls measured in runbook time.

Waiting goes through ``call.clock`` so rehearsals run faster than the real
night, and a poll loop never holds the step longer than its timeout.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, Field, model_validator

from cutbook import (
    ActionSpec,
    AdapterContext,
    Args,
    Call,
    Duration,
    PermanentError,
    Result,
    TargetConfig,
    format_duration,
)
from cutbook_adapters._common import (
    ScrubbingAdapter,
    compact_json,
    json_mismatch,
    one_line,
    truncate,
)
from cutbook_adapters._lazy import LazyModule
from cutbook_adapters.http import rehearsal_headers

if TYPE_CHECKING:
    import httpx
else:
    httpx = LazyModule("httpx")

POLL_REQUEST_TIMEOUT = 30.0
"""Upper bound in seconds for one poll request."""


class WaitConfig(TargetConfig):
    """Options of a ``wait`` target; all optional."""

    base_url: str | None = Field(
        None,
        description="Prefix for relative 'url' values in 'until'",
        examples=["{{ vars.estate_url }}"],
    )
    headers: dict[str, str] = Field(
        default_factory=dict,
        description="Sent with every poll",
        examples=[{"Authorization": "Bearer {{ secrets.API_TOKEN }}"}],
    )
    verify_tls: bool = Field(
        True, description="Check the server's TLS certificate", examples=[True]
    )


class SleepArgs(Args):
    duration: Duration = Field(
        description="How long to wait, in runbook time: 90s, 5m, 1h30m",
        examples=["5m", "1h 30m"],
    )


class UntilArgs(Args):
    url: str = Field(
        min_length=1,
        description="Full URL, or a path under the target's base_url",
        examples=["/health", "https://portal.example/ready"],
    )
    headers: dict[str, str] = Field(
        default_factory=dict,
        description="Sent with this poll, beside the target's headers",
        examples=[{"Accept": "application/json"}],
    )
    status: list[int] | None = Field(
        None, min_length=1, description="Accepted codes; default 2xx", examples=[[200, 204]]
    )
    json_: Any = Field(
        None,
        alias="json",
        description="Subset the JSON body must contain, as in http expect.json",
        examples=[{"state": "ready"}],
    )
    interval: Duration = Field(
        timedelta(seconds=10), description="Pause between polls", examples=["10s", "1m"]
    )
    timeout: Duration = Field(
        description="Give up after this long (runbook time)", examples=["15m"]
    )

    @model_validator(mode="after")
    def _positive(self) -> UntilArgs:
        if self.interval.total_seconds() <= 0:
            raise ValueError("interval must be more than zero")
        return self


class WaitAdapter(ScrubbingAdapter):
    """Sleeps, or polls an HTTP endpoint until its JSON says the system is ready."""

    name: ClassVar[str] = "wait"
    Config: ClassVar[type[BaseModel]] = WaitConfig
    actions: ClassVar[Mapping[str, ActionSpec]] = {
        "sleep": ActionSpec(
            args=SleepArgs,
            description="Wait a fixed time (drain a queue, let caches expire)",
            mutating=False,
            reversible=False,
        ),
        "until": ActionSpec(
            args=UntilArgs,
            description="Poll a URL until its status and JSON match, or fail at the timeout",
            mutating=False,
            reversible=False,
        ),
    }

    def __init__(self, config: BaseModel, context: AdapterContext) -> None:
        super().__init__(config, context)
        assert isinstance(config, WaitConfig)
        self.cfg = config
        self._client: httpx.AsyncClient | None = None

    def _get_client(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                base_url=self.cfg.base_url or "",
                headers=self.cfg.headers,
                verify=self.cfg.verify_tls,
            )
        return self._client

    async def check(self, call: Call) -> Result:
        """Never waits; for ``until`` one poll tells whether the condition already holds."""
        if isinstance(call.args, SleepArgs):
            return Result(summary=f"would wait {format_duration(call.args.duration)}")
        args = self._until(call)
        met, detail = await self._poll_once(args, POLL_REQUEST_TIMEOUT, rehearsal_headers(call))
        state = "already met" if met else "not met yet"
        summary = f"would poll {self._shown(args)} every {format_duration(args.interval)}"
        return Result(summary=one_line(self.scrub(f"{summary}: {state} ({detail})")))

    async def apply(self, call: Call) -> Result:
        if isinstance(call.args, SleepArgs):
            seconds = call.args.duration.total_seconds()
            call.log(f"wait: sleeping {format_duration(seconds)}")
            await call.clock.sleep(seconds)
            return Result(summary=f"waited {format_duration(seconds)}", output={"waited": seconds})
        return await self._until_met(call, self._until(call))

    async def verify(self, call: Call) -> Result:
        """``until`` polls again (instant when the condition still holds)."""
        if isinstance(call.args, SleepArgs):
            return Result(ok=True, summary="nothing to verify after a sleep")
        args = self._until(call)
        try:
            return await self._until_met(call, args)
        except PermanentError as exc:
            return Result(ok=False, summary=str(exc))

    def _until(self, call: Call) -> UntilArgs:
        if call.action != "until" or not isinstance(call.args, UntilArgs):
            raise PermanentError(f"wait: no action {call.action!r} with these args")
        return call.args

    def _shown(self, args: UntilArgs) -> str:
        return self.scrub(str(self._get_client().build_request("GET", args.url).url))

    async def _until_met(self, call: Call, args: UntilArgs) -> Result:
        clock = call.clock
        budget = args.timeout.total_seconds()
        started = clock.now()
        polls = 0
        while True:
            elapsed = (clock.now() - started).total_seconds()
            left = budget - elapsed
            polls += 1
            per_request = max(0.1, min(POLL_REQUEST_TIMEOUT, left, call.timeout or left))
            met, detail = await self._poll_once(args, per_request, rehearsal_headers(call))
            if met:
                summary = f"{self._shown(args)} ready after {format_duration(elapsed)} ({detail})"
                return Result(
                    summary=one_line(self.scrub(summary)),
                    output={"polls": polls, "waited": elapsed},
                )
            elapsed = (clock.now() - started).total_seconds()
            if elapsed + args.interval.total_seconds() > budget:
                raise PermanentError(
                    one_line(
                        self.scrub(
                            f"condition not met after {format_duration(args.timeout)} "
                            f"({polls} polls of {self._shown(args)}); last: {detail}"
                        ),
                        400,
                    )
                )
            call.log(self.scrub(f"wait: not yet ({detail}); next poll in {args.interval}"))
            await clock.sleep(args.interval.total_seconds())

    async def _poll_once(
        self, args: UntilArgs, timeout: float, extra: Mapping[str, str]
    ) -> tuple[bool, str]:
        """One GET: whether the condition holds, and what was seen."""
        headers = {**args.headers, **extra}
        try:
            async with asyncio.timeout(timeout):
                resp = await self._get_client().get(args.url, headers=headers, timeout=timeout)
        except (TimeoutError, httpx.TimeoutException):
            return False, f"no answer within {timeout:g}s"
        except httpx.HTTPError as exc:
            return False, f"{type(exc).__name__}: {exc}"
        ok_status = (
            resp.status_code in args.status
            if args.status is not None
            else 200 <= resp.status_code < 300
        )
        try:
            body: Any = resp.json()
        except ValueError:
            body = None
        shown = truncate(compact_json(body) if body is not None else resp.text, 160)
        detail = f"{resp.status_code} {shown}"
        if not ok_status:
            return False, detail
        if args.json_ is not None:
            mismatch = json_mismatch(args.json_, body)
            if mismatch:
                return False, f"{detail}; {mismatch}"
        return True, detail

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()
