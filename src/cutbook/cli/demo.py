"""Rehearsal tools: ``cutbook simulator`` and ``cutbook demo``, the main job end to end.

Starts the simulated estate and the embedded Prefect server, runs
``customs-reorg-2025`` with the virtual clock and automatic gate answers,
checks the estate reached the expected final state, then verifies the journal
and writes the audit report. Everything it starts listens on 127.0.0.1.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from cutbook import paths
from cutbook.cli.console import out
from cutbook.cli.options import DataDirOption
from cutbook.errors import UsageError

DEMO_TOKEN = "demo-not-a-real-token"


def register(app: typer.Typer) -> None:
    app.command()(simulator)
    app.command()(demo)


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
        typer.Option(
            help="Age the estate this many times faster on its own. Not needed for a "
            "rehearsal: the estate follows a rehearsal's clock (Cutbook-Rehearsal-Time)."
        ),
    ] = 1.0,
) -> None:
    """Run the simulated customs estate (VNACCS intake, satellite systems, catalogues,
    portal, Edoc CA) on loopback, for rehearsals, demos and tests."""
    from cutbook.simulator_plugin import serve

    if speed <= 0:
        raise UsageError("--speed must be positive")
    os.environ["CUTBOOK_SIMULATOR_SPEED"] = str(speed)
    serve(host=host, port=port, faults=faults, state=state, seed=seed)


def demo(
    data_dir: DataDirOption = None,
    speed: Annotated[
        float,
        typer.Option(
            help="Rehearsal speed: how much faster waits pass while every step waits "
            "(360: an hour's wait in 10 s); work takes real time."
        ),
    ] = 360.0,
) -> None:
    """Rehearse the customs cutover end to end against the simulated estate: start the
    simulator and the embedded Prefect server, run customs-reorg-2025 with the virtual
    clock and automatic gate answers, check the final state, verify the journal."""
    raise typer.Exit(run_demo(paths.data_dir(data_dir), speed, out))


def find_runbook(name: str = "customs-reorg-2025.yaml") -> Path:
    for base in (Path.cwd(), *Path.cwd().parents):
        candidate = base / "runbooks" / name
        if candidate.is_file():
            return candidate
    raise UsageError(f"runbooks/{name} not found from {Path.cwd()}; run from the repository")


def run_demo(data_dir: Path, speed: float, console: Console) -> int:
    import httpx

    from cutbook.cli.run import summary
    from cutbook.cli.view import terminal_observers
    from cutbook.engine.launch import RunSettings, launch
    from cutbook.simulator_plugin import estate_factory
    from cutbook.validation import load

    runbook = find_runbook()
    data_dir.mkdir(parents=True, exist_ok=True)
    state = data_dir / "demo-simulator.sqlite"
    state.unlink(missing_ok=True)
    os.environ.setdefault("VNACCS_TOKEN", DEMO_TOKEN)
    # No CUTBOOK_SIMULATOR_SPEED: the estate follows the rehearsal's own clock.
    env = {k: v for k, v in os.environ.items() if k != "CUTBOOK_SIMULATOR_SPEED"}
    with estate_factory()(state, faults="calm", env=env) as sim:
        console.print(f"simulated customs estate: {sim.url} (state {state})", markup=False)
        loaded = load(runbook, overrides={"estate_url": sim.url})
        settings = RunSettings(data_dir=data_dir, clock="virtual", speed=speed, auto_approve=True)
        launched = launch(loaded, settings, observers=terminal_observers())
        summary(launched)
        session, outcome = launched.session, launched.outcome
        check = httpx.get(f"{sim.url}/admin/check", timeout=10).json()
    code = 0 if outcome == "succeeded" else 1
    problems = check.get("problems", [])
    if problems:
        console.print(
            f"estate NOT in the expected final state ({len(problems)} problems):",
            style="red",
            markup=False,
        )
        for p in problems[:20]:
            console.print(f"  - {p}", markup=False)
    else:
        console.print(
            "estate is in the expected final state: intake open, ceased offices closed, "
            "offices renamed, budget codes, treasury accounts and certificates updated",
            style="green",
            markup=False,
        )
    if session.journal is not None:
        code = max(code, _audit(data_dir, session.run_id, console))
    return code or (1 if problems else 0)


def _audit(data_dir: Path, run_id: str, console: Console) -> int:
    from cutbook import audit

    journal_dir = paths.journal_dir(data_dir)
    result = audit.verify_run(journal_dir, run_id)
    report = paths.reports_dir(data_dir) / f"{run_id}.html"
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(audit.report(journal_dir, run_id, "html"), encoding="utf-8")
    console.print(f"audit report: {report.resolve()}", markup=False)
    verdict = "intact" if result.passed else f"BROKEN: {result.problem}"
    console.print(
        f"cutbook audit verify {run_id}: chain {verdict} ({result.records} records)",
        style="green" if result.passed else "red",
        markup=False,
    )
    return 0 if result.passed else 1
