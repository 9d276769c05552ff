"""Safe YAML loading: YAML 1.2 core scalars, merge keys, positions, and refusing abuse."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cutbook import yamlsafe
from cutbook.diagnostics import Location
from cutbook.errors import RunbookLoadError
from cutbook.yamlsafe import MAX_DEPTH, MAX_NODES, Document, load_file, load_text


@pytest.fixture(autouse=True, params=yamlsafe.PARSERS)
def each_parser(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test here runs with libyaml's parser and with the pure-Python one."""
    name: str = request.param
    monkeypatch.setattr(yamlsafe, "parser", name)
    return name


def value_of(scalar: str) -> Any:
    """What cutbook reads for ``scalar`` written as a plain value."""
    return load_text(f"v: {scalar}\n", "t.yaml").data["v"]


def refusal(text: str) -> str:
    """The rendered diagnostic for YAML that must be refused."""
    with pytest.raises(RunbookLoadError) as info:
        load_text(text, "t.yaml")
    return info.value.diagnostic.render()


# --- YAML 1.2 core scalars ---------------------------------------------------------


@pytest.mark.parametrize(
    "scalar",
    [
        "23:00",
        "05:30:15",
        "yes",
        "no",
        "on",
        "off",
        "y",
        "n",
        "Yes",
        "ON",
        "2025-03-14",
        "2025-03-14T23:00",
        "1_000",
        "0b101",
        "0o",
        "0x",
        "1:30",
        "~x",
        "nul",
        "True!",
        "+.5e",
    ],
)
def test_scalars_that_yaml_1_1_would_convert_stay_text(scalar: str) -> None:
    assert value_of(scalar) == scalar


@pytest.mark.parametrize(
    ("scalar", "expected"),
    [
        ("true", True),
        ("True", True),
        ("TRUE", True),
        ("false", False),
        ("FALSE", False),
        ("0o17", 15),
        ("0x1f", 31),
        ("0x1F", 31),
        ("17", 17),
        ("-17", -17),
        ("+17", 17),
        ("017", 17),
        ("1.5", 1.5),
        ("1e3", 1000.0),
        ("-2.5E-1", -0.25),
        (".5", 0.5),
        ("1.", 1.0),
        (".inf", math.inf),
        ("+.inf", math.inf),
        ("-.Inf", -math.inf),
        ("~", None),
        ("null", None),
        ("NULL", None),
        ("", None),
    ],
)
def test_core_schema_scalars(scalar: str, expected: Any) -> None:
    got = value_of(scalar)
    assert got == expected
    assert type(got) is type(expected)


def test_nan_is_a_float() -> None:
    got = value_of(".nan")
    assert isinstance(got, float) and math.isnan(got)


def test_quoted_scalars_are_always_text() -> None:
    doc = load_text('a: "true"\nb: \'23\'\nc: "0x1f"\nd: "~"\n', "t.yaml")
    assert doc.data == {"a": "true", "b": "23", "c": "0x1f", "d": "~"}


def test_keys_follow_the_same_rules() -> None:
    doc = load_text("yes: 1\non: 2\n3: 3\ntrue: 4\n", "t.yaml")
    assert doc.data == {"yes": 1, "on": 2, 3: 3, True: 4}


def test_explicit_core_tags_are_checked_against_their_value() -> None:
    assert load_text("a: !!str 0x1f\nb: !!int '12'\n", "t").data == {"a": "0x1f", "b": 12}
    assert refusal("a: !!int twelve\n") == "t.yaml:1:4: 'twelve' is not a valid !!int"
    assert refusal("a: !!bool maybe\n") == "t.yaml:1:4: 'maybe' is not a valid !!bool"
    assert refusal("a: !!null x\n") == "t.yaml:1:4: 'x' is not a valid !!null"
    assert refusal("a: !!map [1]\n") == "t.yaml:1:4: tag !!map cannot mark a list"
    assert refusal("a: !!seq x\n") == "t.yaml:1:4: tag !!seq cannot mark a single value"


