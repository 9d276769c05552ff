"""The estate as it was before the reorganisation, derived from the office list.

The CSV describes the *target* (new codes, names, accounts). The seeded state
is the *source*: old codes and names, and pre-reorganisation budget and
treasury values derived from the target ones by a fixed rule, so that a
cutover visibly changes every one of them and tests can predict both sides.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

from cutbook_simulator.errors import SimulatorUsageError

__all__ = [
    "DEFAULT_CSV_RELATIVE",
    "OfficeRow",
    "default_seed_csv",
    "parse_offices",
    "pre_reorg_budget_code",
    "pre_reorg_treasury_account",
    "pre_reorg_treasury_code",
    "read_offices",
]

DEFAULT_CSV_RELATIVE = Path("runbooks/data/offices-2025.csv")
COLUMNS = (
    "old_code",
    "old_name",
    "new_code",
    "new_name",
    "status",
    "region",
    "treasury_account",
    "treasury_code",
    "budget_code",
)
STATUSES = ("renamed", "ceased")


@dataclass(frozen=True)
class OfficeRow:
    """One line of the office list: where an office goes in the reorganisation."""

    old_code: str
    old_name: str
    new_code: str
    new_name: str
    status: str
    region: str
    treasury_account: str
    treasury_code: str
    budget_code: str


def default_seed_csv(cwd: Path | None = None) -> Path:
    """``runbooks/data/offices-2025.csv`` under cwd if present, else the packaged copy."""
    local = (cwd or Path.cwd()) / DEFAULT_CSV_RELATIVE
    if local.is_file():
        return local
    return Path(__file__).with_name("offices-2025.csv")


def read_offices(path: Path) -> tuple[str, list[OfficeRow]]:
    """The CSV text and its rows; any problem becomes a one-line SimulatorUsageError."""
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise SimulatorUsageError(f"cannot read office list {path}: {exc}") from None
    return text, parse_offices(text, source=str(path))


def parse_offices(text: str, source: str = "<csv>") -> list[OfficeRow]:
    """Parse the office list; lines starting with ``#`` are comments."""
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    reader = csv.DictReader(io.StringIO("\n".join(lines)))
    header = tuple(name.strip() for name in (reader.fieldnames or ()))
    missing = [c for c in COLUMNS if c not in header]
    if missing:
        raise SimulatorUsageError(f"{source}: missing column(s) {', '.join(missing)}")
    rows: list[OfficeRow] = []
    seen: set[str] = set()
    for number, raw in enumerate(reader, start=2):
        values = {k.strip(): (v or "").strip() for k, v in raw.items() if k is not None}
        if not any(values.values()):
            continue
        row = OfficeRow(**{c: values[c] for c in COLUMNS})
        if not row.old_code:
            raise SimulatorUsageError(f"{source}: data row {number} has no old_code")
        if row.status not in STATUSES:
            raise SimulatorUsageError(
                f"{source}: office {row.old_code} has status {row.status!r}; "
                f"expected one of {', '.join(STATUSES)}"
            )
        if row.old_code in seen:
            raise SimulatorUsageError(f"{source}: office {row.old_code} appears twice")
        seen.add(row.old_code)
        rows.append(row)
    if not rows:
        raise SimulatorUsageError(f"{source}: no offices")
    return rows


def pre_reorg_treasury_account(new: str) -> str:
    """``3511.01.1001`` (2025) was ``3712.01.1001`` before; other shapes get ``OLD-``."""
    head, sep, tail = new.partition(".")
    if sep and head == "3511":
        return f"3712.{tail}"
    return f"OLD-{new}"


def pre_reorg_treasury_code(new: str) -> str:
    """``KB011`` (2025) was ``KBT011`` before."""
    if new.startswith("KB"):
        return f"KBT{new[2:]}"
    return f"OLD-{new}"


def pre_reorg_budget_code(new: str) -> str:
    """``QHNS-2995007`` (2025) was ``QHNS-1995007`` before."""
    prefix, sep, number = new.partition("-")
    if sep and number[:1] == "2":
        return f"{prefix}-1{number[1:]}"
    return f"OLD-{new}"
