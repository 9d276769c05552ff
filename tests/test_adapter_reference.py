"""The runbook reference's adapter section is generated, and cannot drift from the adapters.

Its tables come from the same description ``cutbook adapters`` prints (adapter_info),
so a test that compares the committed section with a fresh one, and the tables with the
command's JSON, keeps the docs honest when an adapter gains or changes an argument.
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

from cutbook.adapter_info import (
    REFERENCE_BEGIN,
    REFERENCE_END,
    describe_all,
    render_markdown,
    replace_section,
)

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = ROOT / "docs" / "runbook-reference.md"


def cutbook(*args: str) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("cutbook", path=os.path.dirname(sys.executable))
    assert exe is not None, "the cutbook console script is not installed next to python"
    return subprocess.run(
        [exe, *args], capture_output=True, text=True, timeout=120, cwd=ROOT, check=False
    )


def committed_section() -> str:
    text = REFERENCE.read_text(encoding="utf-8")
    start, end = text.index(REFERENCE_BEGIN), text.index(REFERENCE_END)
    return text[start : end + len(REFERENCE_END)] + "\n"


def test_the_committed_section_is_what_the_adapters_say() -> None:
    assert committed_section() == render_markdown(describe_all()), (
        "docs/runbook-reference.md's adapter section is stale: run "
        "`cutbook adapters --format markdown --update docs/runbook-reference.md`"
    )


def test_the_command_prints_the_same_section() -> None:
    done = cutbook("adapters", "--format", "markdown")
    assert done.returncode == 0, done.stderr
    assert done.stdout == committed_section()


def tables(section: str) -> dict[str, set[tuple[str, str]]]:
    """``adapter.action`` -> {(argument, "yes"/"no")}, read back from the Markdown."""
    found: dict[str, set[tuple[str, str]]] = {}
    current = ""
    for line in section.splitlines():
        heading = re.match(r"^#### `([\w-]+\.[\w-]+)`", line)
        if heading:
            current = heading.group(1)
            found[current] = set()
        elif line.startswith("#"):
            current = ""
        elif current and (row := re.match(r"^\| `([^`]+)` \|.*\| (yes|no) \|", line)):
            found[current].add((row.group(1), row.group(2)))
    return found


def test_the_tables_match_cutbook_adapters_json() -> None:
    done = cutbook("adapters", "--format", "json")
    assert done.returncode == 0, done.stderr
    infos: list[dict[str, Any]] = json.loads(done.stdout)
    expected = {
        f"{info['name']}.{action['name']}": {
            (arg["name"], "yes" if arg["required"] else "no") for arg in action["args"]
        }
        for info in infos
        for action in info["actions"]
    }
    assert tables(committed_section()) == expected
    assert len(expected) >= 15


def test_manual_confirm_is_documented_in_full() -> None:
    rows = tables(committed_section())["manual.confirm"]
    assert ("instructions", "yes") in rows
    assert ("evidence_required", "no") in rows
    assert "Refuse a confirmation without a comment" in committed_section()


def test_every_argument_row_has_a_description() -> None:
    empty = [
        line
        for line in committed_section().splitlines()
        if line.startswith("| `") and line.rstrip().endswith("|  |")
    ]
    assert empty == []


def test_update_rewrites_only_the_section(tmp_path: Path) -> None:
    doc = tmp_path / "ref.md"
    doc.write_text(
        f"# Title\n\nbefore\n\n{REFERENCE_BEGIN}\nSTALE-TABLE\n{REFERENCE_END}\n\nafter\n"
    )
    done = cutbook("adapters", "--format", "markdown", "--update", str(doc))
    assert done.returncode == 0, done.stderr
    text = doc.read_text()
    assert text.startswith("# Title\n\nbefore\n\n" + REFERENCE_BEGIN)
    assert text.endswith(REFERENCE_END + "\n\nafter\n")
    assert "STALE-TABLE" not in text and "#### `manual.confirm`" in text
    again = cutbook("adapters", "--format", "markdown", "--update", str(doc))
    assert again.returncode == 0 and "already up to date" in again.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--format", "markdown", "--update", "{missing}"], "cannot read"),
        (["--format", "markdown", "--update", "{plain}"], "markers"),
        (["--format", "json", "--update", "{plain}"], "--update goes with --format markdown"),
    ],
)
def test_update_mistakes_are_one_clear_line(tmp_path: Path, args: list[str], message: str) -> None:
    plain = tmp_path / "plain.md"
    plain.write_text("# no markers here\n")
    paths = {"missing": str(tmp_path / "nope.md"), "plain": str(plain)}
    done = cutbook("adapters", *(a.format(**paths) for a in args))
    assert done.returncode == 2
    assert message in done.stderr and "Traceback" not in done.stderr
    assert plain.read_text() == "# no markers here\n"


def test_replace_section_refuses_a_document_without_markers() -> None:
    with pytest.raises(ValueError, match="markers"):
        replace_section("# nothing\n", "x")
