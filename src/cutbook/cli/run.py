"""Run-time commands: run, resume, approve. Parsing and printing only: the engine's
launch API (:mod:`cutbook.engine.launch`) does the work, Prefect included."""

from __future__ import annotations

from dataclasses import replace
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, cast

import typer

from cutbook import paths
from cutbook.cli.console import err, load_runbook, out
from cutbook.cli.options import (
    DataDirOption,
    StartOption,
    VarOption,
    parse_start,
)
from cutbook.errors import UsageError

if TYPE_CHECKING:
    from cutbook.engine.launch import Launched
    from cutbook.engine.state import Choice


AuditStoreOption = Annotated[
    str | None,
    typer.Option(
        "--audit-store",
        metavar="URL",
        help="Also copy every journal record to this shared audit store (a SQLAlchemy URL, "
        "postgresql+asyncpg://... or sqlite+aiosqlite:///...), after it is on disk here; "
        "default: CUTBOOK_AUDIT_STORE. A store that is down never stops the run.",
        show_default=False,
    ),
]


class ClockKind(StrEnum):
    real = "real"
    virtual = "virtual"


class Decision(StrEnum):
    retry = "retry"
    skip = "skip"
    rollback = "rollback"


def register(app: typer.Typer) -> None:
    app.command(name="run")(run)
    app.command(name="approve")(approve)
    app.command(name="resume")(resume)


def run(
    runbook: Annotated[
        Path, typer.Argument(metavar="RUNBOOK", help="The runbook to run.", show_default=False)
    ],
    variables: VarOption = None,
    start: StartOption = None,
    clock: Annotated[
        ClockKind,
        typer.Option(help="real: wall-clock time. virtual: a compressed rehearsal timeline."),
    ] = ClockKind.real,
    speed: Annotated[
        float,
        typer.Option(
            help="With --clock virtual: how many times faster than real time waits pass "
            "while every step waits (1 to 1000000); work always takes real time."
        ),
    ] = 360.0,
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="Call only read-only checks; record what would change."),
    ] = False,
    run_id: Annotated[
        str | None, typer.Option("--run-id", help="Name the run (default: generated).")
    ] = None,
    auto_approve: Annotated[
        bool,
        typer.Option(
            "--auto-approve",
            help="Answer every gate as yourself, recorded as automatic. Demos and rehearsals only.",
        ),
    ] = False,
    executor: Annotated[
        str | None,
        typer.Option(
            "--as",
            metavar="NAME",
            help="Who runs the night (default: your OS user). Recorded; a gate with "
            "executor_may_approve: false refuses this person's answers.",
        ),
    ] = None,
    audit_store: AuditStoreOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Run a runbook as a Prefect flow: on time, with retries, gates, rollback and
    always-steps, journalled step by step.

    A rehearsal is a run with --clock virtual (a six-hour window at --speed 360 takes
    about a minute) against the simulator. Exit 0 when the run completed, 1 when it
    failed (after its rollback and always steps ran) or its journal could not be
    written, 2 for invalid input or when the run or its estate is already being run,
    130 / 143 when Ctrl-C / SIGTERM stopped it safely (resume it with cutbook resume).
    """
    from cutbook.cli.view import terminal_observers
    from cutbook.engine.launch import RunSettings, launch

    loaded = load_runbook(runbook, variables)
    when = parse_start(start, loaded.runbook)
    if speed <= 0:
        raise UsageError("--speed must be positive")
    if auto_approve and clock is ClockKind.real and not dry_run:
        err.print(
            "warning: --auto-approve on a real-clock run answers every gate for you",
            style="yellow",
            markup=False,
        )
    settings = RunSettings(
        data_dir=paths.data_dir(data_dir),
        clock=clock.value,
        speed=speed,
        start=when,
        dry_run=dry_run,
        auto_approve=auto_approve,
        run_id=run_id,
        audit_store=audit_store,
    )
    if executor:
        settings = replace(settings, executor=executor)
    launched = launch(loaded, settings, observers=terminal_observers())
    summary(launched)
    if launched.exit_code:
        raise typer.Exit(launched.exit_code)


def summary(launched: Launched) -> None:
    """The outcome on stdout; a halted run's state and what to type next on stderr."""
    if launched.session.runner is None:
        return
    if launched.halted is not None:
        lines = launched.session.halt_report()
        err.print("cutbook: " + lines[0], style="yellow", markup=False)
        for line in lines[1:]:
            err.print(line, markup=False)
        return
    counts = launched.counts()
    parts = ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in sorted(counts.items()))
    style = "green" if launched.outcome == "succeeded" else "red"
    out.print(f"outcome: {launched.outcome} ({parts})", style=style, markup=False)
    if launched.failure:
        out.print(f"reason: {launched.failure}", markup=False)
    if launched.journal_path is not None:
        out.print(f"journal: {launched.journal_path}", markup=False)


