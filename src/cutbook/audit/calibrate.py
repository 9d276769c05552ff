"""Calibrating a runbook's estimates from how long its rehearsals actually took.

Why: the plan (critical path, window fit, point of no return) is only as good
as the estimates, and the estimates are usually guesses made before the first
rehearsal. Each rehearsal's journal records, for every step, when it started
and finished in runbook time; this module puts the estimate beside the P50
and P90 of those actual durations and suggests a new estimate, which
:func:`write_estimates` can write back into the runbook's text.

Only verified journals of the same runbook count. A step's actual duration is
``finished - started`` of its ``step.finished`` record, for steps that
succeeded (not dry-run, skipped, failed or rolled back) and for gates only
when a person answered (an automatic answer measures nothing). A fan-out's
estimate is per batch of ``concurrency`` items, so its actual duration is
divided by the batches that run really had before it is compared.

Percentiles are *nearest rank*: P is the smallest observed duration with at
least P% of the observations at or below it. It is always a duration that
really happened; with fewer than ten runs, P90 is the slowest run.
"""

from __future__ import annotations

import math
import os
import stat
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

from cutbook import yamlsafe
from cutbook.audit.runs import run_mode
from cutbook.durations import format_duration, parse_duration
from cutbook.errors import RunbookError, RunbookInvalid, UsageError
from cutbook.estimates import EstimateChange, estimate_text, round_up_estimate, set_estimates
from cutbook.journal import RunSummary, StepSummary, resolve_run, summarize, verify
from cutbook.model import Step
from cutbook.validation import LoadedRunbook, load

__all__ = [
    "METHOD",
    "Calibration",
    "Observation",
    "RunUsed",
    "StepCalibration",
    "calibrate",
    "nearest_rank",
    "resolve_journal",
    "show_duration",
    "write_estimates",
]

METHOD: Final = "nearest-rank"
PADDING_FACTOR: Final = 2.0
PADDING_MIN_S: Final = 60.0
"""An estimate is padding when it is at least twice the P90 *and* a minute more."""

Verdict = Literal["late", "padded", "ok", "unobserved"]
_DEFAULT_CONCURRENCY: Final[int] = Step.model_fields["concurrency"].default


def nearest_rank(values: Sequence[float], percent: float) -> float:
    """The nearest-rank percentile: the ceil(P/100 × n)-th smallest value."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    rank = max(1, math.ceil(percent / 100 * len(ordered)))
    return ordered[rank - 1]


def show_duration(seconds: float) -> str:
    """A duration as cutbook prints them (``1h30m``, ``90s``); under a second, ``250ms``.

    Rehearsal steps can be that quick, and ``0s`` beside a real estimate would
    read as "did nothing".
    """
    if 0 < abs(seconds) < 1:
        return f"{max(1, round(abs(seconds) * 1000))}ms"
    return format_duration(seconds)


@dataclass(frozen=True)
class Observation:
    """One run's actual duration of one step, and the value compared with the estimate."""

    run_id: str
    actual_s: float
    items: int | None = None
    batches: int = 1
    concurrency: int | None = None

    @property
    def value_s(self) -> float:
        """Per batch for a fan-out (what its estimate means), else the whole step."""
        return self.actual_s / self.batches

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "actual_s": self.actual_s,
            "items": self.items,
            "concurrency": self.concurrency,
            "batches": self.batches,
            "value_s": self.value_s,
        }


