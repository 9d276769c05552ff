"""Where runs are: the journal files of a directory, and the index beside them.

The index holds one JSON line per run start, resume and finish.

Why: ``cutbook audit list`` over hundreds of runs should not read every
journal. The index is only a cache of what the journals say: it is not
hash-chained, a lost or stale index loses nothing (readers fall back to the
journal), and torn or odd lines are skipped.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Final

from cutbook.errors import JournalWriteError, UsageError
from cutbook.journal._disk import append_fsync, fsync_dir
from cutbook.journal.events import Event
from cutbook.journal.records import Record

INDEX_NAME: Final = "index.jsonl"
INDEXED: Final = frozenset({Event.RUN_STARTED, Event.RUN_RESUMED, Event.RUN_FINISHED})
"""The events that change what a run's listing says."""


def index_entry(record: Record, journal: Path) -> dict[str, Any]:
    """What one run-level record adds to its run's index entry."""
    entry: dict[str, Any] = {"run_id": record.run_id, "path": journal.name}
    if record.event == Event.RUN_STARTED:
        entry |= {
            "runbook": record.fields.get("runbook_name"),
            "started_at": record.ts,
            "timezone": record.fields.get("timezone"),
            "dry_run": record.fields.get("dry_run"),
            "clock": record.fields.get("clock"),
            "outcome": None,
        }
        if record.fields.get("preflight"):  # only then: older indexes stay byte-identical
            entry["preflight"] = True
    elif record.event == Event.RUN_RESUMED:
        entry |= {"outcome": None, "resumed_at": record.ts}
    else:
        entry |= {"outcome": record.fields.get("outcome"), "finished_at": record.ts}
    return entry


def append_index(directory: Path, entry: dict[str, Any], *, fsync: bool) -> None:
    """Add one entry to ``<directory>/index.jsonl``."""
    line = json.dumps(entry, sort_keys=True, ensure_ascii=False).encode("utf-8") + b"\n"
    index = directory / INDEX_NAME
    try:
        if fsync:
            new_file = not index.exists()
            append_fsync(index, line)
            if new_file:
                fsync_dir(directory)
        else:
            with open(index, "ab") as fh:
                fh.write(line)
    except OSError as exc:
        raise JournalWriteError(f"cannot update journal index: {exc}") from exc


def read_index(journal_dir: Path) -> dict[str, dict[str, Any]]:
    """Merge index lines per run (later lines win); torn or odd lines are skipped."""
    merged: dict[str, dict[str, Any]] = {}
    try:
        raw = (journal_dir / INDEX_NAME).read_bytes()
    except OSError:
        return merged
    for line in raw.split(b"\n"):
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and isinstance(entry.get("run_id"), str):
            merged.setdefault(entry["run_id"], {}).update(entry)
    return merged


def journal_files(journal_dir: Path) -> list[Path]:
    """Every run's journal in the directory, by name: the index is not one."""
    if not journal_dir.is_dir():
        return []
    return sorted(p for p in journal_dir.glob("*.jsonl") if p.name != INDEX_NAME)


def resolve_run(journal_dir: Path | str, run_id: str) -> Path:
    """The journal file for a run id or a unique prefix of one (what people type)."""
    journal_dir = Path(journal_dir)
    if not run_id or "/" in run_id or "\\" in run_id:
        raise UsageError(f"{run_id!r} is not a run id")
    exact = journal_dir / f"{run_id}.jsonl"
    if exact.is_file() and exact.name != INDEX_NAME:
        return exact
    matches = [p for p in journal_files(journal_dir) if p.stem.startswith(run_id)]
    if not matches:
        raise UsageError(f"no run {run_id!r} in {journal_dir}")
    if len(matches) > 1:
        names = ", ".join(p.stem for p in matches[:10])
        raise UsageError(f"run id prefix {run_id!r} is ambiguous: {names}")
    return matches[0]
