"""Engine overhead: milliseconds per step, and a 1,000-item fan-out against the simulator.

    .venv/bin/python bench/bench_engine.py [--steps 50] [--items 1000] [--concurrency 50]
                                           [--local-only] [--repeat 3] [--keep]

Every adapter call here does (almost) nothing, so what is timed is the engine:

- **per step, no Prefect**: generated runbooks of ``--steps`` ``wait``/``sleep 0s``
  steps, once all independent (runbook concurrency 4) and once as one chain, run
  in this process by the plain runner with :class:`LocalBridge` (journal fsync'd,
  as on the night). Best of ``--repeat``.
- **per step, through Prefect**: the same runbooks run by the real ``cutbook run``
  command against a Prefect server this bench starts on a free loopback port.
  Process start-up is excluded: the span is the journal's first ``step.started``
  to its last ``step.finished`` (``ts``, host time).
- **fan-out**: one step, ``for_each`` over a ``--items``-record CSV with
  ``concurrency`` ``--concurrency``, calling the simulator (calm): a read-only
  ``GET /catalogue/version`` and an idempotent mutating
  ``PUT /catalogue/version {"version": "2024"}``, through the full Prefect path
  (and, for information, through LocalBridge in this process).

Targets: <= 5 ms per step without Prefect, <= 100 ms per step through Prefect, a
1,000-item fan-out <= 30 s ("must add seconds, not minutes"). Prints a table,
writes ``bench/results/engine.json`` and exits 1 if a target is missed or a run fails.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import platform
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from cutbook.journal import read_records, verify
from cutbook_simulator.process import SimulatorProcess, free_port

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "engine.json"
CUTBOOK = Path(sys.executable).with_name("cutbook")

LOCAL_STEP_TARGET_MS = 5.0
PREFECT_STEP_TARGET_MS = 100.0
FANOUT_TARGET_S = 30.0

SPEED = 100_000  # virtual clock: nothing here waits, so the speed only has to be high
# A year-long window: at SPEED it lasts ~315 real seconds, far more than any run here.
WINDOW = {"start": "2025-01-01T00:00", "end": "2026-01-01T00:00"}
FANOUT_STEP = "fan-out"


# ---------------------------------------------------------------- runbooks


def _runbook(name: str, steps: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {
        "apiVersion": "cutbook/v1",
        "name": name,
        "timezone": "UTC",
        "window": WINDOW,
        "concurrency": 4,
        "defaults": {"estimate": "0s"},
        **extra,
        "steps": steps,
    }


def steps_runbook(n: int, shape: str) -> dict[str, Any]:
    """``n`` wait/sleep-0s steps: all independent, or one chain."""
    steps: list[dict[str, Any]] = []
    for i in range(n):
        step: dict[str, Any] = {
            "id": f"s{i:04d}",
            "target": "idle",
            "action": "sleep",
            "with": {"duration": "0s"},
        }
        if shape == "chain" and i:
            step["depends_on"] = [f"s{i - 1:04d}"]
        steps.append(step)
    return _runbook(f"bench-{shape}", steps, targets={"idle": {"adapter": "wait"}})


def fanout_runbook(kind: str, concurrency: int) -> dict[str, Any]:
    step: dict[str, Any] = {
        "id": FANOUT_STEP,
        "target": "estate",
        "for_each": "{{ data.offices }}",
        "item_key": "{{ item.code }}",
        "concurrency": concurrency,
    }
    if kind == "get":
        step.update(action="get", with_={"path": "/catalogue/version"})
    else:  # idempotent: changed=false once the version is 2024
        step.update(action="put", with_={"path": "/catalogue/version", "json": {"version": "2024"}})
    step["with"] = step.pop("with_")
    return _runbook(
        f"bench-fanout-{kind}",
        [step],
        vars={"estate_url": "http://127.0.0.1:1"},
        data={"offices": "offices.csv"},
        targets={"estate": {"adapter": "http", "base_url": "{{ vars.estate_url }}"}},
    )


def write_inputs(base: Path, n_steps: int, n_items: int, concurrency: int) -> dict[str, Path]:
    base.mkdir(parents=True, exist_ok=True)
    with (base / "offices.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["code", "name", "region"])
        for i in range(n_items):
            writer.writerow([f"B{i:05d}", f"Bench office {i}", f"region-{i % 7}"])
    paths = {}
    docs = {
        "independent": steps_runbook(n_steps, "independent"),
        "chain": steps_runbook(n_steps, "chain"),
        "fanout-get": fanout_runbook("get", concurrency),
        "fanout-put": fanout_runbook("put", concurrency),
    }
    for name, doc in docs.items():
        # JSON is YAML: no formatting surprises in generated text.
        path = base / f"{name}.yaml"
        path.write_text(json.dumps(doc, indent=1) + "\n")
        paths[name] = path
    return paths


# ---------------------------------------------------------------- journal analysis


@dataclass
class Span:
    """What the journal says about one run (host time, ``ts``)."""

    steps: int
    span_s: float  # first step.started → last step.finished
    inside_ms: float  # mean step.started → step.finished of a step
    records: int
    step_records: int  # records naming the step (fan-out: the one step)
    outcome: str
    startup_s: float | None = None  # process spawn → first step.started (Prefect path)
    total_s: float | None = None  # process wall time (Prefect path)
    cpu_s: float | None = None  # CPU of the cutbook process, whole run (Prefect path)

    @property
    def per_step_ms(self) -> float:
        return self.span_s * 1000 / max(self.steps, 1)


def _ts(record: dict[str, Any]) -> float:
    return datetime.fromisoformat(record["ts"]).timestamp()


def analyse(path: Path, step: str | None = None) -> Span:
    check = verify(path)
    if not check.ok:
        raise SystemExit(f"the journal {path} does not verify: {check.describe()}")
    records = list(read_records(path))
    started = {r["step"]: _ts(r) for r in records if r["event"] == "step.started"}
    finished = {r["step"]: _ts(r) for r in records if r["event"] == "step.finished"}
    if step is not None:
        started = {k: v for k, v in started.items() if k == step}
        finished = {k: v for k, v in finished.items() if k == step}
    if not started or set(started) != set(finished):
        raise SystemExit(f"{path}: steps started and finished do not match")
    inside = [finished[s] - started[s] for s in started]
    outcome = next((r.get("outcome") for r in records if r["event"] == "run.finished"), None)
    return Span(
        steps=len(started),
        span_s=max(finished.values()) - min(started.values()),
        inside_ms=statistics.fmean(inside) * 1000,
        records=len(records),
        step_records=sum(1 for r in records if step is not None and r.get("step") == step),
        outcome=str(outcome),
    )


# ---------------------------------------------------------------- no Prefect


async def _local_once(
    path: Path, data_dir: Path, run_id: str, estate_url: str | None, fsync: bool
) -> tuple[float, Path]:
    from cutbook.engine.local import LocalBridge
    from cutbook.engine.session import RunSettings, Session
    from cutbook.logs import configure
    from cutbook.validation import load

    overrides = {"estate_url": estate_url} if estate_url else None
    loaded = load(path, overrides=overrides)
    settings = RunSettings(
        data_dir=data_dir,
        clock="virtual",
        speed=SPEED,
        auto_approve=True,
        run_id=run_id,
        started_by="bench",
    )
    session = Session(loaded, settings)
    with open(os.devnull, "w") as devnull:
        # As `cutbook run` does, minus the terminal: formatting cost included, I/O not.
        configure(redactor=session.redactor, stream=devnull)
        await session.prepare()
        assert session.journal is not None
        if not fsync:
            session.journal._fsync = False  # information only: how much is the disk
        runner = session.runner_for(LocalBridge())
        # The session API is moving: older versions record the start here, newer in prepare().
        for name in ("record_start", "attach_flow_run"):
            if hasattr(session, name):
                getattr(session, name)(None, None)
                break
        outcome = None
        started = time.perf_counter()
        try:
            outcome = await runner.run()
        finally:
            elapsed = time.perf_counter() - started
            await session.finish(outcome)
    if outcome != "succeeded":
        raise SystemExit(f"local run {run_id} ended {outcome}: {runner.failure}")
    return elapsed, session.journal.path


def run_local(
    path: Path, data_dir: Path, run_id: str, estate_url: str | None = None, fsync: bool = True
) -> tuple[float, Path]:
    return asyncio.run(_local_once(path, data_dir, run_id, estate_url, fsync))


# ---------------------------------------------------------------- Prefect


@contextmanager
def prefect_server(home: Path) -> Iterator[tuple[str, float, int]]:
    """A Prefect server of our own on a free loopback port; its process group dies with us."""
    from cutbook.engine.prefect.server import start_server

    port = free_port()
    started = time.perf_counter()
    proc = start_server(home, port)
    took = time.perf_counter() - started
    try:
        yield f"http://127.0.0.1:{port}/api", took, proc.pid
    finally:
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)


def run_cutbook(
    path: Path,
    api_url: str,
    data_dir: Path,
    run_id: str,
    estate_url: str | None = None,
    step: str | None = None,
) -> Span:
    env = {
        **os.environ,
        "PREFECT_API_URL": api_url,
        "CUTBOOK_DATA_DIR": str(data_dir),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
    }
    env.pop("CUTBOOK_JOURNAL_DIR", None)
    env.pop("CUTBOOK_JOURNAL_KEY", None)
    cmd = [str(CUTBOOK), "run", str(path), "--clock", "virtual", "--speed", str(SPEED)]
    cmd += ["--auto-approve", "--run-id", run_id]
    if estate_url:
        cmd += ["--var", f"estate_url={estate_url}"]
    logs = data_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    spawned = time.time()
    cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with (logs / f"{run_id}.out").open("wb") as out, (logs / f"{run_id}.err").open("wb") as err:
        proc = subprocess.Popen(
            cmd, env=env, stdout=out, stderr=err, stdin=subprocess.DEVNULL, start_new_session=True
        )
        try:
            code = proc.wait(timeout=600)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    total = time.time() - spawned
    cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if code != 0:
        tail = (logs / f"{run_id}.err").read_text(errors="replace")[-3000:]
        raise SystemExit(f"cutbook run {run_id} exited {code}:\n{tail}")
    journal = data_dir / "journal" / f"{run_id}.jsonl"
    span = analyse(journal, step)
    first = min(_ts(r) for r in read_records(journal) if r["event"] == "step.started")
    span.startup_s = first - spawned
    span.total_s = total
    span.cpu_s = (cpu_after.ru_utime + cpu_after.ru_stime) - (
        cpu_before.ru_utime + cpu_before.ru_stime
    )
    return span


# ---------------------------------------------------------------- simulator


def sim_seq(url: str) -> int:
    calls = httpx.get(f"{url}/admin/calls", params={"since": 0}, timeout=30).json()
    return max((c["seq"] for c in calls), default=0)


def sim_calls_since(url: str, since: int) -> Counter[str]:
    calls = httpx.get(f"{url}/admin/calls", params={"since": since}, timeout=30).json()
    return Counter(f"{c['method']} {c['status']}" for c in calls)


def cpu_seconds(pid: int | None, group: bool = False) -> float:
    """User+system CPU of a process (or of its whole process group) from /proc; 0 if unknown."""
    if pid is None:
        return 0.0
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    pids = [p for p in os.listdir("/proc") if p.isdigit()] if group else [str(pid)]
    for p in pids:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        # after the command: state ppid pgrp ... utime(12) stime(13)
        if group and int(fields[2]) != pid:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick
    return total


async def _raw(url: str, kind: str, items: int, concurrency: int) -> float:
    """The same calls the fan-out makes, straight from httpx: what the estate alone costs."""
    gate = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:

        async def one(i: int) -> None:
            async with gate:
                if kind == "get":  # apply, then the adapter's verify repeats the GET
                    for _ in range(2):
                        (await client.get("/catalogue/version")).raise_for_status()
                else:
                    reply = await client.put(
                        "/catalogue/version",
                        json={"version": "2024"},
                        headers={"Idempotency-Key": f"raw-{kind}-{i}-{time.time_ns()}"},
                    )
                    reply.raise_for_status()

        started = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(items)))
        return time.perf_counter() - started


def raw_baseline(url: str, kind: str, items: int, concurrency: int) -> float:
    return asyncio.run(_raw(url, kind, items, concurrency))


# ---------------------------------------------------------------- main


@dataclass
class Measure:
    name: str
    value: float
    unit: str
    target: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool | None:
        return None if self.target is None else self.value <= self.target


def _load() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def _per_step(shape: str, where: str, span: Span, target: float, **extra: Any) -> Measure:
    return Measure(
        f"per step, {where}, {shape}",
        span.per_step_ms,
        "ms/step",
        target,
        extra={
            "steps": span.steps,
            "span_s": round(span.span_s, 4),
            "inside_step_ms": round(span.inside_ms, 3),
            "journal_records": span.records,
            **extra,
        },
    )


def _fanout(
    kind: str, where: str, items: int, span: Span, target: float | None, **extra: Any
) -> Measure:
    return Measure(
        f"fan-out {items} x {kind.upper()}, {where}",
        span.span_s,
        "s",
        target,
        extra={
            "items_per_s": round(items / span.span_s, 1),
            "ms_per_item": round(span.span_s * 1000 / items, 3),
            "step_journal_records": span.step_records,
            **extra,
        },
    )


def _detail(m: Measure) -> str:
    x = m.extra
    if m.unit == "ms/step":
        text = f"{x['steps']} steps in {x['span_s']:.2f} s, {x['journal_records']} records"
        if "no_fsync_ms_per_step" in x:
            text += f"; without fsync {x['no_fsync_ms_per_step']:.2f} ms/step"
        if "startup_s" in x:
            text += f"; cutbook start-up {x['startup_s']:.1f} s (excluded)"
        return text
    calls = sum(x["simulator_calls"].values())
    text = (
        f"{x['items_per_s']:.0f} items/s; {x['step_journal_records']} records; "
        f"{calls} sim calls; same calls bare {x['raw_http_s']:.1f} s"
    )
    cpu = [f"sim {x['simulator_cpu_s']:.1f}"]
    if "cutbook_cpu_s" in x:
        cpu.insert(0, f"cutbook {x['cutbook_cpu_s']:.1f}")
    if "prefect_server_cpu_s" in x:
        cpu.append(f"prefect {x['prefect_server_cpu_s']:.1f}")
    return text + "; CPU s: " + ", ".join(cpu)


def measure_steps(paths: dict[str, Path], base: Path, repeat: int) -> list[Measure]:
    local_dir = base / "local"
    measures = []
    run_local(paths["chain"], local_dir, "warm-up")  # imports, first-use caches
    for shape in ("independent", "chain"):
        spans = []
        for k in range(repeat):
            _, journal = run_local(paths[shape], local_dir, f"local-{shape}-{k}")
            spans.append(analyse(journal))
        best = min(spans, key=lambda sp: sp.span_s)
        _, journal = run_local(paths[shape], local_dir, f"local-{shape}-nofsync", fsync=False)
        bare = analyse(journal)
        measures.append(
            _per_step(
                shape,
                "LocalBridge",
                best,
                LOCAL_STEP_TARGET_MS,
                runs_ms_per_step=[round(sp.per_step_ms, 3) for sp in spans],
                no_fsync_ms_per_step=round(bare.per_step_ms, 3),
            )
        )
        print(f"  {measures[-1].name}: {best.per_step_ms:.2f} ms/step", flush=True)
    return measures


def measure_fanout_local(
    paths: dict[str, Path], base: Path, sim: SimulatorProcess, args: argparse.Namespace
) -> list[Measure]:
    measures = []
    for kind in ("get", "put"):
        raw = raw_baseline(sim.url, kind, args.items, args.concurrency)
        seq, sim_cpu = sim_seq(sim.url), cpu_seconds(sim.pid)
        cpu = time.process_time()
        _, journal = run_local(
            paths[f"fanout-{kind}"], base / "local", f"local-fanout-{kind}", sim.url
        )
        cpu = time.process_time() - cpu
        span = analyse(journal, FANOUT_STEP)
        measures.append(
            _fanout(
                kind,
                "LocalBridge",
                args.items,
                span,
                None,
                simulator_calls=dict(sim_calls_since(sim.url, seq)),
                simulator_cpu_s=round(cpu_seconds(sim.pid) - sim_cpu, 2),
                cutbook_cpu_s=round(cpu, 2),
                raw_http_s=round(raw, 3),
            )
        )
        print(f"  {measures[-1].name}: {span.span_s:.2f} s (bare HTTP {raw:.2f} s)", flush=True)
    return measures


def measure_prefect(
    paths: dict[str, Path], base: Path, sim: SimulatorProcess, args: argparse.Namespace
) -> tuple[list[Measure], float]:
    measures = []
    with prefect_server(base / "prefect") as (api_url, server_s, server_pid):
        print(f"  Prefect server up in {server_s:.1f} s at {api_url}", flush=True)
        data_dir = base / "data"
        run_cutbook(paths["chain"], api_url, data_dir, "prefect-warm-up")
        for shape in ("independent", "chain"):
            span = run_cutbook(paths[shape], api_url, data_dir, f"prefect-{shape}")
            measures.append(
                _per_step(
                    shape,
                    "Prefect",
                    span,
                    PREFECT_STEP_TARGET_MS,
                    startup_s=round(span.startup_s or 0, 3),
                    process_total_s=round(span.total_s or 0, 3),
                    cutbook_cpu_s=round(span.cpu_s or 0, 2),
                )
            )
            print(f"  {measures[-1].name}: {span.per_step_ms:.1f} ms/step", flush=True)
        for kind in ("get", "put"):
            raw = raw_baseline(sim.url, kind, args.items, args.concurrency)
            seq, sim_cpu = sim_seq(sim.url), cpu_seconds(sim.pid)
            server_cpu = cpu_seconds(server_pid, group=True)
            span = run_cutbook(
                paths[f"fanout-{kind}"],
                api_url,
                data_dir,
                f"prefect-fanout-{kind}",
                sim.url,
                FANOUT_STEP,
            )
            measures.append(
                _fanout(
                    kind,
                    "Prefect",
                    args.items,
                    span,
                    FANOUT_TARGET_S * args.items / 1000,
                    simulator_calls=dict(sim_calls_since(sim.url, seq)),
                    simulator_cpu_s=round(cpu_seconds(sim.pid) - sim_cpu, 2),
                    prefect_server_cpu_s=round(cpu_seconds(server_pid, group=True) - server_cpu, 2),
                    cutbook_cpu_s=round(span.cpu_s or 0, 2),
                    raw_http_s=round(raw, 3),
                    journal_records=span.records,
                    startup_s=round(span.startup_s or 0, 3),
                    process_total_s=round(span.total_s or 0, 3),
                )
            )
            print(f"  {measures[-1].name}: {span.span_s:.2f} s (bare HTTP {raw:.2f} s)", flush=True)
    return measures, server_s


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--items", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=3, help="local runs per shape (best kept)")
    parser.add_argument("--local-only", action="store_true", help="skip the Prefect measures")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (journals, logs)")
    parser.add_argument("--no-write", action="store_true", help="do not write the results file")
    args = parser.parse_args(argv)

    def interrupted(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # so every finally runs: servers stopped, temp dir removed

    signal.signal(signal.SIGTERM, interrupted)
    base = Path(tempfile.mkdtemp(prefix="cutbook-bench-engine-"))
    load_before = _load()
    measures: list[Measure] = []
    failures: list[str] = []
    server_s = None
    t0 = time.perf_counter()
    try:
        paths = write_inputs(base / "runbooks", args.steps, args.items, args.concurrency)
        measures += measure_steps(paths, base, args.repeat)
        with SimulatorProcess(faults="calm") as sim:
            measures += measure_fanout_local(paths, base, sim, args)
            if not args.local_only:
                got, server_s = measure_prefect(paths, base, sim, args)
                measures += got
    except SystemExit as exc:  # a run failed: report it with whatever was measured
        failures.append(str(exc))
    finally:
        if args.keep:
            print(f"kept: {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)

    total = time.perf_counter() - t0
    load_after = _load()
    print()
    print(f"{'measure':36} {'value':>8} {'unit':8} {'target':>8}  ok   detail")
    for m in measures:
        target = f"<= {m.target:g}" if m.target is not None else "-"
        ok = "-" if m.ok is None else ("yes" if m.ok else "NO")
        print(f"{m.name:36} {m.value:>8.2f} {m.unit:8} {target:>8}  {ok:4} {_detail(m)}")
    missed = [m.name for m in measures if m.ok is False]
    for failure in failures:
        print(f"FAILED: {failure}")
    print(
        f"load average before/after: {load_before} / {load_after} on {os.cpu_count()} CPUs; "
        f"{total:.0f} s in all"
    )

    if not args.no_write:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        doc = {
            "bench": "engine",
            "when": datetime.now(UTC).isoformat(timespec="seconds"),
            "host": {
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
                "platform": platform.platform(),
                "load_before": load_before,
                "load_after": load_after,
            },
            "parameters": {
                "steps": args.steps,
                "items": args.items,
                "concurrency": args.concurrency,
                "repeat": args.repeat,
                "local_only": args.local_only,
                "speed": SPEED,
            },
            "targets": {
                "local_ms_per_step": LOCAL_STEP_TARGET_MS,
                "prefect_ms_per_step": PREFECT_STEP_TARGET_MS,
                "fanout_s_per_1000_items": FANOUT_TARGET_S,
            },
            "prefect_server_start_s": None if server_s is None else round(server_s, 2),
            "measures": [{**asdict(m), "ok": m.ok} for m in measures],
            "missed": missed,
            "failures": failures,
            "ok": not missed and not failures,
        }
        RESULTS.write_text(json.dumps(doc, indent=2) + "\n")
        print(f"results: {RESULTS.relative_to(ROOT)}")
    return 0 if not missed and not failures else 1


if __name__ == "__main__":
    sys.exit(main())
