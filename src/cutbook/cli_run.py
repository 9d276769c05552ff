"""Run-time commands (run, approve, resume): registered here, Prefect imported only when used."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    return None
