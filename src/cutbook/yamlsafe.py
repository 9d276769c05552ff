"""Load YAML safely and remember where every value came from.

Runbooks are written by people and run on the night it matters, so loading
refuses anything clever: language tags, duplicate keys, alias-expansion bombs,
huge or deeply nested files. Scalars follow the YAML 1.2 core schema (only
``true``/``false`` are booleans, ``23:00`` stays a string, dates stay text)
so what an operations lead writes is what cutbook reads.

The result keeps a map from each value's path (``("steps", 3, "at")``) to its
line and column, which is how every later error points at the exact node.

Only the parser's event stream is used: libyaml's C parser when PyYAML was
built with it (about ten times faster than the pure-Python one, which is the
fallback), and our own composer on top, in one pass. Composing ourselves is
what keeps every guarantee identical with either parser: depth is counted
per event (libyaml's own composer recurses in C and can crash the
interpreter), aliases are measured before they are copied, and syntax errors
are retold in the same words whichever parser found them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import yaml
from yaml.events import (
    AliasEvent,
    DocumentEndEvent,
    DocumentStartEvent,
    MappingEndEvent,
    MappingStartEvent,
    ScalarEvent,
    SequenceEndEvent,
    SequenceStartEvent,
    StreamEndEvent,
)

from cutbook.diagnostics import Diagnostic, Location
from cutbook.errors import RunbookLoadError
from cutbook.yamlerrors import explain_syntax_error

PathKey = tuple[str | int, ...]

MAX_BYTES = 5 * 1024 * 1024
MAX_NODES = 500_000
MAX_DEPTH = 64

PARSERS = ("libyaml", "python") if yaml.__with_libyaml__ else ("python",)
"""The event parsers this installation has, fastest first."""
parser: str = PARSERS[0]
"""The parser :func:`load_text` uses; tests switch it to check both agree."""

_TAG = "tag:yaml.org,2002:"
_LINE_BREAK = re.compile("\r\n|[\r\n\x85\u2028\u2029]")
_ALLOWED_TAGS = {_TAG + t for t in ("str", "int", "float", "bool", "null", "seq", "map")}
_SCALAR_TAGS = {_TAG + t for t in ("str", "int", "float", "bool", "null")}
_MERGE_TAG = _TAG + "merge"

_CORE = {
    "null": re.compile(r"^(?:~|null|Null|NULL|)$"),
    "bool": re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
    "int": re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$"),
    "float": re.compile(
        r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
    ),
}
"""The YAML 1.2 core schema: what a plain scalar must look like to be each type."""

_NULL, _BOOL, _INT, _FLOAT = (_CORE[t].match for t in ("null", "bool", "int", "float"))
_PLAIN_TEXT = frozenset("abcdeghijklmopqrsuvwxyzABCDEGHIJKLMOPQRSUVWXYZ/_$") - {""}
"""First characters of a plain scalar that can only be text (the rest go through _plain)."""


class _Merge:
    """The plain key ``<<``: its value is merged into the mapping, never stored under it."""

    def __repr__(self) -> str:
        return "<<"


_MERGE = _Merge()
_NO_KEY = object()  # a mapping waiting for its next key


@dataclass
class Document:
    """Plain Python data plus where each piece of it was written."""

    data: Any
    file: str
    positions: dict[PathKey, tuple[int, int]] = field(default_factory=dict)
    key_positions: dict[PathKey, tuple[int, int]] = field(default_factory=dict)

    def locate(self, path: PathKey, *, key: bool = False) -> Location:
        """The location of ``path``, or of its nearest ancestor that exists."""
        probe = tuple(path)
        while True:
            if key and probe in self.key_positions:
                line, col = self.key_positions[probe]
                return Location(self.file, line, col)
            if probe in self.positions:
                line, col = self.positions[probe]
                return Location(self.file, line, col)
            if not probe:
                return Location(self.file, 1, 1)
            probe = probe[:-1]
            key = False


def load_file(path: Path, *, display: str | None = None, max_bytes: int = MAX_BYTES) -> Document:
    """Read and parse one YAML file; every failure is a located RunbookLoadError."""
    name = display or str(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise _fail(Location(name), "no such file") from None
    except OSError as exc:
        raise _fail(Location(name), f"cannot read: {exc.strerror}") from None
    if size > max_bytes:
        raise _fail(Location(name), f"file is {size} bytes; the limit is {max_bytes}")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise _fail(Location(name), f"cannot read: {exc.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _fail(undecodable(raw, exc, name), not_utf8(raw, exc)) from None
    return load_text(text, name)


def undecodable(raw: bytes, exc: UnicodeDecodeError, name: str) -> Location:
    """Where the first byte that is not UTF-8 sits, as a line and a character column."""
    line_start = raw.rfind(b"\n", 0, exc.start) + 1
    before = raw[line_start : exc.start].decode("utf-8", errors="replace")
    return Location(name, raw.count(b"\n", 0, exc.start) + 1, len(before) + 1)


def not_utf8(raw: bytes, exc: UnicodeDecodeError) -> str:
    return f"not UTF-8 text (byte 0x{raw[exc.start]:02x}); save the file as UTF-8"


def load_text(text: str, name: str) -> Document:
    """Parse ``text`` (shown as ``name``); a syntax error is retold in plain words."""
    composer = _Composer(name)
    events: _Events | None = None
    try:
        events = _event_parser(text)
        return composer.compose(events)
    except yaml.reader.ReaderError as exc:
        before = text[: exc.position]
        line = before.count("\n") + 1
        col = exc.position - (before.rfind("\n") + 1) + 1
        raise _fail(
            Location(name, line, col),
            f"character U+{exc.character:04X} is not allowed in YAML (a control character): "
            "remove it",
        ) from None
    except yaml.MarkedYAMLError as exc:
        line, col, message = explain_syntax_error(
            exc, text, composer.last_quoted, [f.pos for f in composer.stack]
        )
        raise _fail(Location(name, line, col), f"YAML syntax error: {message}") from None
    except yaml.YAMLError as exc:
        raise _fail(Location(name), f"YAML error: {exc}") from None
    finally:
        if events is not None:
            events.dispose()


class _Events(Protocol):
    def get_event(self) -> Any: ...

    def dispose(self) -> None: ...


class _PythonParser(yaml.reader.Reader, yaml.scanner.Scanner, yaml.parser.Parser):
    """PyYAML's pure-Python reader, scanner and parser: events, nothing composed."""

    def __init__(self, text: str) -> None:
        yaml.reader.Reader.__init__(self, text)
        yaml.scanner.Scanner.__init__(self)
        yaml.parser.Parser.__init__(self)


