"""Run every benchmark in turn, summarise, and write ``docs/performance.md``: ``make bench``.

    .venv/bin/python bench/run.py [NAME ...] [--runs N] [--quick] [--timeout SECONDS]
                                  [--no-report]

Runs each ``bench/bench_*.py`` (sorted; or only those whose name contains one
of the NAMEs) as its own process with this interpreter, streams its output,
and prints a summary table. A bench meets its targets when it exits 0. Exits 1
if any bench missed a target, failed or timed out.

``--runs`` (``make bench RUNS=5``) and ``--quick`` (``make bench QUICK=1``: fewer
items, a smoke run) reach every bench as ``BENCH_RUNS`` and ``BENCH_QUICK``.
Afterwards :func:`harness.write_report` renders every result saved in
``bench/results/`` into ``docs/performance.md``.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
GRACE_S = 20.0  # after SIGTERM, before SIGKILL: benches stop their servers in finally blocks
# With --quick, the older benches that take minutes get smaller arguments.
QUICK_ARGS = {"bench_engine": ["--items", "200", "--repeat", "1", "--no-write"]}


@dataclass
class Outcome:
    name: str
    code: int | None  # None: did not finish (timeout or interrupted)
    seconds: float
    note: str = ""

    @property
    def ok(self) -> bool:
        return self.code == 0


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the bench's process group, then SIGKILL it if it lingers."""
    if proc.poll() is not None:
        return
    with suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=GRACE_S)
    except subprocess.TimeoutExpired:
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def run_one(path: Path, timeout: float, runs: int = 3, quick: bool = False) -> Outcome:
    name = path.stem
    print(f"\n=== {name} ({path.relative_to(ROOT)}) ===", flush=True)
    started = time.perf_counter()
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "BENCH_RUNS": str(runs),
        "BENCH_QUICK": "1" if quick else "",
    }
    extra = QUICK_ARGS.get(name, []) if quick else []
    proc = subprocess.Popen(
        [sys.executable, str(path), *extra],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,  # its own process group, so a stop reaches its children
    )
    timed_out = threading.Event()

    def on_timeout() -> None:
        timed_out.set()
        _stop(proc)

    timer = threading.Timer(timeout, on_timeout)
    timer.daemon = True
    timer.start()
    try:
        assert proc.stdout is not None
        for line in iter(proc.stdout.readline, b""):
            sys.stdout.buffer.write(line)
            sys.stdout.flush()
        code = proc.wait()
    except BaseException:
        _stop(proc)
        raise
    finally:
        timer.cancel()
    seconds = time.perf_counter() - started
    if timed_out.is_set():
        return Outcome(name, None, seconds, f"timed out after {timeout:g} s")
    return Outcome(name, code, seconds)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("names", nargs="*", help="run only benches whose name contains one")
    parser.add_argument(
        "--timeout", type=float, default=3600.0, help="per bench, seconds (default 3600)"
    )
    parser.add_argument(
        "--runs", type=int, default=int(os.environ.get("BENCH_RUNS") or 3), help="rounds (3)"
    )
    parser.add_argument("--quick", action="store_true", help="fewer items: a smoke run")
    parser.add_argument("--no-report", action="store_true", help="leave docs/performance.md")
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="run nothing: rebuild docs/performance.md from bench/results/",
    )
    args = parser.parse_args(argv)
    if args.report_only:
        from harness import rewrite_report

        print(f"report: {rewrite_report().relative_to(ROOT)}")
        return 0
    load_before = _load()

    def interrupted(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # run_one stops the current bench's process group

    signal.signal(signal.SIGTERM, interrupted)
    paths = sorted(BENCH.glob("bench_*.py"))
    if args.names:
        paths = [p for p in paths if any(n in p.stem for n in args.names)]
    if not paths:
        print("no benchmark matched", file=sys.stderr)
        return 2

    outcomes: list[Outcome] = []
    try:
        for path in paths:
            outcomes.append(run_one(path, args.timeout, args.runs, args.quick))
    except KeyboardInterrupt:
        print("\ninterrupted", flush=True)
        done = {o.name for o in outcomes}
        outcomes += [
            Outcome(p.stem, None, 0.0, "not run (interrupted)") for p in paths if p.stem not in done
        ]

    print("\n=== summary ===")
    print(f"{'bench':20} {'target met':12} {'seconds':>8}")
    for o in outcomes:
        met = "NO" if o.code is None else "yes" if o.ok else f"NO (exit {o.code})"
        line = f"{o.name:20} {met:12} {o.seconds:>8.1f}"
        print(line + (f"  {o.note}" if o.note else ""))
    failed = [o.name for o in outcomes if not o.ok]
    print(
        f"{len(outcomes) - len(failed)} of {len(outcomes)} met their targets"
        + (f"; failed: {', '.join(failed)}" if failed else "")
    )
    if not args.no_report:
        from harness import Settings, write_report

        summary = [
            (
                o.name,
                "met"
                if o.ok
                else "did not finish"
                if o.code is None
                else f"missed (exit {o.code})",
                o.seconds,
            )
            for o in outcomes
        ]
        report = write_report(
            summary, Settings(runs=args.runs, quick=args.quick), _caveat(args, load_before)
        )
        print(f"report: {report.relative_to(ROOT)}")
    return 1 if failed else 0


def _load() -> float:
    try:
        return os.getloadavg()[0]
    except OSError:
        return 0.0


def _caveat(args: argparse.Namespace, load_before: float) -> str | None:
    """A warning for the report when the numbers come from a smoke run or a busy machine."""
    cpus = os.cpu_count() or 1
    load = max(load_before, _load())
    busy = load > 0.75 * cpus
    if not args.quick and not busy:
        return None
    parts = []
    if args.quick:
        parts.append("these numbers were taken with QUICK=1 (fewer items and runs)")
    if busy:
        parts.append(
            f"on a busy {cpus}-core machine (load average up to {load:.1f} while the "
            "benches ran, other jobs included)"
        )
    text = " ".join(parts)
    return (
        text[:1].upper()
        + text[1:]
        + ". Wall times are pessimistic; CPU times are steadier. Repeat with a full "
        "`make bench` on a quiet machine before concluding anything."
    )


if __name__ == "__main__":
    sys.exit(main())