@dataclass
class StepCalibration:
    """A step's estimate beside what the runs measured, and what to write instead."""

    id: str
    title: str
    estimate_s: float
    estimate_default: bool
    """The runbook gives this step no estimate: it gets ``defaults.estimate``."""
    fan_out: bool
    percentile: int
    observations: list[Observation] = field(default_factory=list)
    excluded: list[tuple[str, str]] = field(default_factory=list)
    """(run id, why its duration was not used)."""

    @property
    def n(self) -> int:
        return len(self.observations)

    def _p(self, percent: int) -> float | None:
        values = [o.value_s for o in self.observations]
        return nearest_rank(values, percent) if values else None

    @property
    def p50_s(self) -> float | None:
        return self._p(50)

    @property
    def p90_s(self) -> float | None:
        return self._p(90)

    @property
    def suggested_s(self) -> int | None:
        """The chosen percentile rounded up to a unit a person writes."""
        basis = self._p(self.percentile)
        return None if basis is None else round_up_estimate(basis)

    @property
    def suggested(self) -> str | None:
        s = self.suggested_s
        return None if s is None else estimate_text(s)

    @property
    def change_s(self) -> float | None:
        s = self.suggested_s
        return None if s is None else s - self.estimate_s

    @property
    def verdict(self) -> Verdict:
        p90 = self.p90_s
        if p90 is None:
            return "unobserved"
        if self.estimate_s < p90:
            return "late"
        if self.estimate_s >= PADDING_FACTOR * p90 and self.estimate_s - p90 >= PADDING_MIN_S:
            return "padded"
        return "ok"

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "estimate_s": self.estimate_s,
            "estimate": show_duration(self.estimate_s),
            "estimate_default": self.estimate_default,
            "basis": "batch" if self.fan_out else "step",
            "n": self.n,
            "p50_s": self.p50_s,
            "p90_s": self.p90_s,
            "suggested_s": self.suggested_s,
            "suggested": self.suggested,
            "change_s": self.change_s,
            "verdict": self.verdict,
            "observations": [o.to_json() for o in self.observations],
            "excluded": [{"run_id": r, "reason": why} for r, why in self.excluded],
        }


@dataclass(frozen=True)
class RunUsed:
    """A journal the calibration read, and whether it ran this exact runbook text."""

    run_id: str
    path: Path
    started_at: str | None
    mode: str
    clock: str | None
    speed: float | None
    runbook_sha256: str | None
    same_text: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "path": str(self.path),
            "started_at": self.started_at,
            "mode": self.mode,
            "clock": self.clock,
            "speed": self.speed,
            "runbook_sha256": self.runbook_sha256,
            "same_text": self.same_text,
        }


@dataclass
class Calibration:
    """Every step of the runbook, in file order, against the runs read."""

    runbook: str
    path: str
    sha256: str
    percentile: int
    runs: list[RunUsed]
    steps: list[StepCalibration]
    unknown_steps: list[str] = field(default_factory=list)
    """Steps the runs did that the runbook no longer has (renamed or removed)."""
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "runbook": self.runbook,
            "path": self.path,
            "sha256": self.sha256,
            "method": METHOD,
            "percentile": self.percentile,
            "runs": [r.to_json() for r in self.runs],
            "steps": [s.to_json() for s in self.steps],
            "unknown_steps": list(self.unknown_steps),
            "warnings": list(self.warnings),
        }

    def suggestions(self) -> dict[str, str]:
        """Step id to suggested estimate, for every observed step (what ``--write`` writes)."""
        return {s.id: s.suggested for s in self.steps if s.suggested is not None}


# ---------------------------------------------------------------- reading runs


def resolve_journal(ref: str, journal_dir: Path) -> Path:
    """A run id (or unique prefix) in ``journal_dir``, or a path to a journal file."""
    candidate = Path(ref)
    if candidate.is_file():
        return candidate
    if "/" in ref or "\\" in ref or ref.endswith(".jsonl"):
        raise UsageError(f"--calibrate {ref}: no such journal file")
    try:
        return resolve_run(journal_dir, ref)
    except UsageError as exc:
        raise UsageError(f"--calibrate {ref}: {exc}") from None


