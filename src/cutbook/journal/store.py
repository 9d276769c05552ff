"""The shared audit store: every journal line also lands in one SQL table.

Why: a night runs on whichever worker picked it up, and its journal is a file
on that worker's disk. Auditors must read every run from one place without a
login on each worker, so each record is copied, byte for byte, into the table
``cutbook_journal_records`` of a database the team already runs (PostgreSQL
through asyncpg; SQLite through aiosqlite for tests and a single machine).

The file stays the write-ahead truth: it is fsync'd before the engine acts,
and only then is the line handed to :class:`StoreMirror`, a background thread
with its own event loop, so a slow or dead database never delays a step. The
store keeps the exact line text, so the chain (``prev``/``hash``) verifies from
the store with the same verifier as the file. Inserts are idempotent per
``(run_id, seq)``: the same line again is fine; a different line is a
divergence, reported and never overwritten.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Final, NamedTuple

import structlog
from sqlalchemy import Column, DateTime, Index, Integer, MetaData, String, Table, Text, select
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from cutbook.errors import JournalError, UsageError
from cutbook.journal.events import Event

log = structlog.get_logger("cutbook.journal")

ENV_VAR: Final = "CUTBOOK_AUDIT_STORE"
"""Where the store is when no option names it (a SQLAlchemy URL)."""
TABLE_NAME: Final = "cutbook_journal_records"

metadata = MetaData()
records = Table(
    TABLE_NAME,
    metadata,
    Column("run_id", String(200), primary_key=True),
    Column("seq", Integer, primary_key=True, autoincrement=False),
    Column("hash", String(64), nullable=False),
    Column("event", String(64), nullable=False),
    Column("record", Text, nullable=False),
    Column("written_at", DateTime(timezone=True), nullable=False),
    Index(f"ix_{TABLE_NAME}_event", "event"),
)
"""One row per journal line; ``record`` is the line as written, without its newline."""

RUN_LEVEL: Final = frozenset(
    e.value
    for e in (Event.RUN_STARTED, Event.RUN_RESUMED, Event.RUN_INTERRUPTED, Event.RUN_FINISHED)
)

_DRIVERS: Final = {
    "postgresql": "postgresql+asyncpg",
    "postgres": "postgresql+asyncpg",
    "postgresql+asyncpg": "postgresql+asyncpg",
    "sqlite": "sqlite+aiosqlite",
    "sqlite+aiosqlite": "sqlite+aiosqlite",
}
STORE_ERRORS: Final = (SQLAlchemyError, OSError, TimeoutError)
"""What a database that is down, slow or refusing looks like from here.

asyncpg's own errors reach us wrapped in SQLAlchemy's DBAPIError; refused and
unreachable hosts arrive as OSError; our own deadlines as TimeoutError.
"""


WAIT_VAR: Final = "CUTBOOK_AUDIT_STORE_WAIT"
"""Seconds a finished run waits for the store to have every line (default 5)."""


def close_wait(environ: Mapping[str, str] | None = None) -> float:
    """How long closing waits for the store: bounded, so a dead store costs seconds, no more."""
    raw = (os.environ if environ is None else environ).get(WAIT_VAR, "")
    try:
        return max(0.0, float(raw)) if raw else 5.0
    except ValueError:
        return 5.0


class StoreUnavailable(JournalError):
    """The store could not be reached or queried (exit 1): try again later."""


# ---------------------------------------------------------------- URLs


def parse_url(url: str) -> URL:
    """A store URL with its async driver; plain ``postgresql://`` and ``sqlite://`` get one.

    Only the two drivers installed with cutbook are accepted, so a typo fails
    at the start of a run rather than in the background at 3 a.m.
    """
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise UsageError(
            "the audit store must be a SQLAlchemy URL such as "
            "postgresql+asyncpg://user@host/db or sqlite+aiosqlite:///path"
        ) from None
    driver = _DRIVERS.get(parsed.drivername)
    if driver is None:
        raise UsageError(
            f"audit store driver {parsed.drivername!r}: use postgresql+asyncpg or sqlite+aiosqlite"
        )
    return parsed.set(drivername=driver)


def show_url(url: str | URL) -> str:
    """The URL as people may see it: any password masked (logs, messages, commands)."""
    try:
        parsed = make_url(url) if isinstance(url, str) else url
    except ArgumentError:
        return "<the audit store URL>"
    return parsed.render_as_string(hide_password=True)


def without_password(url: str) -> str:
    """The URL to carry in flow parameters: a password never leaves the worker's environment."""
    parsed = make_url(url)  # URL.set() reads password=None as "unchanged": build it anew
    bare = URL.create(
        parsed.drivername,
        username=parsed.username,
        host=parsed.host,
        port=parsed.port,
        database=parsed.database,
        query=parsed.query,
    )
    return bare.render_as_string(hide_password=False)


