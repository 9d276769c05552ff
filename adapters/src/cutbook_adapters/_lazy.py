"""Import heavy client libraries on first use.

``cutbook validate`` imports every adapter a runbook names, only to read its
argument models; httpx and cryptography cost more than the whole rest of a
validation. A module-level proxy keeps the adapter code natural
(``httpx.AsyncClient``) while the import happens when a run first needs it.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any


class LazyModule:
    def __init__(self, name: str) -> None:
        self._name = name
        self._module: ModuleType | None = None

    def __getattr__(self, attr: str) -> Any:
        if self._module is None:
            self._module = importlib.import_module(self._name)
        return getattr(self._module, attr)
