"""The lists a runbook fans out over: CSV, YAML or JSON files next to it.

Each file becomes a list of records (mappings). CSV lines starting with ``#``
are comments, so a data file can say where it came from (or that it is
illustrative) in its own text.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from cutbook import yamlsafe
from cutbook.diagnostics import Diagnostic, Location
from cutbook.errors import RunbookLoadError

MAX_BYTES = 20 * 1024 * 1024
Records = list[dict[str, Any]]


class DataFileError(ValueError):
    """A data file that cannot be used; ``location`` points into the data file."""

    def __init__(self, location: Location, message: str) -> None:
        super().__init__(message)
        self.location = location


def load(path: Path, display: str) -> Records:
    if not path.is_file():
        raise DataFileError(Location(display), "no such data file")
    size = path.stat().st_size
    if size > MAX_BYTES:
        raise DataFileError(Location(display), f"data file is {size} bytes; limit {MAX_BYTES}")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return _csv(path, display)
    if suffix in (".yaml", ".yml"):
        try:
            doc = yamlsafe.load_file(path, display=display, max_bytes=MAX_BYTES)
        except RunbookLoadError as exc:
            raise DataFileError(exc.diagnostic.location, exc.diagnostic.message) from None
        return _records(doc.data, Location(display, 1, 1))
    if suffix == ".json":
        raw = path.read_bytes()
        try:
            parsed = json.loads(raw.decode("utf-8"))
        except json.JSONDecodeError as exc:
            loc = Location(display, exc.lineno, exc.colno)
            raise DataFileError(loc, f"invalid JSON: {exc.msg}") from None
        except UnicodeDecodeError as exc:
            loc = yamlsafe.undecodable(raw, exc, display)
            raise DataFileError(loc, yamlsafe.not_utf8(raw, exc)) from None
        return _records(parsed, Location(display, 1, 1))
    raise DataFileError(
        Location(display), f"unknown data format {suffix!r}: use .csv, .yaml or .json"
    )


def _records(value: Any, loc: Location) -> Records:
    if not isinstance(value, list) or not all(isinstance(r, dict) for r in value):
        raise DataFileError(loc, "a data file must hold a list of records (mappings)")
    return value


def _csv(path: Path, display: str) -> Records:
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        if raw.startswith(b"\xef\xbb\xbf"):
            raw = raw[3:]  # positions below count from after the byte-order mark
            exc = UnicodeDecodeError("utf-8", raw, exc.start - 3, exc.end - 3, exc.reason)
        loc = yamlsafe.undecodable(raw, exc, display)
        raise DataFileError(loc, yamlsafe.not_utf8(raw, exc)) from None
    lines = text.splitlines()
    numbered = [(n, line) for n, line in enumerate(lines, 1) if not line.lstrip().startswith("#")]
    numbered = [(n, line) for n, line in numbered if line.strip()]
    if not numbered:
        raise DataFileError(Location(display), "the CSV file has no header row")
    rows, starts = _rows(numbered, display)
    header = [h.strip() for h in rows[0]]
    header_line = starts[0]
    for col, name in enumerate(header, 1):
        if not name:
            raise DataFileError(
                Location(display, header_line, 1), f"CSV header: column {col} has no name"
            )
        if header.index(name) != col - 1:
            raise DataFileError(
                Location(display, header_line, 1),
                f"CSV header: column {col} repeats the name {name!r} of column "
                f"{header.index(name) + 1}",
            )
    records: Records = []
    for line_no, row in zip(starts[1:], rows[1:], strict=True):
        if len(row) != len(header):
            raise DataFileError(
                Location(display, line_no, 1),
                f"row has {len(row)} fields; the header has {len(header)}",
            )
        records.append({h: v.strip() for h, v in zip(header, row, strict=True)})
    return records


def _rows(numbered: list[tuple[int, str]], display: str) -> tuple[list[list[str]], list[int]]:
    """Parse strictly, so a quote left open is an error, not a field that eats the file.

    Also the file line each row starts on (a quoted field may span lines).
    """
    reader = csv.reader(io.StringIO("\n".join(line for _, line in numbered)), strict=True)
    rows: list[list[str]] = []
    starts: list[int] = []
    read = 0
    while True:
        first = numbered[min(read, len(numbered) - 1)][0]
        try:
            row = next(reader)
        except StopIteration:
            return rows, starts
        except csv.Error as exc:
            if "end of data" in str(exc):
                message = 'a quoted field starts on this row but its closing " is missing'
                raise DataFileError(
                    Location(display, first, 1), f"invalid CSV: {message}"
                ) from None
            where = numbered[max(reader.line_num - 1, 0)][0]
            raise DataFileError(Location(display, where, 1), f"invalid CSV: {exc}") from None
        read = reader.line_num
        rows.append(row)
        starts.append(first)


def diagnostic(exc: DataFileError, runbook_location: Location, name: str) -> Diagnostic:
    """Point at the data file itself when we know where, else at the runbook entry."""
    if exc.location.line:
        return Diagnostic(exc.location, f"data {name!r}: {exc}")
    return Diagnostic(runbook_location, f"data {name!r} ({exc.location.file}): {exc}")
