"""Benchmark: ``cutbook validate`` of the customs runbook starts and answers in ≤ 0.5 s.

Run as ``.venv/bin/python bench/bench_validate.py``. Each measurement is a new
process running the installed ``cutbook`` console script, as an operations
lead would type it: interpreter start-up, imports, YAML, validation and output.
One unmeasured run first warms the OS file cache; then best of 5 (the target)
and the median. Also reports whether Prefect got imported (it must not be:
``validate`` and ``plan`` stay light) and the slowest top-level imports, to say
where the time goes. Exits 1 if the best run misses the target or Prefect was
imported.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUNBOOK = "runbooks/customs-reorg-2025.yaml"
TARGET_S = 0.5
REPEAT = 5
HEAVY = ("prefect", "fastapi", "uvicorn")

PROBE = """
import json, sys
from cutbook.cli import main
try:
    main(["validate", sys.argv[1]])
except SystemExit as exc:
    if exc.code not in (0, None):
        raise
sys.stderr.write("\\n" + json.dumps(sorted({m.split(".")[0] for m in sys.modules})))
"""


def cutbook_exe() -> str:
    exe = shutil.which("cutbook", path=os.path.dirname(sys.executable))
    if exe is None:
        sys.exit("bench_validate: no cutbook console script next to this python; run make install")
    return exe


def one_run(exe: str) -> float:
    began = time.perf_counter()
    done = subprocess.run(
        [exe, "validate", RUNBOOK], cwd=ROOT, capture_output=True, text=True, check=False
    )
    elapsed = time.perf_counter() - began
    if done.returncode != 0:
        sys.exit(f"bench_validate: validate failed (exit {done.returncode}):\n{done.stderr}")
    return elapsed


def imported_modules() -> set[str]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, RUNBOOK],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        sys.exit(f"bench_validate: probe failed:\n{done.stderr}")
    return set(json.loads(done.stderr.rsplit("\n", 1)[-1]))


def slowest_imports(limit: int = 5) -> list[tuple[str, float]]:
    """Modules imported directly (not by another import), by cumulative import time.

    From ``python -X importtime``; everything a module pulls in counts towards it,
    so these are the places where start-up time can be saved.
    """
    code = f"from cutbook.cli import main; main(['validate', {RUNBOOK!r}])"
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    totals: dict[str, float] = {}
    line = re.compile(r"^import time:\s+\d+ \|\s+(\d+) \| (\s*)(\S+)$")
    for row in done.stderr.splitlines():
        m = line.match(row)
        if m and m.group(2) == "":  # imported directly, not by another import
            name = m.group(3)
            totals[name] = totals.get(name, 0.0) + int(m.group(1)) / 1e6
    return sorted(totals.items(), key=lambda kv: -kv[1])[:limit]


def main() -> int:
    exe = cutbook_exe()
    one_run(exe)  # warm the file cache; not counted
    times = [one_run(exe) for _ in range(REPEAT)]
    best, median = min(times), statistics.median(times)
    ok = best <= TARGET_S
    print(f"validate cold start: {best:.2f} s (target ≤ {TARGET_S} s)")
    print(f"validate cold start, median of {REPEAT}: {median:.2f} s")
    heavy = sorted(imported_modules() & set(HEAVY))
    print(f"prefect imported by validate: {'yes' if 'prefect' in heavy else 'no'}")
    if heavy:
        print(f"heavy modules imported by validate: {', '.join(heavy)} (must be none)")
    print("slowest imports: " + ", ".join(f"{n} {s:.2f} s" for n, s in slowest_imports()))
    if not ok:
        print(f"MISSED: best {best:.2f} s is over the {TARGET_S} s target")
    return 0 if ok and not heavy else 1


if __name__ == "__main__":
    sys.exit(main())
