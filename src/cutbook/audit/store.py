"""Auditing from the shared store: the same checks, wherever the auditor sits.

Why materialise: a run's lines are copied from the store into a temporary
journal file, byte for byte, and the ordinary verifier, report and timeline
read that file. So a run read from the store passes exactly the checks its
file would, and no second verifier can drift from the first.

Also here: ``cutbook audit sync`` (send what a worker's journals have and the
store lacks) and the comparison of a worker's file with the store's copy
(a divergence fails; a store that is only behind is a warning).
"""

from __future__ import annotations

import asyncio
import re
import tempfile
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, TypeVar

from cutbook.errors import ChainBroken, UsageError
from cutbook.journal import journal_files, resolve_run
from cutbook.journal.store import (
    STORE_ERRORS,
    AuditStore,
    StoreUnavailable,
    SyncResult,
    file_entries,
    password_of,
    show_url,
    sync_file,
)
from cutbook.redact import Redactor

T = TypeVar("T")


def with_store(url: str, work: Callable[[AuditStore], Awaitable[T]]) -> T:
    """Run ``work`` against the store on a fresh event loop; unreachable → exit 1, no secret."""
    password = password_of(url)
    redactor = Redactor([password] if password else [])

    async def main() -> T:
        store = AuditStore(url)
        try:
            return await work(store)
        except STORE_ERRORS as exc:
            detail = redactor.scrub_text(str(exc).splitlines()[0] if str(exc) else "")
            raise StoreUnavailable(
                f"cannot reach the audit store {store.shown}: {type(exc).__name__}"
                + (f": {detail}" if detail else "")
            ) from None
        finally:
            await store.dispose()

    return asyncio.run(main())


async def _resolve(store: AuditStore, run: str, *, missing_ok: bool = False) -> str | None:
    """A run id or unique prefix, as the store knows it (what people type)."""
    if not run or "/" in run or "\\" in run:
        raise UsageError(f"{run!r} is not a run id")
    found = await store.run_ids(run)
    if run in found:
        return run
    if not found:
        if missing_ok:
            return None
        raise UsageError(f"no run {run!r} in the audit store {store.shown}")
    if len(found) > 1:
        raise UsageError(f"run id prefix {run!r} is ambiguous: {', '.join(found[:10])}")
    return found[0]


_RUN_ID: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
"""What the writer accepts as a run id: anything else in the store was not written by it."""


def _write(folder: Path, run_id: str, lines: Sequence[tuple[int, str]]) -> Path:
    """The stored lines as a journal file, exactly the bytes the worker wrote."""
    if not _RUN_ID.match(run_id):  # a file name: a row must not choose where we write
        raise ChainBroken(f"the audit store holds a run id no journal can have: {run_id!r}")
    path = folder / f"{run_id}.jsonl"
    path.write_bytes(b"".join(line.encode("utf-8", "surrogateescape") + b"\n" for _, line in lines))
    return path


@dataclass
class Materialised:
    """A temporary journal directory holding runs read from the store."""

    journal_dir: Path
    run_ids: list[str]
    shown: str
    """The store's URL with any password masked."""
    stored: dict[str, list[tuple[int, str]]]
    """Each run's lines as the store holds them, ``(seq, line)``."""

    def path(self, run_id: str) -> Path:
        """The temporary journal file of one run."""
        return self.journal_dir / f"{run_id}.jsonl"

    def label(self, run_id: str) -> str:
        """What to call a run's copy in messages instead of its temporary path."""
        return f"audit store {self.shown} run {run_id}"


@contextmanager
def materialised(
    url: str,
    runs: Sequence[str] | None = None,
    *,
    run_level_only: bool = False,
    missing_ok: bool = False,
) -> Iterator[Materialised]:
    """Copy runs (ids or prefixes; None: all) from the store into a temporary journal dir.

    ``run_level_only`` copies only the lines a listing reads (fast over many runs);
    such files are for listing, never for verifying. ``missing_ok`` skips a named run
    the store does not have (the caller has the worker's file) instead of refusing.
    """

    async def named(store: AuditStore, wanted: Sequence[str]) -> list[str]:
        found = [await _resolve(store, r, missing_ok=missing_ok) for r in wanted]
        return [r for r in found if r is not None]

    async def fetch(store: AuditStore) -> dict[str, list[tuple[int, str]]]:
        if run_level_only:
            level = await store.run_level()
            if runs is None:
                return level
            return {r: level.get(r, []) for r in await named(store, runs)}
        ids = await store.run_ids() if runs is None else await named(store, runs)
        return {r: await store.lines(r) for r in ids}

    got = with_store(url, fetch)
    with tempfile.TemporaryDirectory(prefix="cutbook-store-") as tmp:
        folder = Path(tmp) / "journal"
        folder.mkdir()
        for run_id, lines in got.items():
            _write(folder, run_id, lines)
        yield Materialised(folder, sorted(got), show_url(url), got)