@pytest.mark.parametrize(
    ("text", "tag", "where"),
    [
        ("a: !!python/object/apply:os.system [ls]\n", "!!python/object/apply:os.system", "1:4"),
        ("a: !Ref b\n", "!Ref", "1:4"),
        ("a: !!binary aGVsbG8=\n", "!!binary", "1:4"),
        ("a: !!timestamp 2025-03-14\n", "!!timestamp", "1:4"),
        ("a: !!set {x: null}\n", "!!set", "1:4"),
        ("a:\n  - ok\n  - !!python/name:os.system\n", "!!python/name:os.system", "3:5"),
        ("!Ref key: value\n", "!Ref", "1:1"),
    ],
)
def test_tags_are_refused_where_they_are(text: str, tag: str, where: str) -> None:
    expected = f"t.yaml:{where}: tag {tag} is not allowed: cutbook reads plain YAML, without tags"
    assert refusal(text) == expected


# --- merge keys --------------------------------------------------------------------


MERGE = """\
defaults: &defaults
  timeout: 5m
  retries: 3
  owner: ops
step:
  <<: *defaults
  retries: 5
  name: stop intake
"""


def test_merge_keys_merge_and_explicit_keys_win() -> None:
    doc = load_text(MERGE, "t.yaml")
    assert doc.data["step"] == {
        "retries": 5,
        "name": "stop intake",
        "timeout": "5m",
        "owner": "ops",
    }
    assert doc.data["defaults"] == {"timeout": "5m", "retries": 3, "owner": "ops"}


def test_merged_positions_point_where_each_value_was_written() -> None:
    doc = load_text(MERGE, "t.yaml")
    # The explicit value wins in the recorded position too ...
    assert doc.positions[("step", "retries")] == (7, 12)
    assert doc.key_positions[("step", "retries")] == (7, 3)
    # ... and a merged value is located at the anchor it came from.
    assert doc.positions[("step", "timeout")] == (2, 12)
    assert doc.key_positions[("step", "owner")] == (4, 3)


def test_a_list_of_merges_gives_the_first_mapping_precedence() -> None:
    text = "a: &a {x: 1, y: 1}\nb: &b {y: 2, z: 2}\nc:\n  <<: [*a, *b]\n  z: 3\n"
    assert load_text(text, "t.yaml").data["c"] == {"x": 1, "y": 1, "z": 3}


def test_a_merge_of_something_other_than_mappings_is_refused() -> None:
    assert refusal("a: &a 1\nb:\n  <<: *a\n") == (
        "t.yaml:3:3: a merge key (<<) takes a mapping or a list of mappings"
    )


# --- positions ---------------------------------------------------------------------


NESTED = """\
steps:
  - id: stop-intake
    with:
      path: /intake/stop
      json: {reason: maintenance, items: [a, b]}
"""


def test_positions_of_nested_values_and_keys() -> None:
    doc = load_text(NESTED, "t.yaml")
    assert doc.positions[()] == (1, 1)
    assert doc.positions[("steps",)] == (2, 3)
    assert doc.positions[("steps", 0)] == (2, 5)
    assert doc.positions[("steps", 0, "id")] == (2, 9)
    assert doc.key_positions[("steps", 0, "id")] == (2, 5)
    assert doc.positions[("steps", 0, "with", "path")] == (4, 13)
    assert doc.key_positions[("steps", 0, "with", "json")] == (5, 7)
    assert doc.positions[("steps", 0, "with", "json", "reason")] == (5, 22)
    assert doc.positions[("steps", 0, "with", "json", "items", 1)] == (5, 46)


def test_locate_falls_back_to_the_nearest_written_ancestor() -> None:
    doc = load_text(NESTED, "t.yaml")
    assert doc.locate(("steps", 0, "with", "path")) == Location("t.yaml", 4, 13)
    assert doc.locate(("steps", 0, "with", "path"), key=True) == Location("t.yaml", 4, 7)
    # A key that is not there: the mapping that lacks it.
    assert doc.locate(("steps", 0, "with", "params")) == Location("t.yaml", 4, 7)
    assert doc.locate(("steps", 0, "nope", "deeper"), key=True) == Location("t.yaml", 2, 5)
    assert doc.locate(("other",)) == Location("t.yaml", 1, 1)


