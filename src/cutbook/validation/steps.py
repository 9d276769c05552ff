"""One step's own rules: gates, target and action, fan-out, verify, rollback, item keys.

Each concern is its own function, called in a fixed order so messages come out
in the same order every time. A step whose target or action is missing or
wrong gets no call checks (they would only repeat that error); nor does one
whose ``approval`` is wrong (it may be a gate or a call), whose ``for_each`` or
``depends_on`` is wrong (its templates may read item or other steps' outputs)
or, for its own arguments, whose ``with`` is wrong. Every other check still runs.
"""

from __future__ import annotations

from collections.abc import Container, Mapping
from typing import Any

from cutbook import templating
from cutbook.adapter import Adapter
from cutbook.model import Runbook, Step
from cutbook.validation.adapters import check_call
from cutbook.validation.loaded import LoadedRunbook
from cutbook.validation.report import PathKey, Report
from cutbook.validation.shell import check_shell_strings
from cutbook.validation.templates import check_templates
from cutbook.validation.wording import did_you_mean, kind, plural


def check_step(
    report: Report,
    rb: Runbook,
    step: Step,
    loaded: LoadedRunbook,
    ancestors: Mapping[str, Container[str]],
) -> None:
    """Every check of one step; ``ancestors`` say which steps' outputs each may read."""
    if report.broken_in(step, "approval"):
        return
    if (
        step.preflight is not None
        and (step.approval is not None or step.target is None)
        and not report.broken_in(step, "target")
    ):
        report.err(
            report.step_path(step, "preflight"),
            f"step {step.id!r} calls no target, so the pre-flight does not check it: "
            "a preflight belongs to a step with a target and an action",
        )
    if step.approval is not None:
        check_gate(report, step)
        return
    if report.broken_in(step, "target", "action"):
        return
    call = _runnable(report, rb, step, loaded)
    if call is None or report.broken_in(step, "for_each", "depends_on"):
        return
    target, action, cls = call
    mine = ancestors.get(step.id, frozenset())
    sp = report.step_path(step)
    # A step with a broken for_each still fans out: its use of item or index is
    # not called an error as well.
    check_for_each(report, step, loaded, mine)
    if not report.broken_in(step, "with"):
        check_call(report, step, target, action, step.with_, sp, loaded, mine, "with")
    check_verify(report, rb, step, target, action, loaded, mine)
    check_preflight(report, rb, step, target, loaded)
    check_rollback(report, rb, step, target, action, cls, loaded, mine)
    check_shell_strings(report, rb, step)
    if step.item_key is not None:
        check_templates(report, step.item_key, (*sp, "item_key"), loaded, step, mine)


def check_gate(report: Report, step: Step) -> None:
    """An approval gate waits for people: it calls nothing and does not fan out."""
    sp = report.step_path(step)
    for key in ("target", "action"):
        if getattr(step, key) is not None:
            report.err((*sp, key), f"step {step.id!r} is an approval gate: a gate has no {key}")
    if step.for_each is not None:
        report.err((*sp, "for_each"), f"approval gate {step.id!r} cannot fan out")


def _runnable(
    report: Report, rb: Runbook, step: Step, loaded: LoadedRunbook
) -> tuple[str, str, type[Adapter]] | None:
    """The step's target, action and adapter, or None (reported, unless a no-op step)."""
    sp = report.step_path(step)
    if step.target is None:
        if step.action is not None or step.with_:
            report.err((*sp, "action"), f"step {step.id!r} has an action but no target")
        return None
    if step.target not in rb.targets:
        hint = did_you_mean(step.target, rb.targets)
        report.err((*sp, "target"), f"step {step.id!r} uses unknown target {step.target!r}{hint}")
        return None
    cls = loaded.adapters.get(step.target)
    if cls is None:
        return None  # the target's own error was reported
    if step.action is None:
        report.err(sp, f"step {step.id!r} needs an action ({plural(cls.actions)})")
        return None
    return step.target, step.action, cls


def check_for_each(report: Report, step: Step, loaded: LoadedRunbook, mine: Container[str]) -> None:
    """A fan-out must give a list; when it can be known now, count the items for the plan."""
    if step.for_each is None:
        return
    path = report.step_path(step, "for_each")
    if isinstance(step.for_each, list):
        loaded.item_counts[step.id] = len(step.for_each)
        return
    if not templating.is_template(step.for_each):
        example = '"{{ data.offices }}"'
        report.err(path, f"step {step.id!r}: for_each is a list or a template such as {example}")
        return
    # Checked as if the step did not fan out, so the list cannot use item or index.
    without = step.model_copy(update={"for_each": None})
    if not check_templates(report, step.for_each, path, loaded, without, mine):
        return
    info = templating.analyze(step.for_each)
    if info.names & templating.RUNTIME_NAMES:
        return
    try:
        value = templating.render(step.for_each, loaded.static_context())
    except templating.TemplateError as exc:
        report.err(path, f"step {step.id!r}: for_each: {exc}")
        return
    if not isinstance(value, list):
        report.err(path, f"step {step.id!r}: for_each gives {kind(value)}, not a list")
        return
    loaded.item_counts[step.id] = len(value)


