"""Rehearsal tools: ``cutbook simulator`` and ``cutbook demo``, the main job end to end.

Starts the simulated estate and the embedded Prefect server, runs
``customs-reorg-2025`` with the virtual clock and automatic gate answers,
checks the estate reached the expected final state, then verifies the journal
and writes the audit report. Everything it starts listens on 127.0.0.1.

The run's own output is long (hundreds of lines), so the demo ends with a short
summary of what a person needs next: the outcome, the flow run in the Prefect
UI, the report, the journal, the data directory, and whether the Prefect server
was left running and how to stop it.
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from cutbook import paths
from cutbook.cli.console import out
from cutbook.cli.options import DataDirOption
from cutbook.errors import UsageError

if TYPE_CHECKING:
    from cutbook.engine.launch import Launched, ServerStatus
    from cutbook.engine.state import RunState

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
        Path | None,
        typer.Option(
            help="SQLite file holding the estate; a restart keeps it. "
            "[default: DATA-DIR/simulator.sqlite]",
            show_default=False,
        ),
    ] = None,
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
    data_dir: DataDirOption = None,
) -> None:
    """Run the simulated customs estate (VNACCS intake, satellite systems, catalogues,
    portal, Edoc CA) on loopback, for rehearsals, demos and tests."""
    from cutbook.simulator_plugin import serve

    if speed <= 0:
        raise UsageError("--speed must be positive")
    os.environ["CUTBOOK_SIMULATOR_SPEED"] = str(speed)
    if state is None:
        state = paths.data_dir(data_dir) / "simulator.sqlite"
        state.parent.mkdir(parents=True, exist_ok=True)
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
    clock and automatic gate answers, check the final state, verify the journal, and end
    with a short summary (outcome, flow run URL, report, how to stop the server)."""
    if speed <= 0:
        raise UsageError("--speed must be positive")
    raise typer.Exit(run_demo(paths.data_dir(data_dir), speed, out))


def find_runbook(name: str = "customs-reorg-2025.yaml") -> Path:
    for base in (Path.cwd(), *Path.cwd().parents):
        candidate = base / "runbooks" / name
        if candidate.is_file():
            return candidate
    raise UsageError(f"runbooks/{name} not found from {Path.cwd()}; run from the repository")


@dataclass(frozen=True)
class PrefectServerNote:
    """Which Prefect server the demo's run used, and whether it is still running."""

    ui: str | None
    """The server's UI address."""
    given: bool = False
    """``PREFECT_API_URL`` named it: someone else's server, nothing for the demo to stop."""
    ours: bool = False
    """It is this data directory's embedded server (``cutbook server`` manages it)."""
    started: bool = False
    """The demo started it (it was not running before)."""
    running: bool = False
    pid: int | None = None


@dataclass(frozen=True)
class DemoSummary:
    """What a person needs after the demo, gathered so it can be printed last and tested."""

    outcome: str | None
    """The run's outcome (``succeeded``, ``rolled_back``...); ``None``: it stopped unfinished."""
    failure: str | None
    failed_steps: tuple[str, ...]
    run_id: str
    flow_run_url: str | None
    report: Path | None
    journal: Path | None
    data_dir: Path
    estate_problems: int
    chain: str | None
    """The audit verdict in words, ``None`` when there was no journal to verify."""
    server: PrefectServerNote


def stop_hint(data_dir: Path) -> str:
    """``cutbook server stop`` for this data directory (the flag only when it is not the
    default, so the command is the short one people remember)."""
    if data_dir.expanduser().resolve() == paths.default_data_dir().resolve():
        return "cutbook server stop"
    return f"cutbook server stop --data-dir {shlex.quote(str(data_dir))}"


def _outcome_words(s: DemoSummary) -> str:
    if s.outcome == "succeeded":
        return "completed"
    if s.outcome is None:
        return f"stopped before finishing: resume it with cutbook resume {s.run_id}"
    words = {"rolled_back": "rolled back", "failed": "failed", "aborted": "aborted"}
    text = words.get(s.outcome, s.outcome)
    if s.failed_steps:
        steps = ", ".join(s.failed_steps)
        text += f" (step{'s' if len(s.failed_steps) > 1 else ''} {steps} failed)"
    if s.failure:
        text += f": {s.failure}"
    return text


def _server_words(n: PrefectServerNote, data_dir: Path) -> str:
    where = n.ui or "-"
    if n.given:
        return f"{where}, named by PREFECT_API_URL; not started by the demo, nothing to stop"
    if n.ours and n.running:
        how = "started by the demo" if n.started else "was already running"
        return (
            f"{where} (pid {n.pid}), {how}, left running so the UI keeps the run; "
            f"stop it with: {stop_hint(data_dir)}"
        )
    if n.ours:
        return f"{where}, no longer running"
    return f"{where}, already running for another data directory; not started by the demo"