def _read_run(
    ref: str, path: Path, loaded: LoadedRunbook, hmac_key: bytes | None
) -> tuple[RunSummary, list[str]]:
    """Verify and fold one journal; refuse one that fails or ran another runbook."""
    result = verify(path, hmac_key=hmac_key)
    if not result.passed:
        raise UsageError(
            f"--calibrate {ref}: the journal fails verification, not using it: {result.problem}"
        )
    summary = summarize(path)
    name = loaded.runbook.name
    if summary.runbook_name != name:
        raise UsageError(
            f"--calibrate {ref}: run {summary.run_id} is of runbook "
            f"{summary.runbook_name or '(unknown)'}, not {name}"
        )
    warnings = []
    if summary.runbook_sha256 != loaded.sha256:
        warnings.append(
            f"run {summary.run_id} ran another text of this runbook (sha256 "
            f"{(summary.runbook_sha256 or '?')[:12]}…, the file is {loaded.sha256[:12]}…): its "
            "estimates or steps may have changed since; its durations are still used"
        )
    return summary, warnings


def _run_concurrency(summary: RunSummary) -> dict[str, int]:
    """Each fan-out's concurrency as the run's own runbook text had it."""
    record = summary.started_record or {}
    text = record.get("runbook_text")
    if not isinstance(text, str):
        return {}
    try:
        data = yamlsafe.load_text(text, summary.run_id).data
    except RunbookError:
        return {}
    steps = data.get("steps") if isinstance(data, dict) else None
    found: dict[str, int] = {}
    for step in steps if isinstance(steps, list) else []:
        if isinstance(step, dict) and isinstance(step.get("id"), str):
            value = step.get("concurrency", _DEFAULT_CONCURRENCY)
            if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
                found[step["id"]] = value
    return found


def _planned_items(summary: RunSummary) -> dict[str, int]:
    """Item counts from the plan journalled in run.started (when no step.items was)."""
    plan = (summary.started_record or {}).get("plan")
    steps = plan.get("steps") if isinstance(plan, dict) else None
    found: dict[str, int] = {}
    for planned in steps if isinstance(steps, list) else []:
        if isinstance(planned, dict) and isinstance(planned.get("items"), int):
            found[str(planned.get("id"))] = planned["items"]
    return found


