"""Writing a journal: append-only, hash-chained, fsync'd before the engine acts.

Durability: each line is written with one ``os.write`` on an ``O_APPEND`` fd
and ``os.fsync``'d before :meth:`Journal.append` returns, so the engine only
acts after its intent is on disk. Concurrent fan-out items use
:meth:`Journal.commit` instead: group commit, where every line written while
one fsync runs shares the next one, and each caller resumes only once an
fsync that began after its write has finished (so still: durable before
acting, one disk flush for fifty items instead of fifty). Any OS failure raises
:class:`~cutbook.errors.JournalWriteError`: the run stops rather than carry on
unrecorded. Everything appended passes through the :class:`Redactor` first,
and must be an event with fields declared in :mod:`cutbook.journal.events`.

A :class:`LineMirror` (the shared audit store's, :mod:`cutbook.journal.store`)
is handed each line only after its fsync: the file is the truth, and the
mirror's hand-off is an in-memory append that never waits on a database.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Protocol

from cutbook.errors import ChainBroken, JournalError, JournalWriteError
from cutbook.journal._disk import fsync_dir
from cutbook.journal.events import Event, check_record
from cutbook.journal.index import INDEX_NAME, INDEXED, append_index, index_entry
from cutbook.journal.records import (
    GENESIS,
    Record,
    canonical,
    check_line,
    classify_fragment,
    encode_line,
    head_hmac,
    jsonable,
)
from cutbook.journal.verify import make_anchor
from cutbook.redact import Redactor

_RUN_ID: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")


def _cause(exc: OSError) -> str:
    """The OS's own words and number: "No space left on device (errno 28)"."""
    if exc.errno is None:
        return str(exc)
    return f"{exc.strerror or os.strerror(exc.errno)} (errno {exc.errno})"


def _utcnow() -> datetime:
    return datetime.now(UTC)


class LineMirror(Protocol):
    """Where written lines are copied to (the shared audit store): never on the run's path.

    ``offer`` must return at once and never raise; ``close`` may wait, bounded.
    """

    def offer(
        self, run_id: str, path: Path, seq: int, digest: str, event: str, line: bytes
    ) -> None: ...

    def backfill(self, run_id: str, path: Path, lines: int) -> None: ...

    def close(self, timeout: float | None = None) -> int: ...


