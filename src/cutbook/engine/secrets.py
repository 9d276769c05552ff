"""Secrets are resolved when a run starts (never frozen, never journalled): from the
environment first, then from a store such as Prefect Secret blocks."""

from __future__ import annotations

import os
from typing import Protocol

from cutbook.errors import UsageError
from cutbook.redact import MIN_SECRET_LENGTH


class SecretStore(Protocol):
    """Where a secret the environment does not hold is looked up (Prefect Secret blocks)."""

    async def lookup(self, name: str) -> str | None: ...

    def hint(self, missing: list[str]) -> str:
        """How an operator would provide the missing secrets there."""
        ...


async def resolve_secrets(names: list[str], store: SecretStore | None = None) -> dict[str, str]:
    """Environment first, then the store; too-short or missing secrets stop the run."""
    values: dict[str, str] = {}
    missing = []
    for name in names:
        if os.environ.get(name):
            values[name] = os.environ[name]
            continue
        value = await store.lookup(name) if store is not None else None
        if value is None:
            missing.append(name)
        else:
            values[name] = value
    short = [n for n, v in values.items() if len(v) < MIN_SECRET_LENGTH]
    if short:
        raise UsageError(
            f"secret(s) {', '.join(short)} shorter than {MIN_SECRET_LENGTH} characters: "
            "too short to scrub from logs reliably"
        )
    if missing:
        elsewhere = f", or {store.hint(missing)}" if store is not None else ""
        raise UsageError(
            "secret(s) not found: "
            + ", ".join(missing)
            + " — set them in the environment"
            + elsewhere
        )
    return values
