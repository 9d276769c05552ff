"""Red-team findings on validation: shell command strings, data columns, CSV syntax."""

from __future__ import annotations

from pathlib import Path

import pytest

from cutbook import datafiles
from cutbook.errors import RunbookInvalid
from cutbook.validation import load
from cutbook.validation.shell import command_index

HEAD = """apiVersion: cutbook/v1
name: redteam
window: {start: "2025-03-14T22:30", end: "2025-03-15T05:00"}
targets:
  host: {adapter: shell}
"""


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["sh", "-c", "x"], 2),
        (["/bin/bash", "-euc", "x"], 2),
        (["zsh", "-l", "-c", "x"], 3),
        (["cmd.exe", "/c", "x"], 2),
        (["powershell", "-Command", "x"], 2),
        (["sh", "script.sh", "-c"], None),
        (["echo", "-c", "x"], None),
        (["sh", "-c"], None),
    ],
)
def test_command_index_finds_the_shell_command_string(
    argv: list[str], expected: int | None
) -> None:
    assert command_index(argv) == expected


def _warnings(tmp_path: Path, text: str) -> list[str]:
    rb = tmp_path / "rb.yaml"
    rb.write_text(HEAD + text, encoding="utf-8")
    return [w.message for w in load(rb).warnings]


def test_shell_warning_also_in_rollback_and_not_for_argv_form(tmp_path: Path) -> None:
    found = _warnings(
        tmp_path,
        """steps:
  - id: s
    target: host
    action: run
    with: {argv: [echo, "{{ vars.x }}"]}
    rollback: {action: run, with: {argv: [bash, -c, "rm {{ vars.x }}"]}}
vars: {x: a}
""",
    )
    assert len(found) == 1
    assert "rollback.with.argv[2] passes a template to a shell (`bash -c`)" in found[0]
    assert "[rm, '{{ vars.x }}']" in found[0]


def test_shell_string_without_template_is_not_warned(tmp_path: Path) -> None:
    text = "steps:\n  - {id: s, target: host, action: run, with: {argv: [sh, -c, 'ls | wc']}}\n"
    assert not any("passes a template" in w for w in _warnings(tmp_path, text))


def _csv(tmp_path: Path, text: str) -> datafiles.Records:
    f = tmp_path / "d.csv"
    f.write_text(text, encoding="utf-8")
    return datafiles.load(f, "d.csv")


def test_quoted_field_over_two_lines_keeps_later_line_numbers(tmp_path: Path) -> None:
    with pytest.raises(datafiles.DataFileError) as info:
        _csv(tmp_path, 'a,b\n1,"two\nlines"\n2,x,extra\n')
    assert info.value.location.line == 4


def test_text_after_a_closing_quote_is_a_located_csv_error(tmp_path: Path) -> None:
    with pytest.raises(datafiles.DataFileError, match="invalid CSV") as info:
        _csv(tmp_path, '# note\na,b\n1,"x"y\n')
    assert info.value.location.line == 3


def test_item_column_by_subscript_and_mapping_methods(tmp_path: Path) -> None:
    (tmp_path / "d.csv").write_text("code,name\n1,a\n", encoding="utf-8")
    rb = tmp_path / "rb.yaml"
    rb.write_text(
        HEAD
        + """data: {d: d.csv}
steps:
  - id: s
    target: host
    action: run
    for_each: "{{ data['d'] }}"
    irreversible: true
    with: {argv: [echo, "{{ item.get('code') }}", "{{ item['nmae'] }}"]}
""",
        encoding="utf-8",
    )
    with pytest.raises(RunbookInvalid) as info:
        load(rb)
    messages = [d.message for d in info.value.diagnostics]
    assert len(messages) == 1
    assert "has no column 'nmae' (did you mean 'name'?); its columns: code, name" in messages[0]