def _event_parser(text: str) -> _Events:
    if parser == "libyaml":
        events: _Events = yaml.cyaml.CParser(text)  # type: ignore[attr-defined]
        return events
    return _PythonParser(text)


def _fail(loc: Location, message: str) -> RunbookLoadError:
    return RunbookLoadError(Diagnostic(loc, message))


class _Frame:
    """A collection being built: its value so far, its path and what it waits for."""

    __slots__ = (
        "anchor",
        "height",
        "is_map",
        "key",
        "log_start",
        "merge_start",
        "merges",
        "path",
        "pos",
        "total_start",
        "value",
    )

    def __init__(self, value: Any, path: tuple[Any, ...], pos: tuple[int, int]) -> None:
        self.value = value
        self.path = path
        self.pos = pos
        self.is_map = type(value) is dict
        self.key: Any = _NO_KEY
        self.height = 0  # collections below this one
        self.anchor: str | None = None
        self.log_start = 0
        self.total_start = 0
        self.merge_start = 0
        self.merges: list[tuple[Any, tuple[int, int], list[_Entry]]] = []


_Entry = tuple[tuple[Any, ...], tuple[int, int], bool]
"""A recorded position: (path, (line, column), whether it is a key's)."""


@dataclass
class _Anchor:
    """A finished anchored node: what an alias copies, and what copying it would cost."""

    value: Any
    count: int  # values it expands to
    height: int  # collections deep
    pos: tuple[int, int]
    entries: list[_Entry]  # positions below it, relative to it


