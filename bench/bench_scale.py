"""Scale: the customs runbook at 1×, 10× and 100× its offices, and a 10,000-step runbook.

    .venv/bin/python bench/bench_scale.py [--factors 1,10,100]

For each factor, the office list (``runbooks/data/offices-2025.csv``) is copied
that many times with suffixed codes into a temporary directory beside a copy of
the runbook. At each scale: ``cutbook validate`` and ``cutbook plan`` (fresh
processes), and a rehearsal (``cutbook run --clock virtual --speed 1000000
--auto-approve``) against a simulator seeded from the same CSV, on a Prefect
server this bench starts: wall time, CPU and peak memory (``ru_maxrss`` of the
``cutbook run`` child). With ``BENCH_QUICK=1`` the 100× scale is validated and
planned but not rehearsed.

Targets (issue 14): wall time and peak memory grow linearly (the cost of each
added office at 100× is at most 1.5× its cost at 10×); a 10,000-step runbook
(``bench_plan.generate``) loads, validates and plans in under 2 s. Saves
``bench/results/scale.json``; exits 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import harness as h
import yaml

from cutbook_simulator.process import SimulatorProcess

OFFICES = h.ROOT / "runbooks" / "data" / "offices-2025.csv"
PLAN_TARGET_S = 2.0
LINEAR_SLACK = 1.5
WINDOW = 'window: {start: "2025-03-14T22:30", end: "2025-03-15T05:00"}'
WIDE_WINDOW = 'window: {start: "2025-03-14T22:30", end: "2025-09-15T05:00"}'


def scaled_csv(factor: int) -> tuple[str, int]:
    """The office list ``factor`` times over; copy k's codes end in ``Xk``."""
    lines = OFFICES.read_text(encoding="utf-8-sig").splitlines()
    comments = [line for line in lines if line.lstrip().startswith("#")]
    rows = list(csv.DictReader(line for line in lines if not line.lstrip().startswith("#")))
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    count = 0
    for k in range(factor):
        tag = "" if k == 0 else f"X{k}"
        for row in rows:
            copy = dict(row)
            if tag:
                for col in ("old_code", "new_code", "treasury_code", "budget_code"):
                    copy[col] = f"{row[col]}{tag}"
                copy["treasury_account"] = f"{row['treasury_account']}{k}"
                copy["old_name"] = f"{row['old_name']} {tag}"
                copy["new_name"] = f"{row['new_name']} {tag}"
            writer.writerow(copy)
            count += 1
    return "\n".join(comments) + "\n" + out.getvalue(), count


def prepare(base: Path, factor: int) -> tuple[Path, Path, int]:
    directory = base / f"x{factor}"
    (directory / "data").mkdir(parents=True, exist_ok=True)
    text, count = scaled_csv(factor)
    data = directory / "data" / "offices-2025.csv"
    data.write_text(text, encoding="utf-8")
    runbook = directory / "customs-reorg-2025.yaml"
    text = h.CUSTOMS.read_text(encoding="utf-8")
    if factor > 1:
        # The estimates scale with the offices: a 6.5-hour window cannot hold ×10, and the
        # deadline guard would (rightly) call no-go. Measured here is cost, not the window.
        if WINDOW not in text:
            raise SystemExit(f"{h.CUSTOMS} no longer has the window {WINDOW}")
        text = text.replace(WINDOW, WIDE_WINDOW)
    runbook.write_text(text, encoding="utf-8")
    return runbook, data, count


def load_and_plan_10k(base: Path, runs: int) -> tuple[list[float], list[float], list[float]]:
    """In-process load+validate+plan of bench_plan's 10,000-step DAG, and the CLI's."""
    from bench_plan import generate

    from cutbook.planning import plan
    from cutbook.validation import load

    doc, _ = generate()
    path = base / "steps-10000.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    inproc, cli_validate, cli_plan = [], [], []
    env = h.cutbook_env(None, base / "data")
    for _ in range(runs):
        began = time.perf_counter()
        loaded = load(path)
        plan(loaded.runbook, item_counts=loaded.item_counts)
        inproc.append(time.perf_counter() - began)
        cli_validate.append(
            h.run_child([str(h.CUTBOOK), "validate", str(path)], env=env, capture=False).wall_s
        )
        cli_plan.append(
            h.run_child([str(h.CUTBOOK), "plan", str(path)], env=env, capture=False).wall_s
        )
    return inproc, cli_validate, cli_plan


