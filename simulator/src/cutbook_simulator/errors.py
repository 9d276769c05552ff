"""The simulator's one error class, so the estate needs nothing from cutbook's core.

A ``SimulatorUsageError`` is a user mistake (bad ``--port``, unreadable faults
file or office list, a state file that is not the simulator's): it prints as a
one-line message with exit status 2, never as a traceback. ``cutbook simulator``
turns it into cutbook's own ``UsageError``.
"""

from __future__ import annotations

__all__ = ["SimulatorUsageError"]


class SimulatorUsageError(Exception):
    """Bad command-line input or files given to the simulator (exit 2)."""

    exit_code: int = 2