def test_an_empty_document_has_no_data_and_locates_at_the_start() -> None:
    doc = load_text("# only a comment\n", "t.yaml")
    assert doc == Document(data=None, file="t.yaml")
    assert doc.locate(("steps",)) == Location("t.yaml", 1, 1)


# --- refusals ----------------------------------------------------------------------


def test_duplicate_keys_are_refused_at_the_second_one() -> None:
    assert (
        refusal("a: 1\nb:\n  c: 1\n  c: 2\n") == "t.yaml:4:3: duplicate key 'c' (first at line 3)"
    )


SYNTAX_ERRORS = [
    pytest.param(
        "a: b\n  c: d\n",
        "2:3: YAML syntax error: line 2 is indented more than line 1, but 'a' there already "
        "has a value ('b'): line 'c' up with 'a', or, if 'c' belongs under 'a', put nothing "
        "after 'a:'",
        id="indented-under-a-key-with-a-value",
    ),
    pytest.param(
        "name: Stop: intake\n",
        "1:11: YAML syntax error: a second ': ' on line 1: a value that contains ': ' must be "
        'quoted, as in name: "Stop: intake"',
        id="colon-in-a-value",
    ),
    pytest.param(
        "steps:\n  - id a\n    estimate: 1m\n",
        "2:5: YAML syntax error: line 2 has no ':' after its key, so YAML reads it and line 3 "
        "as one value: write it as 'key: value' ('id a' has no colon)",
        id="key-without-colon-names-its-own-line",
    ),
    pytest.param(
        "window:\n    start: x\n  end: y\n",
        "3:3: YAML syntax error: line 3 is indented 2 spaces, which lines up with no key above "
        "it (line 2 is indented 4): indent it 4 or 0 spaces, like the key it belongs with",
        id="under-indented-key",
    ),
    pytest.param(
        "steps:\n  - id: a\n    target: x\n   action: y\n",
        "4:4: YAML syntax error: line 4 is indented 3 spaces, which lines up with no key above "
        "it (line 3 is indented 4): indent it 4 spaces, like the key it belongs with",
        id="key-in-a-list-item-misaligned",
    ),
    pytest.param(
        "steps:\n  - id: a\n  b: 1\n",
        "3:3: YAML syntax error: line 3 lines up with the '- ' of the list that starts at line "
        "2, but is not a list item: start it with '- ' for a new item, or indent it 4 spaces to "
        "belong to the item above",
        id="key-at-the-level-of-list-dashes",
    ),
    pytest.param(
        "a:\n\tb: 1\n",
        "2:1: YAML syntax error: line 2 is indented with a tab; YAML indents with spaces only "
        "(replace the tab with spaces)",
        id="tab-indent",
    ),
    pytest.param(
        "a:\n  b: 1\n\tc: 2\n",
        "3:1: YAML syntax error: line 3 is indented with a tab; YAML indents with spaces only "
        "(replace the tab with spaces)",
        id="tab-indent-after-a-value",
    ),
    pytest.param(
        'a: "abc\nb: 2\nc: 3\n',
        '1:4: YAML syntax error: the quote " opened at line 1, column 4 is never closed, so the '
        'rest of the file is read as its value: add the closing "',
        id="unclosed-quote-to-the-end",
    ),
    pytest.param(
        "a: 'abc\nb: 2\n",
        "1:4: YAML syntax error: the quote ' opened at line 1, column 4 is never closed, so the "
        "rest of the file is read as its value: add the closing '",
        id="unclosed-single-quote",
    ),
    pytest.param(
        'a: "abc\nb: "x"\nc: 3\n',
        "1:4: YAML syntax error: the quoted value that starts at line 1, column 4 runs on to "
        'line 2: is its closing " missing on line 1?',
        id="unclosed-quote-closed-by-the-next-one",
    ),
    pytest.param(
        "a: [1, 2\nb: 3\n",
        "1:4: YAML syntax error: the [ opened at line 1, column 4 is not closed before line 2: "
        "add ] at the end of the list (line 1)",
        id="unclosed-bracket",
    ),
    pytest.param(
        "w: {s: 1,\n    e: 2\n\nsteps:\n  - id: a\n",
        "1:4: YAML syntax error: the { opened at line 1, column 4 is not closed before line 4: "
        "add } at the end of the mapping (line 2)",
        id="unclosed-brace-over-two-lines",
    ),
    pytest.param(
        "a: [1, 2\n",
        "1:4: YAML syntax error: the [ opened at line 1, column 4 is never closed: the file "
        "ends first; add ] where the list ends",
        id="end-of-file-in-a-list",
    ),
    pytest.param(
        "name: x\n- id: a\n",
        "2:1: YAML syntax error: a list item ('- ') where the mapping that starts at line 1 "
        "expects a key: a list is the value of a key (write the key with nothing after its "
        "colon, then the items indented below it)",
        id="list-item-in-a-mapping",
    ),
    pytest.param(
        "a: b\n]\n",
        "2:1: YAML syntax error: a stray ']': no [ is open here, so it closes nothing",
        id="stray-bracket",
    ),
    pytest.param(
        "a: @x\n",
        "1:4: YAML syntax error: a value cannot start with '@' (YAML reserves it): put the "
        "value in quotes",
        id="reserved-indicator",
    ),
    pytest.param(
        'a: "\\q"\n',
        "1:5: YAML syntax error: '\\q' is not an escape YAML knows: inside double quotes "
        "write \\\\ for a backslash, or put the value in single quotes",
        id="unknown-escape",
    ),
    pytest.param(
        "a: *x\n",
        "1:4: YAML syntax error: the alias *x refers to no anchor &x above it (an anchor must "
        "come before its aliases)",
        id="undefined-alias",
    ),
    pytest.param(
        "a: &x 1\nb: &x 2\n",
        "2:4: YAML syntax error: the anchor &x is defined twice (first at line 1); give each "
        "anchor its own name",
        id="anchor-defined-twice",
    ),
]


