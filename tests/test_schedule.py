"""Scheduling end to end: ``cutbook schedule`` now, ``cutbook serve`` runs it on time.

Real processes on the real clock: the session's Prefect server, a simulator,
``cutbook serve`` (a Prefect process worker) as a subprocess, and a small runbook
whose window is placed a few seconds ahead, so the test waits like the night would.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from cutbook.journal import read_records
from cutbook_simulator.process import SimulatorProcess
from e2e_support import CUTBOOK, Cutbook, PrefectServer

pytestmark = [pytest.mark.prefect, pytest.mark.slow]

RUNBOOKS = Path(__file__).parent / "runbooks"
TOKEN = "canary-7b2e51-scheduled"
LATE_S = 3.0
"""How late the first call may be after the scheduled moment."""


@pytest.fixture
def estate(tmp_path: Path) -> Iterator[SimulatorProcess]:
    with SimulatorProcess(tmp_path / "estate.sqlite", faults="calm", seed_random=7) as sim:
        yield sim


@pytest.fixture
def runbook(tmp_path: Path) -> Path:
    """A private copy (runbook and data file), so a test may edit it."""
    folder = tmp_path / "rb"
    (folder / "data").mkdir(parents=True)
    shutil.copy(RUNBOOKS / "scheduled.yaml", folder / "scheduled.yaml")
    shutil.copy(RUNBOOKS / "data" / "scheduled-offices.csv", folder / "data")
    return folder / "scheduled.yaml"


def moment(seconds: float) -> datetime:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).replace(microsecond=0)


def schedule(cutbook: Cutbook, runbook: Path, sim: SimulatorProcess, at: datetime, *extra: str):  # type: ignore[no-untyped-def]
    result = cutbook.run(
        "schedule", str(runbook), "--at", at.isoformat(), "--var", f"estate_url={sim.url}", *extra
    )
    assert result.returncode == 0, result.stdout + result.stderr
    line = next(x for x in result.stdout.splitlines() if x.startswith("schedule id: "))
    return line.removeprefix("schedule id: ").strip(), result


@contextmanager
def serving(cutbook: Cutbook, *extra: str) -> Iterator[subprocess.Popen[bytes]]:
    """``cutbook serve`` with the secret in its environment; its process group is stopped."""
    log = (cutbook.cwd / f"serve-{time.monotonic_ns()}.log").open("wb")
    proc = subprocess.Popen(
        [CUTBOOK, "serve", *extra],
        env={**cutbook.env, "VNACCS_TOKEN": TOKEN},
        cwd=cutbook.cwd,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        yield proc
    finally:
        for sig, wait in ((signal.SIGINT, 15), (signal.SIGKILL, 5)):
            try:
                os.killpg(proc.pid, sig)
                proc.wait(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue
            except ProcessLookupError:
                break
        log.close()


def flow_run(server: PrefectServer, flow_run_id: str) -> dict[str, Any]:
    run: dict[str, Any] = httpx.get(f"{server.api_url}/flow_runs/{flow_run_id}").json()
    return run


def wait_final(server: PrefectServer, flow_run_id: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = flow_run(server, flow_run_id)
        if run["state"]["type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
            return run
        time.sleep(0.5)
    raise AssertionError(f"flow run still {run['state']['name']} after {timeout}s")


def wait_worker(server: PrefectServer, pool: str, timeout: float, log: Callable[[], str]) -> None:
    """Until a worker of ``pool`` is online (it has polled the server)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        answer = httpx.post(f"{server.api_url}/work_pools/{pool}/workers/filter", json={})
        if answer.status_code == 200 and any(w["status"] == "ONLINE" for w in answer.json()):
            return
        time.sleep(0.5)
    raise AssertionError(f"no worker of pool {pool} online after {timeout}s:\n{log()}")


def calls(sim: SimulatorProcess) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = httpx.get(f"{sim.url}/admin/calls").json()
    return [c for c in found if not c["path"].startswith(("/admin", "/health"))]


def serve_log(cutbook: Cutbook) -> str:
    return "\n".join(p.read_text(errors="replace")[-4000:] for p in cutbook.cwd.glob("serve-*"))


