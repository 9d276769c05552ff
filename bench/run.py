"""Run every benchmark in turn and summarise: ``make bench``.

    .venv/bin/python bench/run.py [NAME ...] [--timeout SECONDS]

Runs each ``bench/bench_*.py`` (sorted; or only those whose name contains one
of the NAMEs) as its own process with this interpreter, streams its output,
and prints a summary table. A bench meets its targets when it exits 0. Exits 1
if any bench missed a target, failed or timed out.
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


def run_one(path: Path, timeout: float) -> Outcome:
    name = path.stem
    print(f"\n=== {name} ({path.relative_to(ROOT)}) ===", flush=True)
    started = time.perf_counter()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, str(path)],
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
        "--timeout", type=float, default=900.0, help="per bench, seconds (default 900)"
    )
    args = parser.parse_args(argv)

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
            outcomes.append(run_one(path, args.timeout))
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
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
