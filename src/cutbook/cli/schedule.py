"""Scheduling commands: schedule, schedules, unschedule, serve. Parsing and printing only:
the engine's launch API does the work, so nobody keeps a terminal open until the night."""

from __future__ import annotations

import json
import os
import signal
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from cutbook import paths
from cutbook.cli.console import err, load_runbook, out
from cutbook.cli.options import DataDirOption, ListFormat, VarOption, parse_start
from cutbook.durations import format_duration
from cutbook.errors import UsageError

if TYPE_CHECKING:
    from cutbook.engine.prefect.deploy import ScheduledCutover

DEFAULT_POOL = "cutbook"  # the same as engine.prefect.deploy.DEFAULT_POOL, without Prefect

PoolOption = Annotated[
    str | None,
    typer.Option(
        "--pool",
        help="The Prefect work pool the run goes to (a team's own `prefect worker start "
        "--pool NAME` runs it too). [default: the runbook's pool:, else cutbook]",
        show_default=False,
    ),
]
ServePoolOption = Annotated[
    str,
    typer.Option("--pool", help="The Prefect work pool whose scheduled cutovers this runs."),
]


def register(app: typer.Typer) -> None:
    app.command(name="schedule")(schedule)
    app.command(name="schedules")(schedules)
    app.command(name="unschedule")(unschedule)
    app.command(name="serve")(serve)


def schedule(
    runbook: Annotated[
        Path, typer.Argument(metavar="RUNBOOK", help="The runbook to schedule.", show_default=False)
    ],
    at: Annotated[
        str,
        typer.Option(
            "--at",
            help="When the window opens (ISO, e.g. 2025-03-21T23:00, in the runbook's zone "
            "unless it carries an offset); every `at` moves with it.",
            show_default=False,
        ),
    ],
    variables: VarOption = None,
    pool: PoolOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Schedule a real-clock run for later: validated now, frozen (text, data files and
    variables by sha256), run by `cutbook serve` or a Prefect worker on the pool: `--pool`,
    else the runbook's `pool:`, else `cutbook`.

    Secrets are not frozen: they are read when the run starts, from the worker's
    environment or Prefect Secret blocks. If the runbook or a data file changes before
    then, the run refuses to start. Exit 2 for invalid input (a time in the past, an
    invalid runbook).
    """
    from cutbook.engine.launch import RunSettings, tell_scheduled
    from cutbook.engine.launch import schedule as create

    loaded = load_runbook(runbook, variables)
    when = parse_start(at.strip(), loaded.runbook)
    if when is None:
        raise UsageError("--at is required")
    settings = RunSettings(data_dir=paths.data_dir(data_dir))
    pool = pool if pool is not None else (loaded.runbook.pool or DEFAULT_POOL)
    made = create(loaded, settings, when, pool=pool)
    left = (when - datetime.now(UTC)).total_seconds()
    out.print(
        f"scheduled {made.runbook} for {_when(made)} (in {format_duration(max(0, left))}) "
        f"on work pool {made.pool}",
        markup=False,
    )
    out.print(f"schedule id: {made.id}", markup=False)
    out.print(f"run id: {made.run_id}", markup=False)
    out.print(f"runbook sha256: {made.sha256}", markup=False)
    if made.url:
        out.print(f"UI: {made.url}", markup=False)
    told = tell_scheduled(loaded, made, when)
    if told:
        sent = sum(1 for _, error in told if error is None)
        out.print(f"run-scheduled: told {sent} channel(s)", markup=False)
        for label, error in told:
            if error is not None:
                err.print(f"run-scheduled: channel {label} not told: {error}", markup=False)
    serve_hint = "cutbook serve" + ("" if pool == DEFAULT_POOL else f" --pool {pool}")
    err.print(
        f"it runs where a worker serves the pool: `{serve_hint}` on this machine, "
        f"or `prefect worker start --pool {pool}`",
        markup=False,
    )


def schedules(
    fmt: Annotated[
        ListFormat, typer.Option("--format", "-f", help="text or json.")
    ] = ListFormat.text,
) -> None:
    """List scheduled cutovers that have not ended, soonest first."""
    from cutbook.engine.launch import schedules as upcoming

    found = upcoming()
    if fmt is ListFormat.json:
        out.print_json(json.dumps([s.as_json() for s in found]))
        return
    if not found:
        out.print("no scheduled cutovers", markup=False)
        return
    rows = [("ID", "WHEN", "RUNBOOK", "SHA256", "STATE", "POOL")]
    rows += [(s.id[:8], _when(s), s.runbook, s.sha256[:12], s.state, s.pool or "-") for s in found]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        out.print(
            "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip(), markup=False
        )


def unschedule(
    schedule_id: Annotated[
        str,
        typer.Argument(
            metavar="SCHEDULE_ID",
            help="The schedule id (or a unique prefix) from cutbook schedules.",
        ),
    ],
) -> None:
    """Cancel a scheduled cutover that has not started."""
    from cutbook.engine.launch import unschedule as cancel

    done = cancel(schedule_id)
    out.print(
        f"unscheduled {done.runbook} at {_when(done)} (schedule {done.id}, "
        f"sha256 {done.sha256[:12]}): {done.state}",
        markup=False,
    )


def serve(pool: ServePoolOption = DEFAULT_POOL, data_dir: DataDirOption = None) -> None:
    """Run scheduled cutovers on this machine: a Prefect process worker on the pool.

    Keep it running (systemd, tmux) on the machine the night should run from; its
    environment provides the secrets. Each run starts as its own process a minute
    early, waits for its window and journals into this worker's data directory.
    Stop it with Ctrl-C between nights.
    """
    from cutbook.engine.launch import serve as work

    # The runs this worker starts inherit it: their journals stay on this machine.
    folder = paths.data_dir(data_dir).resolve()
    os.environ["CUTBOOK_DATA_DIR"] = str(folder)
    err.print(
        f"serving scheduled cutovers from work pool {pool!r} (journals in {folder}); Ctrl-C stops",
        markup=False,
    )
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # systemd's stop: like Ctrl-C
    try:
        work(
            folder,
            pool=pool,
            say=lambda *a, **_: err.print(" ".join(str(x) for x in a), markup=False),
        )
    except KeyboardInterrupt:
        err.print("stopped serving", markup=False)


def _when(s: ScheduledCutover) -> str:
    return s.at.strftime("%Y-%m-%d %H:%M:%S %z") if s.at else "-"
