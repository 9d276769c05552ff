"""Approvals that stand up in an audit, against a real Prefect server.

One run, three gates, every answer given the way people give them: through
Prefect's API as the UI form does, and with ``cutbook approve`` (one call found
the server through CUTBOOK_PREFECT_PORT alone). The run is a rehearsal at
speed 1, so its deadlines pass in real time and nothing waits on the clock.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from cutbook import signing
from cutbook.journal import read_records, verify
from e2e_support import Cutbook, PrefectServer

pytestmark = [pytest.mark.prefect, pytest.mark.slow]


def runbook(alice_key: str) -> str:
    return f"""
apiVersion: cutbook/v1
name: approvals-night
timezone: Asia/Ho_Chi_Minh
window: {{start: "2025-03-14T23:00", end: "2025-03-15T05:00"}}
approvers:
  alice: {{key: "{alice_key}"}}
  bob: {{}}
  carol: {{}}
steps:
  - id: two-person
    approval: {{approvers: [alice, bob, carol], quorum: 2, executor_may_approve: false,
               timeout: 20m}}
  - id: signed-gate
    approval: {{approvers: [alice], signed: true, timeout: 20m}}
    depends_on: [two-person]
"""


def flow_run(server: PrefectServer, run_id: str) -> dict[str, Any] | None:
    body = {"flow_runs": {"tags": {"all_": [f"cutbook-run:{run_id}"]}}}
    runs: list[dict[str, Any]] = httpx.post(f"{server.api_url}/flow_runs/filter", json=body).json()
    return runs[0] if runs else None


def next_pause(server: PrefectServer, run_id: str, seen: set[str]) -> tuple[str, dict[str, Any]]:
    """Wait for a pause not seen before (each question, and each re-ask, pauses anew)."""
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        run = flow_run(server, run_id)
        state = (run or {}).get("state") or {}
        key = (state.get("state_details") or {}).get("pause_key")
        if run and state.get("type") == "PAUSED" and key and key not in seen:
            seen.add(key)
            return key, run
        time.sleep(0.3)
    raise AssertionError(f"no new pause of {run_id} within 90 s (seen: {sorted(seen)})")


def test_answers_are_named_counted_bound_and_signed(
    cutbook: Cutbook, prefect_server: PrefectServer, tmp_path: Path
) -> None:
    private_pem, alice_public = signing.new_key()
    key_file = tmp_path / "alice.key"
    key_file.write_bytes(private_pem)
    key_file.chmod(0o600)
    path = tmp_path / "approvals.yaml"
    path.write_text(runbook(alice_public), encoding="utf-8")
    run_id = "approvals-1"
    proc = cutbook.start(
        "run", str(path), "--clock", "virtual", "--speed", "1", "--as", "carol",
        "--run-id", run_id,
    )  # fmt: skip
    seen: set[str] = set()

    def approve(*args: str, env: dict[str, str] | None = None) -> str:
        who = cutbook if env is None else Cutbook(env=env, cwd=cutbook.cwd)
        return who.run("approve", run_id, *args, check=True).stdout

    try:
        _, paused = next_pause(prefect_server, run_id, seen)
        assert "REHEARSAL" in paused["name"] and "rehearsal" in paused["tags"]
        # A blank form, sent through the API as the UI sends it: the server refuses it
        # (no name, no decision) and the run stays paused at the same question.
        blank = httpx.post(
            f"{prefect_server.api_url}/flow_runs/{paused['id']}/resume",
            json={"run_input": {"approver": "", "comment": ""}},
        ).json()
        assert blank["status"] == "REJECT", blank
        assert flow_run(prefect_server, run_id)["state"]["type"] == "PAUSED"  # type: ignore[index]
        no_choice = cutbook.run("approve", run_id, "two-person", "--by", "alice")
        assert no_choice.returncode == 2 and "exactly one of --approve" in no_choice.stderr
        # The executor may not approve this gate; alice counts once, not twice.
        approve("two-person", "--by", "carol", "--approve")
        next_pause(prefect_server, run_id, seen)
        said = approve("two-person", "--by", "alice", "--approve")
        assert "runbook sha256" in said
        next_pause(prefect_server, run_id, seen)
        approve("two-person", "--by", "alice", "--approve")
        next_pause(prefect_server, run_id, seen)
        # bob, through CUTBOOK_PREFECT_PORT alone: the server is found as a run finds it.
        port = prefect_server.api_url.rsplit(":", 1)[1].split("/")[0]
        env = {k: v for k, v in cutbook.env.items() if k != "PREFECT_API_URL"}
        approve("two-person", "--by", "bob", "--approve", env={**env, "CUTBOOK_PREFECT_PORT": port})
        # The signed gate refuses an unsigned answer, then takes alice's signed one.
        next_pause(prefect_server, run_id, seen)
        approve("signed-gate", "--by", "alice", "--approve")
        next_pause(prefect_server, run_id, seen)
        signed = approve("signed-gate", "--by", "alice", "--approve", "--key", str(key_file))
        assert signing.fingerprint(alice_public) in signed
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 0, err[-3000:]

    journal = Path(cutbook.env["CUTBOOK_DATA_DIR"]) / "journal" / f"{run_id}.jsonl"
    assert verify(journal).ok
    records = list(read_records(journal))
    started = next(r for r in records if r["event"] == "run.started")
    assert started["executor"] == "carol"
    answers = [
        (r["event"], r["step"], r["by"], r.get("reason", r.get("quorum")))
        for r in records
        if r["event"] in ("gate.answered", "gate.refused")
    ]
    assert [a[:3] for a in answers] == [
        ("gate.refused", "two-person", "carol"),
        ("gate.answered", "two-person", "alice"),
        ("gate.refused", "two-person", "alice"),
        ("gate.answered", "two-person", "bob"),
        ("gate.refused", "signed-gate", "alice"),
        ("gate.answered", "signed-gate", "alice"),
    ]
    assert "separates duties" in answers[0][3]
    assert answers[1][3] == "1 of 2" and answers[3][3] == "2 of 2"
    assert "distinct approvers" in answers[2][3]
    assert "only signed answers" in answers[4][3]
    signed_rec = [r for r in records if r["event"] == "gate.answered"][-1]
    assert signed_rec["signature"] and signed_rec["key"] == signing.fingerprint(alice_public)
    assert all(
        r["runbook_sha256"] == started["runbook_sha256"]
        for r in records
        if r["event"] == "gate.answered"
    )
    # The auditor's check: every signature verifies again from the journal alone.
    checked = cutbook.run("audit", "verify", run_id)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "1 verified" in checked.stdout
    report = cutbook.run("audit", "report", run_id, "--format", "md", check=True).stdout
    assert "separates duties" in report and "verified SHA256:" in report
