"""A minimal third-party adapter: remembers messages, and can forget them.

It exists to prove that an adapter installed from its own distribution is
found through the ``cutbook.adapters`` entry point and passes the contract.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from pydantic import BaseModel, Field

from cutbook import ActionSpec, AdapterContext, Args, Call, PermanentError, Result, TargetConfig


class EchoConfig(TargetConfig):
    prefix: str = Field("", description="Put in front of every message")


class SayArgs(Args):
    text: str = Field(min_length=1, description="What to say")


class EchoAdapter:
    """Keeps said messages in memory; ``say`` is reversible, ``peek`` only reads."""

    name: ClassVar[str] = "echo"
    Config: ClassVar[type[BaseModel]] = EchoConfig
    actions: ClassVar[Mapping[str, ActionSpec]] = {
        "say": ActionSpec(args=SayArgs, description="Say something", mutating=True),
        "peek": ActionSpec(
            args=SayArgs, description="Check that something was said", mutating=False
        ),
    }

    def __init__(self, config: BaseModel, context: AdapterContext) -> None:
        assert isinstance(config, EchoConfig)
        self.config = config
        self.context = context
        self.said: list[str] = []

    def _scrub(self, text: str) -> str:
        for secret in self.context.secret_values:
            text = text.replace(secret, "***")
        return text

    def _text(self, call: Call) -> str:
        if not isinstance(call.args, SayArgs):
            raise PermanentError(f"echo: no action {call.action!r}")
        return self.config.prefix + call.args.text

    async def check(self, call: Call) -> Result:
        text = self._text(call)
        return Result(
            changed=call.action == "say" and text not in self.said,
            summary=self._scrub(f"would say {text!r}"),
        )

    async def apply(self, call: Call) -> Result:
        text = self._text(call)
        if call.action == "peek":
            return await self.verify(call)
        if text in self.said:
            return Result(changed=False, summary=self._scrub(f"already said {text!r}"))
        self.said.append(text)
        return Result(
            changed=True,
            summary=self._scrub(f"said {text!r}"),
            output={"text": self._scrub(text), "count": len(self.said)},
        )

    async def verify(self, call: Call) -> Result:
        text = self._text(call)
        return Result(ok=text in self.said, summary=self._scrub(f"heard {text!r}"))

    async def rollback(self, call: Call) -> Result:
        text = self._text(call)
        if text in self.said:
            self.said.remove(text)
            return Result(changed=True, summary=self._scrub(f"unsaid {text!r}"))
        return Result(changed=False, summary="nothing to unsay")

    async def aclose(self) -> None:
        return None
