"""Group commit: concurrent records share fsyncs, and none returns before it is on disk.

The fsync itself is real; the tests only watch it (a wrapper that notes when each
one starts, how much had been written by then, and when it ends), except the one
that stands in for a failing disk, which cannot be made to fail here for real.
"""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path

import pytest

from cutbook.errors import JournalWriteError
from cutbook.journal import Journal, read_records, verify
from cutbook.journal.events import Event


class FsyncWatch:
    """Notes every fsync of the journal's fd and every commit's return, in order."""

    def __init__(self, journal: Journal, monkeypatch: pytest.MonkeyPatch) -> None:
        self.journal = journal
        self.events: list[tuple[str, int]] = []
        self._lock = threading.Lock()
        real = os.fsync

        def watched(fd: int) -> None:
            with self._lock:
                self.events.append(("start", journal.seq))  # everything below seq is written
            real(fd)
            with self._lock:
                self.events.append(("end", 0))

        monkeypatch.setattr(os, "fsync", watched)

    def returned(self, seq: int) -> None:
        with self._lock:
            self.events.append(("returned", seq))

    def fsyncs(self) -> int:
        return sum(1 for kind, _ in self.events if kind == "start")

    def durable_before_return(self, seq: int) -> bool:
        """An fsync that began after ``seq`` was written ended before the commit returned."""
        covering = False
        for kind, value in self.events:
            if kind == "start":
                started_covering = value > seq
            elif kind == "end" and started_covering:
                covering = True
            elif kind == "returned" and value == seq:
                return covering
        raise AssertionError(f"commit of {seq} never returned")


async def _items(journal: Journal, watch: FsyncWatch, n: int) -> None:
    async def item(i: int) -> None:
        intent = await journal.commit(Event.STEP_INTENT, step="s", item=str(i), phase="apply")
        watch.returned(intent.seq)
        await asyncio.sleep(0)  # the "call"
        outcome = await journal.commit(
            Event.STEP_OUTCOME, step="s", item=str(i), phase="apply", ok=True, changed=True
        )
        watch.returned(outcome.seq)

    await asyncio.gather(*(item(i) for i in range(n)))


def test_concurrent_records_share_fsyncs_and_each_is_durable_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal = Journal.create(tmp_path, "r")
    journal.append(Event.RUN_STARTED)
    watch = FsyncWatch(journal, monkeypatch)
    asyncio.run(_items(journal, watch, 50))
    journal.close()

    assert journal.seq == 101
    # 100 records, far fewer flushes: while one runs, the others' lines pile up for the next.
    assert watch.fsyncs() < 50, watch.fsyncs()
    print(f"100 records, {watch.fsyncs()} fsyncs")
    for seq in range(1, 101):
        assert watch.durable_before_return(seq), f"record {seq} returned before its fsync"
    records = list(read_records(journal.path))
    assert [r["seq"] for r in records] == list(range(101))
    assert verify(journal.path).ok


def test_sync_append_and_commit_interleave_in_one_chain(tmp_path: Path) -> None:
    """Threads that append (notifications) and coroutines that commit share one chain."""
    journal = Journal.create(tmp_path, "r")

    async def main() -> None:
        def thread_appends() -> None:
            for i in range(20):
                journal.append(Event.STEP_STARTED, step=f"t{i}")

        worker = asyncio.to_thread(thread_appends)
        commits = [journal.commit(Event.STEP_STARTED, step=f"c{i}") for i in range(20)]
        await asyncio.gather(worker, *commits)

    asyncio.run(main())
    journal.close()
    assert journal.seq == 40
    assert verify(journal.path).ok


def test_a_failed_fsync_fails_every_waiter_and_the_journal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal = Journal.create(tmp_path, "r")
    journal.append(Event.RUN_STARTED)

    def broken(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", broken)

    async def main() -> list[BaseException | object]:
        waits = [journal.commit(Event.STEP_STARTED, step=f"s{i}") for i in range(5)]
        return await asyncio.gather(*waits, return_exceptions=True)

    results = asyncio.run(main())
    assert all(isinstance(r, JournalWriteError) for r in results), results
    assert "Input/output error" in str(results[0])
    monkeypatch.undo()  # the disk is back, but what the page cache held is not known:
    with pytest.raises(JournalWriteError, match="Input/output"):
        journal.append(Event.STEP_STARTED, step="after")


def test_close_makes_written_records_durable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A record written by a commit whose waiter was cancelled still reaches the disk."""
    journal = Journal.create(tmp_path, "r")
    watch = FsyncWatch(journal, monkeypatch)

    async def main() -> None:
        task = asyncio.ensure_future(journal.commit(Event.STEP_STARTED, step="a"))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    journal.close()
    assert journal.seq == 1
    # an fsync that began after the record was written: the flush, or close's own
    assert any(kind == "start" and written >= 1 for kind, written in watch.events)
    assert [r["event"] for r in read_records(journal.path)] == ["step.started"]


def test_a_written_record_is_made_durable_by_the_next_fsync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``write`` waits for nobody; the next ``append`` (or ``close``) flushes it with its own."""
    journal = Journal.create(tmp_path, "r")
    watch = FsyncWatch(journal, monkeypatch)
    journal.write(Event.STEP_STARTED, step="a")
    journal.write(Event.STEP_VERIFIED, step="a", ok=True, summary="read back")
    assert watch.fsyncs() == 0
    journal.append(Event.STEP_FINISHED, step="a", status="succeeded")
    assert watch.events == [("start", 3), ("end", 0)]  # one flush, all three written by then
    journal.write(Event.GUARD_FORECAST, reason="tick")
    journal.close()
    assert watch.fsyncs() == 2
    assert [r["event"] for r in read_records(journal.path)] == [
        "step.started",
        "step.verified",
        "step.finished",
        "guard.forecast",
    ]
