"""Finds the simulated estate (the cutbook-simulator distribution) only when it is needed.

The simulator is its own distribution with its own dependencies (uvicorn, an
X.509 CA), and a production install of cutbook may not have it. So the core
never imports ``cutbook_simulator``: ``cutbook simulator`` and ``cutbook demo``
look it up here, through the ``cutbook.simulator`` entry-point group, and a
missing simulator is a one-line UsageError that says how to install it.

The group's names are this module's contract with the simulator:

``estate``
    a class like :class:`SimulatedEstate`: the estate in a child process;
``serve``
    ``serve(host, port, faults, state, seed)``: run the estate in this process;
``usage_error``
    the exception class ``serve`` raises for a user mistake.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from types import TracebackType
from typing import Protocol, cast

from cutbook.errors import UsageError

__all__ = [
    "GROUP",
    "INSTALL_HINT",
    "EstateFactory",
    "SimulatedEstate",
    "estate_factory",
    "installed",
    "serve",
]

GROUP = "cutbook.simulator"
INSTALL_HINT = "pip install ./simulator"


class SimulatedEstate(Protocol):
    """What the core uses of a running simulator: its address and its lifetime."""

    @property
    def url(self) -> str: ...

    @property
    def pid(self) -> int | None: ...

    def __enter__(self) -> SimulatedEstate: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


class EstateFactory(Protocol):
    """``SimulatorProcess``'s constructor, as far as the core calls it."""

    def __call__(
        self,
        state_path: Path | None = None,
        faults: str | None = None,
        *,
        env: dict[str, str] | None = None,
    ) -> SimulatedEstate: ...


ServeFunction = Callable[..., None]


def _entry_points() -> dict[str, EntryPoint]:
    found: dict[str, EntryPoint] = {}
    for ep in entry_points(group=GROUP):
        found.setdefault(ep.name, ep)
    return found


def installed() -> bool:
    """Whether a simulator is registered, without importing it."""
    return "estate" in _entry_points()


def _load(name: str) -> object:
    """One object of the simulator's entry-point group, or a UsageError saying what to do."""
    ep = _entry_points().get(name)
    if ep is None:
        raise UsageError(
            f"the simulator is not installed (no {name!r} in entry-point group {GROUP}): "
            f"{INSTALL_HINT}"
        )
    try:
        return ep.load()
    # What a broken install realistically raises on import (as in cutbook.registry).
    except (ImportError, AttributeError, SyntaxError) as exc:
        raise UsageError(
            f"the simulator is installed but {ep.value} failed to import: "
            f"{type(exc).__name__}: {exc} (reinstall it: {INSTALL_HINT})"
        ) from exc


def estate_factory() -> EstateFactory:
    """The class that runs the simulated estate in a child process (``SimulatorProcess``)."""
    return cast(EstateFactory, _load("estate"))


def serve(
    *,
    host: str,
    port: int,
    faults: str | None,
    state: Path,
    seed: Path | None,
) -> None:
    """Run the simulator in this process until it is stopped (``cutbook simulator``).

    The simulator reports user mistakes with its own exception class; they
    become cutbook's UsageError, so the CLI prints one line and exits 2.
    """
    run = cast(ServeFunction, _load("serve"))
    usage_error = _load("usage_error")
    if not (isinstance(usage_error, type) and issubclass(usage_error, Exception)):
        raise UsageError("the simulator's usage_error entry point is not an exception class")
    try:
        run(host=host, port=port, faults=faults, state=state, seed=seed)
    except usage_error as exc:
        raise UsageError(str(exc)) from None
