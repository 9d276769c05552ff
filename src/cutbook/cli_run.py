"""Run-time commands: run, approve. Prefect is imported only once they start."""

from __future__ import annotations

import os
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from cutbook.cli_options import (
    DataDirOption,
    StartOption,
    VarOption,
    parse_start,
    resolve_data_dir,
)
from cutbook.errors import EngineError, UsageError

if TYPE_CHECKING:
    from cutbook.engine.session import RunSettings, Session
    from cutbook.validation import LoadedRunbook


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
    runbook: Annotated[Path, typer.Argument(help="The runbook to run.", show_default=False)],
    variables: VarOption = None,
    start: StartOption = None,
    clock: Annotated[
        ClockKind,
        typer.Option(help="real: wall-clock time. virtual: a compressed rehearsal timeline."),
    ] = ClockKind.real,
    speed: Annotated[
        float, typer.Option(help="With --clock virtual: how many times faster than real time.")
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
    data_dir: DataDirOption = None,
) -> None:
    """Run a runbook as a Prefect flow: on time, with retries, gates, rollback and
    always-steps, journalled step by step.

    A rehearsal is a run with --clock virtual (a six-hour window at --speed 360 takes
    about a minute) against the simulator. Exit 0 when the run completed, 1 when it
    failed (after its rollback and always steps ran), 2 for invalid input.
    """
    from cutbook.cli import _load, err
    from cutbook.engine.session import RunSettings

    loaded = _load(runbook, variables)
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
        data_dir=resolve_data_dir(data_dir),
        clock=clock.value,
        speed=speed,
        start=when,
        dry_run=dry_run,
        auto_approve=auto_approve,
        run_id=run_id,
    )
    _, outcome = launch(loaded, settings)
    if outcome != "succeeded":
        raise typer.Exit(1)


def launch(
    loaded: LoadedRunbook | None, settings: RunSettings, resume_id: str | None = None
) -> tuple[Session, str | None]:
    """Start (or reuse) the Prefect server, run the flow, print the summary."""
    from cutbook.engine.server import configure_environment, ensure_server
    from cutbook.engine.session import Session
    from cutbook.logs import configure

    configure_environment()
    ensure_server(settings.data_dir)
    if resume_id is not None:
        session = Session.resume(resume_id, settings)
    else:
        assert loaded is not None
        session = Session(loaded, settings)
    configure(redactor=session.redactor)
    import asyncio

    outcome = asyncio.run(_execute(session))
    summary(session, outcome)
    return session, outcome


async def _execute(session: Session) -> str | None:
    from prefect import tags

    from cutbook.cli import err, out
    from cutbook.engine.flow import PREPARED, cutover
    from cutbook.engine.view import LiveView

    await session.prepare()
    rb = session.loaded.runbook
    out.print(f"run id: {session.run_id}", markup=False)
    view = LiveView(err)
    session.observers.append(view.update)
    session.on_flow_run = lambda url: out.print(f"flow run: {url}", markup=False)
    PREPARED[session.run_id] = session
    params = {
        "runbook_name": rb.name,
        "window_start": (rb.window_start + session.shift).isoformat(timespec="minutes")
        + (" (resumed)" if session.recovered else ""),
        "runbook_path": str(session.loaded.path.resolve()),
        "runbook_sha256": session.loaded.sha256,
        "runbook_text": session.loaded.text,
        "variables": session.loaded.vars,
        "run_id": session.run_id,
        "settings": {
            "data_dir": str(session.settings.data_dir),
            "clock": session.settings.clock,
            "speed": session.settings.speed,
            "dry_run": session.settings.dry_run,
            "auto_approve": session.settings.auto_approve,
        },
    }
    started = False

    def begin(runner: object) -> None:
        nonlocal started
        if not started:
            started = True
            view.start(runner)  # type: ignore[arg-type]

    session.observers.insert(0, begin)
    try:
        extra = ("resumed",) if session.recovered else ()
        with tags("cutover", rb.name, f"cutbook-run:{session.run_id}", *extra):
            await cutover(**params, return_state=True)
    finally:
        if session.runner is not None:
            view.stop(session.runner)
    return session.runner.outcome if session.runner else None


