"""Resume settles a half-done change *with its output*, and rollback owns up to what
it could not undo.

In-process (LocalBridge, no Prefect) with the real http adapter against the
simulator. Each test crafts the journal a crash leaves behind: the run started,
the first step wrote its intent, the change reached the estate, and the process
died before the outcome was written. The resumed run settles that item by its
verify, then a later step fails and the run rolls back.
"""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path
from typing import Any

import httpx
import pytest

from cutbook.engine.local import LocalBridge
from cutbook.engine.session import RunSettings, Session
from cutbook.engine.state import Outcome
from cutbook.journal import read_records, verify
from cutbook.journal.events import Event
from cutbook.validation import load
from cutbook_simulator.process import SimulatorProcess

OFFICE = "13A2"
NEW_CODE = "BUDGET-NEW-1"

RUNBOOK = """
apiVersion: cutbook/v1
name: settle
timezone: Asia/Ho_Chi_Minh
window: {{start: "2025-03-14T23:00", end: "2025-03-15T05:00"}}
defaults: {{retries: {{attempts: 2, delay: 1s, max_delay: 1s}}, on_failure: rollback}}
targets:
  catalogue: {{adapter: http, base_url: "{url}/catalogue"}}
steps:
  - id: rebudget
    target: catalogue
    action: patch
    with: {{path: "/offices/{office}", json: {{budget_code: "{code}"}}}}
    verify:
      action: get
      with: {{path: "/offices/{office}"}}
      expect: {{json: {{budget_code: "{code}"}}}}
    rollback:
      action: patch
      with:
        path: "/offices/{office}"
        json: {{budget_code: "{{{{ output.json.before.budget_code }}}}"}}
  - id: boom
    target: catalogue
    action: get
    with: {{path: "/offices/NO-SUCH-OFFICE"}}
    depends_on: [rebudget]
"""

pytestmark = pytest.mark.usefixtures("fresh_estate")


def budget_code(sim: SimulatorProcess) -> str:
    return str(httpx.get(f"{sim.url}/catalogue/offices/{OFFICE}").json()["budget_code"])


def settings(tmp_path: Path, run_id: str | None = None) -> RunSettings:
    return RunSettings(data_dir=tmp_path / "data", clock="virtual", speed=3600, run_id=run_id)


def crash_after_intent(sim: SimulatorProcess, tmp_path: Path, keyed: bool) -> str:
    """The journal of a run that died between rebudget's change and its outcome.

    ``keyed``: the change reached the estate under the intent's idempotency key (as the
    http adapter sends it); otherwise through a system that keeps no replies per key.
    """
    path = tmp_path / "rb.yaml"
    path.write_text(RUNBOOK.format(url=sim.url, office=OFFICE, code=NEW_CODE), encoding="utf-8")
    session = Session(load(path), settings(tmp_path))

    async def go() -> None:
        await session.prepare()

    asyncio.run(go())
    assert session.journal is not None
    raw = f"{session.run_id}:rebudget:-:apply"  # calls.key: run, step, item, phase
    key = hashlib.sha256(raw.encode()).hexdigest()[:32]
    session.journal.append(
        Event.STEP_INTENT,
        step="rebudget",
        item=None,
        phase="apply",
        action="patch",
        target="catalogue",
        idempotency_key=key,
    )
    headers = {"Idempotency-Key": key} if keyed else {}
    httpx.patch(
        f"{sim.url}/catalogue/offices/{OFFICE}", json={"budget_code": NEW_CODE}, headers=headers
    ).raise_for_status()
    session.journal.close()
    session.release()  # what the kernel does for a process that died
    return session.run_id


def resume(tmp_path: Path, run_id: str) -> tuple[Outcome, str | None, list[dict[str, Any]]]:
    session = Session.resume(run_id, settings(tmp_path))

    async def go() -> tuple[Outcome, str | None]:
        await session.prepare()
        runner = session.runner_for(LocalBridge())
        outcome = await runner.run()
        await session.finish(outcome)
        return outcome, runner.failure

    outcome, failure = asyncio.run(go())
    assert session.journal is not None
    assert verify(session.journal.path).ok
    return outcome, failure, list(read_records(session.journal.path))


def test_rollback_of_a_resumed_and_verified_change_restores_the_original(
    sim: SimulatorProcess, tmp_path: Path
) -> None:
    original = budget_code(sim)
    run_id = crash_after_intent(sim, tmp_path, keyed=True)
    assert budget_code(sim) == NEW_CODE

    outcome, failure, records = resume(tmp_path, run_id)

    assert outcome == "rolled_back", failure
    assert budget_code(sim) == original
    settled = [
        r
        for r in records
        if r["event"] == Event.STEP_OUTCOME and r.get("recovered") and r["step"] == "rebudget"
    ]
    assert len(settled) == 1
    assert settled[0]["output"]["json"]["before"]["budget_code"] == original
    assert "output_unknown" not in settled[0]
    finished = [r for r in records if r["event"] == Event.STEP_FINISHED]
    assert {"step": "rebudget", "status": "rolled_back"}.items() <= finished[-1].items()
    # The estate applied the change once; the resume's replay was answered from its store.
    counts = httpx.get(f"{sim.url}/admin/idempotency").json()
    assert all(v["applied"] == 1 for v in counts.values())


def test_a_change_that_cannot_be_undone_is_named_in_the_outcome(
    sim: SimulatorProcess, tmp_path: Path
) -> None:
    run_id = crash_after_intent(sim, tmp_path, keyed=False)

    outcome, failure, records = resume(tmp_path, run_id)

    assert outcome == "failed"
    assert failure is not None
    assert "rollback incomplete: step rebudget could not be undone" in failure
    assert "output was not recovered on resume" in failure
    assert budget_code(sim) == NEW_CODE  # left in place, and the run says so
    settled = [r for r in records if r["event"] == Event.STEP_OUTCOME and r.get("recovered")]
    assert settled and settled[0]["output_unknown"]
    assert not [
        r for r in records if r["event"] == Event.STEP_FINISHED and r.get("status") == "rolled_back"
    ]
    last = records[-1]
    assert last["event"] == Event.RUN_FINISHED
    assert last["outcome"] == "failed" and "rollback incomplete" in last["error"]
