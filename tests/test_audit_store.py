"""The shared audit store: every journal line also in one SQL table, read from anywhere.

Real databases: SQLite through aiosqlite for most cases (fast), and one test
against a real PostgreSQL 15 cluster (``pg_support``). Runs are real runs,
in-process with the LocalBridge, or journals written by the real Journal.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

import pytest
from structlog.testing import capture_logs

from cutbook import registry
from cutbook.adapter import ActionSpec, Args, BaseAdapter, Call, Result
from cutbook.cli.app import main
from cutbook.engine.local import LocalBridge
from cutbook.engine.session import RunSettings, Session
from cutbook.journal import Event, Journal, verify
from cutbook.journal.store import (
    ENV_VAR,
    TABLE_NAME,
    AuditStore,
    StoreMirror,
    resolve_url,
    show_url,
    without_password,
)
from cutbook.validation import load
from pg_support import PgCluster, postgres_cluster  # noqa: F401  (the fixture)

CUTBOOK = str(Path(sys.executable).with_name("cutbook"))
PASSWORD = "Sup3r-S3cret-Audit-pw"


class NoteArgs(Args):
    key: str


class NoteAdapter(BaseAdapter):
    """A target that only remembers what it was told: real calls, no network."""

    name: ClassVar[str] = "audit-note"
    actions: ClassVar[Mapping[str, ActionSpec]] = {
        "note": ActionSpec(args=NoteArgs, description="note a key", reversible=True),
    }

    async def apply(self, call: Call) -> Result:
        args = call.args
        assert isinstance(args, NoteArgs)
        return Result(changed=True, summary=f"noted {args.key}", output={"key": args.key})

    async def rollback(self, call: Call) -> Result:
        return Result(changed=True, summary="forgotten")


registry.register("audit-note", NoteAdapter)


def runbook(tmp_path: Path, steps: int) -> Path:
    lines = [
        "apiVersion: cutbook/v1",
        "name: audit-store",
        "timezone: Asia/Ho_Chi_Minh",
        'window: {start: "2025-03-14T23:00", end: "2025-03-15T05:00"}',
        "targets:",
        "  notes: {adapter: audit-note}",
        "steps:",
    ]
    for n in range(steps):
        after = f", depends_on: [s{n - 1:03d}]" if n else ""
        lines.append(
            f"  - {{id: s{n:03d}, target: notes, action: note, with: {{key: k{n}}}{after}}}"
        )
    path = tmp_path / "rb.yaml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def run_night(tmp_path: Path, *, store: str | None, steps: int = 5) -> tuple[Session, float]:
    """A real rehearsal run in-process; returns the session and the seconds it took."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    settings = RunSettings(
        data_dir=tmp_path / "data", clock="virtual", speed=3600, audit_store=store
    )
    session = Session(load(runbook(tmp_path, steps)), settings)

    async def go() -> None:
        await session.prepare()
        runner = session.runner_for(LocalBridge())
        outcome = await runner.run()
        await session.finish(outcome)
        assert outcome == "succeeded"

    began = time.monotonic()
    asyncio.run(go())
    return session, time.monotonic() - began


def sqlite_url(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


def stored(db: Path, run_id: str) -> list[str]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            f"SELECT record FROM {TABLE_NAME} WHERE run_id = ? ORDER BY seq", (run_id,)
        )
        return [r[0] for r in rows]


def file_lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # nobody listens once it is closed


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    """``cutbook`` in-process: exit code and everything printed."""
    try:
        main(list(argv))
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    done = capsys.readouterr()
    return code, done.out + done.err


