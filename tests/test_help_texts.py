"""Every ``--help`` of every command reads the same on every machine.

A help text is documentation: it must name defaults by their rule (``DATA-DIR/journal``,
``$XDG_DATA_HOME/cutbook``), never by whatever this machine happens to hold (its home,
its working directory, a temporary path from the environment), and never show the
half-rendered leftovers of markup (``[default: /journal]`` after ``<data-dir>`` was
eaten as an HTML tag, empty brackets).
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer
from typer.core import TyperGroup
from typer.testing import CliRunner

from cutbook import paths
from cutbook.cli.app import app
from e2e_support import REPO


def command_paths() -> Iterator[tuple[str, ...]]:
    """Every command and subcommand of ``cutbook``, the root included, as argv prefixes."""
    root = typer.main.get_command(app)

    def walk(cmd: object, prefix: tuple[str, ...]) -> Iterator[tuple[str, ...]]:
        yield prefix
        if isinstance(cmd, TyperGroup):
            for name, sub in sorted(cmd.commands.items()):
                yield from walk(sub, (*prefix, name))

    yield from walk(root, ())


ALL = list(command_paths())


def render_help(argv: tuple[str, ...]) -> str:
    """``cutbook ARGV --help`` as a person reads it, wide enough that nothing wraps."""
    result = CliRunner().invoke(app, [*argv, "--help"], env={"COLUMNS": "400", "NO_COLOR": "1"})
    assert result.exit_code == 0, result.output
    return result.output


def machine_paths() -> list[str]:
    """Absolute paths that belong to this machine or this test session, not to cutbook."""
    found = {
        str(Path.home()),
        str(Path.cwd()),
        str(REPO),
        tempfile.gettempdir(),
        *(os.environ.get(v, "") for v in ("CUTBOOK_DATA_DIR", "XDG_DATA_HOME", "PREFECT_HOME")),
    }
    return sorted(p for p in found if len(p) > 1)


ARTEFACTS = [
    (re.compile(r"\[default: /"), "a default that is an absolute path (or lost its prefix)"),
    (re.compile(r"\[default:\s*\(?\s*\)?\]"), "an empty default"),
    (re.compile(r"\[\s*\]"), "empty brackets"),
    (re.compile(r"\(\s*\)"), "empty parentheses"),
    (re.compile(r"\[default: None\]"), "a default of None"),
    (re.compile(r"\[default: [^\]]*\.cutbook\b"), "the old per-directory ./.cutbook"),
    (re.compile(r"<(bool|list\[[^\]]*\])>"), "a flag or list labelled with its Python type"),
    (re.compile(r"\{[a-z_]+\}"), "an argument named by its Python parameter"),
]


def test_the_walk_finds_nested_commands() -> None:
    """The check below covers what it claims: groups and their subcommands included."""
    assert () in ALL
    assert ("audit", "verify") in ALL and ("server", "stop") in ALL and ("demo",) in ALL
    assert len(ALL) > 20


@pytest.mark.parametrize("argv", ALL, ids=lambda a: " ".join(("cutbook", *a)))
def test_help_has_no_artefacts(argv: tuple[str, ...]) -> None:
    text = render_help(argv)
    problems = [
        f"{why}: {m.group(0)!r} in line {line.strip()!r}"
        for line in text.splitlines()
        for pattern, why in ARTEFACTS
        for m in pattern.finditer(line)
    ]
    problems += [f"this machine's path {p} appears" for p in machine_paths() if p in text]
    assert not problems, "\n".join(problems)


def test_the_data_dir_default_is_named_by_its_rule() -> None:
    """``--data-dir`` says where data goes by default, without this machine's home."""
    text = render_help(("audit", "list"))
    assert f"[default: {paths.default_data_dir_help()}]" in text
    assert (
        paths.default_data_dir_help("linux")
        == "$XDG_DATA_HOME/cutbook, else ~/.local/share/cutbook"
    )
    assert "./.cutbook" not in text


@pytest.mark.parametrize(
    ("help_text", "caught"),
    [
        ("│ --journal-dir  <path>  Where journals live. [default: /journal] │", True),
        ("│ --state  <path>  SQLite file. [default: /home/ops/.cutbook/sim.sqlite] │", True),
        ("│ --data-dir  <path>  Where data lives. [default: ] │", True),
        ("│ --data-dir  <path>  Where data lives. [default: ./.cutbook] │", True),
        ("│ --journal-dir  <path>  Where journals live. [default: DATA-DIR/journal] │", False),
        ("│ --strict  <bool>  Treat warnings as errors. │", True),
        ("│ *  runbooks...  <list[Path]>  Runbook files to check. │", True),
        (" Usage: cutbook validate [OPTIONS] {runbooks}...", True),
        (" Usage: cutbook validate [OPTIONS] {RUNBOOK}...", False),
    ],
)
def test_the_artefact_patterns_catch_what_they_should(help_text: str, caught: bool) -> None:
    """The patterns themselves, on lines like the ones the issue saw (and a good one)."""
    assert any(p.search(help_text) for p, _ in ARTEFACTS) is caught
