"""Turn a runbook file into a checked :class:`LoadedRunbook`, or every reason it cannot be.

All problems are collected and reported at once, each at the file, line and
column of the YAML node that caused it, so an operations lead fixes a runbook
in one pass. Nothing here touches a target system; the engine only ever
receives a runbook that came through :func:`load`.

:mod:`.loading` holds the entry points and :mod:`.checker` the order of the
checks, which live in modules named for their concern.
"""

from __future__ import annotations

from cutbook.validation.loaded import LoadedRunbook
from cutbook.validation.loading import load, parse_overrides
from cutbook.validation.wording import did_you_mean

__all__ = ["LoadedRunbook", "did_you_mean", "load", "parse_overrides"]
