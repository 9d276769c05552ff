"""Where the fan-out's time goes: one ``cutbook run`` fan-out under cProfile.

    .venv/bin/python bench/profile_fanout.py [--items 1000] [--concurrency 50] [--top 30]

The same runbook, target server (20 ms latency) and Prefect server set-up as
``bench_fanout.py``, run once with ``python -m cProfile``; prints the functions
with the most own time and the most cumulative time, and writes them to
``bench/results/fanout-profile.txt``. cProfile sees the main thread only (the
event loop, where the engine runs); it slows pure-Python code down, so read
proportions, not seconds. Not part of ``make bench``.
"""

from __future__ import annotations

import argparse
import io
import pstats
import shutil
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import harness as h
from bench_fanout import runbooks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--items", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--top", type=int, default=30)
    args = parser.parse_args(argv)
    base = Path(tempfile.mkdtemp(prefix="cutbook-bench-profile-"))
    out = io.StringIO()
    try:
        with h.target_server(args.latency_ms) as url:
            _, fan_rb = runbooks(base / "runbooks", url, args.items, args.concurrency)
            with h.prefect_server(base / "prefect") as (api, _):
                prof = base / "fanout.prof"
                start = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S")
                cmd = [sys.executable, "-m", "cProfile", "-o", str(prof), str(h.CUTBOOK)]
                cmd += ["run", str(fan_rb), "--run-id", "profile", "--auto-approve"]
                cmd += ["--start", start]
                child = h.run_child(cmd, env=h.cutbook_env(api, base / "data"), timeout=1800)
                child.check("cutbook run under cProfile")
                print(
                    f"{args.items} items: {child.wall_s:.1f} s wall, {child.cpu_s:.1f} s CPU "
                    "(under cProfile)",
                    file=out,
                )
                for order in ("tottime", "cumulative"):
                    print(f"\n--- top {args.top} by {order} ---", file=out)
                    stats = pstats.Stats(str(prof), stream=out)
                    stats.strip_dirs().sort_stats(order).print_stats(args.top)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    text = out.getvalue()
    print(text)
    h.RESULTS.mkdir(parents=True, exist_ok=True)
    (h.RESULTS / "fanout-profile.txt").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