def check_verify(
    report: Report,
    rb: Runbook,
    step: Step,
    target: str,
    action: str,
    loaded: LoadedRunbook,
    mine: Container[str],
) -> None:
    """A verify reads the step's result; it should not change anything itself.

    ``target`` and ``action`` are the step's own, which the verify inherits.
    """
    v = step.verify
    if v is None:
        return
    vtarget = v.target or target
    vaction = v.action or action
    args = dict(v.with_)
    vpath = (*report.step_path(step), "verify")
    moved: dict[str, PathKey] = {}
    if v.expect is not None:
        args["expect"] = v.expect
        moved["expect"] = (*vpath, "expect")
    if v.action is None:
        _ignored(report, step, vpath, "verify", v.target, v.with_, v.expect)
    elif _known_target(report, rb, vtarget, (*vpath, "target"), step):
        check_call(report, step, vtarget, vaction, args, vpath, loaded, mine, "with", moved, True)
        spec = loaded.adapters[vtarget].actions.get(vaction)
        if spec is not None and spec.mutating:
            report.warn(
                (*vpath, "action"),
                f"step {step.id!r} verifies with {vaction!r}, which changes things; "
                "verification should only read",
            )


def check_preflight(
    report: Report, rb: Runbook, step: Step, target: str, loaded: LoadedRunbook
) -> None:
    """A pre-flight precondition is checked like a verify, but must only read, and runs
    before the night, so no step's output exists for it (``target`` is the step's own)."""
    p = step.preflight
    if p is None:
        return
    ppath = (*report.step_path(step), "preflight")
    ptarget = p.target or target
    if not _known_target(report, rb, ptarget, (*ppath, "target"), step):
        return
    args = dict(p.with_)
    moved: dict[str, PathKey] = {}
    if p.expect is not None:
        args["expect"] = p.expect
        moved["expect"] = (*ppath, "expect")
    for where, text in templating.walk_strings(args):
        try:
            night = templating.analyze(text).names & {"steps", "output", "run"}
        except templating.TemplateProblem:
            continue  # check_call reports it
        if night:
            report.err(
                (*ppath, *(("with", *where) if where[:1] != ("expect",) else where)),
                f"step {step.id!r}: preflight uses {' and '.join(sorted(night))}, which exist "
                "only during the night; a pre-flight may use item, index, vars, data and secrets",
            )
            return
    check_call(report, step, ptarget, p.action, args, ppath, loaded, frozenset(), "with", moved)
    spec = loaded.adapters[ptarget].actions.get(p.action) if ptarget in loaded.adapters else None
    if spec is not None and spec.mutating:
        report.err(
            (*ppath, "action"),
            f"step {step.id!r}: preflight action {p.action!r} changes things; a pre-flight "
            "only reads (use a read-only action such as get, query or probe)",
        )


def check_rollback(
    report: Report,
    rb: Runbook,
    step: Step,
    target: str,
    action: str,
    cls: type[Adapter],
    loaded: LoadedRunbook,
    mine: Container[str],
) -> None:
    """A rollback calls its own action, or relies on the adapter's built-in undo.

    ``target``, ``action`` and ``cls`` are the step's own call and adapter.
    """
    r = step.rollback
    if r is None:
        return
    rpath = (*report.step_path(step), "rollback")
    if r.action is not None:
        rtarget = r.target or target
        if _known_target(report, rb, rtarget, (*rpath, "target"), step):
            check_call(
                report, step, rtarget, r.action, r.with_, rpath, loaded, mine, "with", {}, True
            )
        return
    _ignored(report, step, rpath, "rollback", r.target, r.with_, None)
    spec = cls.actions.get(action)
    if spec is not None and not spec.reversible:
        report.err(
            rpath,
            f"{rb.targets[target].adapter} action {action!r} has no built-in "
            "rollback: give rollback.action",
        )


def _ignored(
    report: Report,
    step: Step,
    path: PathKey,
    block: str,
    target: str | None,
    args: Mapping[str, Any],
    expect: Any,
) -> None:
    """Keys of a verify or rollback without ``action`` that the engine would not use."""
    unused = [
        k
        for k, v in (("target", target), ("with", args or None), ("expect", expect))
        if v is not None
    ]
    if unused:
        keys = " and ".join(f"{block}.{k}" for k in unused)
        report.err(
            (*path, unused[0]),
            f"step {step.id!r}: {block} has no action, so the adapter's own {block} runs "
            f"with the step's own arguments and {keys} would be ignored; give {block}.action",
            key=True,
        )


def _known_target(report: Report, rb: Runbook, name: str, path: PathKey, step: Step) -> bool:
    """A verify or rollback may call another target, which must exist too."""
    if name in rb.targets:
        return True
    report.err(
        path, f"step {step.id!r} uses unknown target {name!r}{did_you_mean(name, rb.targets)}"
    )
    return False