def _observe(
    step: Step,
    st: StepSummary,
    summary: RunSummary,
    concurrency: Mapping[str, int],
    planned: Mapping[str, int],
    auto_gates: set[str],
) -> Observation | str:
    """One run's observation of one step, or why there is none."""
    run_id = summary.run_id
    if st.status != "succeeded":
        return f"{st.status or 'not finished'}"
    if st.recorded is None or st.recorded[0] is None or st.recorded[1] is None:
        return "no start and finish recorded"
    actual = (st.recorded[1] - st.recorded[0]).total_seconds()
    if actual < 0:
        return "finished before it started (clock went back)"
    if step.is_gate and step.id in auto_gates:
        return "gate answered automatically: not a person's time"
    if step.for_each is None:
        return Observation(run_id, actual)
    if st.items:
        items: int | None = len(st.items)
    else:
        items = planned.get(step.id)
    if items is None:
        return "fan-out without a recorded item count"
    if items == 0:
        return "fan-out with no items: nothing to measure"
    per = concurrency.get(step.id, step.concurrency)
    return Observation(run_id, actual, items=items, batches=-(-items // per), concurrency=per)


def calibrate(
    loaded: LoadedRunbook,
    journals: Iterable[tuple[str, Path]],
    *,
    percentile: int = 90,
    hmac_key: bytes | None = None,
) -> Calibration:
    """Compare ``loaded``'s estimates with the runs in ``journals`` ((what was typed, path)).

    Raises :class:`UsageError` for a journal that fails verification or is of
    another runbook. Dry runs and pre-flight checks did nothing and are skipped
    with a warning; a run of a different text of the runbook is used, with one.
    """
    if percentile not in (50, 90):
        raise UsageError(f"--percentile {percentile}: use 50 or 90")
    rb = loaded.runbook
    warnings: list[str] = []
    runs: list[RunUsed] = []
    summaries: list[RunSummary] = []
    seen: set[Path] = set()
    for ref, path in journals:
        real = path.resolve()
        if real in seen:
            warnings.append(f"{ref}: given twice, counted once")
            continue
        seen.add(real)
        summary, notes = _read_run(ref, path, loaded, hmac_key)
        mode = run_mode(summary.dry_run, summary.clock, summary.preflight)
        if summary.dry_run or summary.preflight:
            warnings.append(
                f"run {summary.run_id} was a {mode}: nothing ran, so nothing to measure"
            )
            continue
        warnings.extend(notes)
        summaries.append(summary)
        runs.append(
            RunUsed(
                run_id=summary.run_id,
                path=path,
                started_at=summary.started_at,
                mode=mode,
                clock=summary.clock,
                speed=summary.speed,
                runbook_sha256=summary.runbook_sha256,
                same_text=summary.runbook_sha256 == loaded.sha256,
            )
        )

    steps = [
        StepCalibration(
            id=step.id,
            title=step.title,
            estimate_s=rb.estimate_of(step).total_seconds(),
            estimate_default=step.estimate is None,
            fan_out=step.for_each is not None,
            percentile=percentile,
        )
        for step in rb.steps
    ]
    by_id = {s.id: s for s in steps}
    model = {s.id: s for s in rb.steps}
    unknown: list[str] = []
    for summary in summaries:
        concurrency = _run_concurrency(summary)
        planned = _planned_items(summary)
        auto = {a.step for a in summary.approvals if a.auto}
        for st in summary.steps:
            target = by_id.get(st.id)
            if target is None:
                if st.status is not None and st.id not in unknown:
                    unknown.append(st.id)
                continue
            seen_here = _observe(model[st.id], st, summary, concurrency, planned, auto)
            if isinstance(seen_here, Observation):
                target.observations.append(seen_here)
            else:
                target.excluded.append((summary.run_id, seen_here))
    if unknown:
        warnings.append(
            "steps in the runs that this runbook no longer has (renamed or removed): "
            + ", ".join(unknown)
        )
    return Calibration(
        runbook=rb.name,
        path=loaded.display,
        sha256=loaded.sha256,
        percentile=percentile,
        runs=runs,
        steps=steps,
        unknown_steps=unknown,
        warnings=warnings,
    )


# ---------------------------------------------------------------- writing back


def write_estimates(
    loaded: LoadedRunbook,
    cal: Calibration,
    *,
    overrides: Mapping[str, Any] | None = None,
) -> list[EstimateChange]:
    """Write the suggestions into the runbook file in place; return what changed.

    The text is edited (see :mod:`cutbook.estimates`), validated again like any
    runbook, then swapped in atomically (a temporary file beside it, then
    ``os.replace``). On any failure the file is left exactly as it was. Nothing
    is written when nothing changes.
    """
    new_text, changes = set_estimates(loaded.text, cal.suggestions(), name=loaded.display)
    if not changes:
        return []
    target = loaded.path.resolve()
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as exc:
        raise RunbookError(f"cannot write beside {loaded.display}: {exc.strerror}") from None
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(new_text.encode("utf-8"))
            fh.flush()
            os.fsync(fh.fileno())
        try:
            again = load(tmp, overrides=overrides, display=loaded.display)
        except RunbookInvalid as exc:
            first = exc.diagnostics[0].render() if exc.diagnostics else str(exc)
            raise RunbookError(
                f"not writing {loaded.display}: with the new estimates it would not validate "
                f"({first}); the file is unchanged"
            ) from None
        for change in changes:
            step = next(s for s in again.runbook.steps if s.id == change.step)
            if step.estimate != parse_duration(change.new):
                raise RunbookError(
                    f"not writing {loaded.display}: step {change.step!r} would not read back "
                    f"as estimate {change.new}; the file is unchanged"
                )
        if target.read_bytes() != loaded.text.encode("utf-8"):
            raise RunbookError(
                f"not writing {loaded.display}: the file changed while calibrating; run again"
            )
        os.chmod(tmp, stat.S_IMODE(target.stat().st_mode))
        os.replace(tmp, target)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise RunbookError(
            f"cannot write {loaded.display}: {exc.strerror}; the file is unchanged"
        ) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return changes
