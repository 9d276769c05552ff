"""The calibration as people read it: a rich table, estimate beside P50, P90 and the
suggestion, with a note saying why a step stands out."""

from __future__ import annotations

from typing import Final

from rich.table import Table
from rich.text import Text

from cutbook.audit.calibrate import Calibration, RunUsed, StepCalibration, show_duration

__all__ = ["calibration_table"]

_VERDICT_STYLE: Final = {"late": "bold red", "padded": "yellow", "ok": "green", "unobserved": "dim"}


def _note(step: StepCalibration) -> str:
    parts: list[str] = []
    verdict = step.verdict
    if verdict == "late":
        parts.append("LATE: estimate below P90, will likely run late")
    elif verdict == "padded":
        parts.append("padding: estimate over twice the P90")
    elif verdict == "unobserved":
        parts.append("never observed")
    fan = [o for o in step.observations if o.items is not None]
    if fan:
        o = fan[-1]
        parts.append(
            f"per batch: {o.items} items, {o.concurrency} at a time = {o.batches} batch"
            f"{'es' if o.batches != 1 else ''}"
        )
    if step.estimate_default:
        parts.append("default estimate")
    reasons = sorted({why for _, why in step.excluded})
    if reasons:
        parts.append(f"not counted: {len(step.excluded)} ({'; '.join(reasons)})")
    return "; ".join(parts)


def calibration_table(cal: Calibration) -> Table:
    """The table people read: estimate beside P50, P90 and the suggestion, per step."""
    table = Table(
        title=f"estimates of {cal.runbook} against {len(cal.runs)} run(s)",
        title_justify="left",
    )
    for column in ("step", "estimate", "n", "P50", "P90", "suggested", "change"):
        # Ids and durations are read whole or not at all: only the note may fold.
        table.add_column(column, justify="left" if column == "step" else "right", no_wrap=True)
    table.add_column("note", overflow="fold", ratio=1)
    for s in cal.steps:
        change = s.change_s
        change_text = "—" if change is None else ("=" if change == 0 else _signed(change))
        p50, p90 = s.p50_s, s.p90_s
        table.add_row(
            s.id,
            show_duration(s.estimate_s),
            str(s.n),
            "—" if p50 is None else show_duration(p50),
            "—" if p90 is None else show_duration(p90),
            s.suggested or "—",
            change_text,
            Text(_note(s), style=_VERDICT_STYLE[s.verdict]),
        )
    runs = ", ".join(f"{r.run_id} ({_mode(r)})" for r in cal.runs) or "none usable"
    table.caption = (
        f"runs: {runs}\n"
        "P50/P90: nearest rank over the runs' actual durations (runbook time), per batch "
        f"for a fan-out; suggested: P{cal.percentile} rounded up"
    )
    table.caption_justify = "left"
    return table


def _mode(run: RunUsed) -> str:
    speed = f" ×{run.speed:g}" if run.speed and run.mode == "rehearsal" else ""
    changed = ", other runbook text" if not run.same_text else ""
    return f"{run.mode}{speed}{changed}"


def _signed(seconds: float) -> str:
    return ("+" if seconds > 0 else "-") + show_duration(abs(seconds))
