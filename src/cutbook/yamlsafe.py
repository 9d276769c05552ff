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
_ALLOWED_TAGS = {_TAG + t for t in ("str", "int", "float", "bool", "null", "seq", "map")}


class _Loader(_BaseLoader):  # type: ignore[valid-type,misc]
    """A SafeLoader with YAML 1.2 core scalar resolution and nothing else."""

    yaml_implicit_resolvers: ClassVar[dict[Any, Any]] = {}


def _resolver(tag: str, pattern: str, first: str) -> None:
    _Loader.add_implicit_resolver(_TAG + tag, re.compile(pattern, re.X), list(first))


_resolver("null", r"^(?:~|null|Null|NULL|)$", "~nN")
_Loader.add_implicit_resolver(_TAG + "null", re.compile(r"^$"), [""])
_resolver("bool", r"^(?:true|True|TRUE|false|False|FALSE)$", "tTfF")
_resolver("int", r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$", "-+0123456789")
_resolver(
    "float",
    r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
    r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$",
    "-+.0123456789",
)
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
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise _fail(Location(name), f"not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise _fail(Location(name), f"cannot read: {exc.strerror}") from None
    return load_text(text, name)


def load_text(text: str, name: str) -> Document:
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        loc = Location(name, mark.line + 1, mark.column + 1) if mark else Location(name)
        problem = exc.problem or exc.context or "invalid YAML"
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


def _fail(loc: Location, message: str) -> RunbookLoadError:
    return RunbookLoadError(Diagnostic(loc, message))


class _Builder:
    def __init__(self, doc: Document) -> None:
        self.doc = doc

    def _loc(self, node: yaml.Node) -> Location:
        return Location(self.doc.file, node.start_mark.line + 1, node.start_mark.column + 1)

    def check_size(self, root: yaml.Node) -> None:
        """Count the nodes aliases would expand to, before expanding anything."""
        sizes: dict[int, int] = {}
        onstack: set[int] = set()

        def size(node: yaml.Node, depth: int) -> int:
            key = id(node)
            if key in sizes:
                return sizes[key]
            if depth > MAX_DEPTH:
                raise _fail(self._loc(node), f"nesting is deeper than {MAX_DEPTH} levels")
            if key in onstack:
                raise _fail(self._loc(node), "an alias refers to a node that contains it")
            onstack.add(key)
            total = 1
            if isinstance(node, yaml.SequenceNode):
                for child in node.value:
                    total += size(child, depth + 1)
            elif isinstance(node, yaml.MappingNode):
                for k, v in node.value:
                    total += size(k, depth + 1) + size(v, depth + 1)
            onstack.discard(key)
            if total > MAX_NODES:
                raise _fail(
                    self._loc(node),
                    f"aliases expand to more than {MAX_NODES} values (an alias bomb?)",
                )
            sizes[key] = total
            return total

        size(root, 0)

    def build(self, node: yaml.Node, path: PathKey, depth: int) -> Any:
        if node.tag not in _ALLOWED_TAGS and not node.tag.startswith(_TAG + "merge"):
            tag = node.tag.replace(_TAG, "!!")
            raise _fail(self._loc(node), f"tag {tag} is not allowed in a runbook")
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
        merges: list[yaml.Node] = []
        for key_node, value_node in node.value:
            if key_node.tag == _TAG + "merge":
                merges.append(value_node)
                continue
            if not isinstance(key_node, yaml.ScalarNode):
                raise _fail(self._loc(key_node), "mapping keys must be plain scalars")
            if key_node.tag not in _ALLOWED_TAGS:
                tag = key_node.tag.replace(_TAG, "!!")
                raise _fail(self._loc(key_node), f"tag {tag} is not allowed in a runbook")
            key = self._scalar(key_node)
            if key in seen:
                first = seen[key].start_mark.line + 1
                raise _fail(self._loc(key_node), f"duplicate key {key!r} (first at line {first})")
            seen[key] = key_node
            mark = key_node.start_mark
            self.doc.key_positions.setdefault((*path, key), (mark.line + 1, mark.column + 1))
            result[key] = self.build(value_node, (*path, key), depth + 1)
        # Explicit keys win over merged ones, in values and in recorded positions.
        for value_node in merges:
            for source in self._merge_sources(value_node):
                for k, v in self._mapping(source, path, depth + 1).items():
                    result.setdefault(k, v)
        return result

    def _merge_sources(self, node: yaml.Node) -> list[yaml.MappingNode]:
        if isinstance(node, yaml.MappingNode):
            return [node]
        if isinstance(node, yaml.SequenceNode) and all(
            isinstance(n, yaml.MappingNode) for n in node.value
        ):
            return list(node.value)
        raise _fail(self._loc(node), "a merge key (<<) takes a mapping or a list of mappings")
