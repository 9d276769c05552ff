"""Cold start: ``cutbook validate`` and ``cutbook plan`` on the customs runbook, fresh each time.

    .venv/bin/python bench/bench_coldstart.py

Each command runs as a new process (interpreter, imports, YAML, validation,
output to /dev/null) after one warm-up that fills the OS file cache; median of
``BENCH_RUNS`` (default 3; at least 5 here, since a run costs under a second).
For scale, the same is measured for an empty interpreter and ``import prefect``.

Targets (issue 14): validate ≤ 0.5 s, plan ≤ 0.6 s. Saves
``bench/results/coldstart.json``; exits 1 when a target is missed.
"""

from __future__ import annotations

import sys

import harness as h

TARGETS = {"validate": 0.5, "plan": 0.6}


def main() -> int:
    settings = h.Settings.from_env()
    runs = max(5, settings.runs)
    result = h.Result("coldstart", "Cold start: validate and plan the customs runbook", settings)
    env = h.cutbook_env(None, h.ROOT / ".cutbook")
    commands = {
        "validate": [str(h.CUTBOOK), "validate", str(h.CUSTOMS)],
        "plan": [str(h.CUTBOOK), "plan", str(h.CUSTOMS)],
        "python -c pass (interpreter)": [sys.executable, "-c", "pass"],
        "python -c 'import cutbook.validation'": [
            sys.executable,
            "-c",
            "import cutbook.validation, cutbook.planning",
        ],
        "python -c 'import prefect' (reference)": [sys.executable, "-c", "import prefect"],
    }
    times: dict[str, list[float]] = {}
    cpus: dict[str, list[float]] = {}
    for name, cmd in commands.items():
        h.run_child(cmd, env=env).check(name)  # warm-up
    for r in range(runs):
        for name, cmd in commands.items():
            if "prefect" in name and r >= 3:
                continue  # seconds each, and only for scale
            child = h.run_child(cmd, env=env, capture=False)
            if child.code != 0:
                raise SystemExit(f"{name} exited {child.code}")
            times.setdefault(name, []).append(child.wall_s)
            cpus.setdefault(name, []).append(child.cpu_s)
        print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items()))
    rows = [
        [
            name,
            h.fmt_s(h.median(v)),
            f"{min(v):.2f}–{max(v):.2f} s",
            h.fmt_s(h.median(cpus[name])),
            str(len(v)),
        ]
        for name, v in times.items()
    ]
    result.tables.append(
        h.Table(
            "Fresh processes, runbooks/customs-reorg-2025.yaml",
            ["command", "median wall", "range", "median CPU", "runs"],
            rows,
            note=(
                "Output to /dev/null; one warm-up run each first. CPU time (user + system) "
                "is steadier than wall time on a busy machine."
            ),
        )
    )
    for name, target in TARGETS.items():
        value = h.median(times[name])
        result.targets.append(
            h.Target(
                f"Cold start, `cutbook {name}` (customs runbook)",
                f"≤ {target:g} s",
                f"{h.fmt_s(value)} (median of {len(times[name])})",
                value <= target,
                f"best {h.fmt_s(min(times[name]))}, median CPU {h.fmt_s(h.median(cpus[name]))}",
            )
        )
    result.raw = {"times": times, "cpu": cpus}
    result.print()
    print(f"saved {result.save()}", flush=True)
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
