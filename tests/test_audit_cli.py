"""``cutbook audit`` as an auditor meets it: the summary, the verdict, the anchor, the help.

The summary is checked on a real night: the customs runbook, unchanged, run by the
engine in-process (no Prefect) against the simulated estate on a virtual clock, so
its journal has the ~760 records a rehearsal really writes.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import typer
from typer.core import TyperGroup
from typer.testing import CliRunner

from cutbook import audit
from cutbook.cli.app import app, main
from cutbook.engine.local import LocalBridge
from cutbook.engine.session import RunSettings, Session
from cutbook.journal import format_anchor, read_records
from cutbook.validation import load
from cutbook_simulator.process import SimulatorProcess
from e2e_support import RUNBOOKS
from test_audit import KEY, write_run
from test_audit_signatures import answer, approver, runbook_text, sha
from test_audit_signatures import write_run as write_signed

SCREEN = 40
"""Lines the summary of the customs night must fit in: one terminal screen."""


@dataclass
class Night:
    data_dir: Path
    run_id: str
    step_ids: list[str]

    @property
    def journal(self) -> Path:
        return self.data_dir / "journal" / f"{self.run_id}.jsonl"


@pytest.fixture(scope="module")
def customs_night(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Night]:
    """The customs runbook rehearsed for real against the simulator (about 10 s)."""
    data_dir = tmp_path_factory.mktemp("customs") / "data"
    env = {k: v for k, v in os.environ.items() if k != "CUTBOOK_SIMULATOR_SPEED"}
    saved = os.environ.get("VNACCS_TOKEN")
    os.environ["VNACCS_TOKEN"] = "audit-cli-test-token-4417"
    try:
        with SimulatorProcess(faults="calm", env=env) as sim:
            loaded = load(RUNBOOKS / "customs-reorg-2025.yaml", overrides={"estate_url": sim.url})
            settings = RunSettings(
                data_dir=data_dir, clock="virtual", speed=3600, auto_approve=True
            )
            session = Session(loaded, settings)

            async def night() -> str | None:
                await session.prepare()
                outcome = await session.runner_for(LocalBridge()).run()
                await session.finish(outcome)
                return outcome

            assert asyncio.run(night()) == "succeeded"
    finally:
        if saved is None:
            os.environ.pop("VNACCS_TOKEN", None)
        else:
            os.environ["VNACCS_TOKEN"] = saved
    yield Night(data_dir, session.run_id, [s.id for s in loaded.runbook.steps])


@pytest.fixture(autouse=True)
def only_what_each_test_names(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No audit store, journal directory or data directory from the environment."""
    monkeypatch.delenv("CUTBOOK_AUDIT_STORE", raising=False)
    monkeypatch.delenv("CUTBOOK_JOURNAL_DIR", raising=False)
    monkeypatch.setenv("CUTBOOK_DATA_DIR", str(tmp_path / "elsewhere"))


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """``cutbook ARGV`` in-process: exit code, stdout, stderr."""
    try:
        main(list(argv))
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    done = capsys.readouterr()
    return code, done.out, done.err


# ---------------------------------------------------------------- show


@pytest.mark.slow
def test_show_is_one_screen_in_the_runbooks_zone(
    customs_night: Night, capsys: pytest.CaptureFixture[str]
) -> None:
    night = customs_night
    records = sum(1 for _ in read_records(night.journal))
    assert records > 500  # a real night, not a toy: the old show printed all of these
    code, out, err = cli(
        capsys, "audit", "show", night.run_id[:-2], "--data-dir", str(night.data_dir)
    )
    assert code == 0, err
    lines = out.splitlines()
    assert len(lines) <= SCREEN, out
    assert "times in Asia/Ho_Chi_Minh (+07:00)" in out
    assert night.run_id in lines[0] and "succeeded" in lines[0]
    # every step on exactly one line of its own
    for step in night.step_ids:
        assert sum(1 for line in lines if line.split(" ", 1)[0] == step) == 1, step
    # times in the runbook's zone: stop-intake waits for 23:00 Ho Chi Minh time (16:00 UTC)
    (stop_intake,) = [line for line in lines if line.startswith("stop-intake ")]
    assert "03-14 23:00:" in stop_intake and "16:00:" not in stop_intake
    assert "+00:00" not in out  # no time left in UTC (or the host's zone)
    assert "approved by" in out and "(auto)" in out  # who answered the gates
    assert "ends with run.finished" in out and "signatures: none" in out
    assert f"cutbook audit show {night.run_id} --verbose" in out
    assert f"cutbook audit report {night.run_id}" in out  # no report written yet: how to

    code, verbose, _ = cli(
        capsys, "audit", "show", night.run_id, "--verbose", "--data-dir", str(night.data_dir)
    )
    assert code == 0
    assert len(verbose.splitlines()) > records > len(lines)
    assert "times in Asia/Ho_Chi_Minh (+07:00)" in verbose
    assert "step.intent" in verbose and "step.intent" not in out


