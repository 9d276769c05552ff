"""Options and argument parsing shared by every cutbook command, written once."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from cutbook import paths
from cutbook.errors import UsageError
from cutbook.model import Runbook, TimeError, parse_time

VarOption = Annotated[
    list[str] | None,
    typer.Option(
        "--var",
        "-v",
        metavar="NAME=VALUE",
        help="Override a runbook variable (repeatable); the value is read as YAML: 3 is a number.",
    ),
]
DataDirOption = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        envvar="CUTBOOK_DATA_DIR",
        help="Where journals, reports and the embedded Prefect server live: one per user, "
        f"the same from any working directory. [default: {paths.default_data_dir_help()}]",
        show_default=False,
    ),
]
StartOption = Annotated[
    str | None,
    typer.Option(
        help="Place the window's timeline here instead (ISO, e.g. 2025-03-21T23:00); every "
        "`at` moves with it.",
    ),
]


def parse_start(value: str | None, runbook: Runbook) -> datetime | None:
    """``--start``: a time in the runbook's zone unless it carries an offset."""
    if value is None:
        return None
    try:
        return parse_time(value, runbook.zone)
    except TimeError as exc:
        raise UsageError(f"--start: {exc}") from None


class ListFormat(StrEnum):
    """For listings: a table for people, JSON for scripts."""

    text = "text"
    json = "json"
