"""The simulated customs estate: a real HTTP service that demos and tests drive.

Import-light on purpose: ``check_final_state`` and ``SimulatorProcess`` need
neither FastAPI nor uvicorn; ``create_app`` and ``serve`` load them on use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cutbook.simulator.final import check_final_state
from cutbook.simulator.process import SimulatorProcess

if TYPE_CHECKING:
    from cutbook.simulator.app import create_app
    from cutbook.simulator.faults import FaultConfig, load_faults
    from cutbook.simulator.server import serve

__all__ = [
    "FaultConfig",
    "SimulatorProcess",
    "check_final_state",
    "create_app",
    "load_faults",
    "serve",
]

_LAZY = {
    "create_app": "cutbook.simulator.app",
    "serve": "cutbook.simulator.server",
    "FaultConfig": "cutbook.simulator.faults",
    "load_faults": "cutbook.simulator.faults",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'cutbook.simulator' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
