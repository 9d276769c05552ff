"""The entry points: read a runbook file and hand back a :class:`LoadedRunbook` or every error."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from cutbook import yamlsafe
from cutbook.diagnostics import Diagnostic, Location
from cutbook.errors import RunbookInvalid, RunbookLoadError, UsageError
from cutbook.validation.checker import check
from cutbook.validation.loaded import LoadedRunbook
from cutbook.validation.wording import display_name


def parse_overrides(pairs: Iterable[str]) -> dict[str, Any]:
    """``--var key=value`` pairs; values read as YAML scalars (so 3 is a number)."""
    result: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--var {pair!r}: write --var name=value")
        try:
            value = yamlsafe.load_text(raw, "--var").data if raw.strip() else ""
        except RunbookLoadError:
            value = raw
        result[key.strip()] = value if not isinstance(value, dict | list) else raw
    return result


def load(
    path: Path,
    *,
    overrides: Mapping[str, Any] | None = None,
    strict: bool = False,
    display: str | None = None,
) -> LoadedRunbook:
    """Load and check ``path``; raise RunbookInvalid carrying every diagnostic."""
    name = display or display_name(path)
    try:
        raw_bytes = path.read_bytes()
    except FileNotFoundError:
        raise RunbookInvalid([Diagnostic(Location(name), "no such file")]) from None
    except IsADirectoryError:
        raise RunbookInvalid(
            [Diagnostic(Location(name), "is a directory, not a runbook")]
        ) from None
    except OSError as exc:
        raise RunbookInvalid([Diagnostic(Location(name), f"cannot read: {exc.strerror}")]) from None
    try:
        doc = yamlsafe.load_file(path, display=name)
    except RunbookLoadError as exc:
        raise RunbookInvalid([exc.diagnostic]) from None
    loaded, diags = check(path, name, doc, dict(overrides or {}))
    errors = [d for d in diags if d.severity == "error"]
    warnings = [d for d in diags if d.severity == "warning"]
    if strict:
        errors += [w.as_error() for w in warnings]
        warnings = []
    if errors or loaded is None:
        raise RunbookInvalid(sorted(errors, key=lambda d: (d.location.line, d.location.col)))
    loaded.text = raw_bytes.decode("utf-8")
    loaded.sha256 = hashlib.sha256(raw_bytes).hexdigest()
    loaded.warnings = warnings
    return loaded
