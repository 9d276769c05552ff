"""Finding past runs: the listing, run ids and prefixes, and how runs are shown.

Why apart from the report: ``cutbook audit list`` must stay quick over many
journals, so it reads the index and, where the index falls short, only the
run-level lines of a journal, folded by the same reader as the report.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, tzinfo
from pathlib import Path
from typing import Any, Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cutbook.clock import is_real_clock
from cutbook.journal import (
    Event,
    fold,
    journal_files,
    parse_ts,
    read_index,
    read_records,
)

RUN_LEVEL: Final = (
    Event.RUN_STARTED,
    Event.RUN_RESUMED,
    Event.RUN_INTERRUPTED,
    Event.RUN_FINISHED,
)
"""The records a listing needs: the rest of a journal is never parsed for it."""


def zone_of(name: str | None) -> tzinfo:
    """The runbook's zone, or UTC when it is missing or unknown here."""
    if not name:
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return UTC


def offset_of(moment: datetime | None, tz: tzinfo) -> str:
    """The zone's UTC offset at ``moment`` (now when unknown), as ``+07:00``."""
    local = (moment or datetime.now(UTC)).astimezone(tz)
    digits = local.strftime("%z") or "+0000"
    return f"{digits[:3]}:{digits[3:5]}"


def zone_label(name: str | None, moment: datetime | None = None) -> str:
    """The zone named once for people, e.g. ``Asia/Ho_Chi_Minh (+07:00)``.

    Said wherever times are printed without their own offset, so a reader
    never has to guess whether a time is the host's, UTC or the runbook's.
    """
    tz = zone_of(name)
    return f"{getattr(tz, 'key', 'UTC')} ({offset_of(moment, tz)})"


def format_time(value: Any, tz: tzinfo) -> str:
    """A journal time as the auditor reads it: local to the runbook, offset shown."""
    parsed = value if isinstance(value, datetime) else parse_ts(value)
    if parsed is None:
        return "" if value is None else str(value)
    local = parsed.astimezone(tz)
    return local.strftime("%Y-%m-%d %H:%M:%S %z")[:-2] + ":" + local.strftime("%z")[-2:]


def run_mode(dry_run: bool | None, clock: str | None, preflight: bool | None = False) -> str:
    """Whether a run touched real systems at real time: said the same way everywhere."""
    if preflight:
        return "preflight"
    if dry_run:
        return "dry run"
    if not is_real_clock(clock):
        return "rehearsal"
    return "real"


@dataclass
class RunListing:
    """One line of ``cutbook audit list``."""

    run_id: str
    path: Path
    runbook: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    outcome: str | None = None
    timezone: str | None = None
    dry_run: bool | None = None
    preflight: bool | None = None
    clock: str | None = None

    @property
    def started(self) -> datetime | None:
        return parse_ts(self.started_at)

    @property
    def local_date(self) -> date | None:
        """The start date in the runbook's zone: what the auditor calls "that night"."""
        started = self.started
        if started is None:
            return None
        return started.astimezone(zone_of(self.timezone)).date()

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["path"] = str(self.path)
        return data


def _opt_str(value: Any) -> str | None:
    return None if value is None else str(value)


def _from_index(path: Path, entry: dict[str, Any]) -> RunListing:
    dry_run = entry.get("dry_run")
    return RunListing(
        run_id=path.stem,
        path=path,
        runbook=_opt_str(entry.get("runbook")),
        started_at=_opt_str(entry.get("started_at")),
        finished_at=_opt_str(entry.get("finished_at")),
        outcome=_opt_str(entry.get("outcome")),
        timezone=_opt_str(entry.get("timezone")),
        dry_run=dry_run if isinstance(dry_run, bool) else None,
        preflight=entry.get("preflight") is True,
        clock=_opt_str(entry.get("clock")),
    )


def _scan(path: Path) -> RunListing:
    """Build a listing from the journal itself (index missing or stale)."""
    try:
        state = fold(read_records(path, skip_bad=True, events=RUN_LEVEL), run_id=path.stem)
    except OSError:
        return RunListing(run_id=path.stem, path=path)
    return RunListing(
        run_id=state.run_id,
        path=path,
        runbook=state.runbook_name,
        started_at=state.started_at,
        finished_at=state.finished_at,
        outcome=state.outcome or ("interrupted" if state.interrupted else None),
        timezone=state.timezone,
        dry_run=state.dry_run if state.started_record is not None else None,
        preflight=state.preflight,
        clock=state.clock,
    )


def list_runs(
    journal_dir: Path | str,
    *,
    runbook: str | None = None,
    outcome: str | None = None,
    since: date | None = None,
    until: date | None = None,
) -> list[RunListing]:
    """Every run in ``journal_dir``, oldest first, filtered.

    Uses the index where it knows a finished run; any run the index lacks or
    has as unfinished is read from its journal, so a lost index loses nothing.
    ``outcome="unfinished"`` selects runs without ``run.finished``; dates are
    inclusive and compared in each runbook's own zone.
    """
    journal_dir = Path(journal_dir)
    index = read_index(journal_dir)
    runs: list[RunListing] = []
    for path in journal_files(journal_dir):
        entry = index.get(path.stem)
        if entry and entry.get("outcome") and entry.get("started_at"):
            runs.append(_from_index(path, entry))
        else:
            runs.append(_scan(path))

    def keep(run: RunListing) -> bool:
        if runbook is not None and run.runbook != runbook:
            return False
        if outcome is not None and (run.outcome or "unfinished") != outcome:
            return False
        day = run.local_date
        if since is not None and (day is None or day < since):
            return False
        return not (until is not None and (day is None or day > until))

    far_past = datetime.min.replace(tzinfo=UTC)
    return sorted(filter(keep, runs), key=lambda r: (r.started or far_past, r.run_id))


def format_listing(runs: Sequence[RunListing]) -> str:
    """A plain text table for ``cutbook audit list``: each start in its runbook's zone,
    offset shown, the same way ``show`` and the report give times."""
    if not runs:
        return "no runs found"
    header = ("RUN", "RUNBOOK", "STARTED", "OUTCOME", "MODE")
    rows = [header]
    for run in runs:
        started = run.started
        tz = zone_of(run.timezone)
        rows.append(
            (
                run.run_id,
                run.runbook or "?",
                f"{started.astimezone(tz):%Y-%m-%d %H:%M} {offset_of(started, tz)}"
                if started
                else "?",
                run.outcome or "unfinished",
                run_mode(run.dry_run, run.clock, run.preflight),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows
    )
