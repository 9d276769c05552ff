"""cutbook: cutover runbooks as code, run as Prefect flows, with a tamper-evident journal.

The names below are the public API for adapter authors: the adapter contract,
the errors that decide retry versus fail, the duration type and the testing
helpers. Everything else in the package is private by convention and may move.

They load on first use, so ``import cutbook.errors`` (and with it ``cutbook
validate``) does not pay for pydantic models or the contract suite it does not need.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    # the adapter contract
    "Adapter": "cutbook.adapter",
    "BaseAdapter": "cutbook.adapter",
    "ActionSpec": "cutbook.adapter",
    "AdapterContext": "cutbook.adapter",
    "Args": "cutbook.adapter",
    "Call": "cutbook.adapter",
    "Confirmation": "cutbook.adapter",
    "Result": "cutbook.adapter",
    "TargetConfig": "cutbook.adapter",
    "UrlPath": "cutbook.adapter",
    # errors: the class decides retry (Transient) versus fail (Permanent)
    "CutbookError": "cutbook.errors",
    "AdapterError": "cutbook.errors",
    "TransientError": "cutbook.errors",
    "PermanentError": "cutbook.errors",
    "VerificationFailed": "cutbook.errors",
    # durations as runbooks write them
    "Duration": "cutbook.durations",
    "format_duration": "cutbook.durations",
    "parse_duration": "cutbook.durations",
    # testing helpers and the shared contract suite
    "AdapterContract": "cutbook.testing",
    "FakeClock": "cutbook.testing",
    "auto_confirm": "cutbook.testing",
    "make_call": "cutbook.testing",
    "make_context": "cutbook.testing",
}

__all__ = [
    "ActionSpec",
    "Adapter",
    "AdapterContext",
    "AdapterContract",
    "AdapterError",
    "Args",
    "BaseAdapter",
    "Call",
    "Confirmation",
    "CutbookError",
    "Duration",
    "FakeClock",
    "PermanentError",
    "Result",
    "TargetConfig",
    "TransientError",
    "UrlPath",
    "VerificationFailed",
    "__version__",
    "auto_confirm",
    "format_duration",
    "make_call",
    "make_context",
    "parse_duration",
]

if TYPE_CHECKING:
    from cutbook.adapter import (
        ActionSpec,
        Adapter,
        AdapterContext,
        Args,
        BaseAdapter,
        Call,
        Confirmation,
        Result,
        TargetConfig,
        UrlPath,
    )
    from cutbook.durations import Duration, format_duration, parse_duration
    from cutbook.errors import (
        AdapterError,
        CutbookError,
        PermanentError,
        TransientError,
        VerificationFailed,
    )
    from cutbook.testing import (
        AdapterContract,
        FakeClock,
        auto_confirm,
        make_call,
        make_context,
    )


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'cutbook' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
