"""Validation of whole runbooks: the shipped ones, fan-out counts, overrides, warnings, --strict."""

from __future__ import annotations

import csv
import hashlib
from collections import Counter
from pathlib import Path

import pytest

from cutbook import yamlsafe
from cutbook.errors import RunbookInvalid, UsageError
from cutbook.planning import plan
from cutbook.validation import LoadedRunbook, load, parse_overrides

ROOT = Path(__file__).resolve().parent.parent
RUNBOOKS = ROOT / "runbooks"
CUSTOMS = RUNBOOKS / "customs-reorg-2025.yaml"
PORTALS = RUNBOOKS / "portal-rollout-2019.yaml"
SHIPPED = sorted(RUNBOOKS.glob("*.yaml")) + sorted((RUNBOOKS / "examples").glob("*.yaml"))
OURS = [PORTALS, *sorted((RUNBOOKS / "examples").glob("*.yaml"))]


def rendered(exc: RunbookInvalid) -> list[str]:
    return [d.render() for d in exc.diagnostics]


def problems(path: Path, **kwargs: object) -> list[str]:
    with pytest.raises(RunbookInvalid) as info:
        load(path, display=path.name, **kwargs)  # type: ignore[arg-type]
    return rendered(info.value)


def write(tmp_path: Path, text: str, name: str = "rb.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


HEAD = """\
apiVersion: cutbook/v1
name: test-runbook
timezone: Asia/Ho_Chi_Minh
window: {start: "2025-03-14T22:30", end: "05:00"}
"""


# --- the shipped runbooks ------------------------------------------------------------


def test_the_expected_runbooks_are_shipped() -> None:
    names = {p.relative_to(RUNBOOKS).as_posix() for p in SHIPPED}
    assert {
        "customs-reorg-2025.yaml",
        "portal-rollout-2019.yaml",
        "examples/hello.yaml",
        "examples/fan-out.yaml",
        "examples/gates-and-rollback.yaml",
        "examples/shell-and-sql.yaml",
        "examples/timing.yaml",
    } <= names


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.relative_to(RUNBOOKS).as_posix())
def test_every_shipped_runbook_validates(path: Path) -> None:
    loaded = load(path)
    assert loaded.runbook.steps
    forecast = plan(loaded.runbook, item_counts=loaded.item_counts)
    assert forecast.fits_window, f"{path.name} does not fit its window"


@pytest.mark.parametrize("path", OURS, ids=lambda p: p.relative_to(RUNBOOKS).as_posix())
def test_the_portal_runbook_and_examples_are_clean_even_under_strict(path: Path) -> None:
    loaded = load(path, strict=True)
    assert loaded.warnings == []


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.relative_to(RUNBOOKS).as_posix())
def test_every_shipped_runbook_points_editors_at_the_schema(path: Path) -> None:
    first = path.read_text(encoding="utf-8").splitlines()[0]
    assert first.startswith("# yaml-language-server: $schema=")
    schema = (path.parent / first.split("$schema=", 1)[1]).resolve()
    assert schema == ROOT / "docs" / "cutbook.schema.json"
    assert schema.is_file()


def offices() -> list[dict[str, str]]:
    with (RUNBOOKS / "data" / "offices-2025.csv").open(encoding="utf-8") as f:
        return list(csv.DictReader(line for line in f if not line.startswith("#")))


def test_customs_fan_outs_match_the_office_list() -> None:
    rows = offices()
    by_status = Counter(r["status"] for r in rows)
    assert (len(rows), by_status["ceased"], by_status["renamed"]) == (39, 7, 32)
    counts = load(CUSTOMS).item_counts
    assert counts["reset-budget-codes"] == len(rows)
    assert counts["update-treasury-accounts"] == len(rows)
    assert counts["publish-unit-list"] == len(rows)
    assert counts["update-certificates"] == len(rows)
    assert counts["close-ceased-offices"] == by_status["ceased"]
    assert counts["stop-ceased-intake"] == by_status["ceased"]
    assert counts["rename-offices"] == by_status["renamed"]


