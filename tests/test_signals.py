"""Stopping a run safely: Ctrl-C once or twice, SIGTERM, and a full disk, on real processes.

Each test starts a real ``cutbook run`` of the customs runbook (over a short
office list) against the simulator, stops it mid-night, and checks what the
on-call engineer sees (exit code, one message, never a traceback), that the
journal is left resumable (no run.finished), and that ``cutbook resume``
brings the estate to the expected end with nothing applied twice.
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from cutbook.journal import read_records, verify
from cutbook_simulator.process import SimulatorProcess
from e2e_support import CUTBOOK, Cutbook
from test_crash_resume import SPEED, _complete_lines, _small_customs_runbook

pytestmark = [pytest.mark.prefect, pytest.mark.slow]


def _start(cutbook: Cutbook, runbook: Path, sim: SimulatorProcess, run_id: str) -> Any:
    return cutbook.start(
        "run", str(runbook), "--var", f"estate_url={sim.url}", "--clock", "virtual",
        "--speed", SPEED, "--auto-approve", "--run-id", run_id,
    )  # fmt: skip


def _wait_for_records(proc: subprocess.Popen[str], path: Path, count: int) -> None:
    deadline = time.monotonic() + 180
    while proc.poll() is None and time.monotonic() < deadline:
        if len(_complete_lines(path)) >= count:
            return
        time.sleep(0.01)
    raise AssertionError(f"the run wrote fewer than {count} records (exit {proc.poll()})")


def _events(path: Path) -> list[str]:
    return [str(r.get("event")) for r in read_records(path, skip_bad=True)]


def _resume_and_check(cutbook: Cutbook, sim: SimulatorProcess, run_id: str, path: Path) -> None:
    resumed = cutbook.run("resume", run_id, "--auto-approve", timeout=300)
    assert resumed.returncode == 0, (resumed.stdout[-1500:], resumed.stderr[-3000:])
    assert "Traceback" not in resumed.stderr
    check = httpx.get(f"{sim.url}/admin/check").json()
    assert check["ok"], check["problems"][:5]
    counts = httpx.get(f"{sim.url}/admin/idempotency").json()
    assert {k: v for k, v in counts.items() if v["applied"] != 1} == {}
    result = verify(path)
    assert result.ok and result.passed, result.describe()


@pytest.fixture
def customs(cutbook: Cutbook, tmp_path: Path) -> tuple[Path, Path]:
    cutbook.env["VNACCS_TOKEN"] = "signal-test-token"
    return _small_customs_runbook(tmp_path / "rb")


@pytest.mark.parametrize(
    ("signals", "code"),
    [((signal.SIGINT,), 130), ((signal.SIGTERM,), 143), ((signal.SIGINT, signal.SIGINT), 130)],
    ids=["ctrl-c", "sigterm", "ctrl-c-twice"],
)
def test_a_signal_stops_safely_and_resume_finishes(
    cutbook: Cutbook,
    customs: tuple[Path, Path],
    tmp_path: Path,
    signals: tuple[signal.Signals, ...],
    code: int,
) -> None:
    runbook, csv = customs
    run_id = f"sig-{signals[0].name.lower()}-{len(signals)}"
    path = Path(cutbook.env["CUTBOOK_DATA_DIR"]) / "journal" / f"{run_id}.jsonl"
    env = {**os.environ, "CUTBOOK_SIMULATOR_SPEED": SPEED}
    with SimulatorProcess(tmp_path / "estate.sqlite", seed_csv=csv, env=env) as sim:
        proc = _start(cutbook, runbook, sim, run_id)
        _wait_for_records(proc, path, 60)  # past stop-intake: the estate is mid-change
        for sig in signals:
            proc.send_signal(sig)
            time.sleep(0.1)
        _, stderr = proc.communicate(timeout=90)
        assert proc.returncode == code, stderr[-3000:]
        assert "Traceback" not in stderr, stderr[-3000:]
        assert "is closed" not in stderr
        assert f"cutbook resume {run_id}" in stderr
        assert "completed:" in stderr and "the estate: changed" in stderr
        if len(signals) == 2:
            assert "stopping now" in stderr
        events = _events(path)
        assert "run.finished" not in events
        assert events[-1] == "run.interrupted"
        last = list(read_records(path))[-1]
        assert last["signal"] == signals[0].name
        assert last["resume_command"] == f"cutbook resume {run_id}"
        print(stderr[-2500:])
        _resume_and_check(cutbook, sim, run_id, path)


def _mount_tmpfs(where: Path, size: str) -> bool:
    where.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
        capture_output=True,
        text=True,
        check=False,
    )
    return done.returncode == 0


def _fill(folder: Path) -> Path:
    """Take every free byte of the filesystem, as a log storm on the journal's disk would."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        while os.write(fd, b"\0" * 4096) > 0:
            pass
    except OSError:
        pass
    finally:
        os.close(fd)
    return filler


