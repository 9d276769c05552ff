"""Write step estimates back into a runbook's text, touching nothing else.

Why text and not a YAML dumper: a runbook is reviewed like code. Dumping the
parsed data would drop comments, reorder keys and change quoting, and the
diff a lead reviews would bury the two estimates that changed. Here every
edit is placed with the line and column :mod:`cutbook.yamlsafe` records for
each node, and the result is parsed again: anything but the intended
estimates differing refuses the whole edit. Pure: no engine, CLI or audit.
"""

from __future__ import annotations

import copy
import itertools
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from cutbook import yamlsafe
from cutbook.durations import format_duration, parse_duration
from cutbook.errors import RunbookError

__all__ = [
    "EstimateChange",
    "EstimateEditError",
    "estimate_text",
    "round_up_estimate",
    "set_estimates",
]

_BREAKS: Final = re.compile("\r\n|[\r\n\x85\u2028\u2029]")
"""The line breaks PyYAML counts lines by: marks are only meaningful with the same ones."""

_STEPS: Final = (
    (60.0, 1),  # under a minute: whole seconds
    (600.0, 30),  # under ten minutes: half minutes (1m30s)
    (3600.0, 60),  # under an hour: whole minutes
    (86400.0, 300),  # under a day: five minutes (1h35m)
)

_NOISE: Final = 0.001
"""Below a millisecond is float noise from microsecond times, not a reason to round up."""


def round_up_estimate(seconds: float) -> int:
    """``seconds`` rounded *up* to a unit a person would write, in whole seconds.

    Up, because an estimate that is a little long costs margin while one that is
    a little short costs the window. Whole seconds under a minute, half minutes
    under ten, whole minutes under an hour, five minutes under a day, then
    quarter hours. Never zero for a duration above zero.
    """
    if seconds <= 0:
        return 0
    for limit, unit in _STEPS:
        if seconds <= limit:
            return unit * max(1, math.ceil((seconds - _NOISE) / unit))
    return 900 * math.ceil((seconds - _NOISE) / 900)


def estimate_text(seconds: int) -> str:
    """How a runbook writes an estimate: ``90s`` as ``1m30s``, ``3600`` as ``1h``."""
    return format_duration(float(seconds))


class EstimateEditError(RunbookError):
    """The estimates cannot be rewritten in place safely; the text is left as it was."""


@dataclass(frozen=True)
class EstimateChange:
    """One estimate rewritten (``old`` is its previous text) or inserted (``old`` None)."""

    step: str
    line: int
    """1-based line of the estimate in the *new* text."""
    old: str | None
    new: str

    @property
    def inserted(self) -> bool:
        return self.old is None


@dataclass(frozen=True)
class _Edit:
    start: int
    end: int
    text: str
    step: str
    old: str | None
    value: str
    mark: int
    """Offset within ``text`` where the estimate itself starts (for its line number)."""


def set_estimates(
    text: str, estimates: Mapping[str, str], *, name: str = "<runbook>"
) -> tuple[str, list[EstimateChange]]:
    """Set each step's ``estimate:`` in ``text`` to the given duration text.

    An existing value is replaced where it stands (keeping its quotes and any
    anchor or comment); a step without one gets ``estimate: …`` on the line
    after its ``id:``, at the same indentation (in a flow mapping, right after
    the id). A value already equal in duration (``120s`` for ``2m``) is left
    alone, so writing twice changes nothing. Raises :class:`EstimateEditError`
    when the result would differ from the intended data in any other way (an
    estimate shared through a YAML anchor or merge, an unusual layout).
    """
    doc = yamlsafe.load_text(text, name)
    data = doc.data
    steps = data.get("steps") if isinstance(data, dict) else None
    if not isinstance(steps, list):
        raise EstimateEditError(f"{name}: no steps: list to write estimates into")
    index = {s.get("id"): i for i, s in enumerate(steps) if isinstance(s, dict)}
    starts = _line_starts(text)
    expected = copy.deepcopy(data)
    edits: list[_Edit] = []
    for step_id, new in estimates.items():
        parse_duration(new)  # a bad suggestion is a bug here, not a bad runbook
        i = index.get(step_id)
        if i is None:
            raise EstimateEditError(f"{name}: no step {step_id!r}")
        step = steps[i]
        if "estimate" in step:
            if _same_duration(step["estimate"], new):
                continue
            edits.append(_replace(text, starts, doc, i, step_id, new, name))
        else:
            edits.append(_insert(text, starts, doc, i, step_id, new, name))
        expected["steps"][i]["estimate"] = new
    if not edits:
        return text, []
    edits.sort(key=lambda e: e.start)
    for before, after in itertools.pairwise(edits):
        if after.start < before.end or after.start == before.start:
            raise EstimateEditError(
                f"{name}: the estimates of steps {before.step!r} and {after.step!r} are "
                "written in the same place (a YAML anchor or merge): edit them by hand"
            )
    pieces: list[str] = []
    cursor = 0
    shift = 0
    placed: list[tuple[_Edit, int]] = []
    for edit in edits:
        pieces.append(text[cursor : edit.start])
        pieces.append(edit.text)
        placed.append((edit, edit.start + shift + edit.mark))
        shift += len(edit.text) - (edit.end - edit.start)
        cursor = edit.end
    pieces.append(text[cursor:])
    new_text = "".join(pieces)
    _check(new_text, expected, name)
    new_starts = _line_starts(new_text)
    changes = [
        EstimateChange(
            step=edit.step, line=_line_of(new_starts, offset), old=edit.old, new=edit.value
        )
        for edit, offset in placed
    ]
    return new_text, changes


