"""The auditors' guide lists the journal's vocabulary exactly as cutbook.journal.events declares it.

The appendix of docs/auditing-a-cutover.md is one markdown table with the
columns event | field | meaning: a row naming an event starts that event,
and the rows under it (event cell empty) name its fields. Adding an event or
a field to the declaration without documenting it, or documenting one that
does not exist, fails here.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from cutbook.journal.events import FIELDS, Event

DOC = Path(__file__).resolve().parent.parent / "docs" / "auditing-a-cutover.md"
HEADING = "## Appendix: event vocabulary"
NAME = re.compile(r"`([^`]+)`")


def _cell(text: str, line: str) -> str | None:
    """A name cell: empty, or exactly one name in backticks."""
    text = text.strip()
    if not text:
        return None
    found = NAME.fullmatch(text)
    assert found, f"expected one `name` or nothing, got {text!r} in: {line}"
    return found.group(1)


def documented() -> dict[str, list[str]]:
    """Each event the appendix table names, with its fields in table order."""
    text = DOC.read_text(encoding="utf-8")
    assert HEADING in text, f"{DOC.name} has no {HEADING!r} section"
    section = text.split(HEADING, 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("|")]
    assert len(rows) > 2, "the appendix has no table"
    assert [c.strip() for c in rows[0].strip("|").split("|")] == ["event", "field", "meaning"]
    events: dict[str, list[str]] = {}
    current: str | None = None
    for line in rows[2:]:  # after the header and the |---| line
        cells = line.strip().strip("|").split("|")
        assert len(cells) >= 3, f"a row needs event, field and meaning: {line}"
        event, field = _cell(cells[0], line), _cell(cells[1], line)
        assert cells[2].strip(), f"a row without a meaning: {line}"
        if event is not None:
            assert field is None, f"an event's own row names no field: {line}"
            assert event not in events, f"{event} is listed twice"
            current = event
            events[event] = []
        else:
            assert field is not None, f"a row names neither event nor field: {line}"
            assert current is not None, f"a field before any event: {line}"
            events[current].append(field)
    return events


def declared(event: Event) -> set[str]:
    td: Any = FIELDS[event]  # a TypedDict class; typing has no type for that
    return set(td.__required_keys__ | td.__optional_keys__)


def test_every_event_is_documented_and_no_other() -> None:
    doc = set(documented())
    known = {e.value for e in Event}
    assert not known - doc, f"events missing from the appendix: {sorted(known - doc)}"
    assert not doc - known, f"the appendix names unknown events: {sorted(doc - known)}"
    assert set(FIELDS) == set(Event)


@pytest.mark.parametrize("event", list(Event), ids=str)
def test_every_field_is_documented_and_no_other(event: Event) -> None:
    fields = documented().get(event.value, [])
    doubled = sorted({f for f in fields if fields.count(f) > 1})
    assert not doubled, f"{event}: fields listed twice: {doubled}"
    missing, unknown = declared(event) - set(fields), set(fields) - declared(event)
    assert not (missing or unknown), (
        f"{event}: fields missing from the appendix: {sorted(missing)}; "
        f"fields the appendix names that are not declared: {sorted(unknown)}"
    )


def test_the_appendix_points_to_the_declaration() -> None:
    section = DOC.read_text(encoding="utf-8").split(HEADING, 1)[1]
    assert "`cutbook.journal.events`" in section
