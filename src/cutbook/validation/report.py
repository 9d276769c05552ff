"""Where a check's findings go, each pinned to the YAML node that caused it."""

from __future__ import annotations

from dataclasses import dataclass, field

from cutbook import yamlsafe
from cutbook.diagnostics import Diagnostic
from cutbook.model import Step

PathKey = yamlsafe.PathKey


@dataclass
class Report:
    """Collects diagnostics so every problem is reported at once, not only the first.

    ``index`` maps a step id to the step's position in the file (its first
    occurrence), because checks hold model steps but must point at YAML nodes.
    ``broken`` maps a step id to the keys of that step that were wrong (already
    reported, and left out of the model), ``head_broken`` the same for the
    runbook's own keys: checks that read one of them skip it.
    """

    doc: yamlsafe.Document
    diags: list[Diagnostic] = field(default_factory=list)
    index: dict[str, int] = field(default_factory=dict)
    broken: dict[str, frozenset[str]] = field(default_factory=dict)
    head_broken: frozenset[str] = frozenset()

    def broken_in(self, step: Step, *keys: str) -> bool:
        """Whether any of ``keys`` of ``step`` was wrong, so what reads it cannot be checked."""
        if not self.broken:
            return False
        return not self.broken.get(step.id, frozenset()).isdisjoint(keys)

    def err(self, path: PathKey, message: str, *, key: bool = False) -> None:
        self.diags.append(Diagnostic(self.doc.locate(path, key=key), message))

    def warn(self, path: PathKey, message: str) -> None:
        self.diags.append(Diagnostic(self.doc.locate(path), message, "warning"))

    def add(self, diagnostic: Diagnostic) -> None:
        """Keep a diagnostic located elsewhere (a data file, a ``--var`` option)."""
        self.diags.append(diagnostic)

    def step_path(self, step: Step, *rest: str | int) -> PathKey:
        return ("steps", self.index[step.id], *rest)