def summary_lines(s: DemoSummary) -> list[str]:
    """The closing summary, one fact a line, labels aligned; paths absolute."""
    rows = [
        ("outcome", _outcome_words(s)),
        ("flow run", s.flow_run_url or "- (no Prefect flow run was made)"),
        ("report", str(s.report) if s.report is not None else "- (no journal to report on)"),
        ("journal", str(s.journal) if s.journal is not None else "-"),
        ("data dir", str(s.data_dir)),
        (
            "estate",
            "in the expected final state"
            if not s.estate_problems
            else f"NOT in the expected final state: {s.estate_problems} problems (listed above)",
        ),
    ]
    if s.chain is not None:
        rows.append(("journal chain", s.chain))
    rows.append(("prefect server", _server_words(s.server, s.data_dir)))
    width = max(len(label) for label, _ in rows)
    return [f"{label + ':':<{width + 1}} {value}" for label, value in rows]


def print_summary(s: DemoSummary, console: Console) -> None:
    """Print the summary last, never folded: a URL or path must stay one piece to copy."""
    console.print()
    console.rule("demo summary", style="bold")
    good = s.outcome == "succeeded" and not s.estate_problems
    for i, line in enumerate(summary_lines(s)):
        style = ("green" if good else "red") if i == 0 else None
        console.print(line, style=style, markup=False, soft_wrap=True, highlight=False)


def run_demo(data_dir: Path, speed: float, console: Console) -> int:
    import httpx

    from cutbook.cli.run import summary
    from cutbook.cli.view import terminal_observers
    from cutbook.engine.launch import (
        RunObserver,
        RunSettings,
        flow_run_url,
        launch,
        server_state,
    )
    from cutbook.simulator_plugin import estate_factory
    from cutbook.validation import load

    class FlowRunUrl(RunObserver):
        """Remembers where the Prefect UI shows the run (its flow run page)."""

        url: str | None = None

        def run_started(self, run: RunState, where: str | None) -> None:
            self.url = where

    runbook = find_runbook()
    data_dir = data_dir.expanduser().resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    state = data_dir / "demo-simulator.sqlite"
    state.unlink(missing_ok=True)
    os.environ.setdefault("VNACCS_TOKEN", DEMO_TOKEN)
    given_api = os.environ.get("PREFECT_API_URL")
    before = server_state(data_dir)
    flow_run = FlowRunUrl()
    # No CUTBOOK_SIMULATOR_SPEED: the estate follows the rehearsal's own clock.
    env = {k: v for k, v in os.environ.items() if k != "CUTBOOK_SIMULATOR_SPEED"}
    with estate_factory()(state, faults="calm", env=env) as sim:
        console.print(f"simulated customs estate: {sim.url} (state {state})", markup=False)
        loaded = load(runbook, overrides={"estate_url": sim.url})
        settings = RunSettings(data_dir=data_dir, clock="virtual", speed=speed, auto_approve=True)
        launched = launch(loaded, settings, observers=[*terminal_observers(), flow_run])
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
    report: Path | None = None
    chain: str | None = None
    if session.journal is not None:
        audited, report, chain = _audit(data_dir, session.run_id, console)
        code = max(code, audited)
    print_summary(
        DemoSummary(
            outcome=outcome,
            failure=launched.failure,
            failed_steps=_failed_steps(launched),
            run_id=launched.run_id,
            flow_run_url=flow_run.url or flow_run_url(launched.run_id),
            report=report,
            journal=launched.journal_path,
            data_dir=data_dir,
            estate_problems=len(problems),
            chain=chain,
            server=_server_note(given_api, before, server_state(data_dir)),
        ),
        console,
    )
    return code or (1 if problems else 0)


def _failed_steps(launched: Launched) -> tuple[str, ...]:
    runner = launched.session.runner
    if runner is None:
        return ()
    return tuple(sid for sid, st in runner.states.items() if st.status == "failed")


def _server_note(given: str | None, before: ServerStatus, after: ServerStatus) -> PrefectServerNote:
    """Which server the run used: one ``PREFECT_API_URL`` named, this data directory's
    embedded one (started now or before), or another already answering on the port."""
    api = os.environ.get("PREFECT_API_URL")
    ui = api.rstrip("/").removesuffix("/api") if api else None
    if given:
        return PrefectServerNote(ui=ui, given=True)
    if after.url is not None and after.url == api:
        return PrefectServerNote(
            ui=after.ui,
            ours=True,
            started=not before.running or before.pid != after.pid,
            running=after.running,
            pid=after.pid,
        )
    return PrefectServerNote(ui=ui)


def _audit(data_dir: Path, run_id: str, console: Console) -> tuple[int, Path, str]:
    """Verify the journal and write the HTML report: (exit code, report, verdict)."""
    from cutbook import audit

    journal_dir = paths.journal_dir(data_dir)
    result = audit.verify_run(journal_dir, run_id)
    report = (paths.reports_dir(data_dir) / f"{run_id}.html").resolve()
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(audit.report(journal_dir, run_id, "html"), encoding="utf-8")
    console.print(f"audit report: {report}", markup=False)
    verdict = "intact" if result.passed else f"BROKEN: {result.problem}"
    console.print(
        f"cutbook audit verify {run_id}: chain {verdict} ({result.records} records)",
        style="green" if result.passed else "red",
        markup=False,
    )
    return (0 if result.passed else 1), report, f"{verdict} ({result.records} records)"