@pytest.mark.parametrize(("text", "expected"), SYNTAX_ERRORS)
def test_syntax_errors_are_told_in_words_at_the_line_to_fix(text: str, expected: str) -> None:
    assert refusal(text) == f"t.yaml:{expected}"


def test_a_syntax_error_never_shows_the_parsers_own_words() -> None:
    raw = ("mapping values are not allowed", "did not find expected", "could not find")
    for param in SYNTAX_ERRORS:
        text = param.values[0]
        assert isinstance(text, str)
        assert not any(words in refusal(text) for words in raw)


def test_non_scalar_keys_are_refused() -> None:
    assert refusal("? [a, b]\n: c\n") == "t.yaml:1:3: mapping keys must be plain scalars"


def test_several_documents_are_refused() -> None:
    assert refusal("a: 1\n---\nb: 2\n") == (
        "t.yaml:2:1: YAML syntax error: a second document starts here; a runbook file holds "
        "one YAML document (remove this '---' line, or move what follows to its own file)"
    )


def test_recursive_alias_is_refused() -> None:
    assert refusal("a: &a [1, *a]\n") == "t.yaml:1:4: an alias refers to a node that contains it"


def test_nesting_at_the_limit_loads_and_one_more_level_is_refused() -> None:
    # The root mapping is one level; MAX_DEPTH - 1 lists fill the rest.
    ok = "a: " + "[" * (MAX_DEPTH - 1) + "]" * (MAX_DEPTH - 1) + "\n"
    assert isinstance(load_text(ok, "t.yaml").data["a"], list)
    deep = "a: " + "[" * MAX_DEPTH + "]" * MAX_DEPTH + "\n"
    assert refusal(deep) == f"t.yaml:1:{3 + MAX_DEPTH}: nesting is deeper than 64 levels"


@pytest.mark.parametrize("levels", [10_000, 1_000_000])
def test_absurd_nesting_is_refused_without_crashing(levels: int) -> None:
    # libyaml's composer recurses in C: this used to kill the interpreter.
    text = "a: " + "[" * levels + "]" * levels
    assert refusal(text) == f"t.yaml:1:{3 + MAX_DEPTH}: nesting is deeper than 64 levels"


def test_nesting_added_through_an_alias_counts() -> None:
    inner = "[" * 40 + "1" + "]" * 40
    outer = "[" * 30 + "*x" + "]" * 30
    assert refusal(f"x: &x {inner}\ny: {outer}\n") == (
        "t.yaml:2:33: nesting is deeper than 64 levels (through an alias)"
    )