class _Composer:
    """Builds plain data and positions from parser events, enforcing every bound as it goes.

    Positions below an anchor, or below a merge key's value, are also logged,
    so an alias can replay them at its own path and a merge can move them to
    the mapping it merges into.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.positions: dict[tuple[Any, ...], tuple[int, int]] = {}
        self.key_positions: dict[tuple[Any, ...], tuple[int, int]] = {}
        self.anchors: dict[str, _Anchor] = {}
        self.building: dict[str, tuple[int, int]] = {}  # anchors whose node is not finished
        self.log: list[_Entry] = []
        self.logging = 0
        self.total = 0
        self.last_quoted: tuple[int, int, int] | None = None
        self.stack: list[_Frame] = []  # the collections open where parsing stopped

    def _loc(self, pos: tuple[int, int]) -> Location:
        return Location(self.name, pos[0], pos[1])

    def compose(self, events: _Events) -> Document:
        get = events.get_event
        get()  # the stream starts
        if type(get()) is StreamEndEvent:  # not even an empty document
            return Document(None, self.name)
        root = self._document(get)
        after = get()  # the document's end
        if type(after) is DocumentStartEvent:
            mark = after.start_mark
            raise _fail(
                Location(self.name, mark.line + 1, mark.column + 1)
                if mark
                else Location(self.name),
                "YAML syntax error: a second document starts here; a runbook file holds one "
                "YAML document (remove this '---' line, or move what follows to its own file)",
            )
        return Document(root, self.name, self.positions, self.key_positions)

    def _document(self, get: Any) -> Any:
        """The document's value; the loop is kept in one function because it runs per event."""
        positions = self.positions
        stack: list[_Frame] = self.stack
        path: tuple[Any, ...]
        root: Any = None
        while True:
            ev = get()
            t = type(ev)
            if t is ScalarEvent:
                mark = ev.start_mark
                pos = (mark.line + 1, mark.column + 1)
                tag = ev.tag
                if tag is None or tag == "!":
                    if ev.implicit[0]:
                        value = ev.value
                        if value[:1] not in _PLAIN_TEXT:
                            value = _plain(value)
                    else:
                        value = ev.value
                        if ev.end_mark.line != mark.line and ev.style in ('"', "'"):
                            self.last_quoted = (mark.line, mark.column, ev.end_mark.line)
                else:
                    value = self._tagged(tag, ev.value, pos)
                self.total += 1
                if ev.anchor is not None:
                    self._define(ev.anchor, value, 1, 0, pos, [((), pos, False)])
                if not stack:
                    positions[()] = pos
                    root = "<<" if value is _MERGE else value
                    continue
                top = stack[-1]
                if top.is_map:
                    if top.key is _NO_KEY:
                        self._key(top, value, pos)
                        continue
                    path = (*top.path, top.key)
                    if value is _MERGE:
                        value = "<<"
                    positions[path] = pos
                    if self.logging:
                        self.log.append((path, pos, False))
                    if top.key is _MERGE:
                        self._merge_value(top, value)
                    else:
                        top.value[top.key] = value
                        top.key = _NO_KEY
                else:
                    path = (*top.path, len(top.value))
                    positions[path] = pos
                    if self.logging:
                        self.log.append((path, pos, False))
                    top.value.append("<<" if value is _MERGE else value)
            elif t is MappingStartEvent or t is SequenceStartEvent:
                mark = ev.start_mark
                pos = (mark.line + 1, mark.column + 1)
                is_map = t is MappingStartEvent
                if ev.tag is not None and ev.tag != "!":
                    _check_collection_tag(self._loc(pos), ev.tag, is_map)
                if len(stack) >= MAX_DEPTH:
                    raise _fail(self._loc(pos), f"nesting is deeper than {MAX_DEPTH} levels")
                if not stack:
                    path = ()
                else:
                    top = stack[-1]
                    if top.is_map:
                        if top.key is _NO_KEY:
                            raise _fail(self._loc(pos), "mapping keys must be plain scalars")
                        path = (*top.path, top.key)
                    else:
                        path = (*top.path, len(top.value))
                frame = _Frame({} if is_map else [], path, pos)
                if ev.anchor is not None:
                    self._check_new_anchor(ev.anchor, pos)
                    self.building[ev.anchor] = pos
                    frame.anchor = ev.anchor
                    frame.log_start = len(self.log)
                    frame.total_start = self.total
                    self.logging += 1
                positions[path] = pos
                if self.logging:
                    self.log.append((path, pos, False))
                self.total += 1
                stack.append(frame)
            elif t is MappingEndEvent or t is SequenceEndEvent:
                frame = stack.pop()
                if frame.merges:
                    self._apply_merges(frame)
                if self.total > MAX_NODES:
                    raise _fail(self._loc(frame.pos), _TOO_MANY)
                height = frame.height + 1
                if frame.anchor is not None:
                    self._finish_anchor(frame, height)
                if not stack:
                    root = frame.value
                    continue
                top = stack[-1]
                if height > top.height:
                    top.height = height
                if top.is_map:
                    if top.key is _MERGE:
                        self._merge_value(top, frame.value)
                    else:
                        top.value[top.key] = frame.value
                        top.key = _NO_KEY
                else:
                    top.value.append(frame.value)
            elif t is AliasEvent:
                root = self._alias(ev, stack, root)
            elif t is DocumentEndEvent:
                return root

    def _key(self, top: _Frame, key: Any, pos: tuple[int, int]) -> None:
        """A scalar in a mapping's key position: a new key, or ``<<`` to merge."""
        if key is _MERGE:
            top.key = _MERGE
            top.merge_start = len(self.log)
            self.logging += 1
            top.merges.append((None, pos, []))
            return
        if key in top.value:
            first = self.key_positions[(*top.path, key)][0]
            raise _fail(self._loc(pos), f"duplicate key {key!r} (first at line {first})")
        kpath = (*top.path, key)
        self.key_positions[kpath] = pos
        if self.logging:
            self.log.append((kpath, pos, True))
        top.key = key

    def _merge_value(self, top: _Frame, value: Any) -> None:
        """A merge key's value is complete: keep it, with its positions, for the mapping's end."""
        _, key_pos, _ = top.merges[-1]
        if not (
            type(value) is dict or (type(value) is list and all(type(v) is dict for v in value))
        ):
            raise _fail(
                self._loc(key_pos), "a merge key (<<) takes a mapping or a list of mappings"
            )
        entries = self.log[top.merge_start :]
        for path, _pos, is_key in entries:  # written under a placeholder path: moved at the end
            (self.key_positions if is_key else self.positions).pop(path, None)
        top.merges[-1] = (value, key_pos, entries)
        top.key = _NO_KEY
        self._stop_logging()

    def _apply_merges(self, frame: _Frame) -> None:
        """Merged keys fill in what the mapping does not say itself, first source first."""
        result = frame.value
        base = len(frame.path) + 1
        for value, _key_pos, entries in frame.merges:
            is_list = type(value) is list
            sources = value if is_list else [value]
            added: set[tuple[int, Any]] = set()
            for i, source in enumerate(sources):
                for k, v in source.items():
                    if k not in result:
                        result[k] = v
                        added.add((i, k))
            for path, pos, is_key in entries:
                rel = path[base:]
                i = 0
                if is_list:
                    if not rel:
                        continue
                    i, rel = rel[0], rel[1:]
                if rel and (i, rel[0]) in added:
                    self._replay((*frame.path, *rel), pos, is_key)

    def _replay(self, path: tuple[Any, ...], pos: tuple[int, int], is_key: bool) -> None:
        """Record a position that came from elsewhere (an alias, a merge) unless one exists."""
        target = self.key_positions if is_key else self.positions
        if path not in target:
            target[path] = pos
            if self.logging:
                self.log.append((path, pos, is_key))

    def _alias(self, ev: Any, stack: list[_Frame], root: Any) -> Any:
        """An alias: a copy of its anchor's value, measured before anything is copied."""
        mark = ev.start_mark
        pos = (mark.line + 1, mark.column + 1)
        name = ev.anchor
        if name in self.building:
            raise _fail(
                self._loc(self.building[name]), "an alias refers to a node that contains it"
            )
        anchor = self.anchors.get(name)
        if anchor is None:
            raise _fail(
                self._loc(pos),
                f"YAML syntax error: the alias *{name} refers to no anchor &{name} above it "
                "(an anchor must come before its aliases)",
            )
        if not stack:  # unreachable: an anchor needs a node before the alias
            return _copy(anchor.value)
        top = stack[-1]
        if top.is_map and top.key is _NO_KEY:
            if anchor.height:
                raise _fail(self._loc(anchor.pos), "mapping keys must be plain scalars")
            self.total += 1
            self._key(top, anchor.value, anchor.pos)
            return root
        if len(stack) + anchor.height > MAX_DEPTH:
            raise _fail(
                self._loc(top.pos), f"nesting is deeper than {MAX_DEPTH} levels (through an alias)"
            )
        if self.total + anchor.count > MAX_NODES:
            raise _fail(self._loc(top.pos), _TOO_MANY)
        self.total += anchor.count
        if anchor.height > top.height:
            top.height = anchor.height
        path = (*top.path, top.key) if top.is_map else (*top.path, len(top.value))
        for rel, at, is_key in anchor.entries:
            self._replay((*path, *rel), at, is_key)
        value = _copy(anchor.value)
        if top.is_map:
            if top.key is _MERGE:
                self._merge_value(top, value)
            else:
                top.value[top.key] = "<<" if value is _MERGE else value
                top.key = _NO_KEY
        else:
            top.value.append("<<" if value is _MERGE else value)
        return root

    def _check_new_anchor(self, name: str, pos: tuple[int, int]) -> None:
        first = self.anchors.get(name)
        where = first.pos if first is not None else self.building.get(name)
        if where is not None:
            raise _fail(
                self._loc(pos),
                f"YAML syntax error: the anchor &{name} is defined twice (first at line "
                f"{where[0]}); give each anchor its own name",
            )

    def _define(
        self,
        name: str,
        value: Any,
        count: int,
        height: int,
        pos: tuple[int, int],
        entries: list[_Entry],
    ) -> None:
        self._check_new_anchor(name, pos)
        self.anchors[name] = _Anchor(value, count, height, pos, entries)

    def _finish_anchor(self, frame: _Frame, height: int) -> None:
        """Keep an anchored collection, and the positions below it relative to it."""
        assert frame.anchor is not None
        cut = len(frame.path)
        entries = [
            (path[cut:], pos, is_key)
            for path, pos, is_key in self.log[frame.log_start :]
            if _MERGE not in path
        ]
        count = self.total - frame.total_start
        del self.building[frame.anchor]
        self.anchors[frame.anchor] = _Anchor(frame.value, count, height, frame.pos, entries)
        self._stop_logging()

    def _stop_logging(self) -> None:
        self.logging -= 1
        if not self.logging:
            self.log.clear()

    def _tagged(self, tag: str, value: str, pos: tuple[int, int]) -> Any:
        """A scalar with an explicit tag: only the core schema's, and only if it fits."""
        shown = tag.replace(_TAG, "!!")
        if tag.startswith(_MERGE_TAG):
            return _MERGE
        if tag not in _ALLOWED_TAGS:
            raise _fail(
                self._loc(pos),
                f"tag {shown} is not allowed: cutbook reads plain YAML, without tags",
            )
        if tag not in _SCALAR_TAGS:
            raise _fail(self._loc(pos), f"tag {shown} cannot mark a single value")
        kind = tag[len(_TAG) :]
        if kind == "str":
            return value
        if not _CORE[kind].match(value):
            raise _fail(self._loc(pos), f"{value!r} is not a valid !!{kind}")
        return _plain(value)