@pytest.mark.slow
def test_show_names_the_report_once_it_is_written(
    customs_night: Night, capsys: pytest.CaptureFixture[str]
) -> None:
    night = customs_night
    report = night.data_dir / "reports" / f"{night.run_id}.html"
    code, _, err = cli(
        capsys,
        "audit",
        "report",
        night.run_id,
        "-o",
        str(report),
        "--data-dir",
        str(night.data_dir),
    )
    assert code == 0 and report.is_file(), err
    try:
        _, out, _ = cli(capsys, "audit", "show", night.run_id, "--data-dir", str(night.data_dir))
        assert f"report    {report}" in out
    finally:
        report.unlink()


def test_the_summary_of_a_night_that_went_wrong(tmp_path: Path) -> None:
    """Late, retried, failed, skipped, rolled back: each said on its step's line."""
    write_run(tmp_path, "20250314-real-cc33", hmac_key=KEY)
    text = audit.show(tmp_path, "20250314")
    lines = text.splitlines()
    assert lines[0] == "run 20250314-real-cc33: rolled_back: repoint-dns: 401 Unauthorized"
    assert "times in Asia/Jakarta (+07:00)" in text
    by_step = {line.split(" ", 1)[0]: line for line in lines}
    assert "approved by sari.cio" in by_step["go-no-go"]
    move = by_step["move-ou"]
    assert "rolled_back" in move and "late 6m" in move and "1 failed attempt(s)" in move
    assert "failed" in by_step["repoint-dns"] and "401 Unauthorized" in by_step["repoint-dns"]
    assert "skipped" in by_step["notify-offices"]
    assert "undid move-ou, freeze-intake: ok" in text
    assert "Canary" not in text  # the secret in the journal stays out


def test_the_listing_gives_starts_in_each_runbooks_zone(tmp_path: Path) -> None:
    write_run(tmp_path, "20250314-real-cc33")
    listing = audit.format_listing(audit.list_runs(tmp_path))
    # run.started was written at 22:55 Jakarta time (15:55 UTC)
    assert "2025-03-14 22:55 +07:00" in listing and "15:55" not in listing


def test_the_reports_name_the_zone_with_its_offset(tmp_path: Path) -> None:
    write_run(tmp_path, "20250314-real-cc33")
    md = audit.report(tmp_path, "20250314", "md")
    assert "Times in Asia/Jakarta (+07:00)" in md
    html = audit.report(tmp_path, "20250314", "html")
    assert "Times shown in Asia/Jakarta (+07:00)" in html
    assert json.loads(audit.report(tmp_path, "20250314", "json"))["run"]["timezone"] == (
        "Asia/Jakarta"
    )


# ---------------------------------------------------------------- verify


VERDICT = re.compile(r"^(?P<run>\S+): (?P<word>OK|FAILED)\b", re.M)


