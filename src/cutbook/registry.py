"""Finds adapters through the ``cutbook.adapters`` entry-point group.

Built-in adapters are found exactly like third-party ones, so core never
imports them. Loading is lazy and per adapter: a plugin that fails to import
breaks only the runbooks that name it, with a message naming the plugin.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from importlib.metadata import EntryPoint, entry_points

from cutbook.adapter import Adapter
from cutbook.errors import RegistryError

GROUP = "cutbook.adapters"


@dataclass(frozen=True)
class AdapterEntry:
    name: str
    value: str
    distribution: str


@lru_cache(maxsize=1)
def _entry_points() -> dict[str, EntryPoint]:
    found: dict[str, EntryPoint] = {}
    for ep in entry_points(group=GROUP):
        found.setdefault(ep.name, ep)
    return found


def available() -> list[AdapterEntry]:
    """Every registered adapter name, without importing any of them."""
    entries = []
    for name, ep in sorted(_entry_points().items()):
        dist = ep.dist.name if ep.dist is not None else "?"
        entries.append(AdapterEntry(name=name, value=ep.value, distribution=dist))
    return entries


def names() -> list[str]:
    return sorted(set(_entry_points()) | set(_loaded))


_loaded: dict[str, type[Adapter]] = {}


def load(name: str) -> type[Adapter]:
    """Import one adapter class, or explain precisely why it cannot be had."""
    if name in _loaded:
        return _loaded[name]
    ep = _entry_points().get(name)
    if ep is None:
        known = ", ".join(names()) or "none are installed"
        raise RegistryError(f"no adapter named {name!r} is installed (known: {known})")
    try:
        cls = ep.load()
    # What a broken plugin realistically raises on import; the one broad catch stays
    # at the engine's step boundary.
    except (
        ImportError,
        AttributeError,
        SyntaxError,
        TypeError,
        ValueError,
        RuntimeError,
        OSError,
    ) as exc:
        raise RegistryError(
            f"adapter {name!r} ({ep.value}) failed to import: {type(exc).__name__}: {exc}"
        ) from exc
    for attr in ("Config", "actions", "apply"):
        if not hasattr(cls, attr):
            raise RegistryError(f"adapter {name!r} ({ep.value}) has no {attr!r}: not an adapter")
    _loaded[name] = cls
    return cls  # type: ignore[no-any-return]


def register(name: str, cls: type[Adapter]) -> None:
    """Make an adapter available without an entry point (tests, embedding)."""
    _loaded[name] = cls
