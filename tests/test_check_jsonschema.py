"""The committed schema, as a CI job or an editor sees it: ``check-jsonschema`` (ECMA-262
regular expressions, through ``regress``) accepts every shipped runbook and rejects each
schema-level case of the malformed corpus.

One run of the command per direction: it is a separate program and starts slowly.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from test_schema import CROSS_FIELD, DOC_SCHEMA, MALFORMED, ROOT, SCHEMA_LEVEL

# Every runbook in the repository: the shipped ones and the valid ones the tests use.
RUNBOOKS = sorted((ROOT / "runbooks").rglob("*.yaml")) + sorted(
    (ROOT / "tests" / "runbooks").glob("*.yaml")
)


def check_jsonschema(*files: Path) -> tuple[int, dict[str, list[str]]]:
    """Exit code, and the messages per file that failed."""
    exe = shutil.which("check-jsonschema", path=os.path.dirname(sys.executable))
    assert exe is not None, "check-jsonschema is not installed: pip install -e '.[dev]'"
    done = subprocess.run(
        [exe, "--output-format", "json", "--schemafile", str(DOC_SCHEMA), *map(str, files)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        check=False,
    )
    report = json.loads(done.stdout)
    assert report.get("parse_errors", []) == [], report["parse_errors"]
    failed: dict[str, list[str]] = {}
    for error in report.get("errors", []):
        failed.setdefault(Path(error["filename"]).name, []).append(error["message"])
    return done.returncode, failed


def test_runbooks_are_what_the_glob_meant() -> None:
    names = {p.name for p in RUNBOOKS}
    assert {"customs-reorg-2025.yaml", "hello.yaml", "gate.yaml"} <= names
    assert all(p.read_text().lstrip().startswith(("#", "apiVersion")) for p in RUNBOOKS)


def test_every_runbook_in_the_repository_passes() -> None:
    code, failed = check_jsonschema(*RUNBOOKS)
    assert failed == {}
    assert code == 0


def test_every_schema_level_mistake_is_caught() -> None:
    cases = [MALFORMED / f"{name}.yaml" for name in SCHEMA_LEVEL]
    code, failed = check_jsonschema(*cases)
    assert code == 1
    assert sorted(failed) == sorted(p.name for p in cases)


@pytest.mark.parametrize("case", ["bad-duration", "missing-required-argument"])
def test_the_message_points_at_the_mistake(case: str) -> None:
    _, failed = check_jsonschema(MALFORMED / f"{case}.yaml")
    text = " ".join(failed[f"{case}.yaml"])
    assert {"bad-duration": "10 minutes", "missing-required-argument": "'url'"}[case] in text


def test_cross_field_mistakes_pass_the_schema() -> None:
    """What needs the whole file is `cutbook validate`'s job; the schema does not guess."""
    code, failed = check_jsonschema(*(MALFORMED / f"{name}.yaml" for name in CROSS_FIELD))
    assert failed == {}
    assert code == 0
