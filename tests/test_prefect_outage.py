"""The Prefect server dies or stalls mid-run: the night goes on, on time, and ends cleanly.

Prefect is for watching. Each test starts a Prefect server of its own (the
session's shared one must survive), runs a real ``cutbook run`` of a short
rehearsal whose steps are spaced by waits, and kills (SIGKILL) or freezes
(SIGSTOP) the server's process group while the run is between steps. The run
must finish with its outcome, a journal that verifies, one "the UI is behind"
warning and no traceback, within 20 s of the same run against a healthy server.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from cutbook_simulator.process import SimulatorProcess, free_port
from e2e_support import Cutbook, PrefectServer

pytestmark = [pytest.mark.prefect, pytest.mark.slow]

SPEED = "120"
RUNBOOK = """
apiVersion: cutbook/v1
name: outage
timezone: Asia/Ho_Chi_Minh
window: {start: "2025-03-14T23:00", end: "2025-03-15T05:00"}
vars: {estate_url: "http://127.0.0.1:8765"}
targets:
  vnaccs: {adapter: http, base_url: "{{ vars.estate_url }}/vnaccs", timeout: 10s}
  clock: {adapter: wait}
steps:
  - id: stop-intake
    target: vnaccs
    action: post
    with: {path: /intake/stop}
    rollback: {action: post, with: {path: /intake/start}}
  - {id: settle-1, target: clock, action: sleep, with: {duration: 10m}, depends_on: [stop-intake]}
  - id: check-1
    target: vnaccs
    action: get
    with: {path: /intake, expect: {json: {state: stopped}}}
    depends_on: [settle-1]
  - {id: settle-2, target: clock, action: sleep, with: {duration: 10m}, depends_on: [check-1]}
  - id: check-2
    target: vnaccs
    action: get
    with: {path: /intake, expect: {json: {state: stopped}}}
    depends_on: [settle-2]
  - {id: settle-3, target: clock, action: sleep, with: {duration: 10m}, depends_on: [check-2]}
  - id: reopen-intake
    target: vnaccs
    action: post
    with: {path: /intake/start}
    irreversible: true
    depends_on: [settle-3]
"""
"""Seven steps; three 10-minute waits take 5 s each at speed 120: about 15 s a run."""

STEPS = ("stop-intake", "settle-1", "check-1", "settle-2", "check-2", "settle-3", "reopen-intake")
GATE_RUNBOOK = """
apiVersion: cutbook/v1
name: outage-gate
timezone: Asia/Ho_Chi_Minh
window: {start: "2025-03-14T23:00", end: "2025-03-15T05:00"}
vars: {estate_url: "http://127.0.0.1:8765"}
targets:
  vnaccs: {adapter: http, base_url: "{{ vars.estate_url }}/vnaccs", timeout: 10s}
  clock: {adapter: wait}
steps:
  - id: stop-intake
    target: vnaccs
    action: post
    with: {path: /intake/stop}
    rollback: {action: post, with: {path: /intake/start}}
  - {id: settle, target: clock, action: sleep, with: {duration: 10m}, depends_on: [stop-intake]}
  - id: go-no-go
    approval: {approvers: [ops-lead], timeout: 15s, instructions: Go?}
    depends_on: [settle]
