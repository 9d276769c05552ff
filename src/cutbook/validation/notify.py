"""Who hears what: ``notify:`` channels and the milestones steps mark.

Checked before the night because a misspelt milestone is silence exactly when
people expected to be told, and a URL template that needs a step's output
could not be sent before that step ran.
"""

from __future__ import annotations

import re

from cutbook import templating
from cutbook.model import MILESTONES, RUN_MILESTONES, STEP_ID, STEP_MILESTONES, Runbook
from cutbook.validation.loaded import LoadedRunbook
from cutbook.validation.report import Report
from cutbook.validation.templates import JINJA_GLOBALS, check_templates
from cutbook.validation.wording import did_you_mean

URL_NAMES = frozenset({"vars", "secrets"})
"""What a channel URL may template on: it is rendered once, before any step runs."""

_NAME = re.compile(STEP_ID)


def check_notify(report: Report, rb: Runbook, loaded: LoadedRunbook) -> None:
    """Step milestones are well named; every channel has URLs and hears real milestones."""
    marked = _check_step_milestones(report, rb)
    subscribed = {name for ch in rb.notify for name in ch.on}
    for step in rb.steps:
        m = step.milestone
        if m is None or m in STEP_MILESTONES or m in subscribed or not _NAME.match(m):
            continue
        hint = did_you_mean(m, STEP_MILESTONES)
        if hint:
            report.warn(
                report.step_path(step, "milestone"),
                f"step {step.id!r} marks milestone {m!r}, which no channel hears{hint}",
            )
    known = set(MILESTONES) | marked
    names: dict[str, int] = {}
    for i, channel in enumerate(rb.notify):
        label = repr(channel.name) if channel.name else f"number {i + 1}"
        if channel.name:
            if channel.name in names:
                report.err(
                    ("notify", i, "name"),
                    f"channel name {channel.name!r} is used twice (first is channel "
                    f"number {names[channel.name] + 1}); the journal tells channels by name",
                )
            names.setdefault(channel.name, i)
        _check_urls(report, loaded, i, label, channel.urls)
        if not channel.on:
            report.warn(
                ("notify", i),
                f"channel {label} hears no milestone; list some under on: "
                f"({', '.join(MILESTONES)})",
            )
        for k, milestone in enumerate(channel.on):
            path = ("notify", i, "on", k)
            if milestone not in known:
                report.err(
                    path,
                    f"channel {label}: unknown milestone {milestone!r}"
                    f"{did_you_mean(milestone, sorted(known))}; milestones: "
                    f"{', '.join(MILESTONES)}, or one a step marks with milestone:",
                )
            elif milestone in STEP_MILESTONES and milestone not in marked:
                report.warn(
                    path,
                    f"channel {label} hears {milestone!r}, but no step marks it; "
                    f"add milestone: {milestone} to the step that does it",
                )


def _check_step_milestones(report: Report, rb: Runbook) -> set[str]:
    """The milestone names steps mark (valid ones only)."""
    marked: set[str] = set()
    for step in rb.steps:
        m = step.milestone
        if m is None:
            continue
        path = report.step_path(step, "milestone")
        if not _NAME.match(m):
            report.err(
                path,
                f"step {step.id!r}: milestone {m!r} must be lowercase letters and digits, "
                "words joined by single dashes (intake-stopped)",
            )
        elif m in RUN_MILESTONES:
            report.err(
                path,
                f"step {step.id!r}: milestone {m!r} is announced by the run itself; a step "
                f"marks {' or '.join(STEP_MILESTONES)}, or a name of its own",
            )
        else:
            marked.add(m)
    return marked


def _check_urls(report: Report, loaded: LoadedRunbook, i: int, label: str, urls: list[str]) -> None:
    if not urls:
        report.err(
            ("notify", i),
            f"channel {label} has no urls; give at least one apprise URL "
            "(json://host/path, mailto://..., or a secret: '{{ secrets.OPS_WEBHOOK_URL }}')",
        )
        return
    for j, url in enumerate(urls):
        path = ("notify", i, "urls", j)
        if not templating.is_template(url):
            continue
        try:
            info = templating.analyze(url)
        except templating.TemplateProblem as exc:
            report.err(path, str(exc))
            continue
        other = sorted(info.names - URL_NAMES - JINJA_GLOBALS)
        if other:
            names = " and ".join(repr(n) for n in other)
            report.err(
                path,
                f"channel {label}: a URL may use only vars and secrets, not {names}; "
                "it is set up before any step runs",
            )
            continue
        check_templates(report, url, path, loaded, step=None, ancestors=frozenset())
