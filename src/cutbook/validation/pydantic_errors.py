"""Pydantic's validation errors, retold as located messages an operations lead can act on.

Pydantic names a problem by a location inside the model (``steps.3.retry.attempts``)
and a machine-ish message; a runbook author needs the file position, the step's
id, the key they probably meant and plain words.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ValidationError

from cutbook.validation.report import PathKey, Report
from cutbook.validation.wording import did_you_mean, kind

# Type errors that say only "wrong type": for a union, one per branch, merged into one.
_EXPECTED = {
    "list_type": "a list",
    "dict_type": "a mapping",
    "string_type": "text",
    "int_type": "a whole number",
    "int_parsing": "a whole number",
    "int_from_float": "a whole number",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
}
_UNION_TAGS = {"str", "list", "int", "float", "bool", "dict", "function-after", "function-before"}


def validate_model(report: Report, model: type[BaseModel], value: Any, base: PathKey) -> Any:
    """``value`` as ``model``, or None after reporting why it is not one."""
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        report_model_errors(report, exc, model, base)
        return None


def validate_partly(
    report: Report,
    model: type[BaseModel],
    value: Any,
    base: PathKey,
    placeholders: Mapping[str, Any] | None = None,
) -> tuple[Any, frozenset[str]]:
    """``value`` as ``model``, built without its wrong keys; and which keys were left out.

    Every error is reported first. Then the model is built again from the keys
    that were right (a required key that was wrong or missing takes its
    ``placeholders`` value), so later checks can still look at the rest and
    report mistakes that do not depend on the wrong keys, in the same pass.
    Checks that read a left-out key must skip it: its value is unknown. None
    when ``value`` is not a mapping or cannot be built even so.
    """
    try:
        return model.model_validate(value), frozenset()
    except ValidationError as exc:
        report_model_errors(report, exc, model, base)
        errors = exc.errors(include_url=False)
    if not isinstance(value, dict) or any(not e["loc"] for e in errors):
        return None, frozenset()
    wrong = {str(e["loc"][0]) for e in errors}
    kept = {k: v for k, v in value.items() if k not in wrong}
    for key, stand_in in (placeholders or {}).items():
        if key in wrong:
            kept[key] = stand_in
    try:
        return model.model_validate(kept), frozenset(wrong)
    except ValidationError:
        return None, frozenset()


def report_model_errors(
    report: Report, exc: ValidationError, model: type[BaseModel], base: PathKey
) -> None:
    """One message per YAML node, however many ways pydantic found it wrong."""
    seen: set[PathKey] = set()
    for e in merge_unions(exc):
        loc = tuple(e["loc"])
        path = (*base, *loc)
        anchor = _existing(report, path)
        if anchor in seen:
            continue
        seen.add(anchor)
        at, message, key = _explain(e, model, base, path, _context(report, path))
        report.err(at, message, key=key)


def _explain(
    e: Mapping[str, Any], model: type[BaseModel], base: PathKey, path: PathKey, where: str
) -> tuple[PathKey, str, bool]:
    """Where to point for one error, what to say, and whether to point at the key."""
    loc = tuple(e["loc"])
    error_type = e["type"]
    last = loc[-1] if loc else ""
    if error_type == "extra_forbidden":
        fields = field_names(model_at(model, loc[:-1]))
        return path, f"unknown key {last!r}{where}{did_you_mean(str(last), fields)}", True
    if error_type == "missing":
        return path[:-1], f"missing required key {last!r}{where}", True
    if error_type == "literal_error":
        expected = e.get("ctx", {}).get("expected", "")
        choices = [c.strip().strip("'") for c in str(expected).replace(" or ", ",").split(",")]
        got = e.get("input")
        hint = did_you_mean(str(got), choices)
        return path, f"{label(loc)} must be one of {expected}; got {got!r}{hint}", False
    if error_type == "string_pattern_mismatch":
        if last == "id":
            return (
                path,
                f"step id {e['input']!r} must be lowercase letters, digits and dashes",
                False,
            )
        if last == "name" and not base:
            return (
                path,
                f"runbook name {e['input']!r} must be lowercase letters, digits and dashes",
                False,
            )
        if loc == ("pool",) and not base:
            return (
                path,
                f"work pool {e['input']!r} must be letters, digits, dots, dashes and "
                "underscores, starting with a letter or digit (at most 100)",
                False,
            )
        if loc[:1] == ("secrets",) and not base:
            return (
                path,
                f"secret name {e['input']!r} must be letters, digits and underscores, "
                "not starting with a digit (it is an environment variable name)",
                False,
            )
    return path, f"{label(loc)}{where}: {humanize(e)}", False


def merge_unions(exc: ValidationError) -> list[dict[str, Any]]:
    """Pydantic's errors with union branches folded into one error per value.

    A value that fits no branch of ``bool | str`` gets one error per branch, at
    locations tagged with the branch (``verify_tls.bool``, ``verify_tls.str``).
    When every branch failed on type, say so once (``must be true or false, or
    text``); when a branch got further (right type, wrong value), its error is
    the one that explains the problem.
    """
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for e in exc.errors(include_url=False):
        loc = tuple(p for p in e["loc"] if not _is_union_tag(p))
        groups.setdefault(loc, []).append({**e, "loc": loc})
    merged: list[dict[str, Any]] = []
    for loc, errs in groups.items():
        specific = [e for e in errs if e["type"] not in _EXPECTED]
        if specific or len(errs) == 1:
            merged.extend(specific or errs)
            continue
        wanted = list(dict.fromkeys(_EXPECTED[e["type"]] for e in errs))
        merged.append(
            {
                "type": "union",
                "loc": loc,
                "input": errs[0].get("input"),
                "ctx": {"expected": ", or ".join(wanted)},
                "msg": "",
            }
        )
    return merged


def humanize(error: Mapping[str, Any]) -> str:
    """Pydantic's message for one error, in plain words where it matters."""
    error_type = error["type"]
    ctx = error.get("ctx") or {}
    got = error.get("input")
    if error_type == "union":
        return f"must be {ctx['expected']}; got {kind(got)}"
    if error_type in _EXPECTED:
        return f"must be {_EXPECTED[error_type]}; got {kind(got)}"
    if error_type == "greater_than_equal":
        return f"must be at least {ctx.get('ge')}; got {got!r}"
    if error_type == "greater_than":
        return f"must be more than {ctx.get('gt')}; got {got!r}"
    if error_type == "less_than_equal":
        return f"must be at most {ctx.get('le')}; got {got!r}"
    if error_type == "less_than":
        return f"must be less than {ctx.get('lt')}; got {got!r}"
    if error_type == "too_short" and "min_length" in ctx:
        n = ctx["min_length"]
        return f"needs at least {n} item{'s' if n != 1 else ''}"
    if error_type == "too_long" and "max_length" in ctx:
        return f"takes at most {ctx['max_length']} items"
    return str(error["msg"]).removeprefix("Value error, ")