class Journal:
    """An open journal for one run: append-only, fsync'd, hash-chained.

    ``append`` holds a :class:`threading.Lock` for the whole write, so threads
    and the event loop thread may share one instance.
    """

    def __init__(
        self,
        path: Path,
        run_id: str,
        fd: int,
        *,
        seq: int,
        prev: str,
        hmac_key: bytes | None,
        redactor: Redactor | None,
        now: Callable[[], datetime] | None,
        fsync: bool,
        mirror: LineMirror | None = None,
    ) -> None:
        self.path = path
        self.mirror = mirror
        """Copies each line elsewhere after its fsync; closed with the journal."""
        self.run_id = run_id
        self.redactor = redactor if redactor is not None else Redactor()
        self._fd: int | None = fd
        self._seq = seq
        self._prev = prev
        self._hmac_key = hmac_key
        self._now = now or _utcnow
        self._fsync = fsync
        self._lock = threading.Lock()
        """Held while a line is encoded and written: seq order is file order."""
        self._sync_lock = threading.Lock()
        """Held while an fsync runs; a caller whose line it covered need not flush again."""
        self._durable = seq - 1
        """The last seq known to be on disk."""
        self._unsynced: list[tuple[int, str, str, bytes]] = []
        """Written, not yet fsync'd: handed to the mirror once they are."""
        self._broken: JournalWriteError | None = None
        """After a failed write or fsync nothing more is written: the page cache may
        have dropped what it held, so the file's tail is no longer known."""
        self._flush: asyncio.Future[None] | None = None

    # -- opening

    @classmethod
    def create(
        cls,
        directory: Path | str,
        run_id: str,
        *,
        hmac_key: bytes | None = None,
        redactor: Redactor | None = None,
        now: Callable[[], datetime] | None = None,
        fsync: bool = True,
        mirror: LineMirror | None = None,
    ) -> Journal:
        """Start ``<directory>/<run_id>.jsonl``, or continue it if it exists."""
        if not _RUN_ID.match(run_id) or run_id == INDEX_NAME.removesuffix(".jsonl"):
            raise JournalError(f"{run_id!r} cannot be a run id (letters, digits, . _ - only)")
        directory = Path(directory)
        path = directory / f"{run_id}.jsonl"
        try:
            if path.exists() and path.stat().st_size > 0:
                return cls.open(
                    path, hmac_key=hmac_key, redactor=redactor, now=now, fsync=fsync, mirror=mirror
                )
            made_dir = not directory.is_dir()
            directory.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            if fsync:
                fsync_dir(directory)
                if made_dir:
                    fsync_dir(directory.parent)
        except OSError as exc:
            raise JournalWriteError(f"cannot create the journal {path}: {_cause(exc)}") from exc
        return cls(
            path,
            run_id,
            fd,
            seq=0,
            prev=GENESIS,
            hmac_key=hmac_key,
            redactor=redactor,
            now=now,
            fsync=fsync,
            mirror=mirror,
        )

    @classmethod
    def open(
        cls,
        path: Path | str,
        *,
        hmac_key: bytes | None = None,
        redactor: Redactor | None = None,
        now: Callable[[], datetime] | None = None,
        fsync: bool = True,
        mirror: LineMirror | None = None,
    ) -> Journal:
        """Continue an existing chain (resume after a crash or a pause).

        Checks the tail link (last two records and the record count), and cuts
        away a torn final line left by a crash, recording the repair. Anything
        else wrong raises :class:`ChainBroken`: a damaged journal is not
        silently extended.
        """
        path = Path(path)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise JournalWriteError(f"cannot read journal {path}: {exc}") from exc
        cut = data.rfind(b"\n") + 1
        fragment = data[cut:]
        if fragment and classify_fragment(fragment) == "tampered":
            raise ChainBroken(f"{path}: the last line is damaged, not torn by a crash; run verify")
        lines = data[:cut].split(b"\n")[:-1]
        seq, prev, run_id = 0, GENESIS, path.stem
        if lines:
            last = check_line(lines[-1])
            if last.record is None:
                raise ChainBroken(f"{path}: line {len(lines)}: {last.problem}")
            rec = last.record
            expected_prev = GENESIS
            if len(lines) > 1:
                before = check_line(lines[-2])
                if before.record is None:
                    raise ChainBroken(f"{path}: line {len(lines) - 1}: {before.problem}")
                expected_prev = before.record["hash"]
            if rec.get("seq") != len(lines) - 1 or rec.get("prev") != expected_prev:
                raise ChainBroken(f"{path}: the chain's tail does not link up; run verify")
            seq, prev, run_id = len(lines), str(rec["hash"]), str(rec.get("run_id", run_id))
        try:
            if fragment:
                fd = os.open(path, os.O_RDWR)
                try:
                    os.ftruncate(fd, cut)
                    if fsync:
                        os.fsync(fd)
                finally:
                    os.close(fd)
            fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        except OSError as exc:
            raise JournalWriteError(
                f"cannot open the journal {path} for append: {_cause(exc)}"
            ) from exc
        journal = cls(
            path,
            run_id,
            fd,
            seq=seq,
            prev=prev,
            hmac_key=hmac_key,
            redactor=redactor,
            now=now,
            fsync=fsync,
            mirror=mirror,
        )
        if mirror is not None:  # the earlier process may have died before the store had them
            mirror.backfill(run_id, path, seq)
        if fragment:
            journal.append(
                Event.JOURNAL_REPAIRED,
                bytes=len(fragment),
                offset=cut,
                fragment_sha256=hashlib.sha256(fragment).hexdigest(),
                reason="torn last line left by a crash mid-write was cut away",
            )
        return journal

    # -- writing

    @property
    def seq(self) -> int:
        """The seq the next record will get."""
        return self._seq

    @property
    def head(self) -> str:
        """The hash the next record will chain to."""
        return self._prev

    def append(self, event: Event, **fields: Any) -> Record:
        """Check, scrub, chain, write and fsync one record; return it once durable.

        An event or field not declared in :mod:`cutbook.journal.events` raises
        :class:`~cutbook.journal.events.JournalContractError` and writes nothing.
        """
        record = self._write(event, fields)
        self._sync(record.seq)
        self._index(record)
        return record

    async def commit(self, event: Event, **fields: Any) -> Record:
        """:meth:`append` for coroutines: the same guarantee, fsyncs shared (group commit).

        The line is written at once (its seq is its place in the file); the caller
        then waits, without blocking the event loop, for an fsync that started
        after the write. While one fsync runs in a worker thread, every record
        written meanwhile is flushed together by the next one.
        """
        record = self._write(event, fields)
        while self._durable < record.seq:
            flush = self._flush
            if flush is None or flush.done():
                flush = self._flush = asyncio.ensure_future(asyncio.to_thread(self._sync, None))
            await asyncio.shield(flush)
        self._index(record)
        return record

    def write(self, event: Event, **fields: Any) -> Record:
        """Write a record without waiting for the disk: the next fsync (any caller's
        :meth:`append` or :meth:`commit`, or :meth:`close`) makes it durable.

        For records nothing is done on the strength of: a step starting (its intent,
        fsync'd before anything acts, covers it), a verification's read-back, a
        forecast. A process that dies keeps them (they are in the page cache); a power
        cut may take them with the records around them, which resume settles by
        reading back, never by guessing.
        """
        record = self._write(event, fields)
        self._index(record)
        return record

    def _write(self, event: Event, fields: dict[str, Any]) -> Record:
        name = check_record(event, fields).value
        clean = self.redactor.scrub(jsonable(fields))
        with self._lock:
            fd = self._fd
            if self._broken is not None:
                raise self._broken
            if fd is None:
                raise JournalWriteError(f"journal {self.path} is closed")
            if name == Event.RUN_FINISHED and self._hmac_key is not None and self._seq > 0:
                clean["head_hmac"] = head_hmac(
                    self._hmac_key, self.run_id, self._seq - 1, self._prev
                )
            ts = self._now().astimezone(UTC).isoformat(timespec="microseconds")
            body_obj = {
                **clean,
                "seq": self._seq,
                "ts": ts,
                "run_id": self.run_id,
                "event": name,
                "prev": self._prev,
            }
            body = canonical(body_obj)
            digest = hashlib.sha256(body).hexdigest()
            line = encode_line(body, digest)
            try:
                written = 0
                while written < len(line):  # a short write's next try names the cause
                    n = os.write(fd, line[written:])
                    if n <= 0:
                        raise OSError(f"short write: {written} of {len(line)} bytes")
                    written += n
            except OSError as exc:
                raise self._fail(exc, f"record {self._seq}, {name}") from exc
            record = Record(self._seq, ts, self.run_id, name, self._prev, digest, clean)
            if self._fsync:
                self._unsynced.append((self._seq, digest, name, line))
            else:
                self._durable = self._seq
                if self.mirror is not None:  # under the lock, so offered in seq order
                    self.mirror.offer(self.run_id, self.path, self._seq, digest, name, line)
            self._seq += 1
            self._prev = digest
        return record

    def _sync(self, seq: int | None) -> None:
        """Make every line written so far durable, unless ``seq`` is on disk already."""
        with self._sync_lock:
            if seq is not None and self._durable >= seq:
                return  # an fsync that started after this line's write covered it
            with self._lock:
                fd, target = self._fd, self._seq - 1
                if self._broken is not None:
                    raise self._broken
                if fd is None or target <= self._durable:
                    return
            try:
                os.fsync(fd)
            except OSError as exc:
                with self._lock:
                    raise self._fail(exc, f"records {self._durable + 1}-{target}") from exc
            with self._lock:
                self._durable = target
                done = [u for u in self._unsynced if u[0] <= target]
                del self._unsynced[: len(done)]
            if self.mirror is not None:  # durable now; in seq order (one flush at a time)
                for useq, digest, name, line in done:
                    self.mirror.offer(self.run_id, self.path, useq, digest, name, line)

    def _fail(self, exc: OSError, what: str) -> JournalWriteError:
        """Called with ``_lock`` held: the journal takes no more records after this."""
        self._broken = JournalWriteError(
            f"cannot write the journal {self.path}: {_cause(exc)} "
            f"({what}); stopping rather than acting unrecorded"
        )
        return self._broken

    def _index(self, record: Record) -> None:
        if record.event not in INDEXED:
            return
        try:
            append_index(self.path.parent, index_entry(record, self.path), fsync=self._fsync)
        except OSError as exc:  # the index's own errors are JournalWriteError already
            raise JournalWriteError(
                f"cannot write the journal index in {self.path.parent}: {_cause(exc)}"
            ) from exc

    def anchor(self) -> dict[str, Any]:
        """The current head, to keep outside this machine (ticket, e-mail)."""
        with self._lock:
            if self._seq == 0:
                raise JournalError(f"journal {self.path} has no records to anchor")
            return make_anchor(self.run_id, self._seq - 1, self._prev, self._hmac_key)

    def close(self) -> None:
        """Release the fd; appending afterwards raises rather than write nowhere.

        Then the mirror gets its bounded wait for the store to hold every line
        (outside the lock: nothing can append any more).
        """
        with self._lock:
            pending = self._fd is not None and self._broken is None and bool(self._unsynced)
        try:
            if pending:
                self._sync(None)  # written but never awaited: durable before the fd goes
        finally:
            with self._sync_lock, self._lock:  # never under an fsync in flight
                fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            os.close(fd)
        except OSError as exc:
            raise JournalWriteError(f"closing journal {self.path}: {exc}") from exc
        finally:
            if self.mirror is not None:
                self.mirror.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