def test_customs_fan_outs_over_variables_are_counted_too() -> None:
    loaded = load(CUSTOMS)
    satellites = loaded.vars["satellites"]
    assert loaded.item_counts["stop-satellites"] == len(satellites) == 4
    assert loaded.item_counts["reconfigure-satellites"] == len(satellites) + 1
    assert loaded.item_counts["reopen-satellites"] == len(satellites) + 1


def test_portal_runbook_fans_out_over_the_four_appendix_i_portals() -> None:
    loaded = load(PORTALS)
    domains = [p["domain"] for p in loaded.data["portals"]]
    assert domains == [
        "dienbien.customs.gov.vn",
        "caobang.customs.gov.vn",
        "hanamninh.customs.gov.vn",
        "khanhhoa.customs.gov.vn",
    ]
    assert len(loaded.data["sections"]) == 8
    assert [n for n, c in loaded.item_counts.items() if c != 4] == []
    assert set(loaded.item_counts) == {
        "create-department-portals",
        "create-content-sections",
        "issue-admin-accounts",
        "hand-over-accounts",
    }


def test_loaded_runbook_keeps_the_exact_text_and_its_hash() -> None:
    loaded = load(CUSTOMS)
    raw = CUSTOMS.read_bytes()
    assert loaded.text == raw.decode("utf-8")
    assert loaded.sha256 == hashlib.sha256(raw).hexdigest()
    assert loaded.path == CUSTOMS


