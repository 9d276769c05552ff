"""``cutbook preflight``: would the night go? Read-only checks of every step, now."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from cutbook import paths
from cutbook.cli.console import err, load_runbook, out
from cutbook.cli.options import DataDirOption, VarOption

_STYLE = {"ok": "green", "blocks": "bold red", "not checkable": "yellow"}


def register(app: typer.Typer) -> None:
    app.command()(preflight)


def preflight(
    runbook: Annotated[
        Path, typer.Argument(metavar="RUNBOOK", help="The runbook to check.", show_default=False)
    ],
    variables: VarOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Check, now and on the real clock, that every step would work on the night: targets
    reachable, credentials accepted, preconditions true. Changes nothing: each adapter's
    read-only check runs against the real targets (GETs and queries run; changes are only
    described). `at` times and the window are ignored.

    Prints a table of step, target, result and what would block the night, and journals
    the check as a pre-flight run for the auditors. Exit 0 when nothing would block, 1 when
    something would, 2 for invalid input.
    """
    from cutbook.engine.launch import RunSettings
    from cutbook.engine.launch import preflight as run_preflight

    loaded = load_runbook(runbook, variables)
    session, checks = run_preflight(loaded, RunSettings(data_dir=paths.data_dir(data_dir)))
    table = Table(title=f"pre-flight of {loaded.runbook.name}", title_justify="left")
    for column in ("step", "target", "items", "result", "detail"):
        table.add_column(column, overflow="fold")
    for check in checks:
        table.add_row(
            check.step,
            check.target or "—",
            str(check.items),
            Text(check.verdict, style=_STYLE[check.verdict]),
            Text(check.detail),
        )
    out.print(table)
    blocking = [c for c in checks if c.verdict == "blocks"]
    unknown = [c for c in checks if c.verdict == "not checkable"]
    if session.journal is not None:
        err.print(f"journal: {session.journal.path}", markup=False)
    if unknown:
        err.print(
            f"{len(unknown)} step(s) depend on what only the night provides and were not "
            "checked: " + ", ".join(c.step for c in unknown),
            style="yellow",
            markup=False,
        )
    if blocking:
        err.print(
            f"{len(blocking)} step(s) would block the night: "
            + ", ".join(c.step for c in blocking),
            style="red",
            markup=False,
        )
        raise typer.Exit(1)
    out.print("nothing would block the night", style="green", markup=False)
