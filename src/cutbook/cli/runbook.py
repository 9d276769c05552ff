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
from cutbook.cli.options import DataDirOption, ListFormat, StartOption, VarOption, parse_start
from cutbook.errors import RunbookInvalid, UsageError


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
    calibrate: Annotated[
        list[str] | None,
        typer.Option(
            "--calibrate",
            metavar="RUN",
            help="Instead of the forecast, compare each step's estimate with how long it "
            "took in these runs (a run id, a unique prefix, or a journal file; repeatable).",
            show_default=False,
        ),
    ] = None,
    percentile: Annotated[
        int,
        typer.Option(
            "--percentile",
            help="With --calibrate: suggest (and --write) the P50 or the P90 of the runs.",
        ),
    ] = 90,
    write: Annotated[
        bool,
        typer.Option(
            "--write",
            help="With --calibrate: write the suggested estimates into the runbook file, "
            "changing only those lines.",
        ),
    ] = False,
    data_dir: DataDirOption = None,
) -> None:
    """Forecast every step's start and finish, the critical path, each step's slack,
    whether the night fits its window, and the point of no return.

    html gives one self-contained page with a Gantt chart; json has a fixed shape
    for scripts.

    **Calibrating estimates from rehearsals.** With `--calibrate RUN` (repeat it for
    several rehearsals), the table shows each step's estimate beside the P50 and P90
    of its actual durations in those runs, a suggested estimate (the P90 rounded up)
    and which estimates will likely run late or are padding. `--write` puts the
    suggestions into the runbook, changing nothing else; review the diff and commit it.

    Example, after three rehearsals (run ids or unique prefixes, from `cutbook audit list`):
    `cutbook plan runbooks/customs-reorg-2025.yaml --calibrate customs-reorg-2025-20250307
    --calibrate customs-reorg-2025-20250311 --calibrate customs-reorg-2025-20250313`,
    then the same with `--write`, and `git diff` the runbook.
    """
    if calibrate:
        if start is not None or check:
            raise UsageError("--start and --check apply to the forecast, not to --calibrate")
        _calibrate(runbook, variables, calibrate, fmt, output, percentile, write, data_dir)
        return
    if write or percentile != 90:
        raise UsageError("--write and --percentile go with --calibrate RUN")
    from cutbook.plan_render import render
    from cutbook.planning import plan as make_plan

    loaded = load_runbook(runbook, variables)
    rb = loaded.runbook
    forecast = make_plan(
        rb,
        start=parse_start(start, rb),
        item_counts=loaded.item_counts,
        read_only=loaded.read_only_steps(),
    )
    write_output(render(forecast, rb, fmt.value), output)
    if check and not forecast.fits_window:
        raise typer.Exit(1)


def _calibrate(
    runbook: Path,
    variables: list[str] | None,
    runs: list[str],
    fmt: PlanFormat,
    output: Path | None,
    percentile: int,
    write: bool,
    data_dir: Path | None,
) -> None:
    """``plan --calibrate``: estimates against rehearsals, and ``--write`` to adopt them."""
    import io
    import os

    from rich.console import Console

    from cutbook import paths
    from cutbook.audit.calibrate import (
        calibrate,
        resolve_journal,
        write_estimates,
    )
    from cutbook.audit.calibration_table import calibration_table
    from cutbook.validation import parse_overrides

    if fmt not in (PlanFormat.text, PlanFormat.json):
        raise UsageError(f"--format {fmt.value}: --calibrate writes text or json")
    if percentile not in (50, 90):
        raise UsageError(f"--percentile {percentile}: use 50 or 90")
    loaded = load_runbook(runbook, variables)
    folder = paths.journal_dir(data_dir)
    journals = [(ref, resolve_journal(ref, folder)) for ref in runs]
    key = os.environ.get("CUTBOOK_JOURNAL_KEY")
    cal = calibrate(loaded, journals, percentile=percentile, hmac_key=key.encode() if key else None)
    for warning in cal.warnings:
        err.print(f"warning: {warning}", style="yellow", markup=False)
    changes = (
        write_estimates(loaded, cal, overrides=parse_overrides(variables or [])) if write else []
    )
    if fmt is PlanFormat.json:
        data = cal.to_json()
        data["written"] = (
            {
                "path": loaded.display,
                "changes": [
                    {"step": c.step, "line": c.line, "old": c.old, "new": c.new} for c in changes
                ],
            }
            if write
            else None
        )
        write_output(json.dumps(data, indent=2, ensure_ascii=False), output)
    elif output is None:
        out.print(calibration_table(cal))
    else:
        buffer = io.StringIO()
        Console(file=buffer, width=160, no_color=True, highlight=False).print(
            calibration_table(cal)
        )
        write_output(buffer.getvalue(), output)
    if not write:
        return
    # The changes are the result in text mode; beside JSON (which has them) they are a note.
    say = err if fmt is PlanFormat.json or output is not None else out
    for c in changes:
        what = f"inserted estimate {c.new}" if c.old is None else f"estimate {c.old} → {c.new}"
        say.print(f"{loaded.display}:{c.line}: {c.step}: {what}", markup=False)
    if changes:
        say.print(f"wrote {loaded.display}: review the diff and commit it", markup=False)
    else:
        say.print(f"{loaded.display}: estimates already match; nothing written", markup=False)


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