@pytest.fixture(autouse=True)
def no_store_in_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No store, and no journals, but what each test makes."""
    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.delenv("CUTBOOK_JOURNAL_DIR", raising=False)
    monkeypatch.setenv("CUTBOOK_DATA_DIR", str(tmp_path / "default-data"))
    monkeypatch.setenv("CUTBOOK_AUDIT_STORE_WAIT", "2")
    yield


def write_journal(
    directory: Path, run_id: str, records: int, mirror: StoreMirror | None, *, close: bool = True
) -> Journal:
    """A finished journal written by the real writer (closing it closes its mirror)."""
    journal = Journal.create(directory, run_id, mirror=mirror)
    journal.append(Event.RUN_STARTED, runbook_name="rb", timezone="UTC", clock="real")
    for n in range(records):
        journal.append(Event.STEP_STARTED, step=f"s{n}")
    journal.append(Event.RUN_FINISHED, outcome="succeeded", error=None)
    if close:
        journal.close()
    return journal


def wait_for(check: Any, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


# ---------------------------------------------------------------- a run reaches the store


def test_a_runs_records_reach_the_store_byte_for_byte(tmp_path: Path) -> None:
    db = tmp_path / "shared" / "audit.db"
    session, _ = run_night(tmp_path / "w1", store=sqlite_url(db))
    assert session.journal is not None
    path = session.journal.path
    assert stored(db, session.run_id) == file_lines(path)
    with sqlite3.connect(db) as conn:
        seqs = [r[0] for r in conn.execute(f"SELECT seq FROM {TABLE_NAME} ORDER BY seq")]
        hashes = [r[0] for r in conn.execute(f"SELECT hash FROM {TABLE_NAME} ORDER BY seq")]
    assert seqs == list(range(len(seqs)))
    assert hashes == [json.loads(line)["hash"] for line in file_lines(path)]


def test_auditors_read_from_the_store_in_another_directory(tmp_path: Path) -> None:
    db = tmp_path / "shared" / "audit.db"
    session, _ = run_night(tmp_path / "worker", store=sqlite_url(db))
    elsewhere = tmp_path / "auditor"
    elsewhere.mkdir()
    env = {"PATH": "/usr/bin:/bin", "HOME": str(elsewhere), "NO_COLOR": "1", "COLUMNS": "200"}

    def audit(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [CUTBOOK, "audit", *args],
            cwd=elsewhere,
            env={**env, ENV_VAR: sqlite_url(db)},
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )

    listed = audit("list")
    assert listed.returncode == 0, listed.stderr
    assert session.run_id in listed.stdout and "succeeded" in listed.stdout
    verified = audit("verify", session.run_id[:-2], "--store", sqlite_url(db))
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert f"{session.run_id}: " in verified.stdout and "OK: " in verified.stdout
    assert "signatures: none" in verified.stdout
    report = audit("report", session.run_id, "-f", "json")
    assert report.returncode == 0, report.stderr
    data = json.loads(report.stdout)
    assert data["run"]["run_id"] == session.run_id
    shown = audit("show", session.run_id)
    assert shown.returncode == 0 and "run.finished" in shown.stdout
    all_runs = audit("verify", "--all")
    assert all_runs.returncode == 0 and session.run_id in all_runs.stdout
    # nothing was read from or written to this user's own data directory
    assert not (elsewhere / ".local" / "share" / "cutbook" / "journal").exists()


# ---------------------------------------------------------------- the store is down


def test_a_store_that_is_down_neither_fails_nor_slows_the_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    down = f"postgresql+asyncpg://cutbook:{PASSWORD}@127.0.0.1:{closed_port()}/audit"
    _, baseline = run_night(tmp_path / "plain", store=None, steps=20)
    with capture_logs() as logs:
        session, took = run_night(tmp_path / "down", store=down, steps=20)
    assert session.journal is not None and verify(session.journal.path).passed
    # the only cost is the bounded wait at the end (CUTBOOK_AUDIT_STORE_WAIT=2)
    assert took < baseline + 2.0 + 1.5, (took, baseline)
    warned = [e for e in logs if e["log_level"] == "warning" and "did not reach" in e["event"]]
    assert len(warned) == 1
    message = warned[0]["event"]
    lines = len(file_lines(session.journal.path))
    assert f"{lines} journal record(s) did not reach the audit store" in message
    assert f"cutbook audit sync {session.run_id}" in message
    printed = capsys.readouterr()
    everything = json.dumps(logs, default=str) + printed.out + printed.err
    everything += session.journal.path.read_text(encoding="utf-8")
    assert PASSWORD not in everything
    assert "***" in message


def test_the_mirror_retries_until_the_store_is_back(tmp_path: Path) -> None:
    blocker = tmp_path / "shared"
    blocker.write_text("a file where the store's folder should be")
    db = blocker / "audit.db"
    mirror = StoreMirror(sqlite_url(db), capacity=10_000, max_backoff=0.2)
    path = write_journal(tmp_path / "journal", "r-retry", 30, mirror=None).path
    # offered one by one, as the writer does, while the store cannot be opened
    for n, line in enumerate(path.read_bytes().splitlines(keepends=True)):
        mirror.offer("r-retry", path, n, json.loads(line)["hash"], "x", line)
    time.sleep(0.5)
    assert mirror.pending == 32 and mirror.stats.failures >= 1
    blocker.unlink()  # the store comes back
    wait_for(lambda: mirror.pending == 0)
    assert mirror.close() == 0
    assert stored(db, "r-retry") == file_lines(path)


def test_a_full_queue_loses_nothing_the_file_has(tmp_path: Path) -> None:
    blocker = tmp_path / "shared"
    blocker.write_text("not yet")
    db = blocker / "audit.db"
    mirror = StoreMirror(sqlite_url(db), capacity=5, max_backoff=0.1)
    journal = write_journal(tmp_path / "journal", "r-full", 100, mirror=mirror, close=False)
    assert mirror.stats.dropped == 102 - 5 and mirror.pending == 102
    blocker.unlink()
    wait_for(lambda: mirror.pending == 0)
    journal.close()
    assert stored(db, "r-full") == file_lines(journal.path)


def test_audit_sync_catches_up_after_an_outage(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "shared"
    blocker.write_text("the store's disk is not mounted")
    url = sqlite_url(blocker / "audit.db")
    with capture_logs():
        session, _ = run_night(tmp_path / "worker", store=url)
    journal_dir = session.settings.journal_dir
    blocker.unlink()
    code, out = cli(capsys, "audit", "verify", session.run_id, "--store", url)
    assert code == 2 and f"no run {session.run_id!r} in the audit store" in out
    code, out = cli(
        capsys, "audit", "sync", "--all", "--store", url, "--journal-dir", str(journal_dir)
    )
    lines = len(file_lines(session.journal.path))  # type: ignore[union-attr]
    assert code == 0, out
    assert f"{session.run_id}: {lines} record(s) in the journal: {lines} sent, 0 already" in out
    code, out = cli(
        capsys, "audit", "sync", session.run_id, "--store", url, "--journal-dir", str(journal_dir)
    )
    assert code == 0 and f"0 sent, {lines} already in the store" in out
    code, out = cli(capsys, "audit", "verify", session.run_id, "--store", url)
    assert code == 0, out


# ---------------------------------------------------------------- tampering and divergence


def test_a_tampered_store_line_fails_verification(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "audit.db"
    mirror = StoreMirror(sqlite_url(db))
    write_journal(tmp_path / "journal", "r-tamper", 5, mirror)
    mirror.close()
    with sqlite3.connect(db) as conn:
        (line,) = conn.execute(
            f"SELECT record FROM {TABLE_NAME} WHERE run_id='r-tamper' AND seq=3"
        ).fetchone()
        conn.execute(
            f"UPDATE {TABLE_NAME} SET record=? WHERE run_id='r-tamper' AND seq=3",
            (line.replace('"s2"', '"s9"'),),
        )
    code, out = cli(capsys, "audit", "verify", "r-tamper", "--store", sqlite_url(db))
    assert code == 1
    assert "line 4 (seq 3): hash mismatch: the record was edited" in out
    code, out = cli(capsys, "audit", "report", "r-tamper", "-f", "md", "--store", sqlite_url(db))
    assert code == 0 and "seq 3" in out
    with sqlite3.connect(db) as conn:
        conn.execute(f"DELETE FROM {TABLE_NAME} WHERE run_id='r-tamper' AND seq=1")
    code, out = cli(capsys, "audit", "verify", "--all", "--store", sqlite_url(db))
    assert code == 1 and "record(s) deleted" in out


def test_a_forged_run_id_in_the_store_chooses_no_file_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "store" / "audit.db"
    mirror = StoreMirror(sqlite_url(db))
    write_journal(tmp_path / "journal", "r-ok", 1, mirror)
    with sqlite3.connect(db) as conn:
        conn.execute(
            f"INSERT INTO {TABLE_NAME} VALUES ('../../escaped', 0, 'h', 'run.started', '{{}}', "
            "'2025-03-14')"
        )
    code, out = cli(capsys, "audit", "verify", "--all", "--store", sqlite_url(db))
    assert code == 1 and "a run id no journal can have: '../../escaped'" in out
    assert not list(tmp_path.rglob("escaped*"))
    assert not Path(tempfile.gettempdir(), "escaped.jsonl").exists()


def test_a_store_that_diverges_from_the_file_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "audit.db"
    url = sqlite_url(db)
    journal_dir = tmp_path / "journal"
    mirror = StoreMirror(url)
    write_journal(journal_dir, "r-div", 6, mirror)
    mirror.close()
    with sqlite3.connect(db) as conn:  # a consistent rewrite: the store's chain alone verifies
        conn.execute(f"DELETE FROM {TABLE_NAME} WHERE run_id='r-div' AND seq >= 4")
    code, out = cli(
        capsys, "audit", "verify", "r-div", "--store", url, "--journal-dir", str(journal_dir)
    )
    assert code == 0, out  # only behind: the file verifies, the store is not yet synced
    assert "the audit store lacks 4 record(s)" in out and "cutbook audit sync r-div" in out

    other = tmp_path / "other"
    write_journal(other, "r-div", 6, None)  # same run id, different times: other bytes
    code, out = cli(capsys, "audit", "verify", "r-div", "--store", url, "--journal-dir", str(other))
    assert code == 1 and "DIVERGED: seq 0 differs" in out
    code, out = cli(capsys, "audit", "sync", "r-div", "--store", url, "--journal-dir", str(other))
    assert code == 1
    assert "r-div: DIVERGED: seq 0:" in out and "not overwritten" in out
    assert stored(db, "r-div")[4:] == file_lines(other / "r-div.jsonl")[4:]  # missing ones sent
    assert stored(db, "r-div")[0] == file_lines(journal_dir / "r-div.jsonl")[0]  # never overwritten

    write_journal(other, "r-unsent", 1, None)  # a run the store has never seen
    code, out = cli(
        capsys, "audit", "verify", "r-unsent", "--store", url, "--journal-dir", str(other)
    )
    assert code == 0, out
    assert "\n  warning: not in the audit store" in out and "audit sync r-unsent" in out

    with capture_logs() as logs:
        mirror = StoreMirror(url)
        mirror.offer("r-div", other / "r-div.jsonl", 1, "x", "x", b"a different line\n")
        mirror.close()
    assert mirror.stats.diverged == [("r-div", 1)]
    assert any(e["log_level"] == "error" and "seq 1" in e["event"] for e in logs)


def test_a_resumed_journal_sends_what_the_crashed_process_did_not(tmp_path: Path) -> None:
    db = tmp_path / "audit.db"
    path = write_journal(tmp_path / "journal", "r-resume", 3, mirror=None).path
    with path.open("ab") as fh:
        fh.write(b'{"torn')  # the crash
    mirror = StoreMirror(sqlite_url(db))
    with Journal.open(path, mirror=mirror) as journal:
        assert journal.seq == 6  # the repair record was appended
    assert mirror.stats.diverged == []
    assert stored(db, "r-resume") == file_lines(path)


# ---------------------------------------------------------------- configuration and secrets


def test_the_password_stays_in_the_workers_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from cutbook.engine.prefect.parameters import SETTINGS_CODECS

    url = f"postgresql+asyncpg://cutbook:{PASSWORD}@db.example:5432/audit"
    encode, decode = SETTINGS_CODECS["audit_store"]
    carried = encode(url)
    assert (
        PASSWORD not in carried and carried == "postgresql+asyncpg://cutbook@db.example:5432/audit"
    )
    assert decode(carried) == carried and encode(None) is None
    assert show_url(url) == "postgresql+asyncpg://cutbook:***@db.example:5432/audit"
    assert without_password(url) == carried
    monkeypatch.setenv(ENV_VAR, url)
    assert resolve_url(carried) == url  # the worker supplies the password
    assert resolve_url(None) == url
    assert resolve_url("sqlite+aiosqlite:///x.db") == "sqlite+aiosqlite:///x.db"


def test_a_bad_store_url_is_refused_before_the_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = cli(capsys, "audit", "list", "--store", "mysql://u:pw12345@h/db")
    assert code == 2 and "use postgresql+asyncpg or sqlite+aiosqlite" in out
    assert "pw12345" not in out
    down = f"postgresql://cutbook:{PASSWORD}@127.0.0.1:{closed_port()}/audit"
    code, out = cli(capsys, "audit", "list", "--store", down)
    assert code == 1 and "cannot reach the audit store" in out
    assert PASSWORD not in out and "cutbook:***@127.0.0.1" in out


# ---------------------------------------------------------------- PostgreSQL


def test_a_run_mirrors_to_postgresql_and_verifies_from_it(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    postgres_cluster: PgCluster,  # noqa: F811
) -> None:
    url = postgres_cluster.create_database("audit_store")
    session, _ = run_night(tmp_path / "worker", store=url, steps=8)
    assert session.journal is not None
    path = session.journal.path

    async def read_back() -> list[str]:
        store = AuditStore(url)
        try:
            return [line for _, line in await store.lines(session.run_id)]
        finally:
            await store.dispose()

    assert asyncio.run(read_back()) == file_lines(path)
    code, out = cli(capsys, "audit", "verify", session.run_id, "--store", url)
    assert code == 0 and "OK: " in out, out
    code, out = cli(capsys, "audit", "list", "--store", url)
    assert code == 0 and session.run_id in out
    second, _ = run_night(tmp_path / "worker2", store=url, steps=2)
    code, out = cli(
        capsys,
        "audit",
        "verify",
        "--all",
        "--store",
        url,
        "--journal-dir",
        str(session.settings.journal_dir),
    )
    assert code == 0, out
    assert session.run_id in out and second.run_id in out
    assert "agree on" in out  # the worker's own run was compared with the store


def test_no_store_means_no_mirror(tmp_path: Path) -> None:
    session, _ = run_night(tmp_path, store=None, steps=1)
    assert session.journal is not None and session.journal.mirror is None
    assert os.environ.get(ENV_VAR) is None