def summary(session: Session, outcome: str | None) -> None:
    from cutbook.cli import out

    runner = session.runner
    if runner is None:
        return
    counts: dict[str, int] = {}
    for st in runner.states.values():
        counts[st.status] = counts.get(st.status, 0) + 1
    parts = ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in sorted(counts.items()))
    style = "green" if outcome == "succeeded" else "red"
    out.print(f"outcome: {outcome} ({parts})", style=style, markup=False)
    if runner.failure:
        out.print(f"reason: {runner.failure}", markup=False)
    if session.journal is not None:
        out.print(f"journal: {session.journal.path}", markup=False)


def resume(
    run_id: Annotated[str, typer.Argument(help="The run to continue (id or unique prefix).")],
    auto_approve: Annotated[
        bool,
        typer.Option("--auto-approve", help="Answer gates automatically (rehearsals only)."),
    ] = False,
    data_dir: DataDirOption = None,
) -> None:
    """Continue a run whose process died (kill -9, power loss) from its journal.

    Steps and items recorded as done are not run again; a change with an intent but
    no outcome is settled by its verification or applied again with the same
    idempotency key; timing continues against the same window. Resumed past the point
    of no return, the run rolls back unless an operator approves going on.
    """
    from cutbook.engine.session import RunSettings

    settings = RunSettings(data_dir=resolve_data_dir(data_dir), auto_approve=auto_approve)
    _, outcome = launch(None, settings, resume_id=run_id)
    if outcome != "succeeded":
        raise typer.Exit(1)


def approve(
    run_id: Annotated[str, typer.Argument(help="The run id printed by cutbook run.")],
    step: Annotated[str, typer.Argument(help="The gate or manual step being answered.")],
    by: Annotated[str, typer.Option("--by", help="Your name, as listed in the gate's approvers.")],
    reject: Annotated[bool, typer.Option("--reject", help="Say no-go.")] = False,
    decision: Annotated[
        Decision | None,
        typer.Option(help="For a failed step with on_failure: pause — retry, skip or rollback."),
    ] = None,
    comment: Annotated[str, typer.Option(help="Why; kept in the journal as evidence.")] = "",
) -> None:
    """Answer a go/no-go gate or manual step of a running run from a terminal.

    The same answer can be given in the Prefect UI's form on the paused flow run.
    """
    from cutbook.cli import out
    from cutbook.engine.server import configure_environment

    configure_environment()
    os.environ.setdefault("PREFECT_API_URL", "http://127.0.0.1:4200/api")
    said = answer_gate(run_id, step, by=by, reject=reject, decision=decision, comment=comment)
    out.print(said, markup=False)


def answer_gate(
    run_id: str,
    step: str,
    *,
    by: str,
    reject: bool = False,
    decision: Decision | None = None,
    comment: str = "",
) -> str:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags
    from prefect.flow_runs import resume_flow_run

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[f"cutbook-run:{run_id}"])),
            limit=10,
        )
    paused = [r for r in runs if r.state is not None and r.state.is_paused()]
    if not runs:
        raise UsageError(f"no run {run_id!r} is known to the Prefect server")
    if not paused:
        raise EngineError(f"run {run_id!r} is not waiting for an answer")
    flow_run = max(paused, key=lambda r: r.start_time or datetime.min)
    assert flow_run.state is not None
    key = flow_run.state.state_details.pause_key or ""
    waiting_for = key.removeprefix("cutbook-").rsplit("-", 1)[0]
    if waiting_for != step:
        raise UsageError(f"run {run_id!r} is waiting at step {waiting_for!r}, not {step!r}")
    choice = decision.value if decision is not None else ("reject" if reject else "approve")
    try:
        resume_flow_run(
            flow_run.id, run_input={"approver": by, "decision": choice, "comment": comment}
        )
    except (RuntimeError, ValueError) as exc:
        hint = " (a failed step takes --decision retry|skip|rollback)" if decision is None else ""
        raise EngineError(f"the answer was refused: {exc}{hint}") from None
    return f"{step}: {choice} by {by}"
