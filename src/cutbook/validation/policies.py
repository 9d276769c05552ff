"""Warnings about a runbook that is valid but risky: what cannot be undone, and when."""

from __future__ import annotations

from collections.abc import Container, Mapping

from cutbook.model import Runbook
from cutbook.validation.loaded import LoadedRunbook
from cutbook.validation.report import Report


def check_policies(
    report: Report, rb: Runbook, loaded: LoadedRunbook, ancestors: Mapping[str, Container[str]]
) -> None:
    """Every mutating step can be undone, and irreversible steps wait for the last gate."""
    gates = [s for s in rb.steps if s.approval is not None]
    last_gate = gates[-1] if gates else None
    for step in rb.steps:
        if step.target is None or step.action is None or step.target not in loaded.adapters:
            continue
        if report.broken_in(step, "rollback", "irreversible", "always", "approval"):
            continue  # the warnings below would rest on a value that was wrong
        spec = loaded.adapters[step.target].actions.get(step.action)
        if spec is None:
            continue
        if (
            spec.mutating
            and step.rollback is None
            and not step.irreversible
            and not spec.reversible
        ):
            report.warn(
                report.step_path(step),
                f"step {step.id!r} changes things ({rb.targets[step.target].adapter} "
                f"{step.action}) but has neither rollback nor irreversible: true",
            )
        if (
            step.irreversible
            and last_gate is not None
            and step.id != last_gate.id
            and last_gate.id not in ancestors.get(step.id, frozenset())
            and not step.always
        ):
            report.warn(
                report.step_path(step, "irreversible"),
                f"irreversible step {step.id!r} can run before the last go/no-go gate "
                f"{last_gate.id!r}; make it depend on the gate",
            )
