"""Crash safety: kill -9 the orchestrator at random moments, resume, and check everything.

Each trial runs the customs runbook (its real text, over a shorter office list
so twenty trials fit in the suite) against the simulator, kills ``cutbook run``
with SIGKILL at a random moment after its journal exists, then runs
``cutbook resume``. Every trial must end in the expected final estate, with no
mutating call applied twice, a chain that verifies, and every record that was
on disk at the moment of the kill still there.

The signal trials do the same with SIGTERM and SIGINT (Ctrl-C): the run must
stop safely (exit 143/130, no traceback, run.interrupted as its last record,
no run.finished), and resume must finish it exactly as after a kill.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from cutbook.journal import verify
from cutbook_simulator.process import SimulatorProcess
from e2e_support import RUNBOOKS, Cutbook

pytestmark = [pytest.mark.prefect, pytest.mark.slow]

TRIALS = int(os.environ.get("CUTBOOK_CRASH_TRIALS", "20"))
SIGNAL_TRIALS = int(os.environ.get("CUTBOOK_SIGNAL_TRIALS", "3"))
"""Per signal: SIGTERM and SIGINT each stop the run safely this many times."""
EXIT = {signal.SIGKILL: -signal.SIGKILL, signal.SIGTERM: 143, signal.SIGINT: 130}
SPEED = "720"
OFFICES = 8
RECORDS_PER_RUN = 240
"""A little under the ~255 records one shortened customs night writes."""


def _small_customs_runbook(folder: Path) -> tuple[Path, Path]:
    """The customs runbook unchanged, next to the first OFFICES rows of its office list."""
    (folder / "data").mkdir(parents=True)
    runbook = folder / "customs-reorg-2025.yaml"
    shutil.copy(RUNBOOKS / "customs-reorg-2025.yaml", runbook)
    lines = (RUNBOOKS / "data" / "offices-2025.csv").read_text(encoding="utf-8").splitlines()
    comments = [line for line in lines if line.startswith("#")]
    rows = [line for line in lines if not line.startswith("#")]
    csv = folder / "data" / "offices-2025.csv"
    csv.write_text("\n".join([*comments, *rows[: OFFICES + 1]]) + "\n", encoding="utf-8")
    assert any(",ceased," in row for row in rows[1 : OFFICES + 1])
    return runbook, csv


def _complete_lines(path: Path) -> list[bytes]:
    if not path.exists():
        return []
    data = path.read_bytes()
    return data.split(b"\n")[:-1]  # the last element is a torn tail or empty


@dataclass
class Trial:
    number: int
    path: Path
    on_disk: list[bytes]
    resumed: bool
    check: dict[str, Any]
    counts: dict[str, dict[str, int]]


def _trial(
    cutbook: Cutbook,
    folder: Path,
    runbook: Path,
    csv: Path,
    number: int,
    sig: signal.Signals = signal.SIGKILL,
) -> Trial:
    rng = random.Random(20250314 + number)
    run_id = f"crash-{number:02d}" if sig is signal.SIGKILL else f"{sig.name.lower()}-{number:02d}"
    path = Path(cutbook.env["CUTBOOK_DATA_DIR"]) / "journal" / f"{run_id}.jsonl"
    env = {**os.environ, "CUTBOOK_SIMULATOR_SPEED": SPEED}
    with SimulatorProcess(folder / f"estate-{number}.sqlite", seed_csv=csv, env=env) as sim:
        proc = cutbook.start(
            "run", str(runbook), "--var", f"estate_url={sim.url}", "--clock", "virtual",
            "--speed", SPEED, "--auto-approve", "--run-id", run_id,
        )  # fmt: skip
        # A random moment of the night, measured in progress rather than seconds (the
        # seconds are mostly start-up and the wait for 23:00): kill once the journal
        # holds a random number of records.
        target = rng.randint(1, RECORDS_PER_RUN)
        deadline = time.monotonic() + 180
        while proc.poll() is None and time.monotonic() < deadline:
            if len(_complete_lines(path)) >= target:
                break
            time.sleep(0.005)
        proc.send_signal(sig)
        _, stderr = proc.communicate(timeout=90)
        on_disk = _complete_lines(path)
        # The journal, not the process, says whether the run was over: it may have written
        # run.finished and been killed while tearing down.
        finished_first = bool(on_disk) and b'"run.finished"' in on_disk[-1]
        if sig is not signal.SIGKILL:
            assert "Traceback" not in stderr, (number, stderr[-3000:])
            if not finished_first:
                assert proc.returncode == EXIT[sig], (number, proc.returncode, stderr[-3000:])
                assert b'"run.interrupted"' in on_disk[-1], (number, on_disk[-1][:300])
                assert f"cutbook resume {run_id}" in stderr
        if not finished_first:
            resumed = cutbook.run("resume", run_id, "--auto-approve", timeout=300)
            assert resumed.returncode == 0, (number, resumed.stdout[-1500:], resumed.stderr[-3000:])
        check = httpx.get(f"{sim.url}/admin/check").json()
        counts = httpx.get(f"{sim.url}/admin/idempotency").json()
    return Trial(number, path, on_disk, not finished_first, check, counts)


def test_kill_minus_nine_then_resume(cutbook: Cutbook, tmp_path: Path) -> None:
    runbook, csv = _small_customs_runbook(tmp_path / "rb")
    cutbook.env["VNACCS_TOKEN"] = "crash-test-token"
    with ThreadPoolExecutor(max_workers=2) as pool:
        trials = list(pool.map(lambda n: _trial(cutbook, tmp_path, runbook, csv, n), range(TRIALS)))
    for t in trials:
        assert t.check["ok"], (t.number, t.check["problems"][:5])
        twice = {k: v for k, v in t.counts.items() if v["applied"] != 1}
        assert twice == {}, (t.number, twice)
        result = verify(t.path)
        assert result.ok and not result.torn_tail, (t.number, result.describe())
        final = t.path.read_bytes().split(b"\n")
        assert final[: len(t.on_disk)] == t.on_disk, f"trial {t.number}: an fsync'd record is gone"
        assert b'"run.finished"' in final[-2]
    assert sum(t.resumed for t in trials) >= TRIALS * 3 // 4, "most kills must land mid-run"
    # The kills must have landed at many different moments of the night.
    assert len({len(t.on_disk) for t in trials}) >= TRIALS // 2


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "sigint"])
def test_stop_signal_then_resume(cutbook: Cutbook, tmp_path: Path, sig: signal.Signals) -> None:
    """SIGTERM and Ctrl-C at random moments: exit 143/130 without a traceback, the
    journal ends with run.interrupted, and resume brings the estate to its end."""
    runbook, csv = _small_customs_runbook(tmp_path / "rb")
    cutbook.env["VNACCS_TOKEN"] = "crash-test-token"
    first = 100 if sig is signal.SIGTERM else 200
    with ThreadPoolExecutor(max_workers=2) as pool:
        trials = list(
            pool.map(
                lambda n: _trial(cutbook, tmp_path, runbook, csv, n, sig),
                range(first, first + SIGNAL_TRIALS),
            )
        )
    for t in trials:
        assert t.check["ok"], (t.number, t.check["problems"][:5])
        twice = {k: v for k, v in t.counts.items() if v["applied"] != 1}
        assert twice == {}, (t.number, twice)
        result = verify(t.path)
        assert result.ok and result.passed, (t.number, result.describe())
        final = t.path.read_bytes().split(b"\n")
        assert final[: len(t.on_disk)] == t.on_disk, f"trial {t.number}: a record is gone"
        assert b'"run.finished"' in final[-2]
    assert sum(t.resumed for t in trials) >= 1, "at least one signal must land mid-run"
