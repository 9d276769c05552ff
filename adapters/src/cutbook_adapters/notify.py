"""The ``notify`` adapter: tell people what the cutover is doing.

Apprise covers chat, mail and paging services through one URL syntax; a plain
JSON webhook covers everything else. Apprise is imported only when a message
is sent or checked, because importing it takes a noticeable fraction of a
second.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any, ClassVar, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, field_validator, model_validator

from cutbook import (
    ActionSpec,
    AdapterContext,
    Args,
    Call,
    Duration,
    PermanentError,
    Result,
    TargetConfig,
    TransientError,
)
from cutbook_adapters._common import (
    TRANSIENT_STATUS,
    ScrubbingAdapter,
    one_line,
    retry_after_seconds,
)
from cutbook_adapters._lazy import LazyModule

if TYPE_CHECKING:
    import httpx
else:
    httpx = LazyModule("httpx")

if TYPE_CHECKING:
    import apprise


class NotifyConfig(TargetConfig):
    """Exactly one of ``urls`` (Apprise) or ``webhook`` (plain JSON POST)."""

    urls: list[str] | None = Field(
        None,
        min_length=1,
        description="Apprise URLs, e.g. 'mailto://…', 'tgram://…', 'json://host/path'; "
        "they usually hold tokens, so template them from secrets",
        examples=[["tgram://{{ secrets.TELEGRAM_TOKEN }}/{{ vars.chat_id }}"]],
    )
    webhook: str | None = Field(
        None,
        description="URL that receives a JSON POST",
        examples=["https://hooks.example/cutover"],
    )
    headers: dict[str, str] = Field(
        default_factory=dict,
        description="Webhook request headers",
        examples=[{"Authorization": "Bearer {{ secrets.HOOK_TOKEN }}"}],
    )
    timeout: Duration = Field(
        timedelta(seconds=30), description="Time limit per message", examples=["30s"]
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> NotifyConfig:
        if (self.urls is None) == (self.webhook is None):
            raise ValueError("give exactly one of 'urls' (Apprise) or 'webhook'")
        return self

    @field_validator("webhook")
    @classmethod
    def _http(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("webhook must be an http:// or https:// URL")
        return value


class SendArgs(Args):
    title: str = Field("", description="Subject or heading", examples=["Intake stopped"])
    body: str = Field(
        min_length=1,
        description="The message",
        examples=["{{ steps['stop-intake'].output.count }} offices closed for the night"],
    )
    level: Literal["info", "success", "warning", "failure"] = Field(
        "info", description="How the channel should present it", examples=["warning"]
    )
    tags: list[str] = Field(
        default_factory=list,
        description="Labels sent with webhooks; Apprise ignores them",
        examples=[["cutover", "customs"]],
    )


class NotifyAdapter(ScrubbingAdapter):
    """Sends one message per call to every configured channel."""

    name: ClassVar[str] = "notify"
    Config: ClassVar[type[BaseModel]] = NotifyConfig
    actions: ClassVar[Mapping[str, ActionSpec]] = {
        "send": ActionSpec(
            args=SendArgs,
            description="Send a message (cannot be unsent)",
            mutating=True,
            reversible=False,
        ),
    }

    def __init__(self, config: BaseModel, context: AdapterContext) -> None:
        super().__init__(config, context)
        assert isinstance(config, NotifyConfig)
        self.cfg = config
        self._client: httpx.AsyncClient | None = None

    def _channels(self) -> str:
        """Where messages go, without the tokens URLs usually carry."""
        if self.cfg.webhook is not None:
            return f"webhook {urlsplit(self.cfg.webhook).hostname}"
        schemes = sorted({urlsplit(u).scheme or "?" for u in self.cfg.urls or []})
        count = len(self.cfg.urls or [])
        return f"{count} channel(s) ({', '.join(schemes)})"

    def _args(self, call: Call) -> SendArgs:
        if call.action != "send" or not isinstance(call.args, SendArgs):
            raise PermanentError(f"notify: no action {call.action!r} with these args")
        return call.args

    def _apprise(self) -> apprise.Apprise:
        import apprise

        box = apprise.Apprise()
        bad = [i for i, url in enumerate(self.cfg.urls or []) if not box.add(url)]
        if bad:
            numbers = ", ".join(str(i + 1) for i in bad)
            raise PermanentError(f"notify: Apprise cannot use URL number {numbers} of 'urls'")
        return box

    async def check(self, call: Call) -> Result:
        """Checks the channel configuration; sends nothing."""
        args = self._args(call)
        if self.cfg.urls is not None:
            try:
                self._apprise()
            except PermanentError as exc:
                return Result(changed=True, ok=False, summary=str(exc))
        summary = f'would send "{args.title or args.body}" to {self._channels()}'
        return Result(changed=True, summary=one_line(self.scrub(summary)))

    async def apply(self, call: Call) -> Result:
        args = self._args(call)
        limit = self.cfg.timeout.total_seconds()
        if call.timeout is not None:
            limit = min(limit, call.timeout)
        if self.cfg.webhook is not None:
            await self._webhook(call, args, limit)
        else:
            await self._send_apprise(args, limit)
        summary = f'sent "{args.title or args.body}" to {self._channels()}'
        return Result(changed=True, summary=one_line(self.scrub(summary)))

    async def _send_apprise(self, args: SendArgs, limit: float) -> None:
        import apprise

        box = self._apprise()
        kind = {
            "info": apprise.NotifyType.INFO,
            "success": apprise.NotifyType.SUCCESS,
            "warning": apprise.NotifyType.WARNING,
            "failure": apprise.NotifyType.FAILURE,
        }[args.level]
        try:
            async with asyncio.timeout(limit):
                delivered = await box.async_notify(
                    body=args.body, title=args.title, notify_type=kind
                )
        except TimeoutError as exc:
            raise TransientError(f"notify: not delivered within {limit:g}s") from exc
        if not delivered:
            raise TransientError(f"notify: delivery to {self._channels()} failed")

    async def _webhook(self, call: Call, args: SendArgs, limit: float) -> None:
        if self._client is None:
            self._client = httpx.AsyncClient(headers=self.cfg.headers)
        payload: dict[str, Any] = {
            "title": args.title,
            "body": args.body,
            "level": args.level,
            "tags": args.tags,
            "run_id": call.run_id,
            "step_id": call.step_id,
            "item": call.item_key,
        }
        assert self.cfg.webhook is not None
        try:
            async with asyncio.timeout(limit):
                resp = await self._client.post(
                    self.cfg.webhook,
                    json=payload,
                    headers={"Idempotency-Key": call.idempotency_key},
                    timeout=limit,
                )
        except (TimeoutError, httpx.TimeoutException) as exc:
            raise TransientError(f"notify: webhook gave no answer within {limit:g}s") from exc
        except httpx.HTTPError as exc:
            raise TransientError(self.scrub(f"notify: webhook unreachable: {exc}")) from exc
        if resp.is_success:
            return
        message = one_line(self.scrub(f"notify: webhook answered {resp.status_code} {resp.text}"))
        if resp.status_code in TRANSIENT_STATUS or resp.status_code >= 500:
            raise TransientError(
                message, retry_after=retry_after_seconds(resp.headers.get("Retry-After"))
            )
        raise PermanentError(message)

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()
