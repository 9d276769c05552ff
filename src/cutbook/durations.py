"""Durations as operations people write them: ``90s``, ``5m``, ``2h``, ``1h30m``."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated

from pydantic import BeforeValidator, WithJsonSchema

_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_WHOLE = re.compile(r"^(?:\d+(?:\.\d+)?(?:ms|s|m|h|d))+$")
PATTERN = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h|d))+$"
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(value: object) -> timedelta:
    """Accept ``1h30m``-style text or a number of seconds; reject anything else."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool):
        raise ValueError("a duration such as 90s, 5m, 2h or 1h30m")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return timedelta(seconds=float(value))
    if isinstance(value, str):
        text = value.strip().replace(" ", "")
        if _WHOLE.match(text):
            seconds = sum(float(n) * _UNIT[u] for n, u in _PART.findall(text))
            return timedelta(seconds=seconds)
    raise ValueError(f"{value!r} is not a duration such as 90s, 5m, 2h or 1h30m")


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


# The type adapter authors and the runbook model use for every duration field.
Duration = Annotated[
    timedelta,
    BeforeValidator(parse_duration),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "pattern": PATTERN},
                {"type": "number", "minimum": 0},
            ],
            "description": "A duration: 90s, 5m, 2h, 1h30m, or a number of seconds",
        }
    ),
]
