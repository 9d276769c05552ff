"""Gates people can actually open: enough approvers for the quorum, keys for signed gates.

Caught here, before the night, because a gate that can never be opened is found
out only at 01:28, when it matters most.
"""

from __future__ import annotations

from cutbook.model import Runbook
from cutbook.validation.report import Report
from cutbook.validation.wording import did_you_mean


def check_approvals(report: Report, rb: Runbook) -> None:
    known = set(rb.approvers)
    for step in rb.steps:
        spec = step.approval
        if spec is None:
            continue
        names = spec.approvers
        if len(set(names)) != len(names):
            twice = sorted({n for n in names if names.count(n) > 1})
            report.err(
                report.step_path(step, "approval", "approvers"),
                f"{', '.join(twice)} listed twice: a quorum counts distinct people",
            )
        if names and spec.quorum > len(set(names)):
            report.err(
                report.step_path(step, "approval", "quorum"),
                f"quorum {spec.quorum} needs at least {spec.quorum} distinct approvers; "
                f"{len(set(names))} listed",
            )
        if spec.signed:
            if not names:
                report.err(
                    report.step_path(step, "approval", "signed"),
                    "a signed gate must list its approvers, each with a key under approvers:",
                )
            unkeyed = [n for n in names if rb.approvers.get(n) is None or not rb.approvers[n].key]
            if unkeyed:
                report.err(
                    report.step_path(step, "approval", "signed"),
                    f"signed: true, but no key for {', '.join(unkeyed)}: add "
                    f"approvers: {{{unkeyed[0]}: {{key: ...}}}} (cutbook keys new "
                    f"{unkeyed[0]} prints it)",
                )
        if known:
            for i, name in enumerate(names):
                if name not in known:
                    report.warn(
                        report.step_path(step, "approval", "approvers", i),
                        f"{name!r} is not listed under approvers{did_you_mean(name, known)}",
                    )
    if known:
        for i, name in enumerate(rb.guard.approvers):
            if name not in known:
                report.warn(
                    ("guard", "approvers", i),
                    f"{name!r} is not listed under approvers{did_you_mean(name, known)}",
                )