def test_a_scheduled_cutover_runs_at_its_moment(
    cutbook: Cutbook, estate: SimulatorProcess, runbook: Path, prefect_server: PrefectServer
) -> None:
    cutbook.env["VNACCS_TOKEN"] = TOKEN  # in the scheduler's environment too: still not frozen
    # The worker is up first, as on the night (serve runs all week): what is measured is
    # cutbook's own punctuality, not how long a loaded test machine takes to start a worker.
    with serving(cutbook):
        wait_worker(prefect_server, "cutbook", timeout=120, log=lambda: serve_log(cutbook))
        at = moment(30)  # time to list it (three CLI calls) before it runs and ends
        schedule_id, made = schedule(cutbook, runbook, estate, at)
        assert calls(estate) == [], "nothing happens at scheduling time"
        assert (
            "scheduled scheduled-test for " in made.stdout and "on work pool cutbook" in made.stdout
        )
        assert "UI: http://127.0.0.1:" in made.stdout
        listed = cutbook.run("schedules", check=True).stdout
        assert "scheduled-test" in listed and schedule_id[:8] in listed
        rows = json.loads(cutbook.run("schedules", "--format", "json", check=True).stdout)
        row = next(r for r in rows if r["id"] == schedule_id)
        assert row["pool"] == "cutbook"
        assert datetime.fromisoformat(row["at"]) == at
        assert row["at"].endswith("+07:00"), "shown in the runbook's zone"
        # Frozen: text, sha256, data files, variables. Never a secret.
        run = flow_run(prefect_server, schedule_id)
        params = run["parameters"]
        assert params["runbook_text"] == runbook.read_text()
        assert set(params["data_sha256"]) == {"data/scheduled-offices.csv"}
        assert params["variables"]["estate_url"] == estate.url
        deployment = httpx.get(
            f"{prefect_server.api_url}/deployments/{run['deployment_id']}"
        ).json()
        assert deployment["name"] == "scheduled-test"
        assert deployment["entrypoint"].endswith("cutover")
        assert {"cutbook", "scheduled-test"} <= set(deployment["tags"])
        assert TOKEN not in json.dumps(run) and TOKEN not in json.dumps(deployment)
        final = wait_final(prefect_server, schedule_id, timeout=90)
        assert final["state"]["type"] == "COMPLETED", serve_log(cutbook)
    records = list(
        read_records(
            Path(cutbook.env["CUTBOOK_DATA_DIR"]) / "journal" / f"{params['run_id']}.jsonl"
        )
    )
    assert records[-1]["event"] == "run.finished" and records[-1]["outcome"] == "succeeded"
    first_step = min(
        datetime.fromisoformat(r["ts"]) for r in records if r["event"] == "step.started"
    )
    late = (first_step - at).total_seconds()
    assert 0 <= late <= LATE_S, f"first step {late:.3f}s after the scheduled moment"
    made_calls = calls(estate)
    assert len(made_calls) == 4 and all(c["status"] == 200 for c in made_calls)
    first_call = datetime.fromisoformat(made_calls[0]["at"].replace("Z", "+00:00"))
    assert at <= first_call <= at + timedelta(seconds=LATE_S)  # the simulator's clock: whole s
    print(made.stdout + made.stderr + listed)
    print(f"first step started {late:.3f}s after the scheduled moment")


def test_an_unscheduled_cutover_never_runs(
    cutbook: Cutbook, estate: SimulatorProcess, runbook: Path, prefect_server: PrefectServer
) -> None:
    at = moment(8)
    schedule_id, _ = schedule(cutbook, runbook, estate, at, "--pool", "cutbook-unschedule")
    gone = cutbook.run("unschedule", schedule_id[:10], check=True).stdout
    assert f"unscheduled scheduled-test at {at.astimezone().strftime('%Y')}" in gone
    assert schedule_id in gone and "Cancelled" in gone
    assert schedule_id[:8] not in cutbook.run("schedules", check=True).stdout
    again = cutbook.run("unschedule", schedule_id)
    assert again.returncode == 2 and "not waiting" in again.stderr
    with serving(cutbook, "--pool", "cutbook-unschedule"):
        time.sleep(max(0.0, (at - datetime.now(UTC)).total_seconds()) + 4)
        assert flow_run(prefect_server, schedule_id)["state"]["type"] == "CANCELLED"
    assert calls(estate) == []


def test_a_runbook_edited_after_scheduling_refuses_to_run(
    cutbook: Cutbook, estate: SimulatorProcess, runbook: Path, prefect_server: PrefectServer
) -> None:
    at = moment(10)
    schedule_id, _ = schedule(cutbook, runbook, estate, at, "--pool", "cutbook-edited")
    frozen = flow_run(prefect_server, schedule_id)["parameters"]["runbook_sha256"]
    runbook.write_text(runbook.read_text().replace("timeout: 10s", "timeout: 20s"))
    with serving(cutbook, "--pool", "cutbook-edited"):
        final = wait_final(prefect_server, schedule_id, timeout=45)
    assert final["state"]["type"] == "FAILED", serve_log(cutbook)
    message = final["state"]["message"]
    assert "changed since it was scheduled" in message
    assert f"{runbook}: frozen sha256 {frozen[:12]}, now " in message
    assert "cutbook schedule " in message, "says how to schedule it again"
    assert calls(estate) == [], "the estate is untouched"
    journal = Path(cutbook.env["CUTBOOK_DATA_DIR"]) / "journal"
    assert not list(journal.glob("*.jsonl")) if journal.exists() else True


def test_invalid_schedules_are_refused(
    cutbook: Cutbook, estate: SimulatorProcess, runbook: Path
) -> None:
    past = cutbook.run("schedule", str(runbook), "--at", moment(-60).isoformat())
    assert past.returncode == 2 and "in the past" in past.stderr
    bad = cutbook.run("schedule", str(runbook), "--at", "tomorrow")
    assert bad.returncode == 2
    runbook.write_text(
        runbook.read_text().replace("depends_on: [stop-office-intake]", "depends_on: [nope]")
    )
    invalid = cutbook.run("schedule", str(runbook), "--at", moment(600).isoformat())
    assert invalid.returncode == 2 and "nope" in invalid.stderr
