"""The simulated customs estate: a real HTTP service that demos and tests drive.

Import-light on purpose: ``check_final_state`` and ``SimulatorProcess`` need
neither FastAPI nor uvicorn; ``create_app`` and ``serve`` load them on use.
cutbook's core finds this package through the ``cutbook.simulator`` entry-point
group and never imports it on its own import.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cutbook_simulator.errors import SimulatorUsageError
from cutbook_simulator.final import check_final_state
from cutbook_simulator.process import SimulatorProcess

if TYPE_CHECKING:
    from cutbook_simulator.app import create_app
    from cutbook_simulator.faults import FaultConfig, load_faults
    from cutbook_simulator.server import serve

__all__ = [
    "FaultConfig",
    "SimulatorProcess",
    "SimulatorUsageError",
    "check_final_state",
    "create_app",
    "load_faults",
    "serve",
]

_LAZY = {
    "create_app": "cutbook_simulator.app",
    "serve": "cutbook_simulator.server",
    "FaultConfig": "cutbook_simulator.faults",
    "load_faults": "cutbook_simulator.faults",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'cutbook_simulator' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
