"""What a runbook reads besides itself: variables, data files and secret names."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cutbook import datafiles
from cutbook.diagnostics import Diagnostic, Location
from cutbook.model import Runbook
from cutbook.validation.report import Report
from cutbook.validation.wording import did_you_mean, display_name, plural


def check_vars(report: Report, rb: Runbook, overrides: dict[str, Any]) -> dict[str, Any]:
    """The runbook's variables with ``--var`` applied; a misspelt override is an error."""
    merged = dict(rb.vars)
    for key, value in overrides.items():
        if key not in rb.vars:
            report.add(
                Diagnostic(
                    Location("--var"),
                    f"unknown variable {key!r}{did_you_mean(key, rb.vars)}; "
                    f"the runbook declares: {plural(rb.vars)}",
                )
            )
        merged[key] = value
    return merged


def check_data(report: Report, rb: Runbook, base: Path) -> dict[str, datafiles.Records]:
    """Every data file read now, relative to the runbook, so a bad row fails validation."""
    loaded: dict[str, datafiles.Records] = {}
    for name, rel in rb.data.items():
        file = (base / rel).resolve()
        try:
            loaded[name] = datafiles.load(file, display_name(file))
        except datafiles.DataFileError as exc:
            report.add(datafiles.diagnostic(exc, report.doc.locate(("data", name)), name))
            loaded[name] = []
    return loaded


def check_secrets(report: Report, rb: Runbook) -> None:
    """A secret listed twice is a copy-paste slip worth pointing out."""
    first: dict[str, int] = {}
    for i, secret in enumerate(rb.secrets):
        if secret in first:
            line = report.doc.locate(("secrets", first[secret])).line
            report.err(("secrets", i), f"secret {secret!r} is listed twice (first at line {line})")
        else:
            first[secret] = i
