"""The engine end to end: real ``cutbook`` processes, a real Prefect server, the simulator.

Each scenario is one an on-call engineer will meet on the night: a calm run,
a flaky estate, a permanent failure that must roll back, a no-go at the gate,
a hanging endpoint, and a dry run that must change nothing.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from cutbook.journal import read_records, verify
from cutbook.validation import load
from cutbook_simulator.process import SimulatorProcess
from e2e_support import RUNBOOKS, Cutbook, PrefectServer

pytestmark = [pytest.mark.prefect, pytest.mark.slow]

CUSTOMS = str(RUNBOOKS / "customs-reorg-2025.yaml")
GATE = str(Path(__file__).parent / "runbooks" / "gate.yaml")
SPEED = "360"


@pytest.fixture
def estate(tmp_path: Path) -> Iterator[SimulatorProcess]:
    env = {**os.environ, "CUTBOOK_SIMULATOR_SPEED": SPEED}
    with SimulatorProcess(tmp_path / "estate.sqlite", faults="calm", env=env, seed_random=7) as sim:
        yield sim


def journal(cutbook: Cutbook, run_id: str) -> list[dict[str, Any]]:
    path = Path(cutbook.env["CUTBOOK_DATA_DIR"]) / "journal" / f"{run_id}.jsonl"
    assert verify(path).ok, "the journal's chain must verify"
    return list(read_records(path))


def rehearse(cutbook: Cutbook, runbook: str, sim: SimulatorProcess, run_id: str, *extra: str):  # type: ignore[no-untyped-def]
    return cutbook.run(
        "run",
        runbook,
        "--var",
        f"estate_url={sim.url}",
        "--clock",
        "virtual",
        "--speed",
        SPEED,
        "--run-id",
        run_id,
        *extra,
    )


def idempotency(sim: SimulatorProcess) -> dict[str, dict[str, int]]:
    data: dict[str, dict[str, int]] = httpx.get(f"{sim.url}/admin/idempotency").json()
    return data


def flow_runs(server: PrefectServer, run_id: str) -> list[dict[str, Any]]:
    body = {"flow_runs": {"tags": {"all_": [f"cutbook-run:{run_id}"]}}}
    runs: list[dict[str, Any]] = httpx.post(f"{server.api_url}/flow_runs/filter", json=body).json()
    return runs


def test_calm_rehearsal_reaches_the_expected_final_state(
    cutbook: Cutbook, estate: SimulatorProcess, prefect_server: PrefectServer
) -> None:
    cutbook.env["VNACCS_TOKEN"] = "canary-4f1d9c-secret"
    result = rehearse(cutbook, CUSTOMS, estate, "calm-1", "--auto-approve")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "outcome: succeeded (22 succeeded)" in result.stdout
    check = httpx.get(f"{estate.url}/admin/check").json()
    assert check == {"ok": True, "problems": []}
    counts = idempotency(estate)
    assert counts and all(c["applied"] == 1 for c in counts.values())
    records = journal(cutbook, "calm-1")
    assert records[0]["event"] == "run.started" and records[-1]["event"] == "run.finished"
    assert records[-1]["outcome"] == "succeeded"
    # Write-ahead: every change's outcome comes after its intent, already on disk.
    first_intent: dict[tuple[str, str | None], int] = {}
    for r in records:
        if r["event"] == "step.intent":
            first_intent.setdefault((r["step"], r["item"]), r["seq"])
    loaded = load(Path(CUSTOMS))
    mutating = {
        s.id
        for s in loaded.runbook.steps
        if s.target and s.action and loaded.action_spec(s.target, s.action).mutating
    }
    changes = [
        r
        for r in records
        if r["event"] == "step.outcome" and r["changed"] and r["step"] in mutating
    ]
    assert len(changes) == 222, "every office, satellite and system change of the night"
    assert all(first_intent[(r["step"], r["item"])] < r["seq"] for r in changes)
    # The Prefect UI shows one flow run, named and tagged, with a task run per step.
    runs = flow_runs(prefect_server, "calm-1")
    assert len(runs) == 1
    run = runs[0]
    assert run["name"] == "customs-reorg-2025 2025-03-14T22:30+07:00 REHEARSAL"
    assert {"cutover", "customs-reorg-2025", "rehearsal"} <= set(run["tags"])
    assert run["state"]["type"] == "COMPLETED"
    assert run["parameters"]["runbook_sha256"] == records[0]["runbook_sha256"]
    tasks = httpx.post(
        f"{prefect_server.api_url}/task_runs/filter",
        json={"flow_runs": {"id": {"any_": [run["id"]]}}, "limit": 200},
    ).json()
    assert sorted(t["name"] for t in tasks) == sorted(r["id"] for r in records[0]["plan"]["steps"])
    # The canary secret went to VNACCS as a header but is written nowhere: not in the
    # journal, the reports, the console, the Prefect logs or the artifacts.
    data = Path(cutbook.env["CUTBOOK_DATA_DIR"])
    for fmt in ("html", "md", "json"):
        cutbook.run(
            "audit", "report", "calm-1", "-f", fmt, "-o", str(data / f"r.{fmt}"), check=True
        )
    assert "calm-1" in (data / "r.html").read_text(encoding="utf-8")
    # The report of the night knows every event the engine wrote (verify, fan-out,
    # the flow run): none is listed as unknown.
    assert "does not know" not in (data / "r.html").read_text(encoding="utf-8")
    assert "does not know" not in (data / "r.md").read_text(encoding="utf-8")
    assert {"step.verified", "step.items", "run.flow"} <= {r["event"] for r in records}
    leaks = [p for p in data.rglob("*") if p.is_file() and b"canary-4f1d9c" in p.read_bytes()]
    assert leaks == []
    assert "canary-4f1d9c" not in result.stdout + result.stderr
    logs = httpx.post(
        f"{prefect_server.api_url}/logs/filter",
        json={"logs": {"flow_run_id": {"any_": [run["id"]]}}, "limit": 200},
    ).json()
    assert logs and not any("canary-4f1d9c" in entry["message"] for entry in logs)
    # The flow run's log speaks per step: a fan-out item's routine calls stay in the
    # journal, and Prefect's own columns carry time and level, so the text does not.
    assert len(logs) < 200, "the whole log fits one page"
    assert not [e["message"] for e in logs if e["level"] < 30 and "item=" in e["message"]]
    assert not [e["message"] for e in logs if re.match(r"\d{4}-\d\d-\d\dT", e["message"])]
    assert not [e["message"] for e in logs if "[info" in e["message"]]
    assert any(e["message"].startswith("step=reopen-intake: step succeeded") for e in logs), [
        e["message"] for e in logs
    ][:40]
    artifacts = httpx.post(
        f"{prefect_server.api_url}/artifacts/filter",
        json={"artifacts": {"flow_run_id": {"any_": [run["id"]]}}},
    ).json()
    assert any(a["type"] == "markdown" for a in artifacts)
    assert "canary-4f1d9c" not in json.dumps(artifacts)
    assert "canary-4f1d9c" not in json.dumps(run["parameters"])


def test_flaky_estate_completes_through_retries(cutbook: Cutbook, tmp_path: Path) -> None:
    env = {**os.environ, "CUTBOOK_SIMULATOR_SPEED": SPEED}
    with SimulatorProcess(
        tmp_path / "flaky.sqlite", faults="flaky", env=env, seed_random=11
    ) as sim:
        cutbook.env["VNACCS_TOKEN"] = "test-token-0001"
        result = rehearse(cutbook, CUSTOMS, sim, "flaky-1", "--auto-approve")
        assert result.returncode == 0, result.stderr[-3000:]
        check = httpx.get(f"{sim.url}/admin/check").json()
        counts = idempotency(sim)
    assert check["ok"], check["problems"][:5]
    records = journal(cutbook, "flaky-1")
    retried = [r for r in records if r["event"] == "step.attempt"]
    assert len(retried) >= 5, "a 30% transient error rate must have caused retries"
    assert all(r["transient"] for r in retried)
    assert all(c["applied"] == 1 for c in counts.values()), "nothing may be applied twice"


def test_permanent_failure_rolls_back_in_reverse_and_reopens_intake(
    cutbook: Cutbook, estate: SimulatorProcess
) -> None:
    rule = {"method": "PATCH", "path": "/catalogue/offices/16A5", "status": 409, "error_rate": 1.0}
    assert httpx.post(f"{estate.url}/admin/faults", json=rule).status_code < 300
    cutbook.env["VNACCS_TOKEN"] = "test-token-0001"
    result = rehearse(cutbook, CUSTOMS, estate, "perm-1", "--auto-approve")
    assert result.returncode == 1, result.stdout[-2000:]
    assert "outcome: rolled_back" in result.stdout
    records = journal(cutbook, "perm-1")
    ended = [
        r["step"]
        for r in records
        if r["event"] == "step.finished" and r["status"] in ("succeeded", "failed")
    ]
    rolled = [
        r["step"] for r in records if r["event"] == "step.finished" and r["status"] == "rolled_back"
    ]
    failed = {
        r["step"]: r["error"]
        for r in records
        if r["event"] == "step.finished" and r["status"] == "failed"
    }
    # The failure, plus any fan-out still running then: once the night turns to rollback it
    # starts no more items (they would only be undone), and fails naming what it left.
    assert "reset-budget-codes" in failed
    for step, error in failed.items():
        assert step == "reset-budget-codes" or "the run is rolling back" in error, error
    # Undone newest first, each failed step (its applied items) where it ended.
    assert rolled == list(reversed([s for s in ended if s in set(rolled)]))
    assert "reset-budget-codes" in rolled and "stop-intake" in rolled
    state = httpx.get(f"{estate.url}/admin/state").json()
    assert state["intake"]["state"] == "open", "always steps reopen intake"
    assert state["catalogue_version"] == "2024"
    office = next(o for o in state["offices"] if o["code"] == "13A2")
    assert office["budget_code"] != "QHNS-2995007", "the budget code change was undone"
    always = [
        r["step"]
        for r in records
        if r["event"] == "step.finished" and r["step"] in ("reopen-satellites", "reopen-intake")
    ]
    assert always == ["reopen-satellites", "reopen-intake"]
    assert records[-1]["outcome"] == "rolled_back"


def test_rejected_gate_rolls_back(
    cutbook: Cutbook, estate: SimulatorProcess, prefect_server: PrefectServer
) -> None:
    proc = cutbook.start(
        "run",
        GATE,
        "--var",
        f"estate_url={estate.url}",
        "--clock",
        "virtual",
        "--speed",
        SPEED,
        "--run-id",
        "gate-1",
    )
    try:
        deadline = time.monotonic() + 120
        paused = False
        while time.monotonic() < deadline and not paused:
            runs = flow_runs(prefect_server, "gate-1")
            paused = bool(runs) and runs[0]["state"]["type"] == "PAUSED"
            time.sleep(0.5)
        assert paused, "the run must pause at the gate"
        wrong = cutbook.run(
            "approve", "gate-1", "switch-catalogue", "--by", "ops-lead", "--approve"
        )
        assert wrong.returncode == 2 and "waiting at step 'go-no-go'" in wrong.stderr
        said = cutbook.run(
            "approve",
            "gate-1",
            "go-no-go",
            "--by",
            "ops-lead",
            "--reject",
            "--comment",
            "LAN at region IV not ready",
            check=True,
        )
        assert "go-no-go: reject by ops-lead" in said.stdout
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 1, err[-2000:]
    records = journal(cutbook, "gate-1")
    answer = next(r for r in records if r["event"] == "gate.answered")
    assert (answer["by"], answer["approved"], answer["auto"]) == ("ops-lead", False, False)
    assert answer["comment"] == "LAN at region IV not ready"
    rolled = [r["step"] for r in records if r.get("status") == "rolled_back"]
    assert rolled == ["stop-satellites", "stop-intake"]
    state = httpx.get(f"{estate.url}/admin/state").json()
    assert state["intake"]["state"] == "open" and state["catalogue_version"] == "2024"


def test_hanging_endpoint_is_cut_off_by_the_step_timeout(
    cutbook: Cutbook, estate: SimulatorProcess
) -> None:
    rule = {"method": "POST", "path": "/satellites/e-cargo/intake/stop", "hang": True}
    assert httpx.post(f"{estate.url}/admin/faults", json=rule).status_code < 300
    started = time.monotonic()
    result = rehearse(cutbook, GATE, estate, "hang-1", "--auto-approve")
    took = time.monotonic() - started
    assert result.returncode == 1
    records = journal(cutbook, "hang-1")
    failed = next(r for r in records if r["event"] == "step.finished" and r["status"] == "failed")
    assert failed["step"] == "stop-satellites" and "e-cargo" in failed["error"]
    assert took < 90, "a 3 s step timeout must not wait for the hang"


def test_dry_run_changes_nothing(cutbook: Cutbook, estate: SimulatorProcess) -> None:
    before = httpx.get(f"{estate.url}/admin/state").json()
    cutbook.env["VNACCS_TOKEN"] = "test-token-0001"
    result = rehearse(cutbook, CUSTOMS, estate, "dry-1", "--dry-run")
    assert result.returncode == 0, result.stderr[-2000:]
    after = httpx.get(f"{estate.url}/admin/state").json()
    calls = httpx.get(f"{estate.url}/admin/calls").json()
    # Only reads: GETs, and the http adapter's HEAD probes of the changes it describes.
    assert [c for c in calls if c["method"] not in ("GET", "HEAD")] == []
    assert idempotency(estate) == {}
    assert after["offices"] == before["offices"] and after["satellites"] == before["satellites"]
    records = journal(cutbook, "dry-1")
    checks = [r for r in records if r["event"] == "step.outcome" and r["phase"] == "check"]
    assert len(checks) > 100 and not [r for r in records if r["event"] == "step.intent"]
