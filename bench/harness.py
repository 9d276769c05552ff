"""Shared pieces of the side-by-side benchmarks (issue 14) and the report they feed.

Each ``bench_*.py`` that compares cutbook with what people would use instead
imports this module (``bench/`` is on ``sys.path`` when a bench runs as a
script), measures its competitors in turn, several times, in the same session,
and saves one JSON document under ``bench/results/``. ``bench/run.py`` then
calls :func:`write_report`, which turns every saved document into
``docs/performance.md``.

Settings come from the environment so that ``make bench RUNS=5 QUICK=1`` reaches
every bench: ``BENCH_RUNS`` (rounds per comparison, default 3) and
``BENCH_QUICK`` (``1``: fewer items, for a smoke run).
"""

from __future__ import annotations

import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
RESULTS = BENCH / "results"
REPORT = ROOT / "docs" / "performance.md"
LAST_RUN = RESULTS / "last-run.json"  # the last run.py's summary, for --report-only
FINDINGS = BENCH / "findings.md"  # hand-written: where the time goes; copied into the report
CUSTOMS = ROOT / "runbooks" / "customs-reorg-2025.yaml"
BIN = Path(sys.executable).parent
CUTBOOK = BIN / "cutbook"
ANSIBLE_VENV = BENCH / ".venv-ansible"
DEMO_TOKEN = "bench-not-a-real-token"  # the customs runbook declares the VNACCS_TOKEN secret


# ---------------------------------------------------------------- settings


@dataclass(frozen=True)
class Settings:
    runs: int
    quick: bool

    @classmethod
    def from_env(cls) -> Settings:
        quick = os.environ.get("BENCH_QUICK", "").strip() not in ("", "0", "false", "no")
        runs = int(os.environ.get("BENCH_RUNS", "") or "3")
        return cls(runs=max(1, runs), quick=quick)


def machine() -> dict[str, Any]:
    model = platform.processor() or platform.machine()
    with suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = []
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "os": platform.platform(),
        "load": load,
    }


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100): with few values, the worst one counts."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-q * len(ordered) // 100))))
    return ordered[rank - 1]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# ---------------------------------------------------------------- child processes


@dataclass
class Child:
    """One finished child process: wall time, CPU (user+system) and peak memory."""

    code: int
    wall_s: float
    cpu_s: float
    maxrss_mb: float
    stdout: str = ""
    stderr: str = ""

    def check(self, what: str) -> Child:
        if self.code != 0:
            tail = (self.stderr or self.stdout)[-2500:]
            raise SystemExit(f"{what} exited {self.code}:\n{tail}")
        return self


def run_child(
    cmd: Sequence[str],
    *,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 900.0,
    capture: bool = True,
) -> Child:
    """Run ``cmd`` and measure it with ``wait4``: this child's own rusage, nobody else's.

    The child gets its own process group; on timeout the whole group is killed.
    """
    out = subprocess.PIPE if capture else subprocess.DEVNULL
    started = time.perf_counter()
    proc = subprocess.Popen(
        list(cmd),
        env=env,
        cwd=cwd or ROOT,
        stdin=subprocess.DEVNULL,
        stdout=out,
        stderr=out,
        start_new_session=True,
    )

    def kill() -> None:
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)

    timer = threading.Timer(timeout, kill)
    timer.daemon = True
    timer.start()
    chunks: dict[str, bytes] = {"out": b"", "err": b""}
    readers = []
    for name, stream in (("out", proc.stdout), ("err", proc.stderr)):
        if stream is None:
            continue

        def read(name: str = name, stream: Any = stream) -> None:
            chunks[name] = stream.read()

        thread = threading.Thread(target=read, daemon=True)
        thread.start()
        readers.append(thread)
    try:
        _, status, usage = os.wait4(proc.pid, 0)
    except BaseException:
        kill()
        raise
    finally:
        timer.cancel()
    wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    for thread in readers:
        thread.join(timeout=10)
    # Linux reports ru_maxrss in KiB.
    return Child(
        code=proc.returncode,
        wall_s=wall,
        cpu_s=usage.ru_utime + usage.ru_stime,
        maxrss_mb=usage.ru_maxrss / 1024,
        stdout=chunks["out"].decode(errors="replace"),
        stderr=chunks["err"].decode(errors="replace"),
    )


