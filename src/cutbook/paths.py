"""Where cutbook keeps its files, decided in one place.

Every command (run, resume, audit, demo) must find the same journals from the
same settings, so the lookup order lives here and nowhere else:
``--data-dir`` or ``CUTBOOK_DATA_DIR`` or ``./.cutbook``; journals in its
``journal/`` unless ``CUTBOOK_JOURNAL_DIR`` says otherwise.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final

DEFAULT_DATA_DIR: Final = Path(".cutbook")


def data_dir(value: Path | None = None) -> Path:
    """The data directory: the explicit value, else ``CUTBOOK_DATA_DIR``, else the default."""
    if value is not None:
        return value
    return Path(os.environ.get("CUTBOOK_DATA_DIR") or DEFAULT_DATA_DIR)


def journal_dir(data: Path | None = None) -> Path:
    """The journal directory: ``CUTBOOK_JOURNAL_DIR``, else ``<data dir>/journal``."""
    override = os.environ.get("CUTBOOK_JOURNAL_DIR")
    return Path(override) if override else data_dir(data) / "journal"


def reports_dir(data: Path | None = None) -> Path:
    return data_dir(data) / "reports"
