"""Secrets kept as Prefect Secret blocks, for runs whose environment does not hold them."""

from __future__ import annotations

from typing import Any


def secret_block_name(name: str) -> str:
    """Block names are kebab case: ``VNACCS_TOKEN`` lives in block ``vnaccs-token``."""
    return name.lower().replace("_", "-")


class PrefectSecrets:
    """A :class:`~cutbook.engine.secrets.SecretStore` over Prefect Secret blocks."""

    async def lookup(self, name: str) -> str | None:
        # Imported here: a run whose secrets are all in the environment never needs it.
        from prefect.blocks.system import Secret
        from prefect.exceptions import ObjectNotFound

        try:
            loaded: Any = await Secret.aload(secret_block_name(name))
        except (ObjectNotFound, ValueError):
            return None
        value: object = loaded.get()
        return str(value)

    def hint(self, missing: list[str]) -> str:
        return "create Prefect Secret blocks named " + ", ".join(
            secret_block_name(m) for m in missing
        )
