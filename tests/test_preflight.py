"""``cutbook preflight``: every step checked against the real (simulated) estate, nothing changed.

Runs the real command against the customs runbook and the simulator over loopback,
as an operations lead would on Friday afternoon.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import httpx
import pytest

from cutbook.journal import read_records
from cutbook_simulator.process import SimulatorProcess
from e2e_support import RUNBOOKS, Cutbook

pytestmark = [pytest.mark.prefect, pytest.mark.usefixtures("fresh_estate")]

CUSTOMS = str(RUNBOOKS / "customs-reorg-2025.yaml")
READS = {"GET", "HEAD"}


def _preflight(
    cutbook: Cutbook, sim: SimulatorProcess, runbook: str = CUSTOMS
) -> tuple[int, str, str]:
    cutbook.env["VNACCS_TOKEN"] = "preflight-token-123"
    done = cutbook.run("preflight", runbook, "--var", f"estate_url={sim.url}", timeout=120)
    return done.returncode, done.stdout, done.stderr


def _journal(cutbook: Cutbook) -> list[dict[str, object]]:
    folder = Path(cutbook.env["CUTBOOK_DATA_DIR"]) / "journal"
    (path,) = (p for p in folder.glob("*.jsonl") if p.name != "index.jsonl")
    return list(read_records(path))


def test_a_healthy_estate_passes_and_sees_only_reads(
    cutbook: Cutbook, sim: SimulatorProcess
) -> None:
    before = httpx.get(f"{sim.url}/admin/calls").json()
    code, out, err = _preflight(cutbook, sim)
    assert code == 0, err
    assert "nothing would block the night" in out
    for step in ("stop-intake", "close-ceased-offices", "update-certificates", "go-no-go"):
        assert step in out
    calls = httpx.get(f"{sim.url}/admin/calls").json()[len(before) :]
    assert calls and {c["method"] for c in calls} <= READS, "a pre-flight changes nothing"
    assert httpx.get(f"{sim.url}/admin/check").json()["problems"]  # still the old model
    records = _journal(cutbook)
    assert records[0]["event"] == "run.started" and records[0]["preflight"] is True
    assert records[-1]["event"] == "run.finished" and records[-1]["outcome"] == "succeeded"
    listing = cutbook.run("audit", "list", check=True).stdout
    assert "preflight" in listing
    assert cutbook.run("audit", "verify", "--all").returncode == 0


def test_a_refusing_target_blocks_the_night(cutbook: Cutbook, sim: SimulatorProcess) -> None:
    rule = {"path": "/vnaccs/*", "status": 401, "error_rate": 1}
    httpx.post(f"{sim.url}/admin/faults", json=rule).raise_for_status()
    code, out, err = _preflight(cutbook, sim)
    assert code == 1
    assert "would block the night" in err and "stop-intake" in err
    assert "credentials refused (401)" in out
    records = _journal(cutbook)
    assert records[-1]["outcome"] == "failed"
    blocked = {
        r["step"] for r in records if r["event"] == "step.finished" and r["status"] == "failed"
    }
    assert "stop-intake" in blocked and "update-catalogue" not in blocked
    assert json.dumps(records).count("preflight-token-123") == 0


def _blocked(cutbook: Cutbook) -> dict[str, str]:
    """Each step the pre-flight journalled as blocking, with its journalled detail."""
    return {
        str(r["step"]): str(r["summary"])
        for r in _journal(cutbook)
        if r["event"] == "step.finished" and r["status"] == "failed"
    }


def test_intake_already_stopped_blocks_stop_intake(cutbook: Cutbook, sim: SimulatorProcess) -> None:
    httpx.post(f"{sim.url}/vnaccs/intake/stop").raise_for_status()
    code, out, err = _preflight(cutbook, sim)
    assert code == 1, err
    assert "would block the night" in err and "stop-intake" in err
    blocked = _blocked(cutbook)
    assert set(blocked) == {"stop-intake"}, blocked
    assert "precondition not met" in blocked["stop-intake"]
    assert "$.state" in blocked["stop-intake"] and "open" in blocked["stop-intake"]
    assert "precondition not met" in out


def test_an_office_the_catalogue_does_not_know_blocks_naming_it(
    cutbook: Cutbook, sim: SimulatorProcess, tmp_path: Path
) -> None:
    (tmp_path / "data").mkdir()
    runbook = tmp_path / "customs-reorg-2025.yaml"
    shutil.copy(RUNBOOKS / "customs-reorg-2025.yaml", runbook)
    lines = (RUNBOOKS / "data" / "offices-2025.csv").read_text(encoding="utf-8").splitlines()
    ceased = next(line for line in lines if ",ceased," in line)
    unknown = "ZZ99" + ceased[ceased.index(",") :]
    text = "\n".join([*lines, unknown]) + "\n"
    (tmp_path / "data" / "offices-2025.csv").write_text(text, encoding="utf-8")
    code, out, err = _preflight(cutbook, sim, str(runbook))
    assert code == 1, err
    blocked = _blocked(cutbook)
    assert {"close-ceased-offices", "reset-budget-codes"} <= set(blocked), blocked
    for step in ("close-ceased-offices", "reset-budget-codes"):
        assert blocked[step].startswith("ZZ99: precondition not met"), blocked[step]
        assert "404" in blocked[step]
    assert "ZZ99" in out
    mine = {"close-ceased-offices", "reset-budget-codes"}
    outcomes = [
        r
        for r in _journal(cutbook)
        if r["event"] == "step.outcome" and r.get("item") == "ZZ99" and r["step"] in mine
    ]
    assert len(outcomes) == 2 and not any(r["ok"] for r in outcomes)