def password_of(url: str) -> str | None:
    """The password a URL carries, so the run's redactor can scrub it everywhere."""
    try:
        password = make_url(url).password
    except ArgumentError:
        return None
    return None if password is None else str(password)


def resolve_url(given: str | None, environ: Mapping[str, str] | None = None) -> str | None:
    """The store a run writes to: the setting, else ``CUTBOOK_AUDIT_STORE``.

    A setting without password (as flow parameters carry it) takes the password
    from ``CUTBOOK_AUDIT_STORE`` when that names the same database; otherwise the
    driver's own sources apply (``PGPASSWORD``, ``~/.pgpass``).
    """
    env = (os.environ if environ is None else environ).get(ENV_VAR) or None
    if not given:
        return env
    if env is None or password_of(given) is not None:
        return given
    try:
        same = without_password(env) == without_password(given)
    except ArgumentError:
        return given
    return env if same else given


# ---------------------------------------------------------------- the table


class Entry(NamedTuple):
    """One journal line on its way to the store."""

    seq: int
    hash: str
    event: str
    line: str
    """The exact line as written, without its newline."""


@dataclass
class PutResult:
    """What one insert found: new rows, identical rows already there, divergent seqs."""

    sent: int = 0
    present: int = 0
    diverged: list[int] = field(default_factory=list)


def _engine_options(url: URL, timeout: float) -> dict[str, object]:
    if url.drivername.startswith("postgresql"):
        # connect and command deadlines: a black-holed host must not hang a thread forever
        return {
            "connect_args": {"timeout": timeout, "command_timeout": timeout},
            "pool_pre_ping": True,
            "pool_size": 2,
            "max_overflow": 2,
        }
    return {"connect_args": {"timeout": timeout}}