def resume(
    run_id: Annotated[
        str, typer.Argument(metavar="RUN", help="The run to continue (id or unique prefix).")
    ],
    auto_approve: Annotated[
        bool,
        typer.Option("--auto-approve", help="Answer gates automatically (rehearsals only)."),
    ] = False,
    rollback: Annotated[
        bool,
        typer.Option(
            "--rollback",
            help="Do not go on: finish the steps left in flight, undo what the run changed "
            "(newest first), then run its always steps.",
        ),
    ] = False,
    audit_store: AuditStoreOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Continue a run that stopped without finishing (Ctrl-C, SIGTERM, kill -9, power
    loss, a full disk) from its journal.

    Steps and items recorded as done are not run again; a change with an intent but
    no outcome is settled by its verification or applied again with the same
    idempotency key; timing continues against the same window. Resumed past the point
    of no return, the run rolls back unless an operator approves going on. A run that
    is still running is refused (exit 2), naming its pid and host.
    """
    from cutbook.cli.view import terminal_observers
    from cutbook.engine.launch import RunSettings, resume

    settings = RunSettings(
        data_dir=paths.data_dir(data_dir), auto_approve=auto_approve, audit_store=audit_store
    )
    launched = resume(run_id, settings, observers=terminal_observers(), rollback=rollback)
    summary(launched)
    if launched.exit_code:
        raise typer.Exit(launched.exit_code)


def approve(
    run_id: Annotated[
        str, typer.Argument(metavar="RUN", help="The run id printed by cutbook run.")
    ],
    step: Annotated[
        str,
        typer.Argument(
            metavar="STEP",
            help="The gate or manual step being answered, or guard for the deadline guard.",
        ),
    ],
    by: Annotated[str, typer.Option("--by", help="Your name, as listed in the gate's approvers.")],
    go: Annotated[
        bool, typer.Option("--approve", help="Say go (or: the manual step is done).")
    ] = False,
    reject: Annotated[bool, typer.Option("--reject", help="Say no-go.")] = False,
    decision: Annotated[
        Decision | None,
        typer.Option(help="For a failed step with on_failure: pause — retry, skip or rollback."),
    ] = None,
    comment: Annotated[str, typer.Option(help="Why; kept in the journal as evidence.")] = "",
    key: Annotated[
        Path | None,
        typer.Option(
            "--key",
            metavar="FILE",
            help="Sign the answer with your private key (cutbook keys new NAME); a gate with "
            "signed: true takes only signed answers.",
        ),
    ] = None,
    data_dir: DataDirOption = None,
) -> None:
    """Answer a go/no-go gate, a manual step, a failed step or the deadline guard of a
    running run from a terminal.

    Say exactly one of --approve, --reject or --decision: there is no default answer.
    The answer carries the sha256 of the runbook the run asks about, so it approves that
    runbook and no other; with --key it is signed, and cutbook audit verify checks the
    signature afterwards. The server is found as cutbook run finds it: PREFECT_API_URL,
    else CUTBOOK_PREFECT_PORT, else the data directory's embedded server.

    Example: cutbook approve customs-reorg-2025-20250314T2230-ab12 go-live --by ops-lead
    --approve --key ~/.cutbook/ops-lead.key --comment "certificates verified"

    The same answer can be given in the Prefect UI's form on the paused flow run.
    """
    from cutbook.engine.launch import answer_gate

    chosen = [c for c in ("approve" if go else None, "reject" if reject else None) if c]
    if decision is not None:
        chosen.append(decision.value)
    if len(chosen) != 1:
        raise UsageError(
            "say exactly one of --approve, --reject or --decision retry|skip|rollback "
            "(there is no default answer)"
        )
    choice = cast("Choice", chosen[0])
    said = answer_gate(
        run_id,
        step,
        choice=choice,
        by=by,
        comment=comment,
        key_file=key,
        data_dir=paths.data_dir(data_dir),
    )
    out.print(said, markup=False)
