"""What a runbook that passed validation carries on to planning and running."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from cutbook import datafiles, yamlsafe
from cutbook.adapter import ActionSpec, Adapter
from cutbook.diagnostics import Diagnostic
from cutbook.model import Runbook


@dataclass
class LoadedRunbook:
    """A runbook that passed validation, with everything needed to plan or run it."""

    path: Path
    display: str
    text: str
    sha256: str
    document: yamlsafe.Document
    runbook: Runbook
    data: dict[str, datafiles.Records]
    vars: dict[str, Any]
    item_counts: dict[str, int]
    adapters: dict[str, type[Adapter]] = field(default_factory=dict)
    warnings: list[Diagnostic] = field(default_factory=list)

    def static_context(self, secrets: Mapping[str, str] | None = None) -> dict[str, Any]:
        rb = self.runbook
        window: dict[str, datetime | None]
        try:
            window = {"start": rb.window_start, "end": rb.window_end}
        except (ValueError, KeyError):  # a wrong window, already reported; the rest is checked
            window = {"start": None, "end": None}
        return {
            "vars": self.vars,
            "data": self.data,
            "secrets": dict(secrets) if secrets is not None else _secret_placeholders(rb.secrets),
            "runbook": {
                "name": rb.name,
                "window": window,
                "timezone": rb.timezone,
            },
        }

    def action_spec(self, target: str, action: str) -> ActionSpec:
        return self.adapters[target].actions[action]

    def read_only_steps(self) -> frozenset[str]:
        """Steps whose action changes nothing (a GET, a query): abandoning never undoes them."""
        out: set[str] = set()
        for step in self.runbook.steps:
            if step.target is None or step.action is None:
                continue
            cls = self.adapters.get(step.target)
            spec = cls.actions.get(step.action) if cls is not None else None
            if spec is not None and not spec.mutating:
                out.add(step.id)
        return frozenset(out)


def _secret_placeholders(names: Iterable[str]) -> dict[str, str]:
    """Stand-ins for secrets, whose values only exist during a run."""
    return {n: f"<secret {n}>" for n in names}