@pytest.mark.slow
def test_verify_says_its_verdict_once(
    customs_night: Night, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    night = customs_night
    code, out, _ = cli(capsys, "audit", "verify", night.run_id, "--data-dir", str(night.data_dir))
    assert code == 0, out
    assert [m.group("word") for m in VERDICT.finditer(out)] == ["OK"], out
    assert sum(1 for line in out.splitlines() if line.startswith(f"{night.run_id}:")) == 1
    assert out.count("records verify") == 1 and out.count("signatures:") == 1

    # the same night edited: one FAILED, naming the line, and no OK anywhere
    edited = tmp_path / "journal"
    edited.mkdir()
    lines = night.journal.read_bytes().splitlines(keepends=True)
    lines[5] = lines[5].replace(b'"step', b'"STEP', 1)
    (edited / night.journal.name).write_bytes(b"".join(lines))
    code, out, _ = cli(capsys, "audit", "verify", night.run_id, "--journal-dir", str(edited))
    assert code == 1
    assert [m.group("word") for m in VERDICT.finditer(out)] == ["FAILED"], out
    assert "line 6 (seq 5)" in out and "OK" not in out


def test_a_chain_that_verifies_with_a_bad_signature_is_one_failed_verdict(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The chain alone is fine; the run is not: FAILED once, never "OK" then exit 1."""
    people = {name: approver(name) for name in ("ops-lead", "cio", "dba")}
    text = runbook_text(people, keyed=("ops-lead", "cio"))
    wrong_key = answer(people["dba"], "cio", runbook_sha256=sha(text))  # dba's key, cio's name
    write_signed(tmp_path, text, [wrong_key])
    code, out, _ = cli(capsys, "audit", "verify", "--all", "--journal-dir", str(tmp_path))
    assert code == 1
    verdicts = VERDICT.findall(out)
    assert len(verdicts) == 1 and verdicts[0][1] == "FAILED", out
    assert ": FAILED: signatures: 1 bad signature" in out
    assert "records verify, ends with run.finished" in out  # the chain's evidence, below
    assert out.count("signatures:") == 1
    assert out.rstrip().endswith("1 run(s): 0 verified, 1 failed")


def test_verify_all_says_one_verdict_per_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for run_id in ("night-a", "night-b"):
        write_run(tmp_path, run_id)
    cut = tmp_path / "night-b.jsonl"
    cut.write_bytes(b"".join(cut.read_bytes().splitlines(keepends=True)[:-1]))
    code, out, _ = cli(capsys, "audit", "verify", "--all", "--journal-dir", str(tmp_path))
    assert code == 1
    assert VERDICT.findall(out) == [("night-a", "OK"), ("night-b", "FAILED")], out
    assert "night-b: FAILED: no run.finished" in out
    code, _, err = cli(
        capsys, "audit", "verify", "night-a", "--all", "--journal-dir", str(tmp_path)
    )
    assert code == 2 and "give a RUN or --all (not both)" in err and "Traceback" not in err


# ---------------------------------------------------------------- anchor


def test_anchor_prints_what_its_format_says_and_refuses_others(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_run(tmp_path, "20250314-real-cc33", hmac_key=KEY)
    head = audit.anchor(tmp_path, "20250314", KEY)
    key_file = tmp_path / "key"
    key_file.write_bytes(KEY)
    base = (
        "audit",
        "anchor",
        "20250314",
        "--key-file",
        str(key_file),
        "--journal-dir",
        str(tmp_path),
    )
    code, out, _ = cli(capsys, *base)
    assert code == 0 and out == format_anchor(head) + "\n"
    code, out, _ = cli(capsys, *base, "-f", "text")
    assert code == 0 and out == format_anchor(head) + "\n"
    code, out, _ = cli(capsys, *base, "-f", "json")
    assert code == 0 and json.loads(out) == head
    for other in ("html", "md"):
        code, out, err = cli(capsys, *base, "-f", other)
        assert code == 2 and out == "", other
        message = " ".join(err.replace("│", " ").split())
        assert f"'{other}' is not one of 'text', 'json'" in message
        assert "Traceback" not in err


# ---------------------------------------------------------------- help texts


def audit_commands() -> list[str]:
    group = typer.main.get_command(app)
    assert isinstance(group, TyperGroup)
    audit_group = group.commands["audit"]
    assert isinstance(audit_group, TyperGroup)
    return sorted(audit_group.commands)


ARTEFACTS = [
    (re.compile(r"\[default: /"), "a default that lost its placeholder (<data-dir> eaten)"),
    (re.compile(r"\{[a-z_]+\}"), "an argument named by its Python parameter"),
    (re.compile(r"`"), "Markdown code quotes left in"),
    (re.compile(r"\*\*"), "Markdown bold left in"),
    (re.compile(r"\[/?(bold|red|green|yellow|dim|b|i)\]"), "rich markup left in"),
]


def render(*argv: str) -> str:
    result = CliRunner().invoke(app, [*argv, "--help"], env={"COLUMNS": "400", "NO_COLOR": "1"})
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize("command", audit_commands())
def test_audit_help_has_no_artefacts(command: str) -> None:
    text = render("audit", command)
    problems = [
        f"{why}: {m.group(0)!r} in {line.strip()!r}"
        for line in text.splitlines()
        for pattern, why in ARTEFACTS
        for m in pattern.finditer(line)
    ]
    assert not problems, "\n".join(problems)
    assert "Where journals live. [default: DATA-DIR/journal]" in text


def test_the_audit_commands_are_all_checked() -> None:
    assert audit_commands() == ["anchor", "list", "report", "show", "sync", "verify"]


def test_the_help_says_what_each_format_accepts() -> None:
    assert "<text|json>" in render("audit", "anchor")
    assert "<html|md|json>" in render("audit", "report")
    assert "--verbose" in render("audit", "show")


@pytest.mark.parametrize(
    ("line", "caught"),
    [
        ("│ --journal-dir  <path>  Where journals live. [default: /journal] │", True),
        ("│ Usage: cutbook audit show [OPTIONS] {run} │", True),
        ("│ re-checks (`signatures: N verified`) │", True),
        ("│ --journal-dir  DIR  Where journals live. [default: DATA-DIR/journal] │", False),
        ("│ Usage: cutbook audit show [OPTIONS] {RUN} │", False),
    ],
)
def test_the_artefact_patterns_catch_what_they_should(line: str, caught: bool) -> None:
    assert any(p.search(line) for p, _ in ARTEFACTS) is caught