_TOO_MANY = f"aliases expand to more than {MAX_NODES} values (an alias bomb?)"


def _check_collection_tag(loc: Location, tag: str, is_map: bool) -> None:
    shown = tag.replace(_TAG, "!!")
    if tag not in _ALLOWED_TAGS:
        raise _fail(loc, f"tag {shown} is not allowed: cutbook reads plain YAML, without tags")
    if tag != _TAG + ("map" if is_map else "seq"):
        raise _fail(loc, f"tag {shown} cannot mark {'a mapping' if is_map else 'a list'}")


def _plain(text: str) -> Any:
    """A plain scalar read by the YAML 1.2 core schema (the first character picks the rule)."""
    if not text:
        return None
    c = text[0]
    if c in "~nN":
        return None if _NULL(text) else text
    if c in "tTfF":
        return c in "tT" if _BOOL(text) else text
    if c in "-+0123456789.":
        if c != "." and _INT(text):
            if text.startswith("0o"):
                return int(text[2:], 8)
            if text.startswith("0x"):
                return int(text[2:], 16)
            return int(text)
        if _FLOAT(text):
            low = text.lower().lstrip("+")
            if low in (".inf", "-.inf"):
                return float(low.replace(".", ""))
            if low == ".nan":
                return float("nan")
            return float(text)
        return text
    if text == "<<":
        return _MERGE
    return text


def _copy(value: Any) -> Any:
    """A fresh copy of plain data, so two aliases of one anchor never share a list."""
    if type(value) is dict:
        return {k: _copy(v) for k, v in value.items()}
    if type(value) is list:
        return [_copy(v) for v in value]
    return value
