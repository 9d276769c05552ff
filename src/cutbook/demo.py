"""The main job, end to end: a rehearsal of the customs cutover against the simulator.

Starts the simulated estate and the embedded Prefect server, runs
``customs-reorg-2025`` with the virtual clock and automatic gate answers,
checks the estate reached the expected final state, then verifies the journal
and writes the audit report. Everything it starts listens on 127.0.0.1.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import httpx
from rich.console import Console

from cutbook.errors import UsageError

DEMO_TOKEN = "demo-not-a-real-token"


def find_runbook(name: str = "customs-reorg-2025.yaml") -> Path:
    for base in (Path.cwd(), *Path.cwd().parents):
        candidate = base / "runbooks" / name
        if candidate.is_file():
            return candidate
    raise UsageError(f"runbooks/{name} not found from {Path.cwd()}; run from the repository")


def run_demo(data_dir: Path, speed: float, console: Console) -> int:
    from cutbook.cli_run import launch
    from cutbook.engine.session import RunSettings
    from cutbook.simulator.process import SimulatorProcess
    from cutbook.validation import load

    runbook = find_runbook()
    data_dir.mkdir(parents=True, exist_ok=True)
    state = data_dir / "demo-simulator.sqlite"
    state.unlink(missing_ok=True)
    os.environ.setdefault("VNACCS_TOKEN", DEMO_TOKEN)
    env = {**os.environ, "CUTBOOK_SIMULATOR_SPEED": str(speed)}
    with SimulatorProcess(state, faults="calm", env=env) as sim:
        console.print(f"simulated customs estate: {sim.url} (state {state})", markup=False)
        loaded = load(runbook, overrides={"estate_url": sim.url})
        settings = RunSettings(data_dir=data_dir, clock="virtual", speed=speed, auto_approve=True)
        session, outcome = launch(loaded, settings)
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
    try:
        from cutbook import audit
    except ImportError:  # pragma: no cover - the audit module ships with cutbook
        return 0
    journal_dir = Path(os.environ.get("CUTBOOK_JOURNAL_DIR") or data_dir / "journal")
    result = audit.verify_run(journal_dir, run_id)
    report = data_dir / "reports" / f"{run_id}.html"
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(audit.report(journal_dir, run_id, "html"), encoding="utf-8")
    console.print(f"audit report: {report.resolve()}", markup=False)
    verdict = "intact" if result.ok else f"BROKEN: {result.problem}"
    console.print(
        f"cutbook audit verify {run_id}: chain {verdict} ({result.records} records)",
        style="green" if result.ok else "red",
        markup=False,
    )
    return 0 if result.ok else 1


def main() -> None:  # pragma: no cover - thin wrapper for `python -m cutbook.demo`
    sys.exit(run_demo(Path(".cutbook"), 360.0, Console()))
