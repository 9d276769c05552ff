"""The ``cutbook`` command.

Exit codes are the same everywhere: 0 success, 1 the thing checked or run
failed (a run that rolled back, a chain that does not verify), 2 bad input
(an invalid runbook, a wrong flag). Errors are one-line messages, never
tracebacks. Heavy modules (Prefect, FastAPI) are imported inside the commands
that need them, so ``validate`` and ``plan`` start fast.
"""

from __future__ import annotations

import json
import os
import sys
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.console import Console

from cutbook import __version__
from cutbook.cli_options import (
    DataDirOption,
    StartOption,
    VarOption,
    parse_start,
    resolve_data_dir,
)
from cutbook.errors import CutbookError, RunbookInvalid, UsageError

if TYPE_CHECKING:
    from cutbook.validation import LoadedRunbook

app = typer.Typer(
    name="cutbook",
    help=(
        "Cutover runbooks as code: validate and plan a timed YAML runbook, rehearse it "
        "against a simulator, run it as a Prefect flow, and audit what it did.\n\n"
        "Typical night: cutbook validate → cutbook plan → cutbook run --clock virtual "
        "(rehearsal) → cutbook run → cutbook audit verify."
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode="markdown",
    context_settings={"help_option_names": ["-h", "--help"]},
)
audit_app = typer.Typer(
    help="Read and verify the journal of past runs: list, show, verify, report, anchor.",
    no_args_is_help=True,
)
app.add_typer(audit_app, name="audit")

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


class PlanFormat(StrEnum):
    text = "text"
    md = "md"
    json = "json"
    html = "html"


class ReportFormat(StrEnum):
    html = "html"
    md = "md"
    json = "json"


class ListFormat(StrEnum):
    text = "text"
    json = "json"


def _version(value: bool) -> None:
    if value:
        out.print(f"cutbook {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Show the version."),
    ] = False,
) -> None:
    """Cutover runbooks as code."""


def _load(path: Path, variables: list[str] | None, strict: bool = False) -> LoadedRunbook:
    from cutbook.validation import load, parse_overrides

    loaded = load(path, overrides=parse_overrides(variables or []), strict=strict)
    for warning in loaded.warnings:
        err.print(warning.render(), style="yellow", markup=False)
    return loaded


def _write(text: str, output: Path | None) -> None:
    if output is None:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
        return
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"{output}: cannot write: {exc.strerror}") from None
    err.print(f"wrote {output}", markup=False)


@app.command()
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
            loaded = _load(path, variables, strict)
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


@app.command()
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

    loaded = _load(runbook, variables)
    rb = loaded.runbook
    forecast = make_plan(rb, start=parse_start(start, rb), item_counts=loaded.item_counts)
    _write(render(forecast, rb, fmt.value), output)
    if check and not forecast.fits_window:
        raise typer.Exit(1)


@app.command()
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

    _write(json.dumps(runbook_schema(), indent=2, ensure_ascii=False), output)


@app.command()
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
        _write(json.dumps(infos, indent=2, ensure_ascii=False), None)
    else:
        render_text(infos, out)
    if any(i.get("error") for i in infos):
        raise typer.Exit(1)


@app.command()
def simulator(
    host: Annotated[str, typer.Option(help="Address to bind; keep it on loopback.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8765,
    faults: Annotated[
        str | None,
        typer.Option(help="Fault profile: calm, flaky, hostile, or a YAML file of rules."),
    ] = None,
    state: Annotated[
        Path, typer.Option(help="SQLite file holding the estate; a restart keeps it.")
    ] = Path(".cutbook/simulator.sqlite"),
    seed: Annotated[
        Path | None, typer.Option(help="Offices CSV to seed a new estate from.")
    ] = None,
    speed: Annotated[
        float,
        typer.Option(help="Age the estate this many times faster (match a rehearsal's --speed)."),
    ] = 1.0,
) -> None:
    """Run the simulated customs estate (VNACCS intake, satellite systems, catalogues,
    portal, Edoc CA) on loopback, for rehearsals, demos and tests."""
    from cutbook.simulator import serve

    if speed <= 0:
        raise UsageError("--speed must be positive")
    os.environ["CUTBOOK_SIMULATOR_SPEED"] = str(speed)
    serve(host=host, port=port, faults=faults, state=state, seed=seed)


@app.command()
def demo(
    data_dir: DataDirOption = None,
    speed: Annotated[
        float, typer.Option(help="Rehearsal speed: 360 runs 6 hours in 1 minute.")
    ] = 360.0,
) -> None:
    """Rehearse the customs cutover end to end against the simulated estate: start the
    simulator and the embedded Prefect server, run customs-reorg-2025 with the virtual
    clock and automatic gate answers, check the final state, verify the journal."""
    from cutbook.demo import run_demo

    raise typer.Exit(run_demo(resolve_data_dir(data_dir), speed, out))


def fail(message: str, code: int = 2) -> NoReturn:
    err.print(message, style="red", markup=False)
    raise typer.Exit(code)


def _register_optional_commands() -> None:
    """Commands whose modules may import heavy things register themselves lazily."""
    from cutbook import cli_audit, cli_run

    cli_run.register(app)
    cli_audit.register(audit_app)


def main(argv: list[str] | None = None) -> Any:
    _register_optional_commands()
    try:
        return app(args=argv, prog_name="cutbook")
    except CutbookError as exc:
        err.print(str(exc), style="red", markup=False)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err.print("interrupted", markup=False)
        sys.exit(130)
