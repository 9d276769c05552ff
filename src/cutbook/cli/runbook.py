"""Commands that read a runbook and touch nothing: validate, plan, schema, adapters.

They import no Prefect, so they answer in well under a second.
"""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from cutbook.cli.console import err, load_runbook, out, write_output
from cutbook.cli.options import ListFormat, StartOption, VarOption, parse_start
from cutbook.errors import RunbookInvalid


class PlanFormat(StrEnum):
    text = "text"
    md = "md"
    json = "json"
    html = "html"


def register(app: typer.Typer) -> None:
    for command in (validate, plan, schema, adapters):
        app.command()(command)


def validate(
    runbooks: Annotated[
        list[Path], typer.Argument(help="Runbook files to check.", show_default=False)
    ],
    variables: VarOption = None,
    strict: Annotated[
        bool, typer.Option("--strict", help="Treat warnings as errors (for CI gates).")
    ] = False,
) -> None:
    """Check runbooks without touching anything: YAML safety, types, ids and
    dependencies, times against the window, targets, adapter arguments and templates.

    Every problem is reported at once as file:line:col: message. Exit 0 when all
    are valid, 2 when any is not.
    """
    failed = False
    for path in runbooks:
        try:
            loaded = load_runbook(path, variables, strict)
        except RunbookInvalid as exc:
            failed = True
            for diag in exc.diagnostics:
                err.print(
                    diag.render(),
                    style="red" if diag.severity == "error" else "yellow",
                    markup=False,
                )
            n = len(exc.diagnostics)
            err.print(f"{path}: invalid ({n} error{'s' if n != 1 else ''})", markup=False)
            continue
        rb = loaded.runbook
        warn = f", {len(loaded.warnings)} warning(s)" if loaded.warnings else ""
        out.print(
            f"{loaded.display}: ok — {rb.name}, {len(rb.steps)} steps, "
            f"window {rb.window_start:%Y-%m-%d %H:%M} – {rb.window_end:%Y-%m-%d %H:%M %Z}{warn}",
            markup=False,
        )
    if failed:
        raise typer.Exit(2)


def plan(
    runbook: Annotated[Path, typer.Argument(help="The runbook to forecast.", show_default=False)],
    start: StartOption = None,
    variables: VarOption = None,
    fmt: Annotated[
        PlanFormat, typer.Option("--format", "-f", help="Output format.")
    ] = PlanFormat.text,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write to a file instead of stdout.")
    ] = None,
    check: Annotated[
        bool, typer.Option("--check", help="Exit 1 when the plan does not fit the window.")
    ] = False,
) -> None:
    """Forecast every step's start and finish, the critical path, each step's slack,
    whether the night fits its window, and the point of no return.

    html gives one self-contained page with a Gantt chart; json has a fixed shape
    for scripts.
    """
    from cutbook.plan_render import render
    from cutbook.planning import plan as make_plan

    loaded = load_runbook(runbook, variables)
    rb = loaded.runbook
    forecast = make_plan(rb, start=parse_start(start, rb), item_counts=loaded.item_counts)
    write_output(render(forecast, rb, fmt.value), output)
    if check and not forecast.fits_window:
        raise typer.Exit(1)


def schema(
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write to a file instead of stdout.")
    ] = None,
) -> None:
    """Print the JSON Schema of the runbook language, for editors.

    With the YAML language server, put this first line in a runbook:
    # yaml-language-server: $schema=./cutbook.schema.json
    """
    from cutbook.schema import runbook_schema

    write_output(json.dumps(runbook_schema(), indent=2, ensure_ascii=False), output)


def adapters(
    name: Annotated[str | None, typer.Argument(help="Show one adapter in detail.")] = None,
    fmt: Annotated[
        ListFormat, typer.Option("--format", "-f", help="Output format.")
    ] = ListFormat.text,
) -> None:
    """List installed adapters (entry-point group cutbook.adapters), their actions
    and each action's arguments."""
    from cutbook.adapter_info import describe_all, render_text

    infos = describe_all(only=name)
    if fmt is ListFormat.json:
        write_output(json.dumps(infos, indent=2, ensure_ascii=False), None)
    else:
        render_text(infos, out)
    if any(i.get("error") for i in infos):
        raise typer.Exit(1)