"""
"""Killed during ``settle``: the gate is asked with no server; 15 s later it is a no-go."""

SLACK_S = 20.0


@dataclass
class Night:
    result: subprocess.CompletedProcess[str]
    seconds: float


@dataclass
class OwnServer:
    proc: subprocess.Popen[bytes]
    server: PrefectServer

    def signal(self, sig: int) -> None:
        os.killpg(self.proc.pid, sig)


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[OwnServer]:
    """A Prefect server for this test alone, always stopped (and thawed) at the end."""
    from cutbook.engine.prefect.server import start_server

    home = tmp_path / "own-prefect"
    port = free_port()
    proc = start_server(home, port, wait=120)
    try:
        yield OwnServer(proc, PrefectServer(f"http://127.0.0.1:{port}/api", home))
    finally:
        for sig in (signal.SIGCONT, signal.SIGKILL):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
        proc.wait(timeout=15)


def _runbook(tmp_path: Path) -> Path:
    path = tmp_path / "outage.yaml"
    path.write_text(RUNBOOK, encoding="utf-8")
    return path


def _env(tmp_path: Path, api_url: str) -> dict[str, str]:
    return {
        **os.environ,
        "PREFECT_API_URL": api_url,
        "CUTBOOK_DATA_DIR": str(tmp_path / "data"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "COLUMNS": "200",
    }


def _night(
    cutbook: Cutbook,
    runbook: Path,
    sim: SimulatorProcess,
    run_id: str,
    meanwhile: OwnServer | None = None,
    sig: int = signal.SIGKILL,
    *,
    at: str = "settle-1",
    thaw_at: str | None = None,
) -> Night:
    """Run the rehearsal; with ``meanwhile``, send ``sig`` to its server once step ``at``
    is journalled (and SIGCONT once ``thaw_at`` is)."""
    args = ["run", str(runbook), "--var", f"estate_url={sim.url}", "--clock", "virtual"]
    args += ["--speed", SPEED, "--run-id", run_id]
    started = time.monotonic()
    proc = cutbook.start(*args)
    try:
        if meanwhile is not None:
            journal = Path(cutbook.env["CUTBOOK_DATA_DIR"]) / "journal" / f"{run_id}.jsonl"
            _wait_for_step(journal, at)
            meanwhile.signal(sig)
            if thaw_at is not None:
                _wait_for_step(journal, thaw_at)
                meanwhile.signal(signal.SIGCONT)
        out, err = proc.communicate(timeout=180)
    finally:
        proc.kill()
        proc.wait(timeout=15)
    took = time.monotonic() - started
    return Night(subprocess.CompletedProcess(args, proc.returncode, out, err), took)


def _wait_for_step(journal: Path, step: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        text = journal.read_text(encoding="utf-8") if journal.exists() else ""
        if f'"step":"{step}"' in text.replace(" ", ""):
            return
        time.sleep(0.1)
    pytest.fail(f"the run never reached step {step}")


@pytest.fixture(scope="module")
def healthy_seconds(
    sim: SimulatorProcess, prefect_server: PrefectServer, tmp_path_factory: pytest.TempPathFactory
) -> float:
    """The same rehearsal against the session's healthy server: the yardstick."""
    tmp = tmp_path_factory.mktemp("healthy")
    sim.reset()
    cutbook = Cutbook(env=_env(tmp, prefect_server.api_url), cwd=tmp)
    night = _night(cutbook, _runbook(tmp), sim, "healthy-1")
    assert night.result.returncode == 0, night.result.stderr[-3000:]
    assert "UI is behind" not in night.result.stderr
    assert "Prefect was not told" not in night.result.stderr
    print(f"healthy server: {night.seconds:.1f} s")
    return night.seconds


