"""The malformed-runbook corpus: every file states the exact diagnostics it must produce.

Each ``tests/malformed/*.yaml`` is a small runbook with one deliberate problem
(a few have two or more) and a header that says what ``cutbook validate`` must
print for it::

    # What is wrong, in one line.
    # vars: name=value        (optional: a --var override, repeatable)
    # strict: true            (optional: validate with --strict)
    # xfail: reason           (optional: a known bug outside the language layer)
    # expect: 12:7: step 'close-codes' depends on unknown step 'stop-intak' (...)

An ``expect`` that starts with a line number is in the case's own file; any
other (``data/x.csv:4:1: ...``, ``--var: ...``) is the whole rendered line.
Files are loaded from inside the corpus directory, so a runbook is shown as
its bare file name and its data files as ``data/<name>``, exactly as the CLI
shows them when run from there.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from cutbook import registry, yamlsafe
from cutbook.errors import RunbookInvalid
from cutbook.validation import load, parse_overrides

CORPUS = Path(__file__).parent / "malformed"
_HEADER = re.compile(r"^#\s*(?P<key>expect|vars|strict|xfail):\s?(?P<value>.*)$")


@dataclass
class Case:
    path: Path
    summary: str = ""
    expected: list[str] = field(default_factory=list)
    overrides: list[str] = field(default_factory=list)
    strict: bool = False
    xfail: str | None = None


def read_case(path: Path) -> Case:
    """Parse a case's header (the leading comment lines; ASCII even in the non-UTF-8 case)."""
    case = Case(path)
    text = path.read_bytes().decode("utf-8", errors="replace")
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        m = _HEADER.match(line)
        if m is None:
            if not case.summary:
                case.summary = line.lstrip("# ").strip()
            continue
        key, value = m.group("key"), m.group("value").rstrip()
        if key == "expect":
            shown = f"{path.name}:{value}" if value[:1].isdigit() else value
            case.expected.append(shown)
        elif key == "vars":
            case.overrides.append(value)
        elif key == "strict":
            case.strict = value == "true"
        else:
            case.xfail = value
    return case


CASES = [read_case(p) for p in sorted(CORPUS.glob("*.yaml"))]


@pytest.fixture(autouse=True)
def installed_adapters_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Messages list the installed adapters: hide ones other tests register in-process."""
    installed = {e.name for e in registry.available()}
    kept = {n: cls for n, cls in registry._loaded.items() if n in installed}
    monkeypatch.setattr(registry, "_loaded", kept)


def _param(case: Case) -> object:
    marks = [pytest.mark.xfail(reason=case.xfail, strict=True)] if case.xfail else []
    return pytest.param(case, id=case.path.stem, marks=marks)


def diagnostics_of(case: Case) -> list[str]:
    """What validation reports for the case, rendered as the CLI prints it."""
    with pytest.raises(RunbookInvalid) as info:
        load(
            Path(case.path.name),
            overrides=parse_overrides(case.overrides),
            strict=case.strict,
        )
    return [d.render() for d in info.value.diagnostics]


@pytest.mark.parametrize("case", [_param(c) for c in CASES])
def test_case_reports_exactly_its_expected_diagnostics(
    case: Case, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(CORPUS)
    assert diagnostics_of(case) == case.expected


@pytest.mark.parametrize("case", [_param(c) for c in CASES])
def test_the_pure_python_parser_reports_the_same(
    case: Case, monkeypatch: pytest.MonkeyPatch
) -> None:
    """libyaml is only faster: without it, every message and position is the same."""
    monkeypatch.chdir(CORPUS)
    monkeypatch.setattr(yamlsafe, "parser", "python")
    assert diagnostics_of(case) == case.expected


def test_corpus_is_large_and_every_case_says_what_it_expects() -> None:
    assert len(CASES) >= 45
    for case in CASES:
        assert case.summary, f"{case.path.name}: first line should say what is wrong"
        assert case.expected, f"{case.path.name}: no '# expect:' line"
        assert "?" not in case.expected, f"{case.path.name}: an expectation was left unfilled"


def test_every_expected_diagnostic_points_at_a_line_and_column() -> None:
    located = re.compile(r"^[^:]+:\d+:\d+: \S")
    for case in CASES:
        for line in case.expected:
            if line.startswith("--var: "):
                continue  # a command-line problem has no place in a file
            assert located.match(line), f"{case.path.name}: {line!r} has no line:col"


def test_every_data_file_in_the_corpus_is_used_by_a_case() -> None:
    texts = "\n".join(c.path.read_text(encoding="utf-8", errors="replace") for c in CASES)
    for data in sorted((CORPUS / "data").iterdir()):
        assert f"data/{data.name}" in texts, f"{data.name} is not used by any case"


def test_strict_cases_are_only_warnings_without_strict(monkeypatch: pytest.MonkeyPatch) -> None:
    """The --strict cases must validate without it: their problem is a warning."""
    monkeypatch.chdir(CORPUS)
    strict = [c for c in CASES if c.strict]
    assert len(strict) >= 3
    for case in strict:
        loaded = load(Path(case.path.name), overrides=parse_overrides(case.overrides))
        assert [w.render().replace("warning: ", "") for w in loaded.warnings] == case.expected


def test_override_case_is_valid_without_the_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(CORPUS)
    overridden = [c for c in CASES if c.overrides]
    assert overridden
    for case in overridden:
        loaded = load(Path(case.path.name))
        assert loaded.warnings == []