class AuditStore:
    """The table behind one URL. Create and use it on one event loop."""

    def __init__(self, url: str, *, timeout: float = 10.0) -> None:
        parsed = parse_url(url)
        self.shown = show_url(parsed)
        self.timeout = timeout
        self._sqlite_file = (
            Path(parsed.database)
            if parsed.drivername.startswith("sqlite")
            and parsed.database not in (None, "", ":memory:")
            else None
        )
        self._engine: AsyncEngine = create_async_engine(parsed, **_engine_options(parsed, timeout))
        self._ready = False

    async def ensure_table(self) -> None:
        """Create the table (and its index) if missing; cheap after the first time."""
        if self._ready:
            return

        if self._sqlite_file is not None:  # SQLite makes the file, not its folder
            self._sqlite_file.parent.mkdir(parents=True, exist_ok=True)

        async def create() -> None:
            async with self._engine.begin() as conn:
                await conn.run_sync(metadata.create_all, checkfirst=True)

        try:
            await asyncio.wait_for(create(), self.timeout)
        except IntegrityError:  # two workers creating it at once: the other one won
            pass
        except SQLAlchemyError as exc:
            if "already exists" not in str(exc):
                raise
        self._ready = True

    async def put(self, run_id: str, entries: Sequence[Entry]) -> PutResult:
        """Insert the lines the store lacks; compare the ones it has (never overwrite)."""
        if not entries:
            return PutResult()
        await self.ensure_table()
        for _ in range(3):  # a concurrent insert of the same seq: look again
            try:
                return await asyncio.wait_for(self._put_once(run_id, entries), self.timeout)
            except IntegrityError:
                continue
        raise StoreUnavailable(f"{self.shown}: inserts for run {run_id} keep conflicting")

    async def _put_once(self, run_id: str, entries: Sequence[Entry]) -> PutResult:
        t = records.c
        lo = min(e.seq for e in entries)
        hi = max(e.seq for e in entries)
        result = PutResult()
        async with self._engine.begin() as conn:
            rows = await conn.execute(
                select(t.seq, t.record).where(t.run_id == run_id, t.seq >= lo, t.seq <= hi)
            )
            have = {int(seq): str(text) for seq, text in rows.all()}
            new: list[dict[str, object]] = []
            now = datetime.now(UTC)
            for entry in entries:
                stored = have.get(entry.seq)
                if stored is None:
                    have[entry.seq] = entry.line
                    new.append(
                        {
                            "run_id": run_id,
                            "seq": entry.seq,
                            "hash": entry.hash,
                            "event": entry.event,
                            "record": entry.line,
                            "written_at": now,
                        }
                    )
                elif stored == entry.line:
                    result.present += 1
                else:
                    result.diverged.append(entry.seq)
            if new:
                await conn.execute(records.insert(), new)
            result.sent = len(new)
        return result

    async def lines(self, run_id: str) -> list[tuple[int, str]]:
        """A run's stored lines, ``(seq, line)`` in seq order."""
        await self.ensure_table()
        t = records.c
        query = select(t.seq, t.record).where(t.run_id == run_id).order_by(t.seq)
        async with self._engine.connect() as conn:
            rows = await asyncio.wait_for(conn.execute(query), self.timeout)
            return [(int(seq), str(text)) for seq, text in rows.all()]

    async def run_ids(self, prefix: str = "") -> list[str]:
        """Every run the store holds (starting with ``prefix``), by id."""
        await self.ensure_table()
        t = records.c
        query = select(t.run_id).distinct().order_by(t.run_id)
        if prefix:
            escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            query = query.where(t.run_id.like(f"{escaped}%", escape="\\"))
        async with self._engine.connect() as conn:
            rows = await asyncio.wait_for(conn.execute(query), self.timeout)
            return [str(r[0]) for r in rows.all()]

    async def run_level(self) -> dict[str, list[tuple[int, str]]]:
        """The run-level lines of every run (what a listing needs), by run."""
        await self.ensure_table()
        t = records.c
        query = (
            select(t.run_id, t.seq, t.record)
            .where(t.event.in_(sorted(RUN_LEVEL)))
            .order_by(t.run_id, t.seq)
        )
        out: dict[str, list[tuple[int, str]]] = {}
        async with self._engine.connect() as conn:
            rows = await asyncio.wait_for(conn.execute(query), self.timeout)
            for run_id, seq, text in rows.all():
                out.setdefault(str(run_id), []).append((int(seq), str(text)))
        return out

    async def dispose(self) -> None:
        """Close the pool's connections (bounded: a dead server must not hold us)."""
        with contextlib.suppress(*STORE_ERRORS):
            await asyncio.wait_for(self._engine.dispose(), self.timeout)


# ---------------------------------------------------------------- files


def file_entries(path: Path, *, start: int = 0) -> list[Entry]:
    """The complete lines of a journal file from seq ``start``, as the store keeps them.

    A line being written right now (no newline yet) is left for next time.
    Lines are taken as they are: the seq is their position, as verify counts it.
    """
    data = path.read_bytes()
    lines = data[: data.rfind(b"\n") + 1].split(b"\n")[:-1]
    out: list[Entry] = []
    for seq in range(start, len(lines)):
        out.append(entry_of(seq, lines[seq]))
    return out


def entry_of(seq: int, line: bytes) -> Entry:
    """An entry for a written line; hash and event are read from its bytes, not trusted."""
    text = line.rstrip(b"\n").decode("utf-8", "surrogateescape")
    digest = text[-66:-2] if text.endswith('"}') else ""
    marker = '"event":"'
    at = text.find(marker)
    event = text[at + len(marker) : text.find('"', at + len(marker))] if at >= 0 else ""
    return Entry(seq, digest[:64], event[:64], text)


@dataclass
class SyncResult:
    """What ``cutbook audit sync`` did for one run."""

    run_id: str
    lines: int = 0
    sent: int = 0
    present: int = 0
    diverged: list[int] = field(default_factory=list)


