"""The window and the ``at`` pins: when the cutover may happen at all."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cutbook.model import Runbook, TimeError, parse_time
from cutbook.validation.report import Report
from cutbook.validation.wording import did_you_mean, hm


def check_window(report: Report, rb: Runbook) -> bool:
    """Whether the zone and window make sense; every later time check relies on them."""
    try:
        zone = ZoneInfo(rb.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        import zoneinfo  # available_timezones() reads the whole database: only on this error

        hint = did_you_mean(rb.timezone, zoneinfo.available_timezones())
        report.err(("timezone",), f"unknown time zone {rb.timezone!r}{hint}; use an IANA name")
        return False
    ok = True
    start: datetime | None = None
    end: datetime | None = None
    try:
        start = parse_time(rb.window.start, zone)
    except TimeError as exc:
        report.err(("window", "start"), f"window start: {exc}")
        ok = False
    if start is not None:
        try:
            end = parse_time(rb.window.end, zone, after=start)
        except TimeError as exc:
            report.err(("window", "end"), f"window end: {exc}")
            ok = False
    if start and end and end <= start:
        report.err(("window", "end"), f"window ends ({hm(end)}) before it starts ({hm(start)})")
        ok = False
    return ok


def check_at(report: Report, rb: Runbook) -> None:
    """Each pinned step must be pinned inside the window, or the plan cannot hold."""
    for step in rb.steps:
        if step.at is None:
            continue
        try:
            when = rb.resolve_at(step.at)
        except TimeError as exc:
            report.err(report.step_path(step, "at"), f"step {step.id!r}: {exc}")
            continue
        if not rb.window_start <= when < rb.window_end:
            report.err(
                report.step_path(step, "at"),
                f"step {step.id!r} at {hm(when)} is outside the window "
                f"{hm(rb.window_start)} – {hm(rb.window_end)}",
            )