def main(argv: list[str] | None = None) -> int:
    settings = h.Settings.from_env()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--factors", default="1,10,100")
    args = parser.parse_args(argv)
    factors = [int(f) for f in args.factors.split(",")]
    rehearse = [f for f in factors if not (settings.quick and f >= 100)]
    result = h.Result("scale", "Scale: offices ×1, ×10, ×100 and 10,000 steps", settings)
    base = Path(tempfile.mkdtemp(prefix="cutbook-bench-scale-"))
    rows: list[list[str]] = []
    measured: dict[int, dict[str, float]] = {}
    sim_env = {k: v for k, v in os.environ.items() if k != "CUTBOOK_SIMULATOR_SPEED"}
    try:
        prepared = {f: prepare(base, f) for f in factors}
        env = h.cutbook_env(None, base / "data")
        for factor, (runbook, _, count) in prepared.items():
            v = h.run_child([str(h.CUTBOOK), "validate", str(runbook)], env=env)
            p = h.run_child([str(h.CUTBOOK), "plan", str(runbook)], env=env)
            v.check(f"validate ×{factor}")
            p.check(f"plan ×{factor}")
            measured[factor] = {"offices": count, "validate": v.wall_s, "plan": p.wall_s}
            print(f"×{factor}: {count} offices, validate {v.wall_s:.2f} s, plan {p.wall_s:.2f} s")
        with h.prefect_server(base / "prefect") as (api, server_s):
            print(f"Prefect server up in {server_s:.1f} s at {api}", flush=True)
            for factor in rehearse:
                runbook, data, count = prepared[factor]
                try:
                    with SimulatorProcess(faults="calm", seed_csv=data, env=sim_env) as sim:
                        extra = ["--clock", "virtual", "--speed", "1000000"]
                        extra += ["--var", f"estate_url={sim.url}"]
                        child = h.cutbook_run(
                            runbook,
                            api,
                            base / "data",
                            f"scale-x{factor}",
                            extra=extra,
                            timeout=3600,
                        )
                except SystemExit as exc:
                    result.notes.append(f"×{factor} rehearsal FAILED: {str(exc)[-600:]}")
                    print(f"FAILED: {exc}", file=sys.stderr)
                    continue
                measured[factor].update(wall=child.wall_s, cpu=child.cpu_s, rss=child.maxrss_mb)
                print(
                    f"×{factor} rehearsal: {child.wall_s:.1f} s wall, {child.cpu_s:.1f} s CPU, "
                    f"peak {child.maxrss_mb:.0f} MB",
                    flush=True,
                )
    except SystemExit as exc:
        result.notes.append(f"FAILED: {exc}")
        print(f"FAILED: {exc}", file=sys.stderr)
    try:
        inproc, cli_v, cli_p = load_and_plan_10k(base, max(3, settings.runs))
    except SystemExit as exc:
        result.notes.append(f"10,000 steps FAILED: {exc}")
        inproc, cli_v, cli_p = [], [], []
    finally:
        shutil.rmtree(base, ignore_errors=True)

    for factor, m in measured.items():
        offices = m["offices"]
        rehearsed = "wall" in m
        rows.append(
            [
                f"×{factor}",
                f"{offices:,.0f}",
                h.fmt_s(m["validate"]),
                h.fmt_s(m["plan"]),
                h.fmt_s(m["wall"]) if rehearsed else "not rehearsed (QUICK)",
                f"{m['cpu']:.1f} s" if rehearsed else "–",
                f"{m['rss']:.0f} MB" if rehearsed else "–",
                f"{m['wall'] * 1000 / offices:.0f} ms" if rehearsed else "–",
            ]
        )
    result.tables.append(
        h.Table(
            "The customs runbook at scale (one rehearsal per scale, virtual clock at 1,000,000×)",
            [
                "scale",
                "offices",
                "validate",
                "plan",
                "rehearsal wall",
                "CPU",
                "peak RSS",
                "wall / office",
            ],
            rows,
            note=(
                "The simulator is seeded from the same generated CSV. Wall time includes "
                "`cutbook run`'s start-up; the virtual clock skips every wait, so what is "
                "left is work: the estate's calls and the engine's cost. At ×10 and ×100 the "
                "window is widened to six months, or the deadline guard would call no-go "
                "(the estimates grow with the offices)."
            ),
        )
    )
    done = sorted(f for f, m in measured.items() if "wall" in m)
    for metric, label in (("wall", "wall time"), ("rss", "peak memory")):
        if len(done) >= 3:
            a, b, c = done[-3:]
            per_office = [
                (measured[y][metric] - measured[x][metric])
                / (measured[y]["offices"] - measured[x]["offices"])
                for x, y in ((a, b), (b, c))
            ]
            grows = per_office[1] / per_office[0] if per_office[0] > 0 else float("nan")
            result.targets.append(
                h.Target(
                    f"Scale ×{c}: {label} grows linearly",
                    f"cost per added office ≤ {LINEAR_SLACK:g}× that of ×{b}",
                    f"{grows:.2f}×",
                    grows <= LINEAR_SLACK,
                    ", ".join(
                        f"×{f}: {measured[f][metric]:.1f} {'s' if metric == 'wall' else 'MB'}"
                        for f in done
                    ),
                )
            )
        else:
            result.targets.append(
                h.Target(
                    f"Scale: {label} grows linearly",
                    f"cost per added office at ×100 ≤ {LINEAR_SLACK:g}× that at ×10",
                    ", ".join(
                        f"×{f}: {measured[f][metric]:.1f} {'s' if metric == 'wall' else 'MB'}"
                        for f in done
                    )
                    or "–",
                    None,
                    "×100 not rehearsed (QUICK): linearity needs three scales",
                )
            )
    value = h.median(inproc)
    result.targets.append(
        h.Target(
            "Scale: 10,000-step runbook validates and plans",
            f"< {PLAN_TARGET_S:g} s",
            f"{h.fmt_s(value)} (median of {len(inproc)})" if inproc else "–",
            None if not inproc else value < PLAN_TARGET_S,
            "load (YAML, validation) + plan in process; fresh `cutbook validate` "
            f"{h.fmt_s(h.median(cli_v))}, `cutbook plan` {h.fmt_s(h.median(cli_p))}",
        )
    )
    result.raw = {"measured": {str(k): v for k, v in measured.items()}, "plan_10k": inproc}
    result.print()
    print(f"saved {result.save()}", flush=True)
    return 0 if result.ok and not result.notes else 1


if __name__ == "__main__":
    sys.exit(main())
