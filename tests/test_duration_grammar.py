"""One duration grammar: what ``cutbook validate`` reads as a duration is exactly what the
JSON Schema lets an editor leave un-underlined, and the reverse.

Both come from :data:`cutbook.durations.PATTERN`; this table keeps them honest if either
side grows its own idea (they had drifted: ``1h 30m`` was valid and underlined).
"""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest

from cutbook.durations import PATTERN, duration_schema, parse_duration
from cutbook.schema import runbook_schema

ACCEPTED: list[Any] = [
    "90s", "5m", "2m", "2h", "1d", "500ms", "1.5h", "0s", 0, 300, 2.5,
    "1h30m", "1h 30m", " 5m ", "1h  30m", "5 m", "1 h 30 m", "1m30s500ms", "10m10m",
]  # fmt: skip
REJECTED: list[Any] = [
    "10 minutes", "5 min", "", " ", "m", "1h30", "30", "-5m", -1, -0.5, "1.h", ".5h",
    "3 0m", "1H", "5M", "1h,30m", "1h30m!", "PT5M", "\t5m", "5m\t", "１m", True, None,
    [], {}, "{{ vars.wait }}",
]  # fmt: skip


def parser_accepts(value: Any) -> bool:
    try:
        parse_duration(value)
    except ValueError:
        return False
    return True


@pytest.fixture(scope="module")
def schema_accepts() -> Any:
    """A duration field of the generated runbook schema, judged by ``jsonschema``."""
    defaults = runbook_schema()["$defs"]["StepDefaults"]["properties"]["estimate"]
    assert defaults["anyOf"] == duration_schema()["anyOf"]
    return jsonschema.Draft202012Validator(defaults).is_valid


@pytest.mark.parametrize("value", ACCEPTED, ids=repr)
def test_both_accept(value: Any, schema_accepts: Any) -> None:
    assert parser_accepts(value)
    assert schema_accepts(value)


@pytest.mark.parametrize("value", REJECTED, ids=repr)
def test_both_reject(value: Any, schema_accepts: Any) -> None:
    assert not parser_accepts(value)
    assert not schema_accepts(value)


def test_the_schema_pattern_is_the_parsers() -> None:
    [text] = [b for b in duration_schema()["anyOf"] if b.get("type") == "string"]
    assert text["pattern"] == PATTERN


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("1h 30m", 5400), ("1h30m", 5400), ("90s", 90), ("500ms", 0.5), ("1.5h", 5400),
     ("1 h 30 m", 5400), ("1d", 86400), (300, 300)],
)  # fmt: skip
def test_what_it_means(text: Any, seconds: float) -> None:
    assert parse_duration(text).total_seconds() == seconds


@pytest.mark.parametrize("value", [float("inf"), float("nan"), 1e20, "99999999999999d"], ids=repr)
def test_out_of_range_is_a_value_error_not_a_crash(value: Any) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(value)


def test_the_error_names_the_grammar() -> None:
    with pytest.raises(ValueError, match=r"is not a duration such as 90s, 5m, 2h or 1h30m"):
        parse_duration("10 minutes")
