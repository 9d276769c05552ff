"""The two consoles every command prints to, and the helpers they share.

Results go to stdout so they can be piped; progress, warnings and errors go
to stderr. Nothing is marked up: runbook text must print exactly as written.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console

from cutbook.errors import UsageError

if TYPE_CHECKING:
    from cutbook.validation import LoadedRunbook

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


def load_runbook(path: Path, variables: list[str] | None, strict: bool = False) -> LoadedRunbook:
    """Load and validate, printing warnings; errors propagate as RunbookInvalid."""
    from cutbook.validation import load, parse_overrides

    loaded = load(path, overrides=parse_overrides(variables or []), strict=strict)
    for warning in loaded.warnings:
        err.print(warning.render(), style="yellow", markup=False)
    return loaded


def write_output(text: str, output: Path | None) -> None:
    """stdout by default; a file (parents created) with a note on stderr otherwise."""
    if output is None:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
        return
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"{output}: cannot write: {exc.strerror}") from None
    err.print(f"wrote {output}", markup=False)
