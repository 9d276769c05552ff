"""The whole semantic pass over a parsed runbook, in the order the checks rely on.

Shapes come first, then times and inputs, the step graph, targets, each step,
and finally the policy warnings: each check may trust what the earlier ones
established, and messages come out in the same order every time.

Every independent mistake is reported in one pass. A step or runbook key
that is wrong is reported and left out, and the rest is still checked; only
a check that needs the wrong value is skipped (an ``at`` needs the window, a
call's arguments need its target and action, templates need the variables
and data they read), because its verdict could only repeat the first error
or be wrong.
"""

from __future__ import annotations

from collections.abc import Container, Mapping
from pathlib import Path
from typing import Any

from cutbook import yamlsafe
from cutbook.diagnostics import Diagnostic
from cutbook.model import API_VERSION, Runbook, Step
from cutbook.validation import dependencies, inputs, templates, times
from cutbook.validation.adapters import check_targets
from cutbook.validation.approvals import check_approvals
from cutbook.validation.loaded import LoadedRunbook
from cutbook.validation.notify import check_notify
from cutbook.validation.policies import check_policies
from cutbook.validation.pydantic_errors import validate_partly
from cutbook.validation.report import Report
from cutbook.validation.steps import check_step
from cutbook.validation.wording import kind


def check(
    path: Path, name: str, doc: yamlsafe.Document, overrides: dict[str, Any]
) -> tuple[LoadedRunbook | None, list[Diagnostic]]:
    """Check ``doc`` (read from ``path``, shown as ``name``); every diagnostic, in order found.

    The runbook is None when it is too broken to build; it may be built and
    still have errors among the diagnostics.
    """
    report = Report(doc)
    return _run(report, path, name, overrides), report.diags


def _run(report: Report, path: Path, name: str, overrides: dict[str, Any]) -> LoadedRunbook | None:
    """Stops early only where later checks would repeat an error or could not be trusted."""
    raw = report.doc.data
    if not isinstance(raw, dict):
        what = "the file is empty" if raw is None else f"the file holds {kind(raw)}"
        report.err((), f"{what}; a runbook is a mapping with apiVersion, name, window and steps")
        return None
    if raw.get("apiVersion") not in (None, API_VERSION):
        report.err(
            ("apiVersion",),
            f"unknown apiVersion {raw.get('apiVersion')!r}; this cutbook reads {API_VERSION}",
        )
        return None
    steps = _validate_steps(report, raw)
    head = {k: v for k, v in raw.items() if k != "steps"}
    if "steps" in raw:
        # Step errors were reported above; a stand-in keeps the model from
        # reporting them again (as a missing id) when no step was valid.
        head["steps"] = [s for _, s in steps] or [Step(id="placeholder")]
    rb, report.head_broken = validate_partly(report, Runbook, head, (), _HEAD_STAND_INS)
    if rb is None or not steps:
        return None
    rb.steps = [s for _, s in steps]
    report.index = {s.id: i for i, s in reversed(steps)}
    broken = report.head_broken
    timed = broken.isdisjoint({"window", "timezone"}) and times.check_window(report, rb)
    vars_ = inputs.check_vars(report, rb, overrides)
    templates.check_variable_templates(report, rb.vars)
    data = inputs.check_data(report, rb, path.parent)
    inputs.check_secrets(report, rb)
    loaded = LoadedRunbook(
        path=path,
        display=name,
        text="",
        sha256="",
        document=report.doc,
        runbook=rb,
        data=data,
        vars=vars_,
        item_counts={},
    )
    dependencies.check_unique_ids(report, rb, [i for i, _ in steps])
    dependencies.check_depends_on(report, rb, {s.id for s in rb.steps} | _raw_ids(raw))
    cyclic = dependencies.check_cycles(report, rb)
    # Where a depends_on was wrong, no step after it is told it reads a step it
    # does not wait for: that verdict would rest on the wrong value.
    unsure = [sid for sid, keys in report.broken.items() if "depends_on" in keys]
    ancestors: Mapping[str, Container[str]] = {} if cyclic else dependencies.Ancestry(rb, unsure)
    if timed:
        times.check_at(report, rb)
    if not broken.isdisjoint({"vars", "data", "secrets", "targets"}):
        return loaded  # every call and template reads these: their checks would mislead
    check_targets(report, rb, loaded)
    for step in rb.steps:
        check_step(report, rb, step, loaded, ancestors)
    if "notify" not in broken:
        check_notify(report, rb, loaded)
    if "approvers" not in broken:
        check_approvals(report, rb)
    check_policies(report, rb, loaded, ancestors)
    return loaded


_HEAD_STAND_INS = {
    "apiVersion": API_VERSION,
    "name": "runbook",
    "window": {"start": "2000-01-01T00:00", "end": "2000-01-01T01:00"},
}
"""Values for required runbook keys that were wrong, so the steps can still be checked."""


def _validate_steps(report: Report, raw: dict[str, Any]) -> list[tuple[int, Step]]:
    """Each valid step with its position in the file; invalid ones are reported and left out."""
    items = raw.get("steps")
    if items is None:
        if "steps" in raw:
            report.err(("steps",), "a runbook needs at least one step", key=True)
        return []
    if not isinstance(items, list):
        report.err(("steps",), "steps must be a list of steps")
        return []
    if not items:
        report.err(("steps",), "a runbook needs at least one step")
    good = []
    for i, item in enumerate(items):
        step, wrong = validate_partly(report, Step, item, ("steps", i), {"id": "placeholder"})
        if step is None:
            continue
        if "id" in wrong:
            # Named as written, so its other mistakes can still be told; without
            # a written id there is nothing to call it, and it is left out.
            written = item.get("id") if isinstance(item, dict) else None
            if not isinstance(written, str) or not written:
                continue
            step = step.model_copy(update={"id": written})
        if wrong:
            report.broken[step.id] = wrong
        good.append((i, step))
    return good


def _raw_ids(raw: dict[str, Any]) -> set[str]:
    """Ids written in the file, also of steps that failed validation."""
    return {
        s["id"]
        for s in raw.get("steps") or []
        if isinstance(s, dict) and isinstance(s.get("id"), str)
    }
