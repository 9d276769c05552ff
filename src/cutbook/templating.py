"""Jinja2 for runbook string values: sandboxed, strict, and checked ahead of time.

Templates only ever render inside string values after YAML parsing, in an
immutable sandbox where an undefined name is an error rather than an empty
string. :func:`analyze` reads a template without running it so validation can
report syntax errors, unknown names and sandbox escapes before the weekend.

A string that is exactly one ``{{ expression }}`` renders to the expression's
native value (a list for ``for_each``, a number for a port), like Ansible.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any
from urllib.parse import quote

from jinja2 import StrictUndefined, TemplateSyntaxError, nodes
from jinja2.exceptions import SecurityError, UndefinedError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from cutbook.errors import PermanentError

RUNTIME_NAMES = frozenset({"item", "index", "steps", "run", "output"})
STATIC_NAMES = frozenset({"vars", "data", "secrets", "runbook"})
ALL_NAMES = RUNTIME_NAMES | STATIC_NAMES

_WHOLE = re.compile(r"^\s*\{\{(?P<expr>.*)\}\}\s*$", re.S)
_UNSAFE_ATTRS = frozenset({"mro", "func_globals", "gi_frame", "f_globals", "f_locals"})


class TemplateError(PermanentError):
    """A template failed while rendering at run time (undefined, sandbox, type)."""


class RawPath(str):
    """A value the runbook vouches for as a whole path (``{{ vars.prefix | raw_path }}``)."""

    __slots__ = ()


def _raw_path(value: object) -> RawPath:
    return RawPath(str(value))


def _path_segment(value: object) -> object:
    """Data is data: a value rendered into a URL path is one segment, whatever it holds.

    ``/``, ``..``, ``?``, ``#`` and ``%`` are percent-encoded, so an office code of
    ``../../vnaccs/intake/start#`` names an office, never another endpoint.
    """
    if isinstance(value, RawPath):
        return value
    text = str(value)
    if text in (".", ".."):  # unreserved, yet a whole segment of dots moves up the tree
        return "%2E" * len(text)
    return quote(text, safe="")


def _new_environment(**options: Any) -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(undefined=StrictUndefined, autoescape=False, **options)
    env.policies["json.dumps_kwargs"] = {"sort_keys": True, "ensure_ascii": False}
    env.filters["raw_path"] = _raw_path
    return env


@lru_cache(maxsize=1)
def environment() -> ImmutableSandboxedEnvironment:
    return _new_environment()


@lru_cache(maxsize=1)
def path_environment() -> ImmutableSandboxedEnvironment:
    """Like :func:`environment`, but every ``{{ value }}`` is one percent-encoded segment.

    ``finalize`` applies only to what expressions output, never to the template's
    literal text, so the slashes the runbook wrote stay slashes.
    """
    return _new_environment(finalize=_path_segment)


def is_template(value: object) -> bool:
    return isinstance(value, str) and ("{{" in value or "{%" in value or "{#" in value)


def _single_expression(text: str) -> str | None:
    m = _WHOLE.match(text)
    if m and "{{" not in m.group("expr") and "}}" not in m.group("expr"):
        return m.group("expr")
    return None


@lru_cache(maxsize=4096)
def _compiled_expression(expr: str) -> Any:
    return environment().compile_expression(expr, undefined_to_none=False)


@lru_cache(maxsize=4096)
def _compiled_template(text: str) -> Any:
    return environment().from_string(text)


@lru_cache(maxsize=4096)
def _compiled_path(text: str) -> Any:
    return path_environment().from_string(text)


def render_string(text: str, context: Mapping[str, Any], *, url_path: bool = False) -> Any:
    """Render one string; ``url_path`` makes every inserted value a single path segment
    (and the result always text)."""
    if not is_template(text):
        return text
    try:
        if url_path:
            return _compiled_path(text).render(**context)
        expr = _single_expression(text)
        if expr is not None:
            value = _compiled_expression(expr)(**context)
            if isinstance(value, StrictUndefined):
                str(value)  # raises UndefinedError with Jinja's own message
            return value
        return _compiled_template(text).render(**context)
    except UndefinedError as exc:
        raise TemplateError(f"template {text!r}: {exc.message}") from None
    except SecurityError as exc:
        raise TemplateError(f"template {text!r} was refused by the sandbox: {exc}") from None
    except TemplateSyntaxError as exc:
        raise TemplateError(f"template {text!r}: {exc.message}") from None
    except (TypeError, ValueError, ArithmeticError, LookupError) as exc:
        raise TemplateError(f"template {text!r}: {type(exc).__name__}: {exc}") from None


def render_args(
    raw: Mapping[str, Any], context: Mapping[str, Any], url_paths: Collection[str] = ()
) -> dict[str, Any]:
    """An action's arguments: the top-level fields named in ``url_paths`` (see
    :func:`cutbook.adapter.url_path_fields`) render as URL paths, the rest as usual."""
    return {
        k: render_string(v, context, url_path=True)
        if k in url_paths and isinstance(v, str)
        else render(v, context)
        for k, v in raw.items()
    }


def render(value: Any, context: Mapping[str, Any]) -> Any:
    """Render every string inside ``value``; mappings and lists keep their shape."""
    if isinstance(value, str):
        return render_string(value, context)
    if isinstance(value, Mapping):
        return {k: render(v, context) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [render(v, context) for v in value]
    return value


@dataclass
class TemplateInfo:
    """What a template refers to, found without running it."""

    names: set[str] = field(default_factory=set)
    refs: dict[str, set[str]] = field(default_factory=dict)
    """For vars, data, secrets and steps: the constant attribute or key used."""
    unsafe: list[str] = field(default_factory=list)


class TemplateProblem(ValueError):
    """A template that cannot work: its message is ready for a diagnostic."""


@lru_cache(maxsize=4096)
def analyze(text: str) -> TemplateInfo:
    """Parse ``text`` and report the names it uses and any sandbox escapes."""
    from jinja2 import meta

    env = environment()
    try:
        tree = env.parse(text)
    except TemplateSyntaxError as exc:
        raise TemplateProblem(f"template syntax error: {exc.message}") from None
    info = TemplateInfo(names=set(meta.find_undeclared_variables(tree)))
    for node in tree.find_all((nodes.Getattr, nodes.Getitem)):
        attr: object = None
        if isinstance(node, nodes.Getattr):
            attr = node.attr
        elif isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const):
            attr = node.arg.value
        if isinstance(attr, str) and (attr.startswith("_") or attr in _UNSAFE_ATTRS):
            info.unsafe.append(attr)
            continue
        base = node.node if isinstance(node, nodes.Getattr | nodes.Getitem) else None
        if isinstance(base, nodes.Name) and isinstance(attr, str | int):
            info.refs.setdefault(base.name, set()).add(str(attr))
    return info


def walk_strings(
    value: Any, path: tuple[str | int, ...] = ()
) -> list[tuple[tuple[str | int, ...], str]]:
    """Every templated string inside ``value`` with its path, for validation."""
    found: list[tuple[tuple[str | int, ...], str]] = []
    if is_template(value):
        found.append((path, value))
    elif isinstance(value, Mapping):
        for k, v in value.items():
            found.extend(walk_strings(v, (*path, k)))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            found.extend(walk_strings(v, (*path, i)))
    return found