async def sync_file(store: AuditStore, run_id: str, path: Path, *, batch: int = 500) -> SyncResult:
    """Send what the file has and the store lacks; compare everything else."""
    entries = file_entries(path)
    result = SyncResult(run_id, lines=len(entries))
    for i in range(0, len(entries), batch):
        got = await store.put(run_id, entries[i : i + batch])
        result.sent += got.sent
        result.present += got.present
        result.diverged += got.diverged
    return result


# ---------------------------------------------------------------- the mirror


class _Item(NamedTuple):
    run_id: str
    entry: Entry


@dataclass
class MirrorStats:
    """Counts for the operator (and the tests): nothing here affects the run."""

    offered: int = 0
    stored: int = 0
    diverged: list[tuple[str, int]] = field(default_factory=list)
    dropped: int = 0
    """Lines that found the queue full; they are sent from the file when the store is back."""
    failures: int = 0


class StoreMirror:
    """Copies journal lines to the store from a background thread; never delays the run.

    :meth:`offer` only appends to a bounded in-memory queue (microseconds, no
    I/O, never raises). The thread sends in order, in batches, retrying with
    back-off while the store is down. When the queue is full the line is not
    lost: it is on disk, and the thread sends it from the file once the store
    answers again. :meth:`close` waits a bounded time, then says how many lines
    are still missing from the store and which command sends them.
    """

    def __init__(
        self,
        url: str,
        *,
        capacity: int = 10_000,
        batch: int = 200,
        close_timeout: float | None = None,
        timeout: float = 5.0,
        max_backoff: float = 5.0,
        linger: float = 0.05,
    ) -> None:
        parse_url(url)  # a bad URL is the operator's error: say so before the run starts
        self._url = url
        self.shown = show_url(url)
        self.capacity = capacity
        self.batch = batch
        self.close_timeout = close_wait() if close_timeout is None else close_timeout
        self.timeout = timeout
        self.max_backoff = max_backoff
        self.linger = linger
        """How long the thread lets a burst gather into one batch (one transaction)."""
        self.stats = MirrorStats()
        self._queue: deque[_Item] = deque()
        self._behind: dict[str, int] = {}  # run -> lines dropped and not yet sent from the file
        self._files: dict[str, Path] = {}
        self._catch_up: set[str] = set()
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._closing = False
        self._abandon = threading.Event()
        self._down_since: float | None = None
        self._thread = threading.Thread(target=self._run, name="cutbook-audit-store", daemon=True)
        self._thread.start()

    # -- the run's side: cheap and infallible

    def offer(
        self, run_id: str, path: Path, seq: int, digest: str, event: str, line: bytes
    ) -> None:
        """Queue one written, fsync'd line (called by the journal writer, in seq order)."""
        text = line.rstrip(b"\n").decode("utf-8", "surrogateescape")
        with self._lock:
            self.stats.offered += 1
            self._files[run_id] = path
            if self._closing and self._abandon.is_set():
                self._behind[run_id] = self._behind.get(run_id, 0) + 1
                return
            if len(self._queue) >= self.capacity:
                self.stats.dropped += 1
                self._behind[run_id] = self._behind.get(run_id, 0) + 1
                self._catch_up.add(run_id)
                return
            self._queue.append(_Item(run_id, Entry(seq, digest, event, text)))
            self._wake.notify()

    def backfill(self, run_id: str, path: Path, lines: int) -> None:
        """Send a continued journal's earlier lines the store may lack (a crash before)."""
        if lines <= 0:
            return
        with self._lock:
            self._files[run_id] = path
            self._behind[run_id] = self._behind.get(run_id, 0) + lines
            self._catch_up.add(run_id)
            self._wake.notify()

    @property
    def pending(self) -> int:
        """Lines written to the file that the store has not confirmed yet."""
        with self._lock:
            return len(self._queue) + sum(self._behind.values())

    def close(self, timeout: float | None = None) -> int:
        """Wait (bounded) for the store to have every line; return how many it lacks."""
        limit = self.close_timeout if timeout is None else timeout
        with self._lock:
            self._closing = True
            self._wake.notify_all()
        self._thread.join(limit)
        self._abandon.set()
        with self._lock:
            self._wake.notify_all()
            missing = len(self._queue) + sum(self._behind.values())
            runs = sorted(
                {i.run_id for i in self._queue} | {r for r, n in self._behind.items() if n}
            )
        if missing:
            hint = f" (with its password, or set {ENV_VAR})" if "***" in self.shown else ""
            log.warning(
                f"{missing} journal record(s) did not reach the audit store {self.shown} yet; "
                f"the journal file has them. Send them with: cutbook audit sync "
                f"{' '.join(runs) or '--all'} --store '{self.shown}'{hint}",
                store=self.shown,
                missing=missing,
                runs=runs,
            )
        return missing

    # -- the thread's side

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        store: AuditStore | None = None
        try:
            store = AuditStore(self._url, timeout=self.timeout)
            delay = 0.0
            while not self._abandon.is_set():
                batch, catch_up = self._next_work()
                if batch is None:
                    return
                if delay:
                    self._sleep(delay)
                    if self._abandon.is_set():
                        return
                try:
                    loop.run_until_complete(self._deliver(store, batch, catch_up))
                except (*STORE_ERRORS, StoreUnavailable) as exc:
                    self._went_down(exc)
                    delay = min(max(delay * 2, 0.2), self.max_backoff)
                    continue
                self._came_back()
                delay = 0.0
        finally:
            if store is not None:
                loop.run_until_complete(store.dispose())
            loop.close()

    def _next_work(self) -> tuple[list[_Item] | None, list[tuple[str, Path, int]]]:
        """The next batch (kept queued until delivered), or None when closed and done."""
        with self._lock:
            while not self._queue and not self._catch_up:
                if self._closing or self._abandon.is_set():
                    return None, []
                self._wake.wait()
            deadline = time.monotonic() + self.linger
            while len(self._queue) < self.batch and not self._closing:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._wake.wait(left)
            batch = [self._queue[i] for i in range(min(self.batch, len(self._queue)))]
            if len(self._queue) > self.batch:  # the file is read once the queue has drained
                return batch, []
            catch_up = [(r, self._files[r], self._behind.get(r, 0)) for r in sorted(self._catch_up)]
            return batch, catch_up

    def _sleep(self, seconds: float) -> None:
        """Back off, but give way at once to abandonment."""
        self._abandon.wait(seconds)

    async def _deliver(
        self, store: AuditStore, batch: list[_Item], catch_up: list[tuple[str, Path, int]]
    ) -> None:
        by_run: dict[str, list[Entry]] = {}
        for item in batch:
            by_run.setdefault(item.run_id, []).append(item.entry)
        for run_id, entries in by_run.items():
            got = await store.put(run_id, entries)
            self._diverged(run_id, got.diverged)
        with self._lock:
            for _ in batch:
                self._queue.popleft()
            self.stats.stored += len(batch)
        for run_id, path, behind in catch_up:
            got_file = await sync_file(store, run_id, path)
            self._diverged(run_id, got_file.diverged)
            with self._lock:
                left = self._behind.get(run_id, 0) - behind
                self._behind[run_id] = max(left, 0)
                if left <= 0:
                    self._catch_up.discard(run_id)
                self.stats.stored += behind

    def _diverged(self, run_id: str, seqs: Iterable[int]) -> None:
        for seq in seqs:
            self.stats.diverged.append((run_id, seq))
            log.error(
                f"the audit store {self.shown} holds a different record for run {run_id} "
                f"seq {seq} than this worker's journal; it was not overwritten. Check with: "
                f"cutbook audit verify {run_id} --store URL --journal-dir DIR",
                run_id=run_id,
                seq=seq,
                store=self.shown,
            )

    def _went_down(self, exc: BaseException) -> None:
        self.stats.failures += 1
        if self._down_since is None:
            self._down_since = time.monotonic()
            log.warning(
                f"the audit store {self.shown} is not answering ({type(exc).__name__}); "
                "the run goes on, the journal file has every record, and they are sent "
                "when it is back",
                store=self.shown,
            )

    def _came_back(self) -> None:
        if self._down_since is not None:
            down = time.monotonic() - self._down_since
            self._down_since = None
            log.info(f"the audit store {self.shown} is back after {down:.1f}s", store=self.shown)
