"""``cutbook demo`` end to end: its rehearsal's actuals are real, so its report is clean.

Under the old multiplied clock every millisecond of I/O counted ``speed`` times
and the report listed steps "late" that were not. Now work takes real time and
only waits are skipped, so a calm demo has nothing to report.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from cutbook.journal import summarize
from e2e_support import REPO, Cutbook

pytestmark = [pytest.mark.prefect, pytest.mark.slow]


def test_the_demo_at_its_default_speed_reports_no_deviations(
    cutbook: Cutbook, tmp_path: Path
) -> None:
    data = tmp_path / "demo"
    in_repo = Cutbook(env={**cutbook.env, "CUTBOOK_DATA_DIR": str(data)}, cwd=REPO)
    result = in_repo.run("demo", timeout=240)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "estate is in the expected final state" in result.stdout
    journals = [p for p in (data / "journal").glob("*.jsonl") if p.name != "index.jsonl"]
    assert len(journals) == 1
    summary = summarize(journals[0])
    assert summary.outcome == "succeeded"
    assert summary.deviations == []
    steps = {s.id: s for s in summary.steps}
    drain = steps["drain-queue"]
    assert drain.actual_start is not None and drain.actual_finish is not None
    # The queue drained on the rehearsal's timeline: within one 30 s poll interval.
    assert (drain.actual_finish - drain.actual_start).total_seconds() <= 60