def _assert_survived(cutbook: Cutbook, night: Night, run_id: str, healthy: float) -> None:
    result = night.result
    assert result.returncode == 0, result.stderr[-3000:]
    assert "outcome: succeeded (7 succeeded)" in result.stdout, result.stdout[-2000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert result.stderr.count("the UI is behind") == 1, result.stderr[-3000:]
    verified = cutbook.run("audit", "verify", run_id, timeout=60)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert night.seconds <= healthy + SLACK_S, (night.seconds, healthy)


def test_server_killed_mid_run(
    sim: SimulatorProcess,
    fresh_estate: None,
    own_server: OwnServer,
    healthy_seconds: float,
    tmp_path: Path,
) -> None:
    cutbook = Cutbook(env=_env(tmp_path, own_server.server.api_url), cwd=tmp_path)
    night = _night(cutbook, _runbook(tmp_path), sim, "killed-1", own_server, signal.SIGKILL)
    print(f"killed server: {night.seconds:.1f} s (healthy {healthy_seconds:.1f} s)")
    _assert_survived(cutbook, night, "killed-1", healthy_seconds)
    assert "Prefect was not told the outcome" in night.result.stderr


def test_server_stalled_mid_run(
    sim: SimulatorProcess,
    fresh_estate: None,
    own_server: OwnServer,
    healthy_seconds: float,
    tmp_path: Path,
) -> None:
    cutbook = Cutbook(env=_env(tmp_path, own_server.server.api_url), cwd=tmp_path)
    night = _night(cutbook, _runbook(tmp_path), sim, "stalled-1", own_server, signal.SIGSTOP)
    own_server.signal(signal.SIGCONT)
    print(f"stalled server: {night.seconds:.1f} s (healthy {healthy_seconds:.1f} s)")
    _assert_survived(cutbook, night, "stalled-1", healthy_seconds)


def test_server_stalled_then_back_catches_up(
    sim: SimulatorProcess,
    fresh_estate: None,
    own_server: OwnServer,
    healthy_seconds: float,
    tmp_path: Path,
) -> None:
    """Frozen for two waits, then back: the UI catches up and hears the outcome."""
    cutbook = Cutbook(env=_env(tmp_path, own_server.server.api_url), cwd=tmp_path)
    night = _night(
        cutbook,
        _runbook(tmp_path),
        sim,
        "back-1",
        own_server,
        signal.SIGSTOP,
        at="settle-1",
        thaw_at="settle-3",
    )
    _assert_survived(cutbook, night, "back-1", healthy_seconds)
    assert night.result.stderr.count("the UI is catching up") == 1
    assert "Prefect was not told" not in night.result.stderr
    api = own_server.server.api_url
    body = {"flow_runs": {"tags": {"all_": ["cutbook-run:back-1"]}}}
    runs = httpx.post(f"{api}/flow_runs/filter", json=body, timeout=10).json()
    assert [r["state"]["type"] for r in runs] == ["COMPLETED"]
    tasks = httpx.post(
        f"{api}/task_runs/filter",
        json={"flow_runs": {"id": {"any_": [runs[0]["id"]]}}, "limit": 50},
        timeout=10,
    ).json()
    assert sorted((t["name"], t["state"]["type"]) for t in tasks) == sorted(
        (step, "COMPLETED") for step in STEPS
    )
    logs = httpx.post(
        f"{api}/logs/filter",
        json={"logs": {"flow_run_id": {"any_": [runs[0]["id"]]}}, "limit": 200},
        timeout=10,
    ).json()
    assert any("reopen-intake" in entry["message"] for entry in logs), "logs caught up"


def test_gate_times_out_when_the_server_is_gone(
    sim: SimulatorProcess, fresh_estate: None, own_server: OwnServer, tmp_path: Path
) -> None:
    """No UI to answer in: the gate's deadline still holds, as no-go, and the operator is told."""
    runbook = tmp_path / "gate.yaml"
    runbook.write_text(GATE_RUNBOOK, encoding="utf-8")
    cutbook = Cutbook(env=_env(tmp_path, own_server.server.api_url), cwd=tmp_path)
    night = _night(cutbook, runbook, sim, "gate-1", own_server, signal.SIGKILL, at="settle")
    result = night.result
    assert result.returncode == 1, result.stderr[-3000:]
    assert "outcome: rolled_back" in result.stdout, result.stdout[-2000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert "cannot take the answer to 'go-no-go'" in result.stderr
    print(f"gate with the server gone: {night.seconds:.1f} s (15 s gate timeout)")
    assert night.seconds < 60, night.seconds
    verified = cutbook.run("audit", "verify", "gate-1", timeout=60)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert httpx.get(f"{sim.url}/admin/state", timeout=10).json()["intake"]["state"] == "open"