def _same_duration(current: Any, new: str) -> bool:
    try:
        return parse_duration(current) == parse_duration(new)
    except ValueError:
        return False


def _line_starts(text: str) -> list[int]:
    """Offset of the first character of each line, as PyYAML numbers lines."""
    return [0, *(m.end() for m in _BREAKS.finditer(text))]


def _line_of(starts: list[int], offset: int) -> int:
    lo, hi = 0, len(starts) - 1
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if starts[mid] <= offset:
            lo = mid
        else:
            hi = mid - 1
    return lo + 1


def _offset(starts: list[int], position: tuple[int, int]) -> int:
    line, col = position
    return starts[line - 1] + col - 1


def _in_flow(text: str, starts: list[int], doc: yamlsafe.Document, step: int) -> bool:
    """Whether the step is written as a flow mapping (``- {id: a, …}``)."""
    where = doc.positions.get(("steps", step))
    return where is not None and text[_offset(starts, where) : _offset(starts, where) + 1] == "{"


def _scalar_end(text: str, start: int, flow: bool) -> int:
    """Where the one-line scalar starting at ``start`` ends (exclusive)."""
    quote = text[start : start + 1]
    if quote == "'":
        i = start + 1
        while i < len(text):
            if text[i] == "'":
                if text[i + 1 : i + 2] == "'":
                    i += 2
                    continue
                return i + 1
            i += 1
        return len(text)
    if quote == '"':
        i = start + 1
        while i < len(text):
            if text[i] == "\\":
                i += 2
                continue
            if text[i] == '"':
                return i + 1
            i += 1
        return len(text)
    line_end = _BREAKS.search(text, start)
    end = line_end.start() if line_end else len(text)
    stops = [end]
    comment = re.compile(r"[ \t]#").search(text, start, end)
    if comment:
        stops.append(comment.start())
    if flow:
        stops.extend(p for p in (text.find(c, start, end) for c in ",}]") if p >= 0)
    end = min(stops)
    while end > start and text[end - 1] in " \t":
        end -= 1
    return end


def _replace(
    text: str,
    starts: list[int],
    doc: yamlsafe.Document,
    step: int,
    step_id: str,
    new: str,
    name: str,
) -> _Edit:
    where = doc.positions.get(("steps", step, "estimate"))
    if where is None:
        raise EstimateEditError(f"{name}: cannot find the estimate of step {step_id!r}")
    start = _offset(starts, where)
    if text.startswith("&", start):  # keep the anchor, replace the value after it
        anchor = re.compile(r"&\S+[ \t]+").match(text, start)
        if anchor is None:
            raise EstimateEditError(f"{name}: step {step_id!r}: estimate anchor without a value")
        start = anchor.end()
    if text.startswith(("*", "|", ">", "!"), start):
        raise EstimateEditError(
            f"{name}:{where[0]}: the estimate of step {step_id!r} is not a plain value "
            "(an alias, a tag or a block scalar): edit it by hand"
        )
    end = _scalar_end(text, start, _in_flow(text, starts, doc, step))
    old = text[start:end]
    quote = old[:1] if old[:1] in ("'", '"') else ""
    return _Edit(start, end, f"{quote}{new}{quote}", step_id, old, new, 0)


def _insert(
    text: str,
    starts: list[int],
    doc: yamlsafe.Document,
    step: int,
    step_id: str,
    new: str,
    name: str,
) -> _Edit:
    key = doc.key_positions.get(("steps", step, "id"))
    value = doc.positions.get(("steps", step, "id"))
    if key is None or value is None:
        raise EstimateEditError(f"{name}: cannot find the id: of step {step_id!r}")
    flow = _in_flow(text, starts, doc, step)
    value_end = _scalar_end(text, _offset(starts, value), flow)
    if flow:
        return _Edit(value_end, value_end, f", estimate: {new}", step_id, None, new, 2)
    line_break = _BREAKS.search(text, value_end)
    indent = " " * (key[1] - 1)
    if line_break is None:  # the id is on the file's last line, without a line break
        newline = "\r\n" if "\r\n" in text else "\n"
        line = f"{newline}{indent}estimate: {new}"
        return _Edit(len(text), len(text), line, step_id, None, new, len(newline))
    line = f"{indent}estimate: {new}{line_break.group()}"
    return _Edit(line_break.end(), line_break.end(), line, step_id, None, new, 0)


def _check(new_text: str, expected: Any, name: str) -> None:
    """Parse the edited text: it must be the old data with only the estimates changed."""
    try:
        got = yamlsafe.load_text(new_text, name).data
    except RunbookError as exc:
        raise EstimateEditError(
            f"{name}: writing the estimates would break the YAML ({exc}): edit them by hand"
        ) from None
    if got != expected:
        raise EstimateEditError(
            f"{name}: writing the estimates would change more than the estimates (one is "
            "shared through a YAML anchor or merge, or laid out unusually): edit them by hand"
        )
