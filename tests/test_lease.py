"""One actor per run and per estate: the lease, its holder, and what verify makes of it.

The unit tests hold leases from a separate process (flock is per open file, and
the kernel drops it when the holder dies, which is the whole point); the
end-to-end tests run two real ``cutbook`` processes against one estate.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cutbook.errors import LeaseHeld
from cutbook.journal import Journal, verify
from cutbook.journal.events import Event
from cutbook.journal.lease import Lease, holder, run_lock
from cutbook_simulator.process import SimulatorProcess
from e2e_support import Cutbook
from test_crash_resume import _complete_lines, _small_customs_runbook

HOLD = """
import sys, time
from pathlib import Path
from cutbook.journal.lease import Lease
Lease.acquire(Path(sys.argv[1]), run_id="r-1", runbook="rb", estate="e", what="run r-1")
print("held", flush=True)
time.sleep(600)
"""


def _hold_elsewhere(path: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(path)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def _unfinished_journal(journal_dir: Path, run_id: str = "r-1") -> Path:
    with Journal.create(journal_dir, run_id, fsync=False) as journal:
        journal.append(Event.RUN_STARTED, runbook_name="rb")
        journal.append(Event.STEP_STARTED, step="a")
    return journal_dir / f"{run_id}.jsonl"


def test_a_held_lease_names_its_holder_and_refuses_a_second(tmp_path: Path) -> None:
    path = run_lock(tmp_path, "r-1")
    proc = _hold_elsewhere(path)
    try:
        live = holder(tmp_path, "r-1")
        assert live is not None and live.pid == proc.pid and live.run_id == "r-1"
        with pytest.raises(LeaseHeld, match=f"pid {proc.pid}"):
            Lease.acquire(path, run_id="r-2", runbook="rb", estate="e", what="run r-1")
    finally:
        proc.kill()
        proc.wait()
    # kill -9 leaves the file behind, but nobody holds it: stale, and free to take.
    assert path.exists() and holder(tmp_path, "r-1") is None
    lease = Lease.acquire(path, run_id="r-1", runbook="rb", estate="e", what="run r-1")
    assert holder(tmp_path, "r-1") is not None  # held by us, seen through another fd
    lease.release()
    assert not path.exists() and holder(tmp_path, "r-1") is None


def test_verify_calls_a_journal_live_only_while_its_lease_is_held(tmp_path: Path) -> None:
    journal = _unfinished_journal(tmp_path)
    proc = _hold_elsewhere(run_lock(tmp_path, "r-1"))
    try:
        result = verify(journal)
        assert result.live and result.passed, result.describe()
        assert any("still going" in w for w in result.warnings)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    stale = verify(journal)  # the file is still there: a crashed run, not a live one
    assert run_lock(tmp_path, "r-1").exists()
    assert not stale.live and not stale.passed
    assert "no run.finished" in (stale.problem or "")


@pytest.mark.prefect
@pytest.mark.slow
def test_one_process_per_run_and_one_run_per_estate(cutbook: Cutbook, tmp_path: Path) -> None:
    runbook, csv = _small_customs_runbook(tmp_path / "rb")
    cutbook.env["VNACCS_TOKEN"] = "lease-test-token"
    path = Path(cutbook.env["CUTBOOK_DATA_DIR"]) / "journal" / "lease-1.jsonl"
    env = {**os.environ, "CUTBOOK_SIMULATOR_SPEED": "360"}
    with SimulatorProcess(tmp_path / "estate.sqlite", seed_csv=csv, env=env) as sim:
        args = ["--var", f"estate_url={sim.url}", "--clock", "virtual", "--speed", "360"]
        first = cutbook.start("run", str(runbook), *args, "--auto-approve", "--run-id", "lease-1")
        try:
            deadline = time.monotonic() + 120
            while len(_complete_lines(path)) < 3 and first.poll() is None:
                assert time.monotonic() < deadline
                time.sleep(0.05)
            resumed = cutbook.run("resume", "lease-1", "--auto-approve", timeout=120)
            assert resumed.returncode == 2, resumed.stderr[-2000:]
            assert "still running" in resumed.stderr and f"pid {first.pid}" in resumed.stderr
            second = cutbook.run(
                "run", str(runbook), *args, "--auto-approve", "--run-id", "lease-2", timeout=120
            )
            assert second.returncode == 2, second.stderr[-2000:]
            assert "estate" in second.stderr and "lease-1" in second.stderr
            assert f"pid {first.pid}" in second.stderr
            for output in (resumed.stderr, second.stderr):
                assert "Traceback" not in output
            assert not (path.parent / "lease-2.jsonl").exists()
        finally:
            first.send_signal(signal.SIGINT)
            first.communicate(timeout=90)
        assert first.returncode == 130
        again = cutbook.run(
            "run", str(runbook), *args, "--auto-approve", "--run-id", "lease-1", timeout=120
        )
        assert again.returncode == 2, again.stderr[-2000:]
        assert (
            "run id lease-1 is taken" in again.stderr and "cutbook resume lease-1" in again.stderr
        )
        assert "Traceback" not in again.stderr