def stop_group(proc: subprocess.Popen[bytes], grace: float = 15.0) -> None:
    if proc.poll() is not None:
        return
    with suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)


def _wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited {proc.returncode} before it answered")
        try:
            with urllib.request.urlopen(url, timeout=1.0) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError, TimeoutError):
            pass
        time.sleep(0.05)
    raise SystemExit(f"{what} did not answer {url} within {timeout:g} s")


# ---------------------------------------------------------------- servers


@contextmanager
def target_server(latency_ms: float) -> Iterator[str]:
    """``bench/target_server.py`` in its own process: every request sleeps ``latency_ms``."""
    port = free_port()
    cmd = [sys.executable, str(BENCH / "target_server.py"), "--port", str(port)]
    cmd += ["--latency-ms", str(latency_ms)]
    proc = subprocess.Popen(
        cmd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_http(f"{url}/_health", proc, 20.0, "the target server")
        yield url
    finally:
        stop_group(proc)


def target_calls(url: str) -> int:
    """How many requests the target server has answered so far (``/_health`` excluded)."""
    with urllib.request.urlopen(f"{url}/_count", timeout=10) as resp:
        return int(json.loads(resp.read())["count"])


@contextmanager
def prefect_server(home: Path) -> Iterator[tuple[str, float]]:
    """A Prefect server of our own on a free loopback port (never 4200); stopped at the end."""
    from cutbook.engine.prefect.server import start_server

    port = free_port()
    started = time.perf_counter()
    proc = start_server(home, port)
    took = time.perf_counter() - started
    url = f"http://127.0.0.1:{port}/api"
    _SERVERS[url] = proc.pid
    try:
        yield url, took
    finally:
        _SERVERS.pop(url, None)
        stop_group(proc)


_SERVERS: dict[str, int] = {}  # API URL → the server's process group


def group_cpu(pgid: int) -> float:
    """User+system CPU seconds of every live process in a process group (from /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid:  # after the name: state ppid pgrp ... utime(12) stime(13)
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def settle(
    api_url: str, quiet_cpu: float = 0.1, window: float = 1.0, limit: float = 120.0
) -> float:
    """Wait until the Prefect server at ``api_url`` is idle; returns the seconds waited.

    A burst of task runs (a ``task.map`` flow, a cutbook fan-out) keeps the server
    busy for a while after the client has finished; whoever runs next would pay for
    it. Idle: less than ``quiet_cpu`` CPU seconds used over ``window`` seconds.
    """
    pgid = _SERVERS.get(api_url)
    if pgid is None:
        return 0.0
    began = time.perf_counter()
    before = group_cpu(pgid)
    while time.perf_counter() - began < limit:
        time.sleep(window)
        now = group_cpu(pgid)
        if now - before < quiet_cpu:
            break
        before = now
    return time.perf_counter() - began


@dataclass
class Rounds:
    """A side-by-side bench's measurements: each competitor's (wall, CPU) per round, and
    how long the Prefect server took to go quiet before each Prefect or cutbook one."""

    runs: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    settled: list[float] = field(default_factory=list)

    def add(self, name: str, wall: float, cpu: float) -> None:
        self.runs.setdefault(name, []).append((wall, cpu))
        print(f"  {name}: {wall:.2f} s wall, {cpu:.2f} s CPU", flush=True)

    def quiet(self, api: str) -> None:
        """Let the Prefect server finish the last competitor's burst first."""
        self.settled.append(settle(api))

    def medians(self) -> tuple[dict[str, float], dict[str, float]]:
        """Median wall and median CPU seconds per competitor."""
        wall = {k: median([w for w, _ in v]) for k, v in self.runs.items()}
        cpu = {k: median([c for _, c in v]) for k, v in self.runs.items()}
        return wall, cpu

    def settle_note(self) -> str | None:
        if not self.settled:
            return None
        return (
            "Before each Prefect or cutbook competitor the bench waited until the Prefect "
            "server was idle (under 10 % CPU over a second), so nobody pays for the previous "
            f"burst: median wait {median(self.settled):.1f} s, longest "
            f"{max(self.settled):.1f} s."
        )


def cutbook_env(api_url: str | None, data_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    for name in ("CUTBOOK_JOURNAL_DIR", "CUTBOOK_JOURNAL_KEY", "CUTBOOK_AUDIT_STORE"):
        env.pop(name, None)
    env.update(
        {
            "CUTBOOK_DATA_DIR": str(data_dir),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "DO_NOT_TRACK": "1",
            "VNACCS_TOKEN": env.get("VNACCS_TOKEN", DEMO_TOKEN),
        }
    )
    if api_url is not None:
        env["PREFECT_API_URL"] = api_url
    return env


def write_runbook(path: Path, doc: dict[str, Any]) -> Path:
    """JSON is YAML: no formatting surprises in generated runbooks."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1) + "\n")
    return path


# ---------------------------------------------------------------- Ansible


def ensure_ansible() -> tuple[Path | None, str]:
    """``ansible-playbook`` from the benchmark's own virtualenv, installed on first use.

    ansible-core is never a cutbook dependency: it lives in ``bench/.venv-ansible``.
    Returns the executable, or ``None`` and why not.
    """
    playbook = ANSIBLE_VENV / "bin" / "ansible-playbook"
    if playbook.exists():
        return playbook, "installed"
    try:
        if not (ANSIBLE_VENV / "bin" / "python").exists():
            subprocess.run(
                [sys.executable, "-m", "venv", str(ANSIBLE_VENV)],
                check=True,
                capture_output=True,
                timeout=300,
            )
        subprocess.run(
            [
                str(ANSIBLE_VENV / "bin" / "python"),
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "ansible-core",
            ],
            check=True,
            capture_output=True,
            timeout=900,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        detail = getattr(exc, "stderr", b"") or b""
        reason = detail.decode(errors="replace").strip().splitlines()[-1:] or [str(exc)]
        return None, f"could not install ansible-core in bench/.venv-ansible: {reason[0]}"
    if not playbook.exists():
        return None, "ansible-core installed but ansible-playbook is missing"
    return playbook, "installed now"


# ---------------------------------------------------------------- results


@dataclass
class Target:
    """One row of the issue's target list: the target and the measured value beside it."""

    work: str
    target: str
    measured: str
    met: bool | None  # None: could not be measured
    note: str = ""


@dataclass
class Table:
    title: str
    columns: list[str]
    rows: list[list[str]]
    note: str = ""


@dataclass
class Result:
    bench: str
    title: str
    settings: Settings
    targets: list[Target] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)
    started: str = field(default_factory=now_iso)

    @property
    def ok(self) -> bool:
        return all(t.met is not False for t in self.targets)

    def save(self) -> Path:
        RESULTS.mkdir(parents=True, exist_ok=True)
        doc = {
            "bench": self.bench,
            "title": self.title,
            "started": self.started,
            "finished": now_iso(),
            "machine": machine(),
            "settings": {"runs": self.settings.runs, "quick": self.settings.quick},
            "targets": [vars(t) for t in self.targets],
            "tables": [vars(t) for t in self.tables],
            "notes": self.notes,
            "raw": self.raw,
        }
        path = RESULTS / f"{self.bench}.json"
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
        tmp.replace(path)
        return path

    def print(self) -> None:
        for table in self.tables:
            print(f"\n{table.title}")
            print(markdown_table(table.columns, table.rows))
        print("\ntargets")
        print(markdown_table(*_target_rows([vars(t) for t in self.targets])))


def fmt_s(seconds: float) -> str:
    if seconds != seconds:  # NaN
        return "–"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    return f"{seconds:.2f} s"


def fmt_ratio(x: float) -> str:
    return "–" if x != x else f"{x:.2f}×"


def markdown_table(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    def cell(text: str) -> str:
        return str(text).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(c) for c in columns) + " |"]
    lines.append("|" + "|".join("---" for _ in columns) + "|")
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _mark(met: bool | None) -> str:
    return {True: "✅ met", False: "❌ missed", None: "–"}[met]


