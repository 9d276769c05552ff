"""Pytest fixtures for code that talks to the simulated estate.

Defined once here so every distribution's tests (the core's, the built-in
adapters', a third-party adapter's) share one way to start and reset the
estate. A ``conftest.py`` brings them in by importing them::

    from cutbook_simulator.testing import fresh_estate as fresh_estate
    from cutbook_simulator.testing import sim as sim

Only test code imports this module, so pytest is not a runtime dependency of
the simulator (it is in the ``test`` extra).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from cutbook_simulator.process import SimulatorProcess, free_port

__all__ = ["SimulatorProcess", "free_port", "fresh_estate", "sim"]


@pytest.fixture(scope="module")
def sim() -> Iterator[SimulatorProcess]:
    """One simulated estate per test module, over loopback (starting one costs ~1 s)."""
    with SimulatorProcess() as process:
        yield process


@pytest.fixture
def fresh_estate(sim: SimulatorProcess) -> None:
    """Back to the seeded estate with no fault rules, before each test that asks."""
    sim.reset()