def test_display_name_is_relative_to_the_working_directory(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(ROOT)
    assert load(CUSTOMS).display == "runbooks/customs-reorg-2025.yaml"
    monkeypatch.chdir(RUNBOOKS)
    assert load(CUSTOMS).display == "customs-reorg-2025.yaml"
    assert load(CUSTOMS, display="shown.yaml").display == "shown.yaml"


def test_static_context_has_secret_placeholders_not_values() -> None:
    ctx = load(CUSTOMS).static_context()
    assert ctx["secrets"] == {"VNACCS_TOKEN": "<secret VNACCS_TOKEN>"}
    assert ctx["runbook"]["name"] == "customs-reorg-2025"
    assert ctx["runbook"]["window"]["start"].isoformat() == "2025-03-14T22:30:00+07:00"
    assert load(CUSTOMS).static_context({"VNACCS_TOKEN": "t"})["secrets"] == {"VNACCS_TOKEN": "t"}


# --- overrides -----------------------------------------------------------------------


def test_overrides_are_read_as_yaml_scalars() -> None:
    assert parse_overrides(
        [
            "port=8080",
            "ratio=1.5",
            "on=true",
            "word=yes",
            "at=23:00",
            "quoted='3'",
            "empty=",
            "url=http://127.0.0.1:9000/x?a=b",
            " spaced = value ",
            "nothing=~",
        ]
    ) == {
        "port": 8080,
        "ratio": 1.5,
        "on": True,
        "word": "yes",
        "at": "23:00",
        "quoted": "3",
        "empty": "",
        "url": "http://127.0.0.1:9000/x?a=b",
        "spaced": "value",
        "nothing": None,
    }


def test_overrides_that_are_not_scalars_stay_text() -> None:
    assert parse_overrides(["list=[1, 2]", "map=a: b", "broken=[1"]) == {
        "list": "[1, 2]",
        "map": "a: b",
        "broken": "[1",
    }


@pytest.mark.parametrize("pair", ["novalue", "=3", " =3"])
def test_malformed_override_is_a_usage_error(pair: str) -> None:
    with pytest.raises(UsageError) as info:
        parse_overrides([pair])
    assert str(info.value) == f"--var {pair!r}: write --var name=value"


def test_an_override_replaces_the_variable_everywhere() -> None:
    loaded = load(CUSTOMS, overrides={"estate_url": "http://127.0.0.1:9999"})
    assert loaded.vars["estate_url"] == "http://127.0.0.1:9999"
    assert loaded.runbook.vars["estate_url"] == "http://127.0.0.1:8765"  # the file is unchanged


def lines_with(path: Path, needle: str) -> list[int]:
    """1-based numbers of the lines of ``path`` that contain ``needle``."""
    text = path.read_text(encoding="utf-8").splitlines()
    return [n for n, line in enumerate(text, 1) if needle in line]


def test_an_override_of_the_wrong_shape_is_caught_where_it_is_used() -> None:
    plain, plus = (
        lines_with(CUSTOMS, 'for_each: "{{ vars.satellites }}"'),
        lines_with(CUSTOMS, "for_each: \"{{ vars.satellites + ['e-payment'] }}\""),
    )
    assert len(plain) == 1 and len(plus) == 2
    type_error = (
        "for_each: template \"{{ vars.satellites + ['e-payment'] }}\": TypeError: "
        'can only concatenate str (not "list") to str'
    )
    assert problems(CUSTOMS, overrides={"satellites": "e-manifest"}) == [
        f"customs-reorg-2025.yaml:{plain[0]}:15: step 'stop-satellites': for_each gives text "
        "('e-manifest'), not a list",
        f"customs-reorg-2025.yaml:{plus[0]}:15: step 'reconfigure-satellites': {type_error}",
        f"customs-reorg-2025.yaml:{plus[1]}:15: step 'reopen-satellites': {type_error}",
    ]


def test_an_unknown_override_is_reported_against_the_command_line() -> None:
    assert problems(CUSTOMS, overrides={"estate": "x"}) == [
        "--var: unknown variable 'estate' (did you mean 'estate_url'?); the runbook declares: "
        "estate_url, new_org_model, old_org_model, satellites"
    ]


# --- warnings and --strict -----------------------------------------------------------


WARNS = (
    HEAD
    + """\
targets:
  vnaccs: {adapter: http, base_url: "http://127.0.0.1:8765/vnaccs"}
steps:
  - id: reopen-intake
    target: vnaccs
    action: post
    with: {path: /intake/start}
    irreversible: true
  - id: stop-satellite
    target: vnaccs
    action: post
    with: {path: /satellite/stop}
  - id: go-no-go
    approval: {approvers: [ops-lead]}
"""
)


def test_warnings_do_not_fail_validation(tmp_path: Path) -> None:
    loaded = load(write(tmp_path, WARNS), display="rb.yaml")
    assert [(w.severity, w.render()) for w in loaded.warnings] == [
        (
            "warning",
            "rb.yaml:12:19: warning: irreversible step 'reopen-intake' can run before the "
            "last go/no-go gate 'go-no-go'; make it depend on the gate",
        ),
        (
            "warning",
            "rb.yaml:13:5: warning: step 'stop-satellite' changes things (http post) but has "
            "neither rollback nor irreversible: true",
        ),
    ]


def test_strict_turns_every_warning_into_an_error(tmp_path: Path) -> None:
    with pytest.raises(RunbookInvalid) as info:
        load(write(tmp_path, WARNS), display="rb.yaml", strict=True)
    assert [d.severity for d in info.value.diagnostics] == ["error", "error"]
    assert rendered(info.value) == [
        "rb.yaml:12:19: irreversible step 'reopen-intake' can run before the last go/no-go "
        "gate 'go-no-go'; make it depend on the gate",
        "rb.yaml:13:5: step 'stop-satellite' changes things (http post) but has neither "
        "rollback nor irreversible: true",
    ]


def test_fixing_what_the_warnings_say_silences_them(tmp_path: Path) -> None:
    fixed = WARNS.replace(
        "    irreversible: true\n", "    irreversible: true\n    depends_on: [go-no-go]\n"
    ).replace(
        "    with: {path: /satellite/stop}\n",
        "    with: {path: /satellite/stop}\n"
        "    rollback: {action: post, with: {path: /satellite/start}}\n",
    )
    assert load(write(tmp_path, fixed), strict=True).warnings == []


def test_errors_and_warnings_are_not_mixed_without_strict(tmp_path: Path) -> None:
    text = WARNS.replace("    with: {path: /satellite/stop}\n", "    with: {pth: /x}\n")
    assert problems(write(tmp_path, text)) == [
        "rb.yaml:16:12: unknown argument 'pth' for http.post in step 'stop-satellite' "
        "(did you mean 'path'?)"
    ]


# --- all at once -------------------------------------------------------------------


def test_every_problem_of_a_file_is_reported_at_once_in_file_order(tmp_path: Path) -> None:
    text = (
        HEAD
        + """\
vars: {url: "http://127.0.0.1:8765"}
targets:
  api: {adapter: http, base_url: "{{ vars.url }}", timeout: soon}
steps:
  - id: stop-intake
    target: api
    action: post
    with: {path: /intake/stop, jsn: {}}
    irreversible: true
  - id: drain
    target: ap
    action: get
    depends_on: [stop-intak]
  - id: reopen
    target: api
    action: post
    with: {path: "{{ item }}"}
    at: "06:00"
    irreversible: true
    depends_on: [drain]
"""
    )
    assert problems(write(tmp_path, text)) == [
        "rb.yaml:7:61: argument timeout for options of target 'api': 'soon' is not a duration "
        "such as 90s, 5m, 2h or 1h30m",
        "rb.yaml:12:32: unknown argument 'jsn' for http.post in step 'stop-intake' "
        "(did you mean 'json'?)",
        "rb.yaml:15:13: step 'drain' uses unknown target 'ap' (did you mean 'api'?)",
        "rb.yaml:17:18: step 'drain' depends on unknown step 'stop-intak' "
        "(did you mean 'stop-intake'?)",
        "rb.yaml:21:18: step 'reopen' uses 'item' but has no for_each",
        "rb.yaml:22:9: step 'reopen' at 2025-03-15 06:00 +0700 is outside the window "
        "2025-03-14 22:30 +0700 – 2025-03-15 05:00 +0700",
    ]


def test_the_five_problem_corpus_file_yields_five_diagnostics() -> None:
    path = Path(__file__).parent / "malformed" / "five-problems.yaml"
    assert len(problems(path)) == 5


# --- step ids and the dependency graph ------------------------------------------------


def test_a_step_id_that_is_not_text_is_reported_not_a_crash(tmp_path: Path) -> None:
    text = HEAD + "steps:\n  - id: first\n  - id: [second]\n    depends_on: [first]\n"
    assert problems(write(tmp_path, text)) == [
        "rb.yaml:7:9: id in step #2: must be text; got a list"
    ]


def test_a_duplicate_id_does_not_make_listed_dependencies_look_missing(tmp_path: Path) -> None:
    text = (
        HEAD
        + "targets: {desk: {adapter: manual}}\n"
        + """\
steps:
  - id: a
    depends_on: [b]
  - id: b
    depends_on: [a]
    target: desk
    action: confirm
    with: {instructions: "{{ steps['a'].output }}"}
  - id: a
"""
    )
    # Only the duplicate is wrong: b does list a (the step that id names last).
    assert problems(write(tmp_path, text)) == [
        "rb.yaml:14:9: duplicate step id 'a' (first at line 7)"
    ]


# --- files that are not runbooks ---------------------------------------------------


def test_an_empty_file(tmp_path: Path) -> None:
    assert problems(write(tmp_path, "")) == [
        "rb.yaml:1:1: the file is empty; a runbook is a mapping with apiVersion, name, "
        "window and steps"
    ]


def test_a_missing_file(tmp_path: Path) -> None:
    assert problems(tmp_path / "nope.yaml") == ["nope.yaml: no such file"]


def test_a_directory(tmp_path: Path) -> None:
    (tmp_path / "dir.yaml").mkdir()
    assert problems(tmp_path / "dir.yaml") == ["dir.yaml: is a directory, not a runbook"]


def test_a_valid_minimal_runbook(tmp_path: Path) -> None:
    loaded = load(write(tmp_path, HEAD + "steps:\n  - id: only-step\n"))
    assert isinstance(loaded, LoadedRunbook)
    assert [s.id for s in loaded.runbook.steps] == ["only-step"]
    assert loaded.runbook.window_end.isoformat() == "2025-03-15T05:00:00+07:00"
    assert loaded.item_counts == {} and loaded.warnings == []


def test_a_fan_out_over_run_time_values_has_no_static_count(tmp_path: Path) -> None:
    text = (
        HEAD
        + """\
targets:
  edoc: {adapter: pki, ca_url: "http://127.0.0.1:8765/edoc"}
  api: {adapter: http, base_url: "http://127.0.0.1:8765"}
steps:
  - id: reissue
    target: edoc
    action: reissue
    with: {owner: "org:13A2", subject: {O: New name}}
  - id: read-each
    target: api
    action: get
    for_each: "{{ steps['reissue'].output.certificates }}"
    with: {path: "/edoc/certificates/{{ item.serial }}"}
    depends_on: [reissue]
  - id: literal
    target: api
    action: get
    for_each: [a, b, c]
    with: {path: "/{{ item }}/{{ index }}"}
"""
    )
    assert load(write(tmp_path, text)).item_counts == {"literal": 3}


def test_values_kept_as_secrets_are_not_judged_by_their_placeholder(tmp_path: Path) -> None:
    """A webhook or base URL held in a secret is unknown until the run: no false alarm."""
    text = (
        HEAD
        + """\
secrets: [HOOK_URL, API_URL]
targets:
  chat: {adapter: notify, webhook: "{{ secrets.HOOK_URL }}"}
  api: {adapter: http, base_url: "{{ secrets.API_URL }}", timeout: "{{ secrets.API_URL }}"}
  plain: {adapter: notify, webhook: "ftp://{{ vars.host }}"}
vars: {host: example.invalid}
steps:
  - id: announce
    target: chat
    action: send
    with: {body: "Intake stops at 23:00"}
    irreversible: true
"""
    )
    # Only the webhook that is not a secret is judged (and refused).
    assert problems(write(tmp_path, text)) == [
        "rb.yaml:9:37: argument webhook for options of target 'plain': "
        "webhook must be an http:// or https:// URL"
    ]


# --- the reference's examples stay true ------------------------------------------

REFERENCE = ROOT / "docs" / "runbook-reference.md"


def yaml_blocks_after(heading: str) -> list[str]:
    """The ```yaml blocks of the reference between ``heading`` and the next heading."""
    text = REFERENCE.read_text(encoding="utf-8")
    section = text.split(heading, 1)[1]
    section = section.split("\n## ", 1)[0].split("\n### ", 1)[0]
    return [b.split("```", 1)[0] for b in section.split("```yaml\n")[1:]]


def test_the_tour_shows_hello_yaml_as_shipped() -> None:
    (block,) = yaml_blocks_after("### hello.yaml")
    shown = yamlsafe.load_text(block, "reference").data
    assert shown == yamlsafe.load_file(RUNBOOKS / "examples" / "hello.yaml").data


def test_the_merge_key_example_of_the_reference_validates(tmp_path: Path) -> None:
    text = REFERENCE.read_text(encoding="utf-8")
    block = text.split("**Allowed:** comments, anchors", 1)[1].split("```yaml\n", 1)[1]
    block = block.split("```", 1)[0]
    target = 'targets:\n  catalogue: {adapter: http, base_url: "http://127.0.0.1:8765"}\n'
    runbook = write(tmp_path, HEAD + target + block)
    steps = load(runbook, strict=True).runbook.steps
    assert [(s.id, s.with_["path"], s.target, s.retries) for s in steps] == [
        ("rename-hanoi", "/offices/13A2", "catalogue", steps[0].retries),
        ("rename-son-la", "/offices/15C4", "catalogue", steps[0].retries),
    ]
    assert steps[0].retries is not None and steps[0].retries.attempts == 5


# --- preflight: a read-only precondition, checked like a verify --------------------------


PREFLIGHT = (
    HEAD
    + """\
targets:
  catalogue: {adapter: http, base_url: "http://127.0.0.1:8765/catalogue"}
  other: {adapter: http, base_url: "http://127.0.0.1:8765/other"}
steps:
  - id: close-office
    target: catalogue
    action: post
    for_each: [13A2, 14B3]
    with: {path: "/offices/{{ item }}/close"}
    irreversible: true
    preflight: PREFLIGHT
"""
)


def test_preflight_reads_with_item_and_inherits_the_target(tmp_path: Path) -> None:
    ok = '{action: get, with: {path: "/offices/{{ item }}"}, expect: {json: {status: open}}}'
    loaded = load(write(tmp_path, PREFLIGHT.replace("PREFLIGHT", ok)))
    pre = loaded.runbook.steps[0].preflight
    assert pre is not None and pre.target is None and pre.action == "get"
    assert loaded.warnings == []


def test_preflight_arguments_and_target_are_checked_like_verify(tmp_path: Path) -> None:
    bad = "{target: othr, action: get, with: {path: /x}}"
    assert any(
        "unknown target 'othr'" in p
        for p in problems(write(tmp_path, PREFLIGHT.replace("PREFLIGHT", bad)))
    )
    bad = "{action: get, with: {pth: /x}}"
    found = problems(write(tmp_path, PREFLIGHT.replace("PREFLIGHT", bad)))
    assert any(":15:37:" in p and "pth" in p for p in found), found
    found = problems(write(tmp_path, PREFLIGHT.replace("PREFLIGHT", "{with: {path: /x}}")))
    assert any("action" in p for p in found), found


def test_preflight_on_a_step_without_target_is_an_error(tmp_path: Path) -> None:
    text = HEAD + "steps:\n  - id: marker\n    preflight: {target: t, action: get}\n"
    found = problems(write(tmp_path, text))
    assert any(":7:" in p and "pre-flight does not check it" in p for p in found), found


def test_the_guard_name_is_reserved_and_its_settings_checked(tmp_path: Path) -> None:
    text = (
        HEAD
        + """\
guard: {margin: 10 minutes, answer_within: 5m}
steps:
  - id: guard
"""
    )
    # Two independent mistakes: both are told in one pass.
    both = problems(write(tmp_path, text))
    assert both[0] == (
        "rb.yaml:5:17: guard.margin: '10 minutes' is not a duration such as 90s, 5m, 2h or 1h30m"
    )
    assert len(both) == 2 and both[1].startswith("rb.yaml:7:9: step id 'guard' is reserved")
    found = problems(write(tmp_path, text.replace("10 minutes", "10m")))
    assert len(found) == 1 and found[0].startswith("rb.yaml:7:9: step id 'guard' is reserved")
    assert "cutbook approve RUN guard" in found[0]


def test_guard_settings_reach_the_model(tmp_path: Path) -> None:
    text = HEAD + "guard: {margin: 20m, approvers: [cio]}\nsteps:\n  - id: only\n"
    rb = load(write(tmp_path, text)).runbook
    assert rb.guard.margin.total_seconds() == 1200 and rb.guard.approvers == ["cio"]
    assert rb.guard.enabled and rb.guard.answer_within.total_seconds() == 900


def test_gates_that_could_never_open_are_refused(tmp_path: Path) -> None:
    text = (
        HEAD
        + """\
approvers:
  ops-lead: {key: "ed25519:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="}
  cio: {}
steps:
  - id: two-person
    approval: {approvers: [ops-lead, ops-lead], quorum: 2}
  - id: signed-gate
    approval: {approvers: [ops-lead, cio], signed: true}
"""
    )
    found = problems(write(tmp_path, text))
    assert found == [
        "rb.yaml:10:27: ops-lead listed twice: a quorum counts distinct people",
        "rb.yaml:10:57: quorum 2 needs at least 2 distinct approvers; 1 listed",
        "rb.yaml:12:52: signed: true, but no key for cio: add approvers: {cio: {key: ...}} "
        "(cutbook keys new cio prints it)",
    ], found
    typo = (
        HEAD + "approvers: {ops-lead: {}}\nsteps:\n  - {id: a, approval: {approvers: [ops-leed]}}\n"
    )
    (warning,) = load(write(tmp_path, typo), display="rb.yaml").warnings
    assert warning.render() == (
        "rb.yaml:7:36: warning: 'ops-leed' is not listed under approvers (did you mean 'ops-lead'?)"
    )


def test_an_approver_key_must_look_like_one(tmp_path: Path) -> None:
    text = HEAD + 'approvers: {ops-lead: {key: "rsa:abc"}}\nsteps:\n  - id: only\n'
    (problem,) = problems(write(tmp_path, text))
    assert problem.startswith("rb.yaml:5:29: approvers.ops-lead.key: not an Ed25519"), problem
