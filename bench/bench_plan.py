"""Benchmark: plan a generated 10,000-step runbook in under a second.

Run as ``.venv/bin/python bench/bench_plan.py``. Prints one line per measure,
exits 1 if ``plan()`` (best of 5) misses its target. Loading from YAML and
rendering are timed too, for information; they have no target here.
"""

from __future__ import annotations

import random
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cutbook.model import Runbook
from cutbook.plan_render import render
from cutbook.planning import plan

STEPS = 10_000
TARGET_S = 1.0
REPEAT = 5


def generate(n: int = STEPS, *, seed: int = 62) -> tuple[dict[str, Any], dict[str, int]]:
    """A random DAG: each step waits on up to 3 earlier ones; some have `at`s or fan out."""
    rng = random.Random(seed)
    steps: list[dict[str, Any]] = []
    counts: dict[str, int] = {}  # stays empty: literal lists are counted by the planner
    for i in range(n):
        step: dict[str, Any] = {
            "id": f"step-{i}",
            "name": f"Generated step {i}",
            "target": "sim",
            "action": "confirm",
            "with": {"instructions": f"Do step {i} by hand"},
            "estimate": rng.choice([0, 15, 30, 60, 90, 120, 300]),
        }
        if i:
            step["depends_on"] = sorted(
                {f"step-{rng.randrange(i)}" for _ in range(rng.randint(0, 3))}
            )
        roll = rng.random()
        if roll < 0.03:
            step["at"] = f"{rng.choice([23, 0, 1, 2, 3])}:{rng.choice(['00', '15', '30', '45'])}"
        elif roll < 0.05:
            step["at"] = "2025-03-15T01:30+07:00"
        if rng.random() < 0.05:
            # A literal list, so the YAML round trip needs no data files.
            step["for_each"] = [f"office-{k}" for k in range(rng.randint(1, 200))]
            step["concurrency"] = rng.randint(1, 20)
        if rng.random() < 0.01:
            step["irreversible"] = True
        if rng.random() < 0.1:
            step["rollback"] = {
                "action": "confirm",
                "with": {"instructions": f"Undo step {i}"},
                "estimate": rng.choice([30, 60, 120]),
            }
        steps.append(step)
    doc = {
        "apiVersion": "cutbook/v1",
        "name": "bench-plan",
        "timezone": "Asia/Ho_Chi_Minh",
        "window": {"start": "2025-03-14T22:30", "end": "2025-03-16T05:00"},
        "targets": {"sim": {"adapter": "manual"}},
        "steps": steps,
    }
    return doc, counts


def best_of(fn: Callable[[], object], repeat: int = REPEAT) -> float:
    best = float("inf")
    for _ in range(repeat):
        began = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - began)
    return best


def _loader() -> Callable[[Path], tuple[Runbook, dict[str, int]]] | None:
    """Whatever loads a runbook file in this checkout, if anything does yet."""
    try:
        from cutbook.loading import load_runbook  # type: ignore[import-not-found, unused-ignore]

        def via_loading(path: Path) -> tuple[Runbook, dict[str, int]]:
            rb = load_runbook(path)
            return rb, {}

        return via_loading
    except ImportError:
        pass
    try:
        from cutbook.validation import load

        def via_validation(path: Path) -> tuple[Runbook, dict[str, int]]:
            loaded = load(path)
            return loaded.runbook, loaded.item_counts

        return via_validation
    except ImportError:
        return None


def main() -> int:
    began = time.perf_counter()
    doc, counts = generate()
    rb = Runbook.model_validate(doc)
    print(f"generate + model_validate {STEPS} steps: {time.perf_counter() - began:.2f} s")

    elapsed = best_of(lambda: plan(rb, item_counts=counts))
    result = plan(rb, item_counts=counts)
    verdict = "ok" if elapsed < TARGET_S else "TOO SLOW"
    print(f"plan {STEPS} steps: {elapsed:.2f} s (target < {TARGET_S:g} s) {verdict}")
    print(
        f"  finish {result.finish.isoformat()}, critical path {len(result.critical_path)} "
        f"steps, fits={result.fits_window}"
    )

    for fmt in ("text", "json", "html"):
        spent = best_of(lambda fmt=fmt: render(result, rb, fmt), repeat=1)  # type: ignore[misc]
        print(f"render {fmt}: {spent:.2f} s")

    load = _loader()
    if load is None:
        print("load + plan from YAML: skipped (no loader in this checkout)")
    else:
        import yaml

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "bench-plan.yaml"
            path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
            try:
                began = time.perf_counter()
                loaded, file_counts = load(path)
                plan(loaded, item_counts=file_counts or counts)
                print(f"load + plan from YAML: {time.perf_counter() - began:.2f} s")
            except Exception as exc:  # information only: the loader belongs to another part
                print(f"load + plan from YAML: failed ({type(exc).__name__}: {exc})"[:300])
    return 0 if elapsed < TARGET_S else 1


if __name__ == "__main__":
    sys.exit(main())
