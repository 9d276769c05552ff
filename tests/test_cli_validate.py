"""The real ``cutbook validate`` and ``cutbook plan`` commands, run as subprocesses."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from test_malformed import CASES

ROOT = Path(__file__).resolve().parent.parent
CUSTOMS = "runbooks/customs-reorg-2025.yaml"
CUTBOOK = shutil.which("cutbook", path=os.path.dirname(sys.executable))


def run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    """Run the installed console script, with colours and wrapping out of the way."""
    assert CUTBOOK is not None, "the cutbook console script is not installed next to python"
    env = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "CLICOLOR_FORCE")}
    env.update(NO_COLOR="1", TERM="dumb", COLUMNS="200")
    return subprocess.run(
        [CUTBOOK, *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=120, check=False
    )


def no_traceback(done: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in done.stdout + done.stderr


# --- validate ------------------------------------------------------------------------


def test_a_valid_runbook_exits_0_with_a_summary() -> None:
    done = run("validate", CUSTOMS)
    assert done.returncode == 0, done.stderr
    assert done.stdout == (
        "runbooks/customs-reorg-2025.yaml: ok — customs-reorg-2025, "
        f"{CUSTOMS_STEPS} steps, window 2025-03-14 22:30 – 2025-03-15 05:00 +07\n"
    )
    assert done.stderr == ""


CUSTOMS_STEPS = sum(
    1 for line in (ROOT / CUSTOMS).read_text(encoding="utf-8").splitlines()
    if line.startswith("  - id: ")
)  # fmt: skip


def test_a_malformed_runbook_exits_2_with_located_messages() -> None:
    done = run("validate", "tests/malformed/unknown-dependency.yaml")
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.splitlines() == [
        "tests/malformed/unknown-dependency.yaml:9:18: step 'close-codes' depends on unknown "
        "step 'stop-intak' (did you mean 'stop-intake'?)",
        "tests/malformed/unknown-dependency.yaml: invalid (1 error)",
    ]
    no_traceback(done)


def test_the_whole_corpus_prints_exactly_what_the_library_reports() -> None:
    """One invocation over every case that needs no flags: same lines as the corpus says."""
    plain = [c for c in CASES if not c.overrides and not c.strict and not c.xfail]
    done = run("validate", *(c.path.name for c in plain), cwd=ROOT / "tests" / "malformed")
    assert done.returncode == 2
    no_traceback(done)
    expected: list[str] = []
    for case in plain:
        expected.extend(case.expected)
        n = len(case.expected)
        expected.append(f"{case.path.name}: invalid ({n} error{'s' * (n != 1)})")
    assert done.stderr.splitlines() == expected


def test_every_shipped_runbook_validates_from_the_command_line() -> None:
    paths = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "runbooks").glob("*.yaml"))
    paths += sorted(
        str(p.relative_to(ROOT)) for p in (ROOT / "runbooks" / "examples").glob("*.yaml")
    )
    assert len(paths) >= 7
    done = run("validate", *paths)
    assert done.returncode == 0, done.stderr
    assert [line.split(": ok — ")[0] for line in done.stdout.splitlines()] == paths
    no_traceback(done)


def test_one_bad_file_among_good_ones_fails_the_whole_command() -> None:
    done = run("validate", CUSTOMS, "tests/malformed/self-dependency.yaml")
    assert done.returncode == 2
    assert done.stdout.startswith("runbooks/customs-reorg-2025.yaml: ok")
    assert "tests/malformed/self-dependency.yaml: invalid (1 error)" in done.stderr


WARNING_RUNBOOK = "tests/malformed/strict-no-rollback.yaml"


def test_warnings_are_printed_but_do_not_fail() -> None:
    done = run("validate", WARNING_RUNBOOK)
    assert done.returncode == 0
    assert done.stderr.splitlines() == [
        "tests/malformed/strict-no-rollback.yaml:10:5: warning: step 'update-catalogue' "
        "changes things (http put) but has neither rollback nor irreversible: true"
    ]
    assert done.stdout.rstrip().endswith(", 1 warning(s)")


def test_strict_makes_warnings_fail() -> None:
    done = run("validate", "--strict", WARNING_RUNBOOK)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "tests/malformed/strict-no-rollback.yaml:10:5: step 'update-catalogue' changes things "
        "(http put) but has neither rollback nor irreversible: true",
        "tests/malformed/strict-no-rollback.yaml: invalid (1 error)",
    ]


def test_var_overrides_reach_validation() -> None:
    done = run("validate", CUSTOMS, "--var", "estate_ur=http://127.0.0.1:1")
    assert done.returncode == 2
    assert done.stderr.splitlines()[0] == (
        "--var: unknown variable 'estate_ur' (did you mean 'estate_url'?); the runbook "
        "declares: estate_url, new_org_model, old_org_model, satellites"
    )
    assert run("validate", CUSTOMS, "-v", "estate_url=http://127.0.0.1:1").returncode == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["validate", "--bogus", CUSTOMS], "No such option: --bogus"),
        (["validate"], "Missing argument"),
        (["validate", CUSTOMS, "--var", "no-equals-sign"], "write --var name=value"),
        (["plan", CUSTOMS, "--format", "pdf"], "'pdf' is not one of"),
        (["plan", CUSTOMS, "--start", "tomorrow"], "--start: 'tomorrow' is not a time"),
    ],
)
def test_bad_input_exits_2_without_a_traceback(args: list[str], message: str) -> None:
    done = run(*args)
    assert done.returncode == 2
    assert message in done.stderr
    no_traceback(done)


def test_a_missing_file_exits_2() -> None:
    done = run("validate", "no/such/runbook.yaml")
    assert done.returncode == 2
    assert done.stderr.splitlines()[0] == "no/such/runbook.yaml: no such file"


# --- plan --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def customs_plan() -> dict[str, Any]:
    done = run("plan", CUSTOMS, "--format", "json")
    assert done.returncode == 0, done.stderr
    parsed: dict[str, Any] = json.loads(done.stdout)
    return parsed


def at_plus_seven(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    assert moment.utcoffset() == timedelta(hours=7), f"{text} is not in the runbook's zone"
    return moment


def test_plan_json_says_the_night_fits(customs_plan: dict[str, Any]) -> None:
    p = customs_plan
    assert p["fits_window"] is True
    assert at_plus_seven(p["window"]["start"]) == datetime.fromisoformat(
        "2025-03-14T22:30:00+07:00"
    )
    finish = at_plus_seven(p["finish"])
    end = at_plus_seven(p["window"]["end"])
    assert finish <= end
    assert p["margin_s"] == (end - finish).total_seconds()
    ponr = at_plus_seven(p["point_of_no_return"])
    assert at_plus_seven(p["start"]) <= ponr <= end


def test_plan_json_steps_are_consistent(customs_plan: dict[str, Any]) -> None:
    steps = customs_plan["steps"]
    assert len(steps) == CUSTOMS_STEPS
    finish = at_plus_seven(customs_plan["finish"])
    by_id = {s["id"]: s for s in steps}
    for s in steps:
        assert {"id", "start", "finish", "critical", "slack_s"} <= set(s)
        start, end = at_plus_seven(s["start"]), at_plus_seven(s["finish"])
        assert start <= end <= finish
        assert s["critical"] == (s["slack_s"] == 0)
        for dep in s["depends_on"]:
            assert at_plus_seven(by_id[dep]["finish"]) <= start, (dep, s["id"])
    assert max(at_plus_seven(s["finish"]) for s in steps) == finish
    assert customs_plan["critical_path"] == [
        s["id"] for s in steps if s["id"] in customs_plan["critical_path"]
    ]
    assert all(by_id[i]["critical"] for i in customs_plan["critical_path"])
    pinned = by_id["stop-intake"]
    assert at_plus_seven(pinned["start"]) >= datetime.fromisoformat("2025-03-14T23:00+07:00")


def test_plan_of_the_portal_runbook_fits_and_check_agrees() -> None:
    done = run("plan", "runbooks/portal-rollout-2019.yaml", "--format", "json", "--check")
    assert done.returncode == 0, done.stderr
    p = json.loads(done.stdout)
    assert p["fits_window"] is True
    assert p["window"] == {"start": "2019-10-09T22:00:00+07:00", "end": "2019-10-10T06:00:00+07:00"}


# --- start-up cost -----------------------------------------------------------------


PROBE = """
import json, sys
from cutbook.cli import main
for argv in (["validate", sys.argv[1]], ["plan", sys.argv[1], "--format", "json"]):
    try:
        main(argv)
    except SystemExit as exc:
        assert exc.code in (0, None), (argv, exc.code)
