"""Durations as operations people write them: ``90s``, ``5m``, ``2h``, ``1h30m``, ``1h 30m``.

One grammar, :data:`PATTERN`, serves both the parser here and the JSON Schema
editors check against, so an editor never underlines what ``cutbook validate``
accepts (or the reverse). It is written in the subset of regular expressions that
Python and ECMA-262 (the dialect of JSON Schema ``pattern``) read alike.
"""

from __future__ import annotations

import math
import re
from datetime import timedelta
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, WithJsonSchema
from pydantic.json_schema import GenerateJsonSchema

_NUMBER = r"[0-9]+(?:\.[0-9]+)?"
_UNITS = r"ms|s|m|h|d"
PATTERN = rf"^ *(?:{_NUMBER} *(?:{_UNITS}) *)+$"
"""A whole duration: number-unit parts, spaces allowed around and between them."""
_WHOLE = re.compile(PATTERN)
_PART = re.compile(rf"({_NUMBER}) *({_UNITS})")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
HINT = "a duration such as 90s, 5m, 2h or 1h30m"
"""Error wording; tests and the corpus's expected messages quote it."""
EXAMPLES = ("90s", "5m", "1h30m", "1h 30m", 300)


def parse_duration(value: object) -> timedelta:
    """Accept text matching :data:`PATTERN` or a number of seconds; reject anything else."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool):
        raise ValueError(HINT)
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return _seconds(float(value), value)
    # fullmatch, not match: Python's $ also matches before a final newline, ECMA's does not.
    if isinstance(value, str) and _WHOLE.fullmatch(value):
        return _seconds(sum(float(n) * _UNIT[u] for n, u in _PART.findall(value)), value)
    raise ValueError(f"{value!r} is not {HINT}")


def _seconds(seconds: float, written: object) -> timedelta:
    """A timedelta, or a ValueError (not OverflowError) for .inf, NaN or a million years."""
    if math.isfinite(seconds):
        try:
            return timedelta(seconds=seconds)
        except OverflowError:
            pass
    raise ValueError(f"{written!r} is out of range for a duration")


def format_duration(delta: timedelta | float) -> str:
    """The inverse of parse_duration, rounded to whole seconds, for tables."""
    seconds = delta.total_seconds() if isinstance(delta, timedelta) else float(delta)
    sign = "-" if seconds < 0 else ""
    total = round(abs(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    parts = []
    if hours:
        parts.append(f"{hours}h")
    if minutes:
        parts.append(f"{minutes}m")
    if secs or not parts:
        parts.append(f"{secs}s")
    return sign + "".join(parts)


def duration_schema() -> dict[str, Any]:
    """The JSON Schema of a duration, built from the parser's own grammar."""
    return {
        "anyOf": [
            {"type": "string", "pattern": PATTERN},
            {"type": "number", "minimum": 0},
        ],
        "description": "A duration: 90s, 5m, 2h, 1h30m or 1h 30m (units ms, s, m, h, d), "
        "or a number of seconds",
        "examples": list(EXAMPLES),
    }


# The type adapter authors and the runbook model use for every duration field.
Duration = Annotated[timedelta, BeforeValidator(parse_duration), WithJsonSchema(duration_schema())]


def _as_written(value: Any) -> Any:
    """``value`` with every timedelta in it written as a runbook would (``30s``)."""
    if isinstance(value, timedelta):
        return format_duration(value)
    if isinstance(value, BaseModel):
        return _as_written(value.model_dump(by_alias=True, exclude_defaults=True))
    if isinstance(value, dict):
        return {k: _as_written(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_as_written(v) for v in value]
    return value


class SchemaGenerator(GenerateJsonSchema):
    """Pydantic's generator, with duration defaults as people write them (``30s``, not
    ``PT30S``, which the duration pattern itself would reject)."""

    def encode_default(self, dft: Any) -> Any:
        return super().encode_default(_as_written(dft))
