"""Issue 15: every independent mistake is reported in one pass, and nothing more.

A wrong key is reported and left out; everything that does not read it is
still checked (so a bad ``at`` is not hidden by a bad ``estimate``), and
nothing that does read it adds a second, derived error. Proven here on the
customs runbook: each key of each kind of step, and each runbook key, made
wrong on its own, gives exactly one error, at that key.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from cutbook import yamlsafe
from cutbook.errors import RunbookInvalid
from cutbook.validation import load

ROOT = Path(__file__).resolve().parent.parent
CUSTOMS = ROOT / "runbooks" / "customs-reorg-2025.yaml"
DOC = yamlsafe.load_file(CUSTOMS).data
WRONG: dict[str, Any] = {"not": "this"}  # a mapping, wrong for every scalar and list key
WRONG_FOR_MAPPINGS = 12345  # for keys that take a mapping


def _wrong(value: Any) -> Any:
    return WRONG_FOR_MAPPINGS if isinstance(value, dict) else WRONG


def _step_cases() -> list[Any]:
    """Each key of the customs steps, in the first two steps that use it (ids stay right)."""
    seen: dict[str, int] = {}
    cases = []
    for i, step in enumerate(DOC["steps"]):
        for key in step:
            if key == "id" or seen.get(key, 0) >= 2:
                continue
            seen[key] = seen.get(key, 0) + 1
            cases.append(pytest.param(i, key, id=f"{step['id']}.{key}"))
    return cases


def _errors(tmp_path: Path, doc: dict[str, Any]) -> list[tuple[int, int, str]]:
    (tmp_path / "data").symlink_to(CUSTOMS.parent / "data", target_is_directory=True)
    path = tmp_path / "rb.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True), encoding="utf-8")
    with pytest.raises(RunbookInvalid) as info:
        load(path, display="rb.yaml")
    return [(d.location.line, d.location.col, d.message) for d in info.value.diagnostics]


def _where(tmp_path: Path, path: tuple[str | int, ...]) -> tuple[int, int]:
    loc = yamlsafe.load_file(tmp_path / "rb.yaml").locate(path)
    return loc.line, loc.col


def test_the_customs_runbook_is_valid_to_begin_with() -> None:
    assert load(CUSTOMS).runbook.steps


@pytest.mark.parametrize(("index", "key"), _step_cases())
def test_a_wrong_step_key_is_one_error_at_that_key(tmp_path: Path, index: int, key: str) -> None:
    doc = copy.deepcopy(DOC)
    doc["steps"][index][key] = _wrong(doc["steps"][index][key])
    errors = _errors(tmp_path, doc)
    assert len(errors) == 1, errors
    assert errors[0][:2] == _where(tmp_path, ("steps", index, key)), errors


@pytest.mark.parametrize("key", [k for k in DOC if k not in ("apiVersion", "steps")])
def test_a_wrong_runbook_key_is_one_error_at_that_key(tmp_path: Path, key: str) -> None:
    doc = copy.deepcopy(DOC)
    doc[key] = _wrong(doc[key])
    errors = _errors(tmp_path, doc)
    assert len(errors) == 1, errors
    assert errors[0][:2] == _where(tmp_path, (key,)), errors


def test_mistakes_in_many_steps_and_keys_are_all_told_at_once(tmp_path: Path) -> None:
    """One wrong key in every step, plus a wrong window: every one of them is reported."""
    doc = copy.deepcopy(DOC)
    doc["window"] = WRONG_FOR_MAPPINGS
    wrong: list[tuple[str | int, ...]] = [("window",)]
    for i, step in enumerate(doc["steps"]):
        step["estimate"] = "soon"
        wrong.append(("steps", i, "estimate"))
    errors = _errors(tmp_path, doc)
    assert {(line, col) for line, col, _ in errors} == {_where(tmp_path, p) for p in wrong}
    assert len(errors) == len(wrong)


def _chain_runbook(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "chain.yaml"
    path.write_text(
        "apiVersion: cutbook/v1\nname: chain\n"
        'window: {start: "2025-03-14T22:30", end: "2025-03-15T05:00"}\n'
        "steps:\n  - id: a\n  - id: b\n    depends_on: [a]\n  - id: c\n    depends_on: [b]\n"
        "  - id: d\n" + extra,
        encoding="utf-8",
    )
    return path


def test_ancestry_answers_what_each_step_waits_for(tmp_path: Path) -> None:
    from cutbook.validation.dependencies import Ancestry

    rb = load(_chain_runbook(tmp_path)).runbook
    ancestry = Ancestry(rb)
    assert "a" in ancestry["c"] and "b" in ancestry["c"]
    assert "c" not in ancestry["a"] and "d" not in ancestry["c"] and "c" not in ancestry["c"]
    assert list(ancestry) == ["a", "b", "c", "d"] and len(ancestry) == 4
    with pytest.raises(KeyError):
        ancestry["nope"]
    # A step whose depends_on was wrong may wait for anything, and so may what follows it.
    unsure = Ancestry(rb, ["b"])
    assert "d" in unsure["b"] and "d" in unsure["c"]
    assert "d" not in unsure["a"]
