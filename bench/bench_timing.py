"""Timing: does a step with an ``at`` ever start early, and how late does it start?

    .venv/bin/python bench/bench_timing.py [--runs N] [--steps 6] [--lead 8]

Each run is a real ``cutbook run`` on the real clock (Prefect server of its own)
of a generated runbook whose steps each have an ``at`` one second apart; the
window is placed ``--lead`` seconds ahead of now with ``--start``, so every
``at`` is still ahead when the run starts. Lateness is the journal's
``step.started`` time minus the planned ``at`` (both host time). 20 runs
(3 with ``BENCH_QUICK=1``).

Targets (issue 14): no step starts early; p99 lateness ≤ 1 s. Saves
``bench/results/timing.json``; exits 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import harness as h

from cutbook.journal import read_records

P99_TARGET_S = 1.0
ORIGIN = datetime(2025, 1, 1, tzinfo=UTC)


def runbook(steps: int) -> dict[str, Any]:
    return {
        "apiVersion": "cutbook/v1",
        "name": "bench-timing",
        "timezone": "UTC",
        "window": {"start": "2025-01-01T00:00:00", "end": "2025-01-01T01:00:00"},
        "concurrency": steps,
        "defaults": {"estimate": "0s"},
        "targets": {"idle": {"adapter": "wait"}},
        "steps": [
            {
                "id": f"at-{i}",
                "target": "idle",
                "action": "sleep",
                "with": {"duration": "0s"},
                "at": (ORIGIN + timedelta(seconds=i + 1)).strftime("%Y-%m-%dT%H:%M:%S"),
                # every other step also waits on the one before, as real `at`s often do
                **({"depends_on": [f"at-{i - 1}"]} if i % 2 else {}),
            }
            for i in range(steps)
        ],
    }


def one_run(
    path: Path, api: str, data: Path, run_id: str, steps: int, lead: float
) -> tuple[list[float], int]:
    """Lateness of each step (seconds) and how many steps had no step.waiting record."""
    start = (datetime.now(UTC) + timedelta(seconds=lead)).replace(microsecond=0)
    cmd_start = start.strftime("%Y-%m-%dT%H:%M:%S")
    extra = ["--clock", "real", "--start", cmd_start]
    h.cutbook_run(path, api, data, run_id, extra=extra, timeout=300)
    records = list(read_records(data / "journal" / f"{run_id}.jsonl"))
    started = {
        r["step"]: datetime.fromisoformat(r["ts"]) for r in records if r["event"] == "step.started"
    }
    waited = {r["step"] for r in records if r["event"] == "step.waiting"}
    lateness = []
    for i in range(steps):
        planned = start + timedelta(seconds=i + 1)
        lateness.append((started[f"at-{i}"] - planned).total_seconds())
    return lateness, sum(1 for i in range(steps) if f"at-{i}" not in waited)


def main(argv: list[str] | None = None) -> int:
    settings = h.Settings.from_env()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=3 if settings.quick else 20)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--lead", type=float, default=8.0, help="seconds from launch to window")
    args = parser.parse_args(argv)
    result = h.Result("timing", f"Timing: steps with `at`, {args.runs} real-clock runs", settings)
    base = Path(tempfile.mkdtemp(prefix="cutbook-bench-timing-"))
    lateness: list[float] = []
    unwaited = 0
    try:
        path = h.write_runbook(base / "timing.yaml", runbook(args.steps))
        with h.prefect_server(base / "prefect") as (api, server_s):
            print(f"Prefect server up in {server_s:.1f} s at {api}", flush=True)
            for r in range(args.runs):
                got, missing = one_run(
                    path, api, base / "data", f"timing-{r}", args.steps, args.lead
                )
                lateness += got
                unwaited += missing
                print(
                    f"run {r + 1}: lateness {min(got) * 1000:.0f}…{max(got) * 1000:.0f} ms"
                    + (f"; {missing} step(s) never waited" if missing else ""),
                    flush=True,
                )
    except SystemExit as exc:
        result.notes.append(f"FAILED: {exc}")
        print(f"FAILED: {exc}", file=sys.stderr)
    finally:
        shutil.rmtree(base, ignore_errors=True)

    early = [x for x in lateness if x < 0]
    p50, p99 = h.percentile(lateness, 50), h.percentile(lateness, 99)
    worst = max(lateness) if lateness else float("nan")
    result.tables.append(
        h.Table(
            f"{len(lateness)} steps with an `at` over {args.runs} runs",
            ["measure", "value"],
            [
                ["steps measured", str(len(lateness))],
                ["started early", str(len(early))],
                ["earliest (negative = early)", h.fmt_s(min(lateness)) if lateness else "–"],
                ["median lateness", h.fmt_s(p50)],
                ["p99 lateness", h.fmt_s(p99)],
                ["worst", h.fmt_s(worst)],
                ["steps whose `at` had passed before the scheduler reached them", str(unwaited)],
            ],
            note=(
                "Real clock, `--start` "
                f"{args.lead:g} s ahead of launch, `at`s one second apart, half of the steps "
                "also depending on the previous one. Lateness = journal `step.started` − "
                "planned `at`."
            ),
        )
    )
    result.targets.append(
        h.Target(
            "Timing: no step with an `at` starts early",
            "0 early",
            f"{len(early)} of {len(lateness)}",
            None if not lateness else not early,
            f"earliest {h.fmt_s(min(lateness))}" if lateness else "",
        )
    )
    result.targets.append(
        h.Target(
            "Timing: p99 lateness",
            f"≤ {P99_TARGET_S:g} s",
            h.fmt_s(p99),
            None if not lateness else p99 <= P99_TARGET_S,
            f"median {h.fmt_s(p50)}, worst {h.fmt_s(worst)}, {args.runs} runs",
        )
    )
    result.raw = {"lateness_s": lateness, "unwaited": unwaited}
    result.print()
    print(f"saved {result.save()}", flush=True)
    return 0 if result.ok and not result.notes else 1


if __name__ == "__main__":
    sys.exit(main())
