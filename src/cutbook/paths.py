"""Where cutbook keeps its files, decided in one place.

Every command (run, resume, audit, demo, server, serve) must find the same
journals from the same settings, from any working directory, so the lookup
order lives here and nowhere else: ``--data-dir``, else ``CUTBOOK_DATA_DIR``,
else the platform's user data directory (:func:`default_data_dir`); journals in
its ``journal/`` unless ``CUTBOOK_JOURNAL_DIR`` says otherwise.

Before there was one data directory per user, the default was ``./.cutbook``
of whatever directory a command ran from. Journals left there are never lost
from sight silently: when a command falls back to the default and the working
directory holds such journals, the CLI's notice hook (:func:`on_legacy_data_dir`)
is told once per process.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Final

APP_NAME: Final = "cutbook"
LEGACY_DATA_DIR: Final = Path(".cutbook")
"""The default until there was one data directory per user: ``./.cutbook`` of the
working directory."""

_notice: Callable[[Path, Path], None] | None = None
_noticed = False


def default_data_dir(platform: str | None = None) -> Path:
    """The platform's user data directory for cutbook, absolute.

    Linux and BSD: ``$XDG_DATA_HOME/cutbook`` (when set and absolute, as the XDG
    spec asks), else ``~/.local/share/cutbook``; macOS: ``~/Library/Application
    Support/cutbook``; Windows: ``%LOCALAPPDATA%\\cutbook``, else
    ``~/AppData/Local/cutbook``. ``platform`` defaults to ``sys.platform``.
    """
    platform = sys.platform if platform is None else platform
    if platform == "win32":
        local = os.environ.get("LOCALAPPDATA")
        base = Path(local) if local else Path.home() / "AppData" / "Local"
    elif platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        xdg = os.environ.get("XDG_DATA_HOME")
        base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".local" / "share"
    return base / APP_NAME


def default_data_dir_help(platform: str | None = None) -> str:
    """How ``--help`` names the default: the rule, not this machine's home directory."""
    platform = sys.platform if platform is None else platform
    if platform == "win32":
        return "%LOCALAPPDATA%\\cutbook"
    if platform == "darwin":
        return "~/Library/Application Support/cutbook"
    return "$XDG_DATA_HOME/cutbook, else ~/.local/share/cutbook"


def data_dir(value: Path | None = None) -> Path:
    """The data directory: the explicit value, else ``CUTBOOK_DATA_DIR``, else the
    platform default (then an old ``./.cutbook`` holding journals is reported once)."""
    if value is not None:
        return value
    chosen = os.environ.get("CUTBOOK_DATA_DIR")
    if chosen:
        return Path(chosen)
    default = default_data_dir()
    _tell_legacy(default)
    return default


def journal_dir(data: Path | None = None) -> Path:
    """The journal directory: ``CUTBOOK_JOURNAL_DIR``, else ``<data dir>/journal``."""
    override = os.environ.get("CUTBOOK_JOURNAL_DIR")
    return Path(override) if override else data_dir(data) / "journal"


def reports_dir(data: Path | None = None) -> Path:
    """Where audit reports are written: ``<data dir>/reports``."""
    return data_dir(data) / "reports"


def legacy_journals(cwd: Path | None = None) -> int:
    """How many runs an old ``./.cutbook/journal`` in ``cwd`` holds (0: none, or no such dir)."""
    folder = (cwd or Path.cwd()) / LEGACY_DATA_DIR / "journal"
    try:
        return sum(1 for p in folder.glob("*.jsonl") if p.name != "index.jsonl")
    except OSError:
        return 0


def on_legacy_data_dir(notice: Callable[[Path, Path], None] | None) -> None:
    """Register who is told (``notice(old, new)``) that the default data directory is in
    use while the working directory's old ``./.cutbook`` holds journals; ``None`` stops it.

    The CLI registers a one-line message on stderr; library callers hear nothing unless
    they ask. Each process is told at most once."""
    global _notice, _noticed
    _notice = notice
    _noticed = False


def _tell_legacy(default: Path) -> None:
    global _noticed
    if _notice is None or _noticed or os.environ.get("CUTBOOK_JOURNAL_DIR"):
        return
    _noticed = True
    old = Path.cwd() / LEGACY_DATA_DIR
    try:
        same = old.resolve() == default.resolve()
    except OSError:
        same = False
    if not same and legacy_journals() > 0:
        _notice(old, default)
