"""Exclusive leases: one live process per run, and one run per estate.

A lease is an ``fcntl.flock`` on a small file next to the journals, held on
an open fd for the life of the process. The kernel drops it when the process
dies, however it dies, so a lock file whose lock nobody holds is stale (a
``kill -9``'d run) and may be taken over; a held one is proof of a live run.
Verify asks :func:`holder` here whether an unfinished journal is live, which
is why this lives in the journal layer and not in the engine.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import platform
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from cutbook.errors import JournalWriteError, LeaseHeld

LOCK_SUFFIX: Final = ".lock"
ESTATE_PREFIX: Final = "estate-"


@dataclass(frozen=True)
class Holder:
    """Who holds a lease, as the holder wrote it into the lock file."""

    pid: int | None
    host: str
    started_at: str
    runbook: str
    estate: str
    run_id: str

    def describe(self) -> str:
        """For messages: the pid and host to look at, and since when."""
        pid = self.pid if self.pid is not None else "?"
        return (
            f"run {self.run_id or '?'} (pid {pid} on {self.host or '?'}, since {self.started_at})"
        )


def run_lock(journal_dir: Path, run_id: str) -> Path:
    return Path(journal_dir) / f"{run_id}{LOCK_SUFFIX}"


def estate_lock(journal_dir: Path, fingerprint: str) -> Path:
    return Path(journal_dir) / f"{ESTATE_PREFIX}{fingerprint}{LOCK_SUFFIX}"


def _parse(raw: bytes) -> Holder:
    try:
        data: Any = json.loads(raw or b"{}")
    except ValueError:
        data = {}
    if not isinstance(data, dict):
        data = {}
    pid = data.get("pid")
    return Holder(
        pid=pid if isinstance(pid, int) else None,
        host=str(data.get("host", "")),
        started_at=str(data.get("started_at", "")),
        runbook=str(data.get("runbook", "")),
        estate=str(data.get("estate", "")),
        run_id=str(data.get("run_id", "")),
    )


def held_by(path: Path) -> Holder | None:
    """The live holder of the lease at ``path``; ``None`` if absent or stale (nobody holds it)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _parse(_read_all(fd))
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def holder(journal_dir: Path | str, run_id: str) -> Holder | None:
    """Whether run ``run_id`` is live: the process holding its lease, or ``None``."""
    return held_by(run_lock(Path(journal_dir), run_id))


def _read_all(fd: int) -> bytes:
    os.lseek(fd, 0, os.SEEK_SET)
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    return b"".join(chunks)


class Lease:
    """A held lease; :meth:`release` (or the process's death) lets it go."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, path: Path, *, run_id: str, runbook: str, estate: str, what: str) -> Lease:
        """Take the lease at ``path`` or raise :class:`LeaseHeld` naming its holder.

        ``what`` names the lease in the refusal ("run X", "the estate of ...").
        """
        path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(5):
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                raise JournalWriteError(f"cannot create the lock file {path}: {exc}") from exc
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                held = _parse(_read_all(fd))
                os.close(fd)
                raise LeaseHeld(f"{what} is held by {held.describe()}") from None
            # A releaser may have unlinked the file between our open and our flock:
            # then we hold a lock on a name nobody sees; try again on the new file.
            try:
                same = os.fstat(fd).st_ino == os.stat(path).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            info = {
                "pid": os.getpid(),
                "host": platform.node(),
                "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
                "runbook": runbook,
                "estate": estate,
                "run_id": run_id,
            }
            try:
                os.ftruncate(fd, 0)
                os.write(fd, json.dumps(info, sort_keys=True).encode() + b"\n")
            except OSError as exc:
                os.close(fd)
                raise JournalWriteError(f"cannot write the lock file {path}: {exc}") from exc
            return cls(path, fd)
        raise LeaseHeld(f"{what}: its lock file {path} keeps changing; try again")

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        """Remove the file while still holding it, then let go: no stale file after a clean exit."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        with contextlib.suppress(OSError):  # a stale file is harmless: nobody holds it
            self.path.unlink(missing_ok=True)
        os.close(fd)
