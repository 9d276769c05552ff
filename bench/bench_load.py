"""Benchmark (issue 14): a 10,000-step runbook loads, validates and plans in under 2 s.

Run as ``.venv/bin/python bench/bench_load.py [--repeat 5]``. The runbook is
``bench_plan.generate()`` written as YAML, as ``bench_scale.py`` writes it.
Measured, median of ``--repeat`` runs, each as wall time and as CPU time (user
+ system; on a busy machine wall time mostly measures the other processes):

- in process: ``yamlsafe.load_file``, ``validation.load`` (which includes it)
  and ``planning.plan`` on the loaded runbook;
- fresh processes of the installed console script: ``cutbook validate`` and
  ``cutbook plan`` on the 10,000-step runbook, and ``cutbook validate`` on the
  customs runbook (its target is 0.5 s, see ``bench_validate.py``).

Exits 1 if the in-process load + plan (median wall) is not under 2 s.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import yaml
from bench_plan import generate

from cutbook import yamlsafe
from cutbook.planning import plan
from cutbook.validation import load

ROOT = Path(__file__).resolve().parent.parent
CUSTOMS = ROOT / "runbooks" / "customs-reorg-2025.yaml"
TARGET_S = 2.0


def timed(fn: Callable[[], object], repeat: int) -> tuple[float, float]:
    """Median wall and median CPU seconds of ``fn``."""
    walls, cpus = [], []
    for _ in range(repeat):
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        cpus.append(time.process_time() - cpu)
        walls.append(time.perf_counter() - wall)
    return statistics.median(walls), statistics.median(cpus)


def child(args: list[str], repeat: int) -> tuple[float, float]:
    """Median wall and CPU seconds of a fresh process (CPU from the children's rusage)."""
    walls, cpus = [], []
    for _ in range(repeat):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        wall = time.perf_counter()
        subprocess.run(args, cwd=ROOT, capture_output=True, check=False)
        walls.append(time.perf_counter() - wall)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return statistics.median(walls), statistics.median(cpus)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    exe = shutil.which("cutbook", path=os.path.dirname(sys.executable)) or "cutbook"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "steps-10000.yaml"
        doc, _ = generate()
        path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
        loaded = load(path)  # warm: imports, adapters, caches
        rows = [
            ("yamlsafe.load_file", timed(lambda: yamlsafe.load_file(path), args.repeat)),
            ("validation.load", timed(lambda: load(path), args.repeat)),
            (
                "planning.plan",
                timed(lambda: plan(loaded.runbook, item_counts=loaded.item_counts), args.repeat),
            ),
            ("cutbook validate (10k)", child([exe, "validate", str(path)], args.repeat)),
            ("cutbook plan (10k)", child([exe, "plan", str(path)], args.repeat)),
            ("cutbook validate (customs)", child([exe, "validate", str(CUSTOMS)], args.repeat)),
        ]
    parser_name = getattr(yamlsafe, "parser", "a PyYAML loader")  # older checkouts: none
    print(
        f"libyaml: {yaml.__with_libyaml__}; parser: {parser_name}; "
        f"load average {os.getloadavg()[0]:.1f}; median of {args.repeat}"
    )
    for name, (wall, cpu) in rows:
        print(f"{name:28s} wall {wall:6.2f} s   cpu {cpu:6.2f} s")
    total = rows[1][1][0] + rows[2][1][0]
    verdict = "ok" if total < TARGET_S else "TOO SLOW"
    print(f"load + plan in process: {total:.2f} s (target < {TARGET_S:g} s) {verdict}")
    return 0 if total < TARGET_S else 1


if __name__ == "__main__":
    sys.exit(main())