def test_a_full_disk_stops_the_run_with_one_message_and_resume_finishes(
    cutbook: Cutbook, customs: tuple[Path, Path], tmp_path: Path
) -> None:
    runbook, csv = customs
    journal_dir = Path(cutbook.env["CUTBOOK_DATA_DIR"]) / "journal"
    if not _mount_tmpfs(journal_dir, "4m"):
        pytest.skip("cannot mount a small tmpfs for the journal here (needs root)")
    try:
        run_id = "disk-full"
        path = journal_dir / f"{run_id}.jsonl"
        env = {**os.environ, "CUTBOOK_SIMULATOR_SPEED": SPEED}
        with SimulatorProcess(tmp_path / "estate.sqlite", seed_csv=csv, env=env) as sim:
            proc = _start(cutbook, runbook, sim, run_id)
            _wait_for_records(proc, path, 60)
            filler = _fill(journal_dir)
            _, stderr = proc.communicate(timeout=90)
            assert proc.returncode == 1, stderr[-3000:]
            assert "Traceback" not in stderr, stderr[-3000:]
            assert "Prefect refused" not in stderr
            assert f"cannot write the journal {path}: No space left on device (errno 28)" in (
                stderr
            ), stderr[-3000:]
            assert f"cutbook resume {run_id}" in stderr
            assert "run.finished" not in _events(path)
            filler.unlink()  # the operator frees the disk, then resumes
            _resume_and_check(cutbook, sim, run_id, path)
    finally:
        subprocess.run(["umount", "-l", str(journal_dir)], check=False)


def test_a_file_size_limit_stops_the_run_the_same_way(
    cutbook: Cutbook, customs: tuple[Path, Path], tmp_path: Path
) -> None:
    """Where no tmpfs can be mounted: RLIMIT_FSIZE makes write() fail (EFBIG) past a size."""
    runbook, csv = customs
    run_id = "file-too-big"
    path = Path(cutbook.env["CUTBOOK_DATA_DIR"]) / "journal" / f"{run_id}.jsonl"
    limit = 96 * 1024  # run.started (the runbook's text) and some dozens of records

    def limited() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    env = {**os.environ, "CUTBOOK_SIMULATOR_SPEED": SPEED}
    with SimulatorProcess(tmp_path / "estate.sqlite", seed_csv=csv, env=env) as sim:
        done = subprocess.run(
            [CUTBOOK, "run", str(runbook), "--var", f"estate_url={sim.url}", "--clock",
             "virtual", "--speed", SPEED, "--auto-approve", "--run-id", run_id],
            env=cutbook.env, cwd=cutbook.cwd, capture_output=True, text=True, timeout=240,
            stdin=subprocess.DEVNULL, preexec_fn=limited,
        )  # fmt: skip
        assert done.returncode == 1, done.stderr[-3000:]
        assert "Traceback" not in done.stderr, done.stderr[-3000:]
        assert f"cannot write the journal {path}: File too large (errno 27)" in done.stderr
        assert f"cutbook resume {run_id}" in done.stderr
        assert "run.finished" not in _events(path)
        _resume_and_check(cutbook, sim, run_id, path)


def test_resume_rollback_settles_what_was_in_flight_then_undoes_and_reopens(
    cutbook: Cutbook, customs: tuple[Path, Path], tmp_path: Path
) -> None:
    """The alternative the stop message offers: undo the night instead of going on."""
    runbook, csv = customs
    run_id = "sig-then-rollback"
    path = Path(cutbook.env["CUTBOOK_DATA_DIR"]) / "journal" / f"{run_id}.jsonl"
    env = {**os.environ, "CUTBOOK_SIMULATOR_SPEED": SPEED}
    with SimulatorProcess(tmp_path / "estate.sqlite", seed_csv=csv, env=env) as sim:
        proc = _start(cutbook, runbook, sim, run_id)
        _wait_for_records(proc, path, 60)
        proc.send_signal(signal.SIGINT)
        time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=90)
        assert proc.returncode == 130, stderr[-3000:]
        assert f"cutbook resume {run_id} --rollback" in stderr
        back = cutbook.run("resume", run_id, "--rollback", "--auto-approve", timeout=300)
        assert back.returncode == 1, (back.stdout[-1500:], back.stderr[-3000:])
        assert "outcome: rolled_back" in back.stdout
        assert "Traceback" not in back.stderr
        state = httpx.get(f"{sim.url}/admin/state").json()
        assert state["intake"]["state"] == "open", "always steps reopen intake"
        assert state["catalogue_version"] == "2024", "the catalogue change was undone"
        counts = httpx.get(f"{sim.url}/admin/idempotency").json()
        assert all(v["applied"] <= 1 for v in counts.values()), counts
    records = list(read_records(path))
    assert records[-1]["event"] == "run.finished" and records[-1]["outcome"] == "rolled_back"
    assert verify(path).passed
