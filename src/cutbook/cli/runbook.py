"""Commands that read a runbook and touch nothing: validate, plan, schema, adapters.

They import no Prefect, so they answer in well under a second.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from cutbook.cli.console import err, load_runbook, out, write_output
from cutbook.cli.options import DataDirOption, StartOption, VarOption, parse_start
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
        list[Path],
        typer.Argument(
            metavar="RUNBOOK", help="Runbook files to check (one or more).", show_default=False
        ),
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
    runbook: Annotated[
        Path, typer.Argument(metavar="RUNBOOK", help="The runbook to forecast.", show_default=False)
    ],
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
    """Print the JSON Schema of the runbook language, for editors: every key with a
    description and examples, and each installed adapter's arguments under `with:`
    (chosen by the step's `action:`).

    With the YAML language server, put this first line in a runbook (the path is
    relative to the runbook):
    # yaml-language-server: $schema=../docs/cutbook.schema.json
    """
    from cutbook.adapter_info import loadable
    from cutbook.schema import build_schema

    found, broken = loadable()
    for problem in broken:
        err.print(f"warning: left out of the schema: {problem}", style="yellow", markup=False)
    text = json.dumps(build_schema(found), indent=2, ensure_ascii=False)
    write_output(text, output)


class AdaptersFormat(StrEnum):
    """``cutbook adapters``: tables for people, JSON for scripts, Markdown for the docs."""

    text = "text"
    json = "json"
    markdown = "markdown"


def adapters(
    name: Annotated[
        str | None, typer.Argument(metavar="ADAPTER", help="Show one adapter in detail.")
    ] = None,
    fmt: Annotated[
        AdaptersFormat, typer.Option("--format", "-f", help="Output format.")
    ] = AdaptersFormat.text,
    update: Annotated[
        Path | None,
        typer.Option(
            "--update",
            help="With --format markdown: replace the generated adapter section (between "
            "its marker comments) of this file, e.g. docs/runbook-reference.md.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """List installed adapters (entry-point group cutbook.adapters), their actions
    and each action's arguments: name, type, required, default, description.

    Regenerate the runbook reference's adapter section with
    `cutbook adapters --format markdown --update docs/runbook-reference.md`.
    """
    from cutbook.adapter_info import describe_all, render_markdown, render_text, replace_section

    if update is not None and (fmt is not AdaptersFormat.markdown or name is not None):
        raise UsageError("--update goes with --format markdown and every adapter (no NAME)")
    infos = describe_all(only=name)
    if fmt is AdaptersFormat.json:
        write_output(json.dumps(infos, indent=2, ensure_ascii=False), None)
    elif fmt is AdaptersFormat.markdown:
        section = render_markdown(infos)
        if update is None:
            write_output(section, None)
        else:
            _update_section(update, section, replace_section)
    else:
        render_text(infos, out)
    if any(i.get("error") for i in infos):
        raise typer.Exit(1)


def _update_section(path: Path, section: str, replace: Callable[[str, str], str]) -> None:
    """Splice ``section`` into ``path`` between its markers; a clear error without them."""
    try:
        document = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        updated = replace(document, section)
    except ValueError as exc:
        raise UsageError(f"{path}: {exc}") from None
    if updated == document:
        err.print(f"{path}: adapter section already up to date", markup=False)
        return
    write_output(updated, path)
