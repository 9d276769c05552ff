"""What the shared audit store costs a run: per record, per night, and when it is down.

    .venv/bin/python bench/bench_audit_store.py [--dir PATH] [--records N] [--steps N]

1. fsync'd appends with no store, with a live SQLite store, and with a store that
   is down (a closed port), interleaved so all three see the same disk load;
2. a real 200-step rehearsal in-process (LocalBridge) without and with the store,
   and how long after the run's end the store holds every line.

Exits 1 if the mirror adds more than the target to a record's append, or if a
dead store costs a run more than the bounded wait at its end.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shutil
import socket
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import ClassVar

import structlog

from cutbook import registry
from cutbook.adapter import ActionSpec, Args, BaseAdapter, Call, Result
from cutbook.engine.local import LocalBridge
from cutbook.engine.session import RunSettings, Session
from cutbook.journal import Event, Journal
from cutbook.journal.store import TABLE_NAME, StoreMirror
from cutbook.validation import load

ADDED_TARGET_MS = 0.1  # mean added to an fsync'd append (~1 ms) by the hand-off and the thread
WAIT_S = 2.0  # CUTBOOK_AUDIT_STORE_WAIT for the dead-store run


class NoteArgs(Args):
    key: str


class NoteAdapter(BaseAdapter):
    """A target that answers at once: the run's cost is the engine's and the journal's."""

    name: ClassVar[str] = "bench-note"
    actions: ClassVar[Mapping[str, ActionSpec]] = {
        "note": ActionSpec(args=NoteArgs, description="note a key", reversible=True),
    }

    async def apply(self, call: Call) -> Result:
        return Result(changed=True, summary="noted")

    async def rollback(self, call: Call) -> Result:
        return Result(changed=True, summary="forgotten")


registry.register("bench-note", NoteAdapter)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def bench_appends(directory: Path, count: int, live: str, dead: str) -> dict[str, list[float]]:
    mirrors = {"none": None, "live": StoreMirror(live), "down": StoreMirror(dead)}
    journals = {
        name: Journal.create(directory, f"bench-{name}", mirror=mirror)
        for name, mirror in mirrors.items()
    }
    times: dict[str, list[float]] = {name: [] for name in journals}
    for i in range(count):
        for name, journal in journals.items():
            start = time.perf_counter()
            journal.append(
                Event.STEP_OUTCOME,
                step=f"move-ou-{i % 40}",
                item={"office": f"KPU-{i:05d}"},
                phase="apply",
                ok=True,
                changed=True,
                summary=f"OU=Customs,OU=KPU-{i:05d}: 12 users moved",
            )
            times[name].append(time.perf_counter() - start)
    for name, journal in journals.items():
        began = time.perf_counter()
        journal.close()
        if name != "none":
            print(f"  close with store {name}: {time.perf_counter() - began:.2f} s")
    return times


def bench_handoff(directory: Path, count: int, dead: str) -> float:
    """Mean seconds of the hand-off alone (what ``Journal.append`` adds after its fsync)."""
    mirror = StoreMirror(dead, capacity=count + 1)
    line = b'{"event":"step.outcome","seq":1,"hash":"' + b"0" * 64 + b'"}\n'
    path = directory / "handoff.jsonl"
    start = time.perf_counter()
    for i in range(count):
        mirror.offer("bench-handoff", path, i, "0" * 64, "step.outcome", line)
    took = time.perf_counter() - start
    mirror.close(0)
    return took / count


def runbook(directory: Path, steps: int) -> Path:
    lines = [
        "apiVersion: cutbook/v1",
        "name: bench-audit-store",
        "timezone: UTC",
        'window: {start: "2025-03-14T23:00", end: "2025-03-15T05:00"}',
        "targets:",
        "  notes: {adapter: bench-note}",
        "steps:",
    ]
    for n in range(steps):
        after = f", depends_on: [s{n - 1:03d}]" if n else ""
        lines.append(f"  - {{id: s{n:03d}, target: notes, action: note, with: {{key: k}}{after}}}")
    path = directory / "rb.yaml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def night(directory: Path, steps: int, store: str | None) -> tuple[float, Session]:
    directory.mkdir(parents=True, exist_ok=True)
    settings = RunSettings(
        data_dir=directory / "data", clock="virtual", speed=3600, audit_store=store
    )
    session = Session(load(runbook(directory, steps)), settings)

    async def go() -> None:
        await session.prepare()
        runner = session.runner_for(LocalBridge())
        await session.finish(await runner.run())

    began = time.perf_counter()
    asyncio.run(go())
    return time.perf_counter() - began, session


def stored_lines(db: Path, run_id: str) -> int:
    with sqlite3.connect(db) as conn:
        row = conn.execute(f"SELECT count(*) FROM {TABLE_NAME} WHERE run_id = ?", (run_id,))
        return int(row.fetchone()[0])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=None, help="where journals go (a real disk)")
    parser.add_argument("--records", type=int, default=2000)
    parser.add_argument("--steps", type=int, default=200)
    args = parser.parse_args()
    os.environ["CUTBOOK_AUDIT_STORE_WAIT"] = str(WAIT_S)
    os.environ.pop("CUTBOOK_AUDIT_STORE", None)
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )
    root = Path(tempfile.mkdtemp(prefix="bench-store-", dir=args.dir))
    failed = False
    try:
        db = root / "audit.db"
        live = f"sqlite+aiosqlite:///{db}"
        dead = f"postgresql+asyncpg://cutbook:pw-not-shown@127.0.0.1:{closed_port()}/audit"
        print(f"1. {args.records} fsync'd appends each (interleaved)")
        times = bench_appends(root / "appends", args.records, live, dead)
        base = statistics.fmean(times["none"]) * 1000
        for name, got in times.items():
            mean = statistics.fmean(got) * 1000
            p99 = sorted(got)[int(len(got) * 0.99)] * 1000
            print(f"  store {name:>4}: mean {mean:.3f} ms  p99 {p99:.3f} ms  (+{mean - base:.3f})")
            if name != "none" and mean - base > ADDED_TARGET_MS:
                failed = True
        handoff = bench_handoff(root, 100_000, dead)
        print(f"  hand-off alone: {handoff * 1e6:.2f} us per record (100,000 offers)")
        print(f"2. a {args.steps}-step rehearsal, in-process")
        plain, _ = night(root / "plain", args.steps, None)
        with_store, session = night(root / "live", args.steps, live)
        assert session.journal is not None
        lines = len(session.journal.path.read_bytes().splitlines())
        print(f"  no store:   {plain:.2f} s ({lines} records)")
        print(
            f"  live store: {with_store:.2f} s, store holds {stored_lines(db, session.run_id)} "
            f"of {lines} when the run returns"
        )
        down, _ = night(root / "down", args.steps, dead)
        print(f"  dead store: {down:.2f} s (of which at most {WAIT_S:.0f} s is the bounded wait)")
        if down > plain + WAIT_S + 1.0:
            failed = True
        print(
            f"  mirror cost per record on the night: "
            f"{(with_store - plain) / lines * 1000:+.3f} ms (wall clock, noisy)"
        )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print("FAILED: a target was missed" if failed else "ok: targets met")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
