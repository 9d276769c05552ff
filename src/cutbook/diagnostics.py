"""Located messages about a runbook, the currency of validation.

A diagnostic always renders as ``file:line:col: message`` so editors and
terminals can jump to the spot; line and column are 1-based.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Severity = Literal["error", "warning"]


@dataclass(frozen=True, order=True)
class Location:
    file: str
    line: int = 0
    col: int = 0

    def render(self) -> str:
        if self.line:
            return f"{self.file}:{self.line}:{self.col}"
        return self.file


@dataclass(frozen=True)
class Diagnostic:
    location: Location
    message: str
    severity: Severity = "error"

    def render(self) -> str:
        prefix = "warning: " if self.severity == "warning" else ""
        return f"{self.location.render()}: {prefix}{self.message}"

    def as_error(self) -> Diagnostic:
        return Diagnostic(self.location, self.message, "error")
