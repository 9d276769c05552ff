"""Load YAML safely and remember where every value came from.

Runbooks are written by people and run on the night it matters, so loading
refuses anything clever: language tags, duplicate keys, alias-expansion bombs,
huge or deeply nested files. Scalars follow the YAML 1.2 core schema (only
``true``/``false`` are booleans, ``23:00`` stays a string, dates stay text)
so what an operations lead writes is what cutbook reads.

The result keeps a map from each value's path (``("steps", 3, "at")``) to its
line and column, which is how every later error points at the exact node.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import yaml

from cutbook.diagnostics import Diagnostic, Location
from cutbook.errors import RunbookLoadError

PathKey = tuple[str | int, ...]

MAX_BYTES = 5 * 1024 * 1024
MAX_NODES = 500_000
MAX_DEPTH = 64

_BaseLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

_TAG = "tag:yaml.org,2002:"
_LINE_BREAK = re.compile("\r\n|[\r\n\x85\u2028\u2029]")
_ALLOWED_TAGS = {_TAG + t for t in ("str", "int", "float", "bool", "null", "seq", "map")}
_SCALAR_TAGS = {_TAG + t for t in ("str", "int", "float", "bool", "null")}
_COLLECTION_TAGS: dict[type[yaml.Node], str] = {
    yaml.SequenceNode: _TAG + "seq",
    yaml.MappingNode: _TAG + "map",
}


class _Loader(_BaseLoader):  # type: ignore[valid-type,misc]
    """A SafeLoader with YAML 1.2 core scalar resolution and nothing else."""

    yaml_implicit_resolvers: ClassVar[dict[Any, Any]] = {}


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

for _tag, _first in (("null", "~nN"), ("bool", "tTfF"), ("int", "-+0123456789")):
    _Loader.add_implicit_resolver(_TAG + _tag, _CORE[_tag], list(_first))
_Loader.add_implicit_resolver(_TAG + "null", re.compile(r"^$"), [""])
_Loader.add_implicit_resolver(_TAG + "float", _CORE["float"], list("-+.0123456789"))
_Loader.add_implicit_resolver(_TAG + "merge", re.compile(r"^<<$"), ["<"])


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
    loader = _Loader(text)
    try:
        _check_nesting(text, name)
        node = loader.get_single_node()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        loc = Location(name, mark.line + 1, mark.column + 1) if mark else Location(name)
        problem = exc.problem or exc.context or "invalid YAML"
        ctx = exc.context_mark
        if mark is not None and _char_at(text, mark.line, mark.column) == "\t":
            problem = "a tab where YAML expects spaces (indent with spaces, never tabs)"
        elif (
            exc.problem
            and exc.context
            and ctx is not None
            and mark is not None
            and (ctx.line, ctx.column) != (mark.line, mark.column)
        ):
            problem += (
                f" ({exc.context} that starts at line {ctx.line + 1}, column {ctx.column + 1})"
            )
        raise _fail(loc, f"YAML syntax error: {problem}") from None
    except yaml.YAMLError as exc:
        raise _fail(Location(name), f"YAML error: {exc}") from None
    except RecursionError:
        raise _fail(Location(name), f"nesting is deeper than {MAX_DEPTH} levels") from None
    finally:
        loader.dispose()
    doc = Document(data=None, file=name)
    if node is None:
        return doc
    _Builder(doc).check_size(node)
    doc.data = _Builder(doc).build(node, (), 0)
    return doc


def _check_nesting(text: str, name: str) -> None:
    """Refuse deep nesting from the event stream, before anything is composed.

    libyaml's composer recurses in C without Python's recursion limit, so a
    small file of 100 000 ``[`` crashes the interpreter; the event parser keeps
    its own stack, and stopping at the first level too deep is instant.
    """
    loader = _Loader(text)
    depth = 0
    try:
        while loader.check_event():
            event = loader.get_event()
            if isinstance(event, yaml.SequenceStartEvent | yaml.MappingStartEvent):
                depth += 1
                if depth > MAX_DEPTH:
                    mark = event.start_mark
                    loc = Location(name, mark.line + 1, mark.column + 1) if mark else Location(name)
                    raise _fail(loc, f"nesting is deeper than {MAX_DEPTH} levels")
            elif isinstance(event, yaml.SequenceEndEvent | yaml.MappingEndEvent):
                depth -= 1
    finally:
        loader.dispose()


def _char_at(text: str, line: int, column: int) -> str:
    lines = _LINE_BREAK.split(text)  # the breaks PyYAML counts, no others
    if 0 <= line < len(lines) and 0 <= column < len(lines[line]):
        return lines[line][column]
    return ""


def _fail(loc: Location, message: str) -> RunbookLoadError:
    return RunbookLoadError(Diagnostic(loc, message))


class _Builder:
    def __init__(self, doc: Document) -> None:
        self.doc = doc

    def _loc(self, node: yaml.Node) -> Location:
        return Location(self.doc.file, node.start_mark.line + 1, node.start_mark.column + 1)

    def check_size(self, root: yaml.Node) -> None:
        """Count the values aliases would expand to, and how deep, before expanding anything.

        Each node is measured once (values below it, and how many collections
        deep it goes), so a node shared through an alias costs nothing to check
        again, yet the nesting it adds where the alias is used still counts.
        """
        memo: dict[int, tuple[int, int]] = {}
        onstack: set[int] = set()
        deeper = f"nesting is deeper than {MAX_DEPTH} levels"

        def measure(node: yaml.Node, outer: int) -> tuple[int, int]:
            """(values, collection height) of ``node``, inside ``outer`` collections."""
            key = id(node)
            if key in memo:
                return memo[key]
            if key in onstack:
                raise _fail(self._loc(node), "an alias refers to a node that contains it")
            if isinstance(node, yaml.ScalarNode):
                return 1, 0
            if outer + 1 > MAX_DEPTH:
                raise _fail(self._loc(node), deeper)
            onstack.add(key)
            children: list[yaml.Node] = (
                list(node.value)
                if isinstance(node, yaml.SequenceNode)
                else [n for pair in node.value for n in pair]
            )
            total, height = 1, 0
            for child in children:
                values, below = measure(child, outer + 1)
                if outer + 1 + below > MAX_DEPTH:  # shared through an alias, deeper here
                    raise _fail(self._loc(node), deeper + " (through an alias)")
                total += values
                height = max(height, below)
                if total > MAX_NODES:
                    raise _fail(
                        self._loc(node),
                        f"aliases expand to more than {MAX_NODES} values (an alias bomb?)",
                    )
            onstack.discard(key)
            memo[key] = (total, height + 1)
            return memo[key]

        measure(root, 0)

    def build(self, node: yaml.Node, path: PathKey, depth: int) -> Any:
        if node.tag not in _ALLOWED_TAGS and not node.tag.startswith(_TAG + "merge"):
            tag = node.tag.replace(_TAG, "!!")
            raise _fail(
                self._loc(node), f"tag {tag} is not allowed: cutbook reads plain YAML, without tags"
            )
        if isinstance(node, yaml.ScalarNode):
            fits = node.tag in _SCALAR_TAGS or node.tag == _TAG + "merge"
        else:
            fits = node.tag == _COLLECTION_TAGS[type(node)]
        if not fits:
            kind = {yaml.ScalarNode: "a single value", yaml.SequenceNode: "a list"}
            tag = node.tag.replace(_TAG, "!!")
            raise _fail(
                self._loc(node), f"tag {tag} cannot mark {kind.get(type(node), 'a mapping')}"
            )
        self.doc.positions.setdefault(path, (node.start_mark.line + 1, node.start_mark.column + 1))
        if isinstance(node, yaml.ScalarNode):
            return self._scalar(node)
        if isinstance(node, yaml.SequenceNode):
            return [self.build(child, (*path, i), depth + 1) for i, child in enumerate(node.value)]
        assert isinstance(node, yaml.MappingNode)
        return self._mapping(node, path, depth)

    def _scalar(self, node: yaml.ScalarNode) -> Any:
        value: str = node.value
        tag = node.tag[len(_TAG) :]
        if tag in _CORE and not _CORE[tag].match(value):
            raise _fail(self._loc(node), f"{value!r} is not a valid !!{tag}")
        if tag == "null":
            return None
        if tag == "bool":
            return value.lower() == "true"
        if tag == "int":
            if value.startswith("0o"):
                return int(value[2:], 8)
            if value.startswith("0x"):
                return int(value[2:], 16)
            return int(value)
        if tag == "float":
            low = value.lower().lstrip("+")
            if low in (".inf", "-.inf"):
                return float(low.replace(".", ""))
            if low == ".nan":
                return float("nan")
            return float(value)
        return value

    def _mapping(self, node: yaml.MappingNode, path: PathKey, depth: int) -> dict[Any, Any]:
        result: dict[Any, Any] = {}
        seen: dict[Any, yaml.Node] = {}
        merges: list[tuple[yaml.Node, yaml.Node]] = []
        for key_node, value_node in node.value:
            if key_node.tag == _TAG + "merge":
                merges.append((key_node, value_node))
                continue
            if not isinstance(key_node, yaml.ScalarNode):
                raise _fail(self._loc(key_node), "mapping keys must be plain scalars")
            if key_node.tag not in _SCALAR_TAGS:
                tag = key_node.tag.replace(_TAG, "!!")
                raise _fail(
                    self._loc(key_node),
                    f"tag {tag} is not allowed: cutbook reads plain YAML, without tags",
                )
            key = self._scalar(key_node)
            if key in seen:
                first = seen[key].start_mark.line + 1
                raise _fail(self._loc(key_node), f"duplicate key {key!r} (first at line {first})")
            seen[key] = key_node
            mark = key_node.start_mark
            self.doc.key_positions.setdefault((*path, key), (mark.line + 1, mark.column + 1))
            result[key] = self.build(value_node, (*path, key), depth + 1)
        # Explicit keys win over merged ones, in values and in recorded positions.
        for key_node, value_node in merges:
            for source in self._merge_sources(key_node, value_node):
                for k, v in self._mapping(source, path, depth + 1).items():
                    result.setdefault(k, v)
        return result

    def _merge_sources(self, key: yaml.Node, node: yaml.Node) -> list[yaml.MappingNode]:
        if isinstance(node, yaml.MappingNode):
            return [node]
        if isinstance(node, yaml.SequenceNode) and all(
            isinstance(n, yaml.MappingNode) for n in node.value
        ):
            return list(node.value)
        raise _fail(self._loc(key), "a merge key (<<) takes a mapping or a list of mappings")