# ---------------------------------------------------------------- file versus store


@dataclass
class Comparison:
    """A worker's journal file against the store's copy of the same run."""

    run_id: str
    file_lines: int
    store_lines: int
    first_difference: int | None = None
    """The first seq whose line differs: a divergence (exit 1)."""
    store_only: list[int] = field(default_factory=list)
    """Seqs the store has and the file lacks: the file was cut, or the store forged."""
    not_synced: int = 0
    """Lines the file has and the store lacks yet: a warning, ``audit sync`` sends them."""

    @property
    def passed(self) -> bool:
        return self.first_difference is None and not self.store_only

    def lines(self, shown: str) -> list[str]:
        """What the auditor reads: one verdict, then what to do."""
        rid = self.run_id
        if self.first_difference is not None:
            out = [
                f"{rid}: DIVERGED: seq {self.first_difference} differs between the worker's "
                f"journal and the audit store {shown}: one of them was altered"
            ]
        elif self.store_only:
            seqs = self.store_only
            span = f"seq {seqs[0]}" if len(seqs) == 1 else f"seq {seqs[0]}..{seqs[-1]}"
            out = [
                f"{rid}: DIVERGED: the audit store has {len(seqs)} record(s) the worker's "
                f"journal lacks ({span}): the file was cut, or the store was written by "
                "someone else"
            ]
        else:
            out = [
                f"{rid}: the worker's journal and the audit store agree on "
                f"{min(self.file_lines, self.store_lines)} record(s)"
            ]
        if self.not_synced:
            out.append(
                f"{rid}: warning: the audit store lacks {self.not_synced} record(s) the "
                f"worker's journal has (not yet synced): cutbook audit sync {rid} "
                f"--store '{shown}'"
            )
        return out


def compare_lines(run_id: str, path: Path, stored: Sequence[tuple[int, str]]) -> Comparison:
    """Record by record: the first seq that differs, and what only one side holds."""
    mine = {e.seq: e.line for e in file_entries(path)}
    theirs = dict(stored)
    result = Comparison(run_id, len(mine), len(theirs))
    for seq in sorted(set(mine) & set(theirs)):
        if mine[seq] != theirs[seq]:
            result.first_difference = seq
            break
    result.store_only = sorted(set(theirs) - set(mine))
    result.not_synced = len(set(mine) - set(theirs))
    return result


def compare(journal_dir: Path, got: Materialised) -> dict[str, Comparison]:
    """Compare each run the worker's directory also holds with the store's copy."""
    out: dict[str, Comparison] = {}
    for run_id in got.run_ids:
        path = journal_dir / f"{run_id}.jsonl"
        if path.is_file():
            out[run_id] = compare_lines(run_id, path, got.stored.get(run_id, []))
    return out


# ---------------------------------------------------------------- sync


def sync(url: str, journal_dir: Path, runs: Sequence[str] | None) -> list[SyncResult]:
    """Send every line the worker's journals have and the store lacks (``None``: every run)."""
    if runs is None:
        paths = journal_files(journal_dir)
    else:
        paths = [resolve_run(journal_dir, r) for r in runs]

    async def work(store: AuditStore) -> list[SyncResult]:
        return [await sync_file(store, p.stem, p) for p in paths]

    return with_store(url, work)


def format_sync(result: SyncResult, shown: str) -> list[str]:
    """One line per run for ``cutbook audit sync``; divergences name run and seq."""
    rid = result.run_id
    lines = [
        f"{rid}: {result.lines} record(s) in the journal: {result.sent} sent, "
        f"{result.present} already in the store"
        + (f", {len(result.diverged)} DIVERGED" if result.diverged else "")
    ]
    for seq in result.diverged[:10]:
        lines.append(
            f"{rid}: DIVERGED: seq {seq}: the audit store {shown} holds a different record "
            "(not overwritten)"
        )
    if len(result.diverged) > 10:
        lines.append(f"{rid}: ... and {len(result.diverged) - 10} more diverged record(s)")
    return lines


__all__ = [
    "Comparison",
    "Materialised",
    "SyncResult",
    "compare",
    "compare_lines",
    "format_sync",
    "materialised",
    "sync",
    "with_store",
]