LAUGHS = "lol: &l0 [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]\n" for i in range(1, 10)
)


def test_alias_bomb_is_refused_quickly() -> None:
    started = time.monotonic()
    message = refusal(LAUGHS)
    elapsed = time.monotonic() - started
    assert message == f"t.yaml:6:5: aliases expand to more than {MAX_NODES} values (an alias bomb?)"
    # Loose, only to show it returned at all instead of expanding 10^9 values.
    assert elapsed < 30


def test_moderate_alias_use_is_fine() -> None:
    doc = load_text("a: &a {x: 1}\nb: [*a, *a, *a]\n", "t.yaml")
    assert doc.data["b"] == [{"x": 1}] * 3


# --- files -------------------------------------------------------------------------


def test_file_size_limit(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_text("a: " + "x" * 200 + "\n", encoding="utf-8")
    with pytest.raises(RunbookLoadError) as info:
        load_file(path, display="big.yaml", max_bytes=100)
    assert info.value.diagnostic.render() == "big.yaml: file is 204 bytes; the limit is 100"
    assert load_file(path, display="big.yaml", max_bytes=204).data == {"a": "x" * 200}


def test_the_default_size_limit_is_five_mebibytes() -> None:
    assert yamlsafe.MAX_BYTES == 5 * 1024 * 1024


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(RunbookLoadError) as info:
        load_file(tmp_path / "nope.yaml", display="nope.yaml")
    assert info.value.diagnostic.render() == "nope.yaml: no such file"


def test_non_utf8_is_located_at_the_byte(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("a: 1\nname: Hải \xe9\n".encode().replace(b"\xc3\xa9", b"\xe9"))
    with pytest.raises(RunbookLoadError) as info:
        load_file(path, display="latin1.yaml")
    # Column counts characters: "Hải" is three characters but four bytes.
    assert info.value.diagnostic.render() == (
        "latin1.yaml:2:11: not UTF-8 text (byte 0xe9); save the file as UTF-8"
    )


def test_display_name_defaults_to_the_path(tmp_path: Path) -> None:
    path = tmp_path / "x.yaml"
    path.write_text("a: [\n", encoding="utf-8")
    with pytest.raises(RunbookLoadError) as info:
        load_file(path)
    assert info.value.diagnostic.location.file == str(path)


# --- anything at all ---------------------------------------------------------------


YAMLISH = st.lists(
    st.sampled_from([*"ab01:-[]{},&*!|>'\"#%<?~.@` \t\n", "<<", "!!", "&a", "*a", "\xe9", "  "]),
    max_size=60,
).map("".join)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.text(max_size=200), YAMLISH))
def test_any_text_loads_or_is_refused_with_a_located_diagnostic(text: str) -> None:
    try:
        doc = load_text(text, "t.yaml")
    except RunbookLoadError as exc:
        assert exc.diagnostic.location.file == "t.yaml"
        assert exc.diagnostic.message
        return
    for path, (line, col) in doc.positions.items():
        assert isinstance(path, tuple) and line >= 1 and col >= 1


# --- the two parsers ---------------------------------------------------------------


ROOT = Path(__file__).resolve().parent.parent


def test_libyaml_is_used_when_pyyaml_has_it() -> None:
    import yaml

    assert yamlsafe.PARSERS[0] == ("libyaml" if yaml.__with_libyaml__ else "python")
    assert yamlsafe.PARSERS[-1] == "python"


@pytest.mark.parametrize(
    "path",
    sorted((ROOT / "runbooks").rglob("*.yaml"))
    + sorted((ROOT / "tests" / "runbooks").rglob("*.yaml")),
    ids=lambda p: p.name,
)
def test_both_parsers_read_every_shipped_runbook_alike(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Same values, same positions of every value and key, whichever parser runs."""
    read = []
    for name in ("libyaml", "python") if len(yamlsafe.PARSERS) == 2 else ("python",):
        monkeypatch.setattr(yamlsafe, "parser", name)
        doc = load_file(path)
        read.append((doc.data, doc.positions, doc.key_positions))
    assert all(r == read[0] for r in read)
    assert read[0][1]  # positions were recorded at all
