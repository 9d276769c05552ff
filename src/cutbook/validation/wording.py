"""Phrasing shared by many checks, so messages read alike wherever they come from."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """A hint for a likely typo, or nothing when no choice is close."""
    match = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {match[0]!r}?)" if match else ""


def plural(items: Iterable[str]) -> str:
    """The choices there are, sorted, so a message lists what would have worked."""
    listed = sorted(items)
    return ", ".join(listed) if listed else "none"


def kind(value: Any) -> str:
    """What a value is, in words an operations lead uses."""
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"a boolean ({value!r})".lower()
    if isinstance(value, int | float):
        return f"a number ({value!r})"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f"text ({shown!r})"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return f"a {type(value).__name__}"


def hm(when: datetime) -> str:
    """A moment with its offset, so nobody wonders which zone a message means."""
    return when.strftime("%Y-%m-%d %H:%M %z")


def display_name(path: Path) -> str:
    """A file as the user would type it: relative to where they are, when it is below there."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)
