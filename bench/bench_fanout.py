"""Fan-out side by side: ``cutbook run`` against a bare client and a Prefect ``task.map``.

    .venv/bin/python bench/bench_fanout.py [--items N] [--concurrency 50] [--latency-ms 20]

One step ``for_each`` over N items (1,000; 300 with ``BENCH_QUICK=1``) at
concurrency 50, each item one PUT to ``bench/target_server.py`` answering after
20 ms. Each round runs, in turn: a bare ``httpx.AsyncClient`` loop with a
semaphore (and aiohttp's, when aiohttp is installed), a hand-written Prefect flow
with ``task.map``, a one-step runbook (one flow run's fixed cost) and the fan-out
runbook, both through the full ``cutbook run`` on a Prefect server this bench
starts. ``BENCH_RUNS`` rounds (default 3); medians.

Targets (issue 14): cutbook ≤ 1.5 × the fastest bare client + the fixed cost;
CPU per item < 2 ms (the cutbook process's CPU time / items). Saves
``bench/results/fanout.json``; exits 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import harness as h
import httpx

RATIO = 1.5
CPU_PER_ITEM_MS = 2.0


async def _httpx(url: str, items: int, concurrency: int) -> None:
    gate = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:

        async def one(i: int) -> None:
            async with gate:
                reply = await client.put(f"/catalogue/version/{i}", json={"version": "2024"})
                reply.raise_for_status()

        await asyncio.gather(*(one(i) for i in range(items)))


async def _aiohttp(url: str, items: int, concurrency: int) -> None:
    import aiohttp  # type: ignore[import-not-found, unused-ignore]

    gate = asyncio.Semaphore(concurrency)
    async with aiohttp.ClientSession(base_url=url) as session:

        async def one(i: int) -> None:
            async with (
                gate,
                session.put(f"/catalogue/version/{i}", json={"version": "2024"}) as reply,
            ):
                reply.raise_for_status()
                await reply.read()

        await asyncio.gather(*(one(i) for i in range(items)))


def bare(kind: str, url: str, items: int, concurrency: int) -> tuple[float, float]:
    """Wall and CPU seconds of a bare client loop, in this process."""
    fn = _httpx if kind == "httpx" else _aiohttp
    cpu, wall = time.process_time(), time.perf_counter()
    asyncio.run(fn(url, items, concurrency))
    return time.perf_counter() - wall, time.process_time() - cpu


def aiohttp_available() -> bool:
    try:
        import aiohttp  # type: ignore[import-not-found, unused-ignore]  # noqa: F401
    except ImportError:
        return False
    return True


def runbooks(base: Path, url: str, items: int, concurrency: int) -> tuple[Path, Path]:
    base.mkdir(parents=True, exist_ok=True)
    with (base / "items.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["code"])
        writer.writerows([f"B{i:05d}"] for i in range(items))
    fan: dict[str, Any] = {
        "id": "fan-out",
        "target": "target",
        "action": "put",
        "for_each": "{{ data.offices }}",
        "item_key": "{{ item.code }}",
        "concurrency": concurrency,
        "with": {"path": "/catalogue/version/{{ item.code }}", "json": {"version": "2024"}},
    }
    one = {"id": "one", "target": "target", "action": "put", "with": {"path": "/one"}}
    fan_rb = h.http_runbook("bench-fanout", [fan], url, data={"offices": "items.csv"})
    return (
        h.write_runbook(base / "one-step.yaml", h.http_runbook("bench-one-step", [one], url)),
        h.write_runbook(base / "fan-out.yaml", fan_rb),
    )


def main(argv: list[str] | None = None) -> int:
    settings = h.Settings.from_env()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--items", type=int, default=300 if settings.quick else 1000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--latency-ms", type=float, default=20.0)
    args = parser.parse_args(argv)
    items, conc = args.items, args.concurrency
    result = h.Result("fanout", f"Fan-out: {items:,} items, concurrency {conc}", settings)
    base = Path(tempfile.mkdtemp(prefix="cutbook-bench-fanout-"))
    clients = ["httpx"] + (["aiohttp"] if aiohttp_available() else [])
    calls_per_item: list[float] = []

    rounds = h.Rounds()
    runs, add, quiet = rounds.runs, rounds.add, rounds.quiet

    try:
        with h.target_server(args.latency_ms) as url:
            one_rb, fan_rb = runbooks(base / "runbooks", url, items, conc)
            with h.prefect_server(base / "prefect") as (api, server_s):
                print(f"Prefect server up in {server_s:.1f} s at {api}", flush=True)
                h.cutbook_run(one_rb, api, base / "data", "warm-up")  # first-use caches
                for r in range(settings.runs):
                    print(f"round {r + 1} of {settings.runs}", flush=True)
                    for kind in clients:
                        add(f"bare {kind}", *bare(kind, url, items, conc))
                    quiet(api)
                    child = h.run_child(
                        [
                            sys.executable,
                            str(h.BENCH / "prefect_competitor.py"),
                            "fanout",
                            url,
                            str(items),
                            str(conc),
                        ],
                        env=h.cutbook_env(api, base / "data"),
                    ).check("the Prefect task.map flow")
                    add("Prefect task.map flow", child.wall_s, child.cpu_s)
                    quiet(api)
                    child = h.cutbook_run(one_rb, api, base / "data", f"one-{r}")
                    add("cutbook run, one step (fixed cost)", child.wall_s, child.cpu_s)
                    before = h.target_calls(url)
                    quiet(api)
                    child = h.cutbook_run(fan_rb, api, base / "data", f"fan-{r}")
                    calls_per_item.append((h.target_calls(url) - before) / items)
                    add("cutbook run, fan-out", child.wall_s, child.cpu_s)
    except SystemExit as exc:
        result.notes.append(f"FAILED: {exc}")
        print(f"FAILED: {exc}", file=sys.stderr)
    finally:
        shutil.rmtree(base, ignore_errors=True)

    wall, cpu = rounds.medians()
    bares = {k: v for k, v in wall.items() if k.startswith("bare")}
    fastest = min(bares.values()) if bares else float("nan")
    fixed = wall.get("cutbook run, one step (fixed cost)", float("nan"))
    ours = wall.get("cutbook run, fan-out", float("nan"))
    limit = RATIO * fastest + fixed
    rows = []
    for name, values in runs.items():
        walls = [w for w, _ in values]
        rows.append(
            [
                name,
                h.fmt_s(wall[name]),
                f"{min(walls):.2f}–{max(walls):.2f} s",
                f"{cpu[name]:.2f} s",
                f"{cpu[name] * 1000 / items:.2f} ms",
                h.fmt_ratio(wall[name] / fastest),
                h.fmt_ratio(ours / wall[name]),
            ]
        )
    result.tables.append(
        h.Table(
            f"{items:,} PUTs at concurrency {conc}, {args.latency_ms:g} ms latency each "
            f"(medians of {settings.runs})",
            ["competitor", "wall", "range", "CPU", "CPU / item", "× fastest bare", "cutbook ÷ it"],
            rows,
            note=(
                "The ideal at this latency is "
                f"{items / conc * args.latency_ms / 1000:.2f} s (items / concurrency × latency). "
                "Bare clients run inside the bench process; the Prefect flow and cutbook are "
                "child processes, so their wall and CPU include interpreter and import start-up. "
                f"cutbook made {h.median(calls_per_item):.2f} target calls per item. "
                + (
                    "aiohttp is not installed: httpx is the only bare client."
                    if len(clients) == 1
                    else ""
                )
            ),
        )
    )
    cpu_item = cpu.get("cutbook run, fan-out", float("nan")) * 1000 / items
    net = cpu.get("cutbook run, fan-out", 0.0) - cpu.get("cutbook run, one step (fixed cost)", 0.0)
    result.targets.append(
        h.Target(
            f"Fan-out, {items:,} items × conc. {conc}, {args.latency_ms:g} ms latency",
            f"≤ 1.5 × bare + fixed = {h.fmt_s(limit)}",
            f"{h.fmt_s(ours)} ({h.fmt_ratio(ours / limit)} of the limit)",
            None if ours != ours else ours <= limit,
            f"fastest bare {h.fmt_s(fastest)}, fixed cost {h.fmt_s(fixed)}; "
            f"Prefect task.map {h.fmt_s(wall.get('Prefect task.map flow', float('nan')))}",
        )
    )
    result.targets.append(
        h.Target(
            "Fan-out, CPU per item",
            f"< {CPU_PER_ITEM_MS:g} ms",
            f"{cpu_item:.2f} ms",
            None if cpu_item != cpu_item else cpu_item < CPU_PER_ITEM_MS,
            f"whole process; {net * 1000 / items:.2f} ms net of the one-step run's CPU",
        )
    )
    note = rounds.settle_note()
    if note is not None:
        result.notes.append(note)
    result.raw = {
        "settled_s": rounds.settled,
        "runs": runs,
        "calls_per_item": calls_per_item,
        "items": items,
    }
    result.print()
    print(f"saved {result.save()}", flush=True)
    return 0 if result.ok and not result.notes else 1


if __name__ == "__main__":
    sys.exit(main())
