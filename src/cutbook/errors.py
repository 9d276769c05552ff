"""Every error cutbook raises on purpose, under one root.

The engine decides retry versus fail by class alone, so adapters must pick
the right branch; the CLI turns any ``CutbookError`` into a message and an
exit code, and never into a traceback::

    CutbookError
    ├── UsageError                  bad command-line input (exit 2)
    ├── RunbookError                a runbook that cannot be used (exit 2)
    │   ├── RunbookLoadError        unreadable, unsafe or malformed YAML
    │   └── RunbookInvalid          loaded, but failed validation (carries diagnostics)
    ├── RegistryError               an adapter plugin is missing or failed to import
    ├── LeaseHeld                   another live process holds the run or its estate (exit 2)
    ├── AdapterError                raised by adapters while acting
    │   ├── TransientError          safe to retry: timeouts, resets, 429/502/503/504
    │   └── PermanentError          never retried
    │       └── VerificationFailed  the change did not take
    ├── EngineError                 the run itself cannot go on
    │   ├── GateRejected            a go/no-go gate said no, or timed out
    │   └── RunAborted              an operator or policy stopped the run
    └── JournalError                the audit journal cannot be trusted or written
        ├── JournalWriteError       append or fsync failed: the run must stop
        ├── JournalContractError    a writer broke the record contract (a bug, not a run failure)
        └── ChainBroken             verification found tampering or truncation
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cutbook.diagnostics import Diagnostic


class CutbookError(Exception):
    """Root of every deliberate cutbook error."""

    exit_code: int = 1


class UsageError(CutbookError):
    exit_code = 2


class RunbookError(CutbookError):
    exit_code = 2


class RunbookLoadError(RunbookError):
    """The file could not be read or parsed safely; carries one diagnostic."""

    def __init__(self, diagnostic: Diagnostic) -> None:
        super().__init__(diagnostic.render())
        self.diagnostic = diagnostic


class RunbookInvalid(RunbookError):
    """Validation found errors; all of them are reported at once."""

    def __init__(self, diagnostics: Sequence[Diagnostic]) -> None:
        self.diagnostics = list(diagnostics)
        super().__init__("\n".join(d.render() for d in self.diagnostics))


class RegistryError(CutbookError):
    exit_code = 2


class LeaseHeld(CutbookError):
    """Another live process holds the run's or the estate's lease: one actor at a time."""

    exit_code = 2


class AdapterError(CutbookError):
    """Base for failures raised while an adapter acts."""


class TransientError(AdapterError):
    """A failure that may succeed if tried again: the engine retries it.

    ``retry_after`` (seconds) lets a server's Retry-After steer the backoff.
    """

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PermanentError(AdapterError):
    """A failure that trying again cannot fix: the engine never retries it."""


class VerificationFailed(PermanentError):
    """The action ran but its verification says the change did not take."""


class EngineError(CutbookError):
    pass


class GateRejected(EngineError):
    pass


class RunAborted(EngineError):
    pass


class JournalError(CutbookError):
    pass


class JournalWriteError(JournalError):
    pass


class ChainBroken(JournalError):
    pass


class JournalContractError(JournalError, ValueError):
    """A writer broke the record contract: a programming error, not a run failure.

    Also a ``ValueError`` because that is what callers of ``append`` caught
    for a reserved field before the contract existed.
    """