def _target_rows(targets: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    columns = ["work", "target", "measured", "met", "note"]
    rows = [[t["work"], t["target"], t["measured"], _mark(t["met"]), t["note"]] for t in targets]
    return columns, rows


# ---------------------------------------------------------------- the report

ORDER = ["fanout", "sequential", "coldstart", "scale", "timing"]

INTRO = """\
# Performance

What these numbers mean for a night: cutbook's own cost is what it adds to a
cutover window on top of the estate's work. The **fan-out** and **sequential**
rows compare a whole `cutbook run` with the fastest thing that could make the
same HTTP calls (a bare client loop: the limit) and with what people would use
instead (a hand-written Prefect flow, an Ansible playbook); a target of
"1.5× bare + one flow run's fixed cost" means cutbook may add half again on top
of the raw calls plus the few seconds any run costs to start and finish. The
**cold start** rows are how long `validate` and `plan` take when you type them;
**scale** shows how a rehearsal grows with the number of offices; **timing** says
whether a step with an `at` ever starts early or noticeably late.

Every comparison runs its competitors in turn, in the same session, several
times; tables show medians (and the spread). Targets come from issue 14.
"""


def _load_results() -> list[dict[str, Any]]:
    docs = []
    for path in sorted(RESULTS.glob("*.json")):
        with suppress(OSError, ValueError):
            doc = json.loads(path.read_text())
            if isinstance(doc, dict) and "targets" in doc and "tables" in doc:
                docs.append(doc)
    docs.sort(key=lambda d: ORDER.index(d["bench"]) if d["bench"] in ORDER else len(ORDER))
    return docs


def write_report(
    summary: Sequence[tuple[str, str, float]] = (),
    settings: Settings | None = None,
    busy_note: str | None = None,
) -> Path:
    """Render every saved result (``bench/results/*.json``) into ``docs/performance.md``.

    ``summary``: (bench, outcome, seconds) of the benches ``run.py`` just ran.
    """
    settings = settings or Settings.from_env()
    docs = _load_results()
    host = machine()
    parts = [INTRO]
    when = now_iso()
    parts.append("## This run\n")
    mode = "QUICK=1 (fewer items: a smoke run)" if settings.quick else "full"
    parts.append(
        markdown_table(
            ["", ""],
            [
                ["date (UTC)", when],
                ["machine", f"{host['cpus']} × {host['cpu_model']}"],
                ["Python", host["python"]],
                ["OS", host["os"]],
                ["load average at the end (1/5/15 min)", " / ".join(map(str, host["load"]))],
                ["runs per comparison", str(settings.runs)],
                ["mode", mode],
            ],
        )
    )
    if busy_note:
        parts.append(f"\n> **Read with care:** {busy_note}\n")
    parts.append(
        "\n## How to reproduce\n\n"
        "```sh\n"
        "make bench                    # every bench/bench_*.py, then this page\n"
        "make bench RUNS=5             # five rounds per comparison (default 3)\n"
        "make bench QUICK=1            # fewer items: a smoke run of a few minutes\n"
        ".venv/bin/python bench/run.py fanout sequential   # only some benches; the page\n"
        "                              # is rebuilt from every result saved in bench/results/\n"
        "```\n\n"
        "Each bench starts what it needs on free loopback ports and stops it at the end: "
        "its own Prefect server (cutbook's `start_server`), the simulator, and "
        "`bench/target_server.py` (a tiny uvicorn/Starlette server whose every answer "
        "sleeps a fixed latency). Ansible runs from `bench/.venv-ansible`, which the "
        "harness creates on first use (`python -m venv` + `pip install ansible-core`); "
        "it is never a cutbook dependency. Timings of child processes come from "
        "`wait4` (each child's own CPU time and peak RSS).\n"
    )
    all_targets = [(d, t) for d in docs for t in d["targets"]]
    parts.append("## Targets (issue 14)\n")
    if all_targets:
        columns, rows = _target_rows([t for _, t in all_targets])
        columns.insert(1, "measured on")
        for row, (doc, _) in zip(rows, all_targets, strict=True):
            quick = " QUICK" if doc["settings"].get("quick") else ""
            row.insert(1, f"{doc['finished'][:16].replace('T', ' ')}{quick}")
        parts.append(markdown_table(columns, rows))
        missed = [t for _, t in all_targets if t["met"] is False]
        parts.append(
            f"\n{len(all_targets) - len(missed)} of {len(all_targets)} targets met"
            + (f"; missed: {'; '.join(t['work'] for t in missed)}." if missed else ".")
            + "\n"
        )
    else:
        parts.append("No results saved yet: run `make bench`.\n")
    if FINDINGS.exists():
        parts.append(FINDINGS.read_text(encoding="utf-8").rstrip() + "\n")
    for doc in docs:
        parts.append(f"## {doc['title']}\n")
        settings_text = f"{doc['settings']['runs']} run(s)" + (
            ", QUICK" if doc["settings"].get("quick") else ""
        )
        load = " / ".join(map(str, doc["machine"].get("load", [])))
        parts.append(f"_Measured {doc['finished']}, {settings_text}, load average {load}._\n")
        for table in doc["tables"]:
            parts.append(f"**{table['title']}**\n")
            parts.append(markdown_table(table["columns"], table["rows"]))
            if table.get("note"):
                parts.append(f"\n{table['note']}")
            parts.append("")
        for note in doc["notes"]:
            parts.append(f"- {note}")
        parts.append("")
    if summary:
        parts.append("## Every bench in this `make bench`\n")
        parts.append(
            "The older benches (`bench_validate`, `bench_plan`, `bench_journal`, "
            "`bench_simulator`, `bench_engine`, `bench_audit_store`) print their own "
            "tables; see [bench/README.md](../bench/README.md). Exit status here:\n"
        )
        parts.append(
            markdown_table(
                ["bench", "outcome", "seconds"],
                [[name, outcome, f"{secs:.0f}"] for name, outcome, secs in summary],
            )
        )
        parts.append("")
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text("\n".join(parts).rstrip() + "\n")
    LAST_RUN.write_text(
        json.dumps(
            {
                "summary": [list(row) for row in summary],
                "settings": {"runs": settings.runs, "quick": settings.quick},
                "busy_note": busy_note,
            },
            indent=2,
            ensure_ascii=False,
        )
        + "\n"
    )
    return REPORT


def rewrite_report() -> Path:
    """Rebuild the report from the saved results and the last ``make bench``'s summary."""
    try:
        last = json.loads(LAST_RUN.read_text())
    except (OSError, ValueError):
        return write_report()
    summary = [(str(n), str(o), float(s)) for n, o, s in last.get("summary", [])]
    settings = Settings(**last["settings"]) if "settings" in last else None
    return write_report(summary, settings, last.get("busy_note"))


# ---------------------------------------------------------------- cutbook runs


def http_runbook(name: str, steps: list[dict[str, Any]], url: str, **extra: Any) -> dict[str, Any]:
    """A runbook on the real clock whose one target is ``url`` through the http adapter."""
    return {
        "apiVersion": "cutbook/v1",
        "name": name,
        "timezone": "UTC",
        "window": {"start": "2025-01-01T00:00", "end": "2025-01-02T00:00"},
        "concurrency": 4,
        "defaults": {"estimate": "0s"},
        "vars": {"url": url},
        "targets": {"target": {"adapter": "http", "base_url": "{{ vars.url }}"}},
        **extra,
        "steps": steps,
    }


def cutbook_run(
    runbook: Path,
    api_url: str,
    data_dir: Path,
    run_id: str,
    *,
    extra: Sequence[str] = (),
    timeout: float = 1800.0,
) -> Child:
    """``cutbook run`` as a child process on the real clock, its window placed at now."""
    start = datetime.now(UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%S")
    cmd = [str(CUTBOOK), "run", str(runbook), "--run-id", run_id, "--auto-approve"]
    cmd += ["--start", start, *extra] if "--clock" not in extra else list(extra)
    return run_child(cmd, env=cutbook_env(api_url, data_dir), timeout=timeout).check(
        f"cutbook run {run_id}"
    )
