"""The JSON Schema editors use: its shape, the committed copy, what it accepts, and that
every key editors can complete is explained.

Documents are judged by the ``jsonschema`` package (pinned in requirements.lock), the
reference implementation of draft 2020-12; ``test_check_jsonschema.py`` runs the
``check-jsonschema`` command over the same files, as an editor or a CI job would.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

import jsonschema
import pytest
from pydantic import Field

from cutbook import yamlsafe
from cutbook.adapter import ActionSpec, Args, BaseAdapter
from cutbook.adapter_info import Loaded, loadable
from cutbook.errors import RunbookInvalid
from cutbook.model import Runbook, Step
from cutbook.schema import build_schema, runbook_schema
from cutbook.validation import load
from e2e_support import install_example_adapter

ROOT = Path(__file__).resolve().parent.parent
DOC_SCHEMA = ROOT / "docs" / "cutbook.schema.json"
MALFORMED = Path(__file__).parent / "malformed"
SHIPPED = sorted((ROOT / "runbooks").glob("*.yaml")) + sorted(
    (ROOT / "runbooks" / "examples").glob("*.yaml")
)

Error = tuple[tuple[str | int, ...], str]


def cutbook(*args: str, env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("cutbook", path=os.path.dirname(sys.executable))
    assert exe is not None, "the cutbook console script is not installed next to python"
    return subprocess.run(
        [exe, *args], capture_output=True, text=True, timeout=120, cwd=ROOT, check=False, env=env
    )


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    done = cutbook("schema")
    assert done.returncode == 0, done.stderr
    parsed: dict[str, Any] = json.loads(done.stdout)
    return parsed


@pytest.fixture(scope="module")
def checker(schema: dict[str, Any]) -> jsonschema.Draft202012Validator:
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def errors(checker: jsonschema.Draft202012Validator, data: Any) -> list[Error]:
    """Where and by which keyword ``data`` fails, outermost errors only, sorted."""
    return sorted(
        {(tuple(e.absolute_path), str(e.validator)) for e in checker.iter_errors(data)},
        key=repr,
    )


def data_of(path: Path) -> Any:
    return yamlsafe.load_file(path).data


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


# --- every key explained -------------------------------------------------------------


def unexplained(schema: dict[str, Any]) -> list[str]:
    """Every property (in the root, every $def, and every then:) without a description or
    without examples, as a JSON-pointer-like path. ``if:`` only tests values: skipped."""
    found: list[str] = []

    def visit(node: Any, where: str) -> None:
        if isinstance(node, list):
            for i, item in enumerate(node):
                visit(item, f"{where}/{i}")
            return
        if not isinstance(node, dict):
            return
        for name, prop in node.get("properties", {}).items():
            missing = [k for k in ("description", "examples") if not prop.get(k)]
            if missing:
                found.append(f"{where}/properties/{name}: no {' and no '.join(missing)}")
        for key, value in node.items():
            if key not in ("if", "examples", "default", "const", "enum"):
                visit(value, f"{where}/{key}")

    visit(schema, "#")
    return found


def test_every_property_has_a_description_and_an_example(schema: dict[str, Any]) -> None:
    assert unexplained(schema) == []


def test_the_walk_finds_a_property_nested_anywhere() -> None:
    nested = {
        "properties": {"a": {"description": "d", "examples": [1]}},
        "$defs": {"X": {"allOf": [{"then": {"properties": {"b": {"description": "d"}}}}]}},
        "if": {"properties": {"c": {"const": 1}}},
    }
    assert unexplained(nested) == ["#/$defs/X/allOf/0/then/properties/b: no examples"]


def test_examples_satisfy_their_own_property(schema: dict[str, Any]) -> None:
    """An example an editor offers must not be underlined once inserted."""
    bad: list[str] = []

    def visit(node: Any, where: str) -> None:
        if isinstance(node, list):
            for i, item in enumerate(node):
                visit(item, f"{where}/{i}")
        if not isinstance(node, dict):
            return
        for name, prop in node.get("properties", {}).items():
            sub = {"$defs": schema["$defs"], **prop}
            for example in prop.get("examples", []):
                if not jsonschema.Draft202012Validator(sub).is_valid(example):
                    bad.append(f"{where}/properties/{name}: {example!r}")
        for key, value in node.items():
            if key not in ("if", "examples", "default", "const", "enum"):
                visit(value, f"{where}/{key}")

    visit(schema, "#")
    assert bad == []


# --- what it accepts -----------------------------------------------------------------


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_every_shipped_runbook_satisfies_the_schema(
    path: Path, checker: jsonschema.Draft202012Validator
) -> None:
    assert errors(checker, data_of(path)) == []


# The malformed cases the schema alone can tell (pure shape errors), with where and how it
# objects. tests/malformed is another suite's corpus; this list is this suite's choice.
SCHEMA_LEVEL: dict[str, list[Error]] = {
    "unknown-top-level-key": [((), "additionalProperties")],
    "unknown-step-key": [(("steps", 1), "additionalProperties")],
    "missing-window": [((), "required")],
    "missing-steps": [((), "required")],
    "steps-empty": [(("steps",), "minItems")],
    "steps-not-a-list": [(("steps",), "type")],
    "unknown-api-version": [(("apiVersion",), "const")],
    "bad-step-id": [(("steps", 0, "id"), "pattern")],
    "bad-runbook-name": [(("name",), "pattern")],
    "bad-secret-name": [(("secrets", 1), "pattern")],
    "bad-on-failure": [(("steps", 0, "on_failure"), "anyOf")],
    "bad-duration": [(("steps", 0, "estimate"), "anyOf")],
    "retries-zero": [(("steps", 0, "retries"), "anyOf")],
    "retries-unknown-backoff": [(("defaults", "retries", "backoff"), "enum")],
    "concurrency-zero": [(("steps", 0, "concurrency"), "minimum")],
    "top-level-list": [((), "type")],
    "empty": [((), "type")],
    # adapter arguments and options, through the per-action and per-adapter rules
    "missing-required-argument": [(("steps", 0, "with"), "required")],
    "unknown-http-argument": [(("steps", 0, "with"), "additionalProperties")],
    "wrong-argument-type": [(("steps", 0, "with", "expect"), "anyOf")],
    "target-option-typo": [
        (("targets", "vnaccs"), "additionalProperties"),
        (("targets", "vnaccs"), "required"),
    ],
    "union-argument-type": [(("targets", "vnaccs", "verify_tls"), "anyOf")],
}

# Mistakes only the whole file can show: ids, targets, templates, times, data.
CROSS_FIELD = (
    "unknown-dependency",
    "unknown-target",
    "dependency-cycle",
    "unknown-var",
    "unknown-action",
    "window-end-before-start",
    "undeclared-secret",
)


@pytest.mark.parametrize(("case", "expected"), sorted(SCHEMA_LEVEL.items()))
def test_known_bad_documents_break_the_obvious_constraint(
    case: str, expected: list[Error], checker: jsonschema.Draft202012Validator
) -> None:
    assert errors(checker, data_of(MALFORMED / f"{case}.yaml")) == sorted(expected, key=repr)


@pytest.mark.parametrize("case", [*SCHEMA_LEVEL, *CROSS_FIELD])
def test_the_validator_rejects_them_too(case: str) -> None:
    """The schema never objects where `cutbook validate` would not."""
    with pytest.raises(RunbookInvalid):
        load(MALFORMED / f"{case}.yaml")


@pytest.mark.parametrize("case", CROSS_FIELD)
def test_cross_field_mistakes_are_beyond_the_schema(
    case: str, checker: jsonschema.Draft202012Validator
) -> None:
    assert errors(checker, data_of(MALFORMED / f"{case}.yaml")) == []


# --- with: per action ----------------------------------------------------------------


def runbook(step: dict[str, Any], targets: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "cutbook/v1",
        "name": "t",
        "window": {"start": "2025-03-14T22:00", "end": "2025-03-15T02:00"},
        "vars": {"need_evidence": True, "url": "http://127.0.0.1:9"},
        "targets": targets
        or {
            "people": {"adapter": "manual"},
            "api": {"adapter": "http", "base_url": "http://127.0.0.1:9"},
            "pause": {"adapter": "wait"},
        },
        "steps": [{"id": "a", **step}],
    }


def step_errors(checker: jsonschema.Draft202012Validator, step: dict[str, Any]) -> list[Error]:
    return errors(checker, runbook(step))


def test_manual_confirm_needs_its_instructions(checker: jsonschema.Draft202012Validator) -> None:
    ok = {"target": "people", "action": "confirm", "with": {"instructions": "Do it"}}
    assert step_errors(checker, ok) == []
    assert step_errors(checker, {**ok, "with": {"title": "x"}}) == [
        (("steps", 0, "with"), "required")
    ]
    assert step_errors(checker, {"target": "people", "action": "confirm"}) == [
        (("steps", 0), "required")
    ]
    typo = {**ok, "with": {"instructions": "x", "evidence_requred": True}}
    assert step_errors(checker, typo) == [(("steps", 0, "with"), "additionalProperties")]


def test_with_offers_each_actions_arguments(schema: dict[str, Any]) -> None:
    rules = {
        r["if"]["properties"]["action"]["const"]: r["then"]
        for r in schema["$defs"]["Step"]["allOf"]
    }
    confirm = rules["confirm"]["properties"]["with"]
    assert confirm["$ref"] == "#/$defs/manual.ConfirmArgs"
    args = schema["$defs"]["manual.ConfirmArgs"]
    assert {"instructions", "evidence_required"} <= set(args["properties"])
    assert args["required"] == ["instructions"] and args["additionalProperties"] is False
    assert confirm["examples"] == [
        {"instructions": args["properties"]["instructions"]["examples"][0]}
    ]
    found, broken = loadable()
    assert broken == []
    every_action = {a for entry in found for a in entry.cls.actions}
    assert set(rules) == every_action


@pytest.mark.parametrize(
    "step",
    [
        {
            "target": "people",
            "action": "confirm",
            "with": {
                "instructions": "{{ item.how }}",
                "evidence_required": "{{ vars.need_evidence }}",
            },
            "for_each": [{"how": "x"}],
        },
        {"target": "pause", "action": "sleep", "with": {"duration": "1h 30m"}},
        {
            "target": "api",
            "action": "get",
            "with": {"path": "/x", "expect": {"status": ["{{ vars.code }}"]}},
        },
        {"target": "api", "action": "post", "with": {"params": "{{ vars.params }}"}},
    ],
    ids=[
        "template-for-a-boolean",
        "duration-with-a-space",
        "template-in-a-list",
        "template-for-a-mapping",
    ],
)
def test_templates_are_allowed_where_the_validator_allows_them(
    step: dict[str, Any], checker: jsonschema.Draft202012Validator, tmp_path: Path
) -> None:
    doc = runbook(step)
    doc["vars"].update({"code": 200, "params": {"a": "b"}})
    assert errors(checker, doc) == []
    path = tmp_path / "rb.yaml"
    path.write_text(json.dumps(doc))  # JSON is YAML
    load(path)  # raises RunbookInvalid if the validator disagrees


def test_an_action_no_adapter_has_leaves_with_free(
    checker: jsonschema.Draft202012Validator,
) -> None:
    assert step_errors(checker, {"target": "api", "action": "frobnicate", "with": {"x": 1}}) == []


def test_target_options_are_the_adapters(checker: jsonschema.Draft202012Validator) -> None:
    api = {"adapter": "http", "base_url": "{{ vars.url }}", "timeout": "1h 30m"}
    assert errors(checker, runbook({}, {"api": api})) == []
    assert errors(checker, runbook({}, {"api": {**api, "timeout": "soon"}})) == [
        (("targets", "api", "timeout"), "anyOf")
    ]
    assert errors(checker, runbook({}, {"x": {"adapter": "not-installed", "y": 1}})) == []


class _GetArgs(Args):
    key: str = Field(description="Which key", examples=["k"])


class _KeyValue(BaseAdapter):
    """A second adapter with a ``get`` action, as a third-party store adapter might have."""

    name: ClassVar[str] = "kv"
    actions: ClassVar[Mapping[str, ActionSpec]] = {
        "get": ActionSpec(args=_GetArgs, description="read a key", mutating=False)
    }


def test_a_clash_of_action_names_accepts_either_adapters_arguments() -> None:
    found, _ = loadable()
    clash = build_schema([*found, Loaded("kv", "test", _KeyValue)])
    [rule] = [
        r
        for r in clash["$defs"]["Step"]["allOf"]
        if r["if"]["properties"]["action"]["const"] == "get"
    ]
    assert rule["then"]["properties"]["with"]["anyOf"] == [
        {"$ref": "#/$defs/http.GetArgs"},
        {"$ref": "#/$defs/kv._GetArgs"},
    ]
    check = jsonschema.Draft202012Validator(clash)
    for args in ({"path": "/x"}, {"key": "k"}):
        assert errors(check, runbook({"target": "api", "action": "get", "with": args})) == []
    bad = runbook({"target": "api", "action": "get", "with": {"nope": 1}})
    assert errors(check, bad) == [(("steps", 0, "with"), "anyOf")]


def test_an_expect_given_beside_with_is_not_required_inside_it() -> None:
    class _Needs(Args):
        expect: dict[str, Any] = Field(description="What to find", examples=[{"a": 1}])

    class _Checker(BaseAdapter):
        name: ClassVar[str] = "chk"
        actions: ClassVar[Mapping[str, ActionSpec]] = {
            "look": ActionSpec(args=_Needs, mutating=False)
        }

    built = build_schema([Loaded("chk", "test", _Checker)])
    check = jsonschema.Draft202012Validator(built)
    verify = {"action": "look", "expect": {"a": 1}}
    assert (
        errors(
            check,
            runbook({"target": "t", "action": "look", "with": {"expect": {}}, "verify": verify}),
        )
        == []
    )
    assert errors(check, runbook({"target": "t", "action": "look", "with": {}})) == [
        (("steps", 0, "with"), "required")
    ]


# --- third-party adapters ------------------------------------------------------------


@pytest.fixture(scope="module")
def echo_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """tests/example_adapter really installed, into a directory put on PYTHONPATH."""
    target = tmp_path_factory.mktemp("site")
    install_example_adapter(tmp_path_factory.mktemp("build"), target)
    yield target


def test_an_installed_third_party_adapter_completes_too(echo_site: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(echo_site)}
    done = cutbook("schema", env=env)
    assert done.returncode == 0, done.stderr
    schema = json.loads(done.stdout)
    rules = {
        r["if"]["properties"]["action"]["const"]: r["then"]
        for r in schema["$defs"]["Step"]["allOf"]
    }
    assert rules["say"]["properties"]["with"]["$ref"] == "#/$defs/echo.SayArgs"
    assert schema["$defs"]["echo.SayArgs"]["required"] == ["text"]
    targets = [
        r["if"]["properties"]["adapter"]["const"] for r in schema["$defs"]["TargetSpec"]["allOf"]
    ]
    assert "echo" in targets
    check = jsonschema.Draft202012Validator(schema)
    step = {"target": "e", "action": "say", "with": {"txt": "hi"}}
    assert errors(check, runbook(step, {"e": {"adapter": "echo"}})) == [
        (("steps", 0, "with"), "additionalProperties"),
        (("steps", 0, "with"), "required"),
    ]


def test_a_broken_plugin_is_left_out_with_a_warning(tmp_path: Path) -> None:
    dist = tmp_path / "cutbook_broken-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: cutbook-broken\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[cutbook.adapters]\nbroken = cutbook_broken_nope:X\n")
    done = cutbook("schema", env={**os.environ, "PYTHONPATH": str(tmp_path)})
    assert done.returncode == 0, done.stderr
    assert "left out of the schema" in done.stderr and "broken" in done.stderr
    assert "Traceback" not in done.stderr
    assert json.loads(done.stdout)["$defs"]["Step"]["allOf"]


def test_the_example_adapter_is_not_in_the_committed_schema() -> None:
    """The committed copy describes the built-in adapters only (what the repo installs)."""
    text = DOC_SCHEMA.read_text()
    assert "echo." not in text
    assert "manual.ConfirmArgs" in text
