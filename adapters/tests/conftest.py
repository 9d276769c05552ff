"""Fixtures for the built-in adapters' tests: the simulated estate the http and pki
adapters talk to, from the simulator distribution (the core's tests use the same).
"""

from __future__ import annotations

from cutbook_simulator.testing import fresh_estate as fresh_estate
from cutbook_simulator.testing import sim as sim