heavy = sorted({m.split(".")[0] for m in sys.modules} & {"prefect", "fastapi", "uvicorn"})
sys.stderr.write(json.dumps(heavy))
"""


def test_validate_and_plan_never_import_prefect() -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, CUSTOMS],
        capture_output=True, text=True, cwd=ROOT, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stderr) == []
    assert json.loads(done.stdout.split("\n", 1)[1])["runbook"] == "customs-reorg-2025"


def test_the_probe_would_notice_prefect() -> None:
    """The check above can fail: importing prefect shows up in the same way."""
    probe = PROBE.replace(
        "from cutbook.cli import main", "from cutbook.cli import main\nimport prefect"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe, CUSTOMS],
        capture_output=True, text=True, cwd=ROOT, timeout=120, check=False,
    )  # fmt: skip
    assert json.loads(done.stderr) == ["prefect"]


@pytest.mark.parametrize(
    ("words", "expected"),
    [("cutbook au", "audit"), ("cutbook audit ve", "verify"), ("cutbook server st", "start")],
)
def test_shell_completion_completes_commands(words: str, expected: str) -> None:
    """Completion is on: bash asks the console script itself, as the installed hook does."""
    assert CUTBOOK is not None
    env = {**os.environ, "_CUTBOOK_COMPLETE": "complete_bash", "COMP_WORDS": words}
    env["COMP_CWORD"] = str(len(words.split()) - 1)
    done = subprocess.run(
        [CUTBOOK], capture_output=True, text=True, env=env, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert expected in done.stdout.split(), done.stdout
