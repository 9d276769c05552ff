"""Journal speed against its targets: fsync'd append cost and verify throughput.

    .venv/bin/python bench/bench_journal.py [--dir PATH]

Run it on the disk that will hold the journal on the night (``--dir``): fsync
cost is a property of the disk, not of cutbook. Exits 1 if a target is missed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from cutbook.journal import Journal, verify
from cutbook.redact import Redactor

APPEND_TARGET_MS = 1.0  # mean per fsync'd record
VERIFY_TARGET_S = 2.0  # per 100,000 records


def _fields(i: int) -> dict[str, object]:
    """A typical fan-out outcome record (~400 bytes on disk)."""
    return {
        "step": f"move-ou-{i % 40}",
        "item": {"office": f"KPU-{i:05d}", "region": "Sumatera"},
        "phase": "apply",
        "ok": True,
        "changed": i % 3 != 0,
        "summary": f"OU=Customs,OU=KPU-{i:05d}: 12 users moved, 2 groups renamed",
        "output": {"moved": 12, "serial": i},
    }


def bench_append(directory: Path, count: int) -> tuple[float, float, float]:
    """Mean and p99 ms per fsync'd append, plus the disk's bare write+fsync mean,
    measured interleaved so both see the same disk load."""
    redactor = Redactor([f"secret-value-{n:04d}" for n in range(20)])
    journal = Journal.create(directory, "bench-append", redactor=redactor)
    journal.append("run.started", runbook_name="bench")
    raw_line = b"x" * 460 + b"\n"
    raw_fd = os.open(directory / "raw", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    timings, raw = [], []
    try:
        for i in range(count):
            start = time.perf_counter()
            journal.append("step.outcome", **_fields(i))
            timings.append(time.perf_counter() - start)
            start = time.perf_counter()
            os.write(raw_fd, raw_line)
            os.fsync(raw_fd)
            raw.append(time.perf_counter() - start)
    finally:
        os.close(raw_fd)
        journal.close()
    timings.sort()
    mean_ms = statistics.fmean(timings) * 1000
    p99_ms = timings[min(len(timings) - 1, int(len(timings) * 0.99))] * 1000
    return mean_ms, p99_ms, statistics.fmean(raw) * 1000


def bench_verify(directory: Path, count: int) -> tuple[float, int]:
    journal = Journal.create(directory, "bench-verify", fsync=False)
    journal.append("run.started", runbook_name="bench")
    for i in range(count - 2):
        journal.append("step.outcome", **_fields(i))
    journal.append("run.finished", outcome="succeeded")
    journal.close()
    start = time.perf_counter()
    result = verify(journal.path)
    elapsed = time.perf_counter() - start
    if not result.ok or result.records != count:
        raise SystemExit(f"verify disagreed with the bench journal: {result.describe()}")
    return elapsed, journal.path.stat().st_size


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--dir", type=Path, help="where to write (default: a temp dir)")
    parser.add_argument("--appends", type=int, default=2000)
    parser.add_argument("--verify-records", type=int, default=100_000)
    args = parser.parse_args(argv)

    if args.dir is not None:
        args.dir.mkdir(parents=True, exist_ok=True)
    base = Path(tempfile.mkdtemp(prefix="cutbook-bench-", dir=args.dir))
    try:
        mean_ms, p99_ms, raw_ms = bench_append(base, args.appends)
        elapsed, size = bench_verify(base, args.verify_records)
    finally:
        shutil.rmtree(base, ignore_errors=True)

    per_100k = elapsed * 100_000 / args.verify_records
    append_ok = mean_ms <= APPEND_TARGET_MS
    verify_ok = per_100k <= VERIFY_TARGET_S
    print(f"disk: {base.parent}")
    print(
        f"append (fsync'd, {args.appends} records): mean {mean_ms:.3f} ms, p99 {p99_ms:.3f} ms "
        f"[target mean <= {APPEND_TARGET_MS} ms: {'ok' if append_ok else 'MISSED'}]"
    )
    print(
        f"  of which the disk: bare os.write+fsync {raw_ms:.3f} ms; "
        f"cutbook's own work ~{max(mean_ms - raw_ms, 0):.3f} ms per record"
    )
    print(
        f"verify ({args.verify_records} records, {size / 1e6:.1f} MB): {elapsed:.2f} s "
        f"= {per_100k:.2f} s per 100k, {args.verify_records / elapsed:,.0f} records/s "
        f"[target <= {VERIFY_TARGET_S} s per 100k: {'ok' if verify_ok else 'MISSED'}]"
    )
    return 0 if append_ok and verify_ok else 1


if __name__ == "__main__":
    sys.exit(main())
