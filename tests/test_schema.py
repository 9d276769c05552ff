"""The JSON Schema editors use: its shape, the committed copy, and what it accepts.

A small validator for the keywords the schema actually uses checks every shipped
runbook and the malformed corpus; where the ``jsonschema`` package happens to be
installed, it must agree with it document by document.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from cutbook import yamlsafe
from cutbook.errors import RunbookLoadError
from cutbook.model import Runbook, Step
from cutbook.schema import runbook_schema

ROOT = Path(__file__).resolve().parent.parent
DOC_SCHEMA = ROOT / "docs" / "cutbook.schema.json"
SHIPPED = sorted((ROOT / "runbooks").glob("*.yaml")) + sorted(
    (ROOT / "runbooks" / "examples").glob("*.yaml")
)
CORPUS = sorted((Path(__file__).parent / "malformed").glob("*.yaml"))

Path_ = tuple[str | int, ...]
KNOWN_KEYWORDS = {
    "$schema", "$id", "$defs", "$ref", "title", "description", "default", "type", "const",
    "enum", "pattern", "minimum", "maximum", "minItems", "items", "properties", "required",
    "additionalProperties", "anyOf",
}  # fmt: skip


def cutbook(*args: str) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("cutbook", path=os.path.dirname(sys.executable))
    assert exe is not None, "the cutbook console script is not installed next to python"
    return subprocess.run(
        [exe, *args], capture_output=True, text=True, timeout=60, cwd=ROOT, check=False
    )


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    done = cutbook("schema")
    assert done.returncode == 0, done.stderr
    parsed: dict[str, Any] = json.loads(done.stdout)
    return parsed


# --- a validator for the subset of JSON Schema 2020-12 in use ------------------------

_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "null": (type(None),),
}


def _is(value: Any, kind: str) -> bool:
    if kind in ("integer", "number") and isinstance(value, bool):
        return False
    return isinstance(value, _TYPES[kind])


def violations(
    schema: dict[str, Any], value: Any, root: dict[str, Any], path: Path_ = ()
) -> list[tuple[Path_, str]]:
    """Every (path, keyword) at which ``value`` breaks ``schema``."""
    unknown = set(schema) - KNOWN_KEYWORDS
    assert not unknown, f"the schema uses keywords this test does not check: {unknown}"
    found: list[tuple[Path_, str]] = []
    if "$ref" in schema:
        prefix = "#/$defs/"
        assert schema["$ref"].startswith(prefix)
        found += violations(root["$defs"][schema["$ref"][len(prefix) :]], value, root, path)
    if "anyOf" in schema:
        branches = [violations(s, value, root, path) for s in schema["anyOf"]]
        if all(branches):
            found.append((path, "anyOf"))
    if "type" in schema:
        kinds = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        if not any(_is(value, k) for k in kinds):
            return [*found, (path, "type")]
    if "const" in schema and value != schema["const"]:
        found.append((path, "const"))
    if "enum" in schema and value not in schema["enum"]:
        found.append((path, "enum"))
    if isinstance(value, str) and "pattern" in schema and not re.search(schema["pattern"], value):
        found.append((path, "pattern"))
    if isinstance(value, int | float) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            found.append((path, "minimum"))
        if "maximum" in schema and value > schema["maximum"]:
            found.append((path, "maximum"))
    if isinstance(value, list):
        if len(value) < schema.get("minItems", 0):
            found.append((path, "minItems"))
        if "items" in schema:
            for i, item in enumerate(value):
                found += violations(schema["items"], item, root, (*path, i))
    if isinstance(value, dict):
        props = schema.get("properties", {})
        for key in schema.get("required", []):
            if key not in value:
                found.append(((*path, key), "required"))
        extra = schema.get("additionalProperties", True)
        for key, item in value.items():
            if key in props:
                found += violations(props[key], item, root, (*path, key))
            elif extra is False:
                found.append(((*path, key), "additionalProperties"))
            elif isinstance(extra, dict):
                found += violations(extra, item, root, (*path, key))
    return found


def test_the_validator_catches_what_it_claims() -> None:
    root: dict[str, Any] = {"$defs": {"N": {"type": "integer", "minimum": 1}}}
    s = {
        "type": "object",
        "required": ["a"],
        "additionalProperties": False,
        "properties": {
            "a": {"$ref": "#/$defs/N"},
            "b": {"anyOf": [{"type": "string", "pattern": "^x+$"}, {"type": "null"}]},
            "c": {"type": "array", "minItems": 1, "items": {"enum": [1, 2]}},
        },
    }
    assert violations(s, {"a": 1, "b": "xx", "c": [2]}, root) == []
    assert violations(s, {"a": True, "b": "y", "c": [], "d": 0}, root) == [
        (("a",), "type"),
        (("b",), "anyOf"),
        (("c",), "minItems"),
        (("d",), "additionalProperties"),
    ]
    assert violations(s, {"c": [3]}, root) == [(("a",), "required"), (("c", 0), "enum")]


# --- shape ---------------------------------------------------------------------------


def test_schema_is_draft_2020_12_with_the_runbook_at_its_root(schema: dict[str, Any]) -> None:
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"].endswith(".json")
    assert schema["type"] == "object"
    assert schema["additionalProperties"] is False
    assert set(schema["required"]) == {"apiVersion", "name", "window", "steps"}
    assert schema["properties"]["apiVersion"]["const"] == "cutbook/v1"
    steps = schema["properties"]["steps"]
    assert steps["type"] == "array" and steps["minItems"] == 1
    assert steps["items"] == {"$ref": "#/$defs/Step"}


def test_schema_names_every_key_of_the_language(schema: dict[str, Any]) -> None:
    def aliases(model: type[Runbook] | type[Step]) -> set[str]:
        return {f.alias or n for n, f in model.model_fields.items()}

    assert set(schema["properties"]) == aliases(Runbook)
    step = schema["$defs"]["Step"]
    assert set(step["properties"]) == aliases(Step)
    assert "with" in step["properties"] and "with_" not in step["properties"]
    assert step["additionalProperties"] is False
    assert step["required"] == ["id"]


def test_schema_is_what_the_library_produces(schema: dict[str, Any]) -> None:
    assert schema == runbook_schema()


def test_committed_schema_matches_the_command_byte_for_byte(tmp_path: Path) -> None:
    out = tmp_path / "schema.json"
    done = cutbook("schema", "-o", str(out))
    assert done.returncode == 0, done.stderr
    assert DOC_SCHEMA.read_bytes() == out.read_bytes(), (
        "docs/cutbook.schema.json is stale: run `cutbook schema -o docs/cutbook.schema.json`"
    )


# --- what it accepts -----------------------------------------------------------------


def data_of(path: Path) -> Any:
    return yamlsafe.load_file(path).data


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_every_shipped_runbook_satisfies_the_schema(path: Path, schema: dict[str, Any]) -> None:
    assert violations(schema, data_of(path), schema) == []


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("unknown-top-level-key", [(("descripton",), "additionalProperties")]),
        ("unknown-step-key", [(("steps", 1, "depend_on"), "additionalProperties")]),
        ("missing-window", [(("window",), "required")]),
        ("missing-steps", [(("steps",), "required")]),
        ("steps-empty", [(("steps",), "minItems")]),
        ("steps-not-a-list", [(("steps",), "type")]),
        ("unknown-api-version", [(("apiVersion",), "const")]),
        ("bad-step-id", [(("steps", 0, "id"), "pattern")]),
        ("bad-runbook-name", [(("name",), "pattern")]),
        ("bad-secret-name", [(("secrets", 1), "pattern")]),
        ("bad-on-failure", [(("steps", 0, "on_failure"), "anyOf")]),
        ("bad-duration", [(("steps", 0, "estimate"), "anyOf")]),
        ("retries-zero", [(("steps", 0, "retries"), "anyOf")]),
        ("retries-unknown-backoff", [(("defaults", "retries", "backoff"), "enum")]),
        ("concurrency-zero", [(("steps", 0, "concurrency"), "minimum")]),
        ("top-level-list", [((), "type")]),
    ],
)
def test_known_bad_documents_break_the_obvious_constraint(
    case: str, expected: list[tuple[Path_, str]], schema: dict[str, Any]
) -> None:
    data = data_of(Path(__file__).parent / "malformed" / f"{case}.yaml")
    assert violations(schema, data, schema) == expected


def test_cross_field_mistakes_are_beyond_the_schema(schema: dict[str, Any]) -> None:
    """The schema checks shapes only; ids, targets and templates need `cutbook validate`."""
    for case in ("unknown-dependency", "unknown-target", "dependency-cycle", "unknown-var"):
        data = data_of(Path(__file__).parent / "malformed" / f"{case}.yaml")
        assert violations(schema, data, schema) == [], case


def _corpus_documents() -> list[tuple[str, Any]]:
    docs = []
    for path in CORPUS:
        try:
            docs.append((path.name, yamlsafe.load_file(path).data))
        except RunbookLoadError:
            continue  # not YAML cutbook accepts: nothing for a schema to judge
    return docs


def test_the_reference_implementation_agrees_on_every_document(schema: dict[str, Any]) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    checker = jsonschema.Draft202012Validator(schema)
    documents = [(p.name, data_of(p)) for p in SHIPPED] + _corpus_documents()
    assert len(documents) > 60
    for name, data in documents:
        assert checker.is_valid(data) == (violations(schema, data, schema) == []), name