def label(loc: tuple[Any, ...]) -> str:
    """A location as the dotted key path an author wrote, without pydantic's branch tags."""
    parts = [str(p) for p in loc if not _is_union_tag(p)]
    return ".".join(parts) if parts else "value"


def field_names(model: type[BaseModel] | None) -> list[str]:
    """The keys a model accepts, as written in YAML, to suggest one for a typo."""
    if model is None:
        return []
    return [f.alias or n for n, f in model.model_fields.items()]


def model_at(model: type[BaseModel] | None, loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """Follow ``loc`` through nested models, to name the keys allowed there."""
    current: Any = model
    for part in loc:
        if current is None:
            return None
        if isinstance(part, int):
            continue
        if isinstance(current, type) and issubclass(current, BaseModel):
            fld = next(
                (f for n, f in current.model_fields.items() if (f.alias or n) == part or n == part),
                None,
            )
            if fld is None:
                return None
            current = _unwrap(fld.annotation)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _unwrap(annotation: Any) -> Any:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            inner = _unwrap(arg)
            if isinstance(inner, type) and issubclass(inner, BaseModel):
                return inner
        return None
    if origin in (list, dict):
        args = typing.get_args(annotation)
        return _unwrap(args[-1]) if args else None
    return annotation


def _is_union_tag(part: Any) -> bool:
    return isinstance(part, str) and ("[" in part or part in _UNION_TAGS)


def _existing(report: Report, path: PathKey) -> PathKey:
    """The node an error will point at, so two errors about one node are told once."""
    doc = report.doc
    probe = path
    while probe and probe not in doc.positions and probe not in doc.key_positions:
        probe = probe[:-1]
    return path if path in doc.key_positions else probe


def _context(report: Report, path: PathKey) -> str:
    """Which step or target a path is in, by id where it has one."""
    data = report.doc.data
    if len(path) >= 2 and path[0] == "steps" and isinstance(path[1], int):
        steps = data.get("steps") if isinstance(data, dict) else None
        if isinstance(steps, list) and path[1] < len(steps) and isinstance(steps[path[1]], dict):
            sid = steps[path[1]].get("id")
            if isinstance(sid, str):
                return f" in step {sid!r}"
        return f" in step #{path[1] + 1}"
    if path and path[0] == "targets" and len(path) > 1:
        return f" in target {path[1]!r}"
    return ""
