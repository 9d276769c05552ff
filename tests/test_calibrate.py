"""``cutbook plan --calibrate``: estimates against real rehearsal journals, and ``--write``.

The journals come from real runs of a small runbook, in-process on the local
bridge (no Prefect), against an adapter that only sleeps. Expected numbers are
worked out here from each journal's own step.finished records, never hard-coded,
so the tests hold whatever the rehearsal clock does with the time spent.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar

import pytest

from cutbook import registry
from cutbook.adapter import ActionSpec, Args, BaseAdapter, Call, Result
from cutbook.cli import main
from cutbook.engine.local import LocalBridge
from cutbook.engine.session import RunSettings, Session
from cutbook.estimates import round_up_estimate, set_estimates
from cutbook.journal import read_records
from cutbook.validation import load


class WorkArgs(Args):
    seconds: float = 0.0


class SleepAdapter(BaseAdapter):
    """A target whose only action takes a little real time, and changes nothing lasting."""

    name: ClassVar[str] = "calib-sleep"
    actions: ClassVar[Mapping[str, ActionSpec]] = {
        "work": ActionSpec(args=WorkArgs, description="take a little time"),
    }

    async def apply(self, call: Call) -> Result:
        args = call.args
        assert isinstance(args, WorkArgs)
        await asyncio.sleep(args.seconds)
        return Result(changed=True, summary=f"worked {args.seconds}s")

    async def rollback(self, call: Call) -> Result:
        return Result(changed=True, summary="undone")


registry.register("calib-sleep", SleepAdapter)

RUNBOOK = """\
apiVersion: cutbook/v1
name: calib-demo
timezone: UTC
window: {start: "2025-03-14T23:00", end: "2025-03-15T05:00"}
targets:
  box: {adapter: calib-sleep}
steps:
  # Intake stops first; this comment must survive --write.
  - id: stop-intake
    name: Stop declaration intake
    target: box
    action: work
    estimate: 1ms   # far too short: will run late
    with: {seconds: 0.03}
  - id: offices
    target: box
    action: work
    for_each: [a, b, c, d, e]
    concurrency: 2
    estimate: "1h"
    with: {seconds: 0.01}
    depends_on: [stop-intake]
  - id: reopen
    target: box
    action: work
    with: {seconds: 0.02}
    depends_on: [offices]
  - {id: announce, target: box, action: work, with: {seconds: 0.01}, depends_on: [reopen]}
"""

OTHER = RUNBOOK.replace("name: calib-demo", "name: calib-other")
FAN_BATCHES = math.ceil(5 / 2)


def rehearse(path: Path, data: Path, *, dry_run: bool = False) -> Path:
    """Run the runbook once for real on the local bridge; the journal it wrote."""
    session = Session(
        load(path), RunSettings(data_dir=data, clock="virtual", speed=3600, dry_run=dry_run)
    )

    async def go() -> None:
        await session.prepare()
        outcome = await session.runner_for(LocalBridge(None)).run()
        await session.finish(outcome)

    asyncio.run(go())
    assert session.journal is not None
    return session.journal.path


@pytest.fixture(scope="module")
def rehearsed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    """Three rehearsals of RUNBOOK: the data dir and their journals."""
    root = tmp_path_factory.mktemp("calib")
    book = root / "rb.yaml"
    book.write_text(RUNBOOK, encoding="utf-8")
    data = root / "data"
    return data, [rehearse(book, data) for _ in range(3)]


@pytest.fixture
def book(tmp_path: Path) -> Path:
    path = tmp_path / "rb.yaml"
    path.write_text(RUNBOOK, encoding="utf-8")
    return path


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run ``cutbook`` in-process (the test adapter lives here): exit code, stdout, stderr."""
    try:
        main(list(argv))
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    done = capsys.readouterr()
    return code, done.out, done.err


def calibrate_json(
    capsys: pytest.CaptureFixture[str], book: Path, data: Path, runs: list[str], *extra: str
) -> dict[str, Any]:
    argv = ["plan", str(book), "--data-dir", str(data), "-f", "json", *extra]
    for run in runs:
        argv += ["--calibrate", run]
    code, stdout, stderr = cli(capsys, *argv)
    assert code == 0, stderr
    result: dict[str, Any] = json.loads(stdout)
    return result


def measured(journal: Path) -> dict[str, float]:
    """Per step, the value an estimate is compared with, straight from the records."""
    records = list(read_records(journal))
    items = {r["step"]: len(r["items"]) for r in records if r["event"] == "step.items"}
    values: dict[str, float] = {}
    for r in records:
        if r["event"] != "step.finished" or r["status"] != "succeeded":
            continue
        took = (
            datetime.fromisoformat(r["finished"]) - datetime.fromisoformat(r["started"])
        ).total_seconds()
        batches = math.ceil(items[r["step"]] / 2) if r["step"] in items else 1
        values[r["step"]] = took / batches
    return values


def rank(values: list[float], percent: int) -> float:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(percent * len(ordered) / 100)) - 1]


# ---------------------------------------------------------------- the numbers


def test_percentiles_and_suggestions_match_the_journals(
    capsys: pytest.CaptureFixture[str], book: Path, rehearsed: tuple[Path, list[Path]]
) -> None:
    data, journals = rehearsed
    runs = [j.stem for j in journals]
    got = calibrate_json(capsys, book, data, runs)
    per_run = [measured(j) for j in journals]

    assert got["runbook"] == "calib-demo" and got["method"] == "nearest-rank"
    assert got["percentile"] == 90 and got["written"] is None
    assert [r["run_id"] for r in got["runs"]] == runs
    assert all(r["mode"] == "rehearsal" and r["same_text"] for r in got["runs"])
    assert [s["id"] for s in got["steps"]] == ["stop-intake", "offices", "reopen", "announce"]
    for step in got["steps"]:
        values = [m[step["id"]] for m in per_run]
        assert step["n"] == 3
        assert step["p50_s"] == pytest.approx(rank(values, 50))
        assert step["p90_s"] == pytest.approx(rank(values, 90))
        assert step["p90_s"] == pytest.approx(max(values)), "n < 10: P90 is the slowest run"
        assert step["suggested_s"] == round_up_estimate(step["p90_s"]) >= step["p90_s"]
        assert step["suggested_s"] >= 1, "a step that took time never gets 0s"
        assert step["change_s"] == pytest.approx(step["suggested_s"] - step["estimate_s"])
        assert sorted(o["value_s"] for o in step["observations"]) == pytest.approx(sorted(values))

    by_id = {s["id"]: s for s in got["steps"]}
    assert by_id["stop-intake"]["verdict"] == "late"
    assert by_id["offices"]["verdict"] == "padded"
    assert by_id["reopen"]["estimate_default"] is True and by_id["reopen"]["estimate_s"] == 60.0


def test_a_fan_out_is_compared_per_batch(
    capsys: pytest.CaptureFixture[str], book: Path, rehearsed: tuple[Path, list[Path]]
) -> None:
    data, journals = rehearsed
    got = calibrate_json(capsys, book, data, [str(journals[0])])
    offices = next(s for s in got["steps"] if s["id"] == "offices")
    assert offices["basis"] == "batch"
    (obs,) = offices["observations"]
    assert (obs["items"], obs["concurrency"], obs["batches"]) == (5, 2, FAN_BATCHES)
    assert obs["value_s"] == pytest.approx(obs["actual_s"] / FAN_BATCHES)
    assert offices["n"] == 1 and offices["p50_s"] == offices["p90_s"] == obs["value_s"]
    stop = next(s for s in got["steps"] if s["id"] == "stop-intake")
    assert stop["basis"] == "step" and stop["observations"][0]["batches"] == 1


def test_the_text_table(
    capsys: pytest.CaptureFixture[str],
    book: Path,
    rehearsed: tuple[Path, list[Path]],
    tmp_path: Path,
) -> None:
    data, journals = rehearsed
    table = tmp_path / "table.txt"
    code, _, stderr = cli(
        capsys, "plan", str(book), "--data-dir", str(data), "--calibrate", journals[0].stem,
        "--calibrate", journals[1].stem, "-o", str(table),
    )  # fmt: skip
    assert code == 0, stderr
    text = table.read_text(encoding="utf-8")
    for word in ("estimate", "P50", "P90", "suggested", "change", "stop-intake", "LATE"):
        assert word in text
    assert "padding" in text and "per batch: 5 items, 2 at a time = 3 batches" in text
    assert "default estimate" in text and "nearest rank" in text

    code, stdout, _ = cli(
        capsys, "plan", str(book), "--data-dir", str(data), "--calibrate", journals[0].stem
    )
    assert code == 0 and "stop-intake" in stdout


def test_a_step_never_observed_says_so(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, rehearsed: tuple[Path, list[Path]]
) -> None:
    data, journals = rehearsed
    grown = tmp_path / "rb.yaml"
    grown.write_text(
        RUNBOOK + "  - {id: new-step, target: box, action: work, depends_on: [announce]}\n",
        encoding="utf-8",
    )
    got = calibrate_json(capsys, grown, data, [journals[0].stem])
    new = next(s for s in got["steps"] if s["id"] == "new-step")
    assert (new["n"], new["verdict"], new["p90_s"], new["suggested"]) == (
        0,
        "unobserved",
        None,
        None,
    )


def test_a_changed_runbook_text_warns_but_still_counts(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, rehearsed: tuple[Path, list[Path]]
) -> None:
    data, journals = rehearsed
    edited = tmp_path / "rb.yaml"
    edited.write_text(RUNBOOK + "# reviewed\n", encoding="utf-8")
    code, stdout, stderr = cli(
        capsys, "plan", str(edited), "--data-dir", str(data), "-f", "json",
        "--calibrate", journals[0].stem,
    )  # fmt: skip
    assert code == 0
    assert "ran another text of this runbook" in stderr
    got = json.loads(stdout)
    assert got["runs"][0]["same_text"] is False and got["steps"][0]["n"] == 1


# ---------------------------------------------------------------- refusals


def refused(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    code, stdout, stderr = cli(capsys, *argv)
    assert code == 2, (stdout, stderr)
    assert "Traceback" not in stdout + stderr and stdout == ""
    errors = [line for line in stderr.splitlines() if not line.startswith("warning: ")]
    assert len(errors) == 1, stderr
    return errors[0]


def test_refusals(
    capsys: pytest.CaptureFixture[str],
    book: Path,
    tmp_path: Path,
    rehearsed: tuple[Path, list[Path]],
) -> None:
    data, journals = rehearsed
    base = ("plan", str(book), "--data-dir", str(data))
    assert "no run 'nope'" in refused(capsys, *base, "--calibrate", "nope")
    assert "no such journal file" in refused(capsys, *base, "--calibrate", "x/missing.jsonl")
    assert "text or json" in refused(capsys, *base, "-f", "html", "--calibrate", journals[0].stem)
    assert "use 50 or 90" in refused(
        capsys, *base, "--percentile", "75", "--calibrate", journals[0].stem
    )
    assert "go with --calibrate" in refused(capsys, *base, "--write")

    other_book = tmp_path / "other.yaml"
    other_book.write_text(OTHER, encoding="utf-8")
    other = rehearse(other_book, tmp_path / "other-data")
    capsys.readouterr()  # the run's own log lines
    message = refused(capsys, *base, "--calibrate", str(other))
    assert "of runbook calib-other, not calib-demo" in message

    tampered = tmp_path / "tampered.jsonl"
    lines = journals[0].read_text(encoding="utf-8").splitlines(keepends=True)
    at = next(i for i, line in enumerate(lines) if '"step.finished"' in line)
    lines[at] = lines[at].replace('"status":"succeeded"', '"status":"succeeded" ', 1)
    lines[at] = lines[at].replace('"started":"2', '"started":"1', 1)
    tampered.write_text("".join(lines), encoding="utf-8")
    assert "fails verification" in refused(capsys, *base, "--calibrate", str(tampered))


def test_a_dry_run_is_skipped_with_a_warning(
    capsys: pytest.CaptureFixture[str], book: Path, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    dry = rehearse(book, data, dry_run=True)
    capsys.readouterr()  # the run's own log lines
    code, stdout, stderr = cli(
        capsys, "plan", str(book), "--data-dir", str(data), "-f", "json", "--calibrate", dry.stem
    )
    assert code == 0 and "was a dry run" in stderr
    assert all(s["n"] == 0 for s in json.loads(stdout)["steps"])


# ---------------------------------------------------------------- --write


def test_write_changes_only_the_estimate_lines(
    capsys: pytest.CaptureFixture[str], book: Path, rehearsed: tuple[Path, list[Path]]
) -> None:
    data, journals = rehearsed
    runs = [j.stem for j in journals]
    before = book.read_text(encoding="utf-8")
    got = calibrate_json(capsys, book, data, runs, "--write")
    after = book.read_text(encoding="utf-8")
    suggested = {s["id"]: s["suggested"] for s in got["steps"]}

    old_lines, new_lines = before.splitlines(), after.splitlines()
    assert len(new_lines) == len(old_lines) + 1, "one estimate inserted (reopen had none)"
    inserted = new_lines.index(f"    estimate: {suggested['reopen']}")
    assert new_lines[inserted - 1] == "  - id: reopen"
    del new_lines[inserted]
    differing = [(o, n) for o, n in zip(old_lines, new_lines, strict=True) if o != n]
    assert differing == [
        (
            "    estimate: 1ms   # far too short: will run late",
            f"    estimate: {suggested['stop-intake']}   # far too short: will run late",
        ),
        ('    estimate: "1h"', f'    estimate: "{suggested["offices"]}"'),
        (
            "  - {id: announce, target: box, action: work, with: {seconds: 0.01}, "
            "depends_on: [reopen]}",
            f"  - {{id: announce, estimate: {suggested['announce']}, target: box, action: work, "
            "with: {seconds: 0.01}, depends_on: [reopen]}",
        ),
    ]
    assert "# Intake stops first; this comment must survive --write." in after

    written = {c["step"]: c for c in got["written"]["changes"]}
    assert set(written) == {"stop-intake", "offices", "reopen", "announce"}
    assert written["reopen"]["old"] is None and written["stop-intake"]["old"] == "1ms"
    assert after.splitlines()[written["reopen"]["line"] - 1].strip().startswith("estimate:")

    rb = load(book).runbook
    for step in rb.steps:
        assert step.estimate is not None
        assert round(step.estimate.total_seconds()) == next(
            s["suggested_s"] for s in got["steps"] if s["id"] == step.id
        )

    again = calibrate_json(capsys, book, data, runs, "--write")
    assert again["written"]["changes"] == [] and book.read_text(encoding="utf-8") == after


def test_write_with_p50_prints_what_changed(
    capsys: pytest.CaptureFixture[str], book: Path, rehearsed: tuple[Path, list[Path]]
) -> None:
    data, journals = rehearsed
    code, stdout, stderr = cli(
        capsys, "plan", str(book), "--data-dir", str(data), "--percentile", "50", "--write",
        "--calibrate", journals[0].stem, "--calibrate", journals[1].stem,
    )  # fmt: skip
    assert code == 0, stderr
    assert "stop-intake: estimate 1ms →" in stdout and "reopen: inserted estimate" in stdout
    assert "review the diff" in stdout
    per_run = [measured(j) for j in journals[:2]]
    for step in load(book).runbook.steps:
        p50 = rank([m[step.id] for m in per_run], 50)
        assert p50 == min(m[step.id] for m in per_run), "nearest rank of two: the quicker"
        assert step.estimate is not None
        assert step.estimate.total_seconds() == round_up_estimate(p50)


def test_a_write_that_cannot_be_done_cleanly_leaves_the_file_untouched(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, rehearsed: tuple[Path, list[Path]]
) -> None:
    data, journals = rehearsed
    shared = RUNBOOK.replace(
        "  - id: reopen\n", "  - id: reopen\n    estimate: &shared 2m\n"
    ).replace("{id: announce, target: box,", "{id: announce, estimate: *shared, target: box,")
    book = tmp_path / "rb.yaml"
    book.write_text(shared, encoding="utf-8")
    before = book.read_bytes()
    message = refused(
        capsys, "plan", str(book), "--data-dir", str(data), "--write",
        "--calibrate", journals[0].stem, "--calibrate", journals[1].stem,
    )  # fmt: skip
    assert "edit them by hand" in message
    assert book.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rb.yaml"], "no temporary file left"


def test_a_rewritten_runbook_that_would_not_validate_is_not_written(
    capsys: pytest.CaptureFixture[str],
    book: Path,
    rehearsed: tuple[Path, list[Path]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import cutbook.audit.calibrate as calibrate_module

    def broken(text: str, estimates: Mapping[str, str], *, name: str) -> tuple[str, list[Any]]:
        new, changes = set_estimates(text, estimates, name=name)
        return new.replace("depends_on: [offices]", "depends_on: [nowhere]"), changes

    monkeypatch.setattr(calibrate_module, "set_estimates", broken)
    data, journals = rehearsed
    before = book.read_bytes()
    message = refused(
        capsys, "plan", str(book), "--data-dir", str(data), "--write",
        "--calibrate", journals[0].stem,
    )  # fmt: skip
    assert "would not validate" in message and "unchanged" in message
    assert book.read_bytes() == before
    assert sorted(p.name for p in book.parent.iterdir()) == ["rb.yaml"]


# ---------------------------------------------------------------- the text editor alone


def test_editing_keeps_quotes_comments_and_line_endings() -> None:
    text = "steps:\r\n  - id: a  # the first\r\n    estimate: '2m' # was a guess\r\n  - id: b\r\n"
    new, changes = set_estimates(text, {"a": "3m", "b": "90s"})
    assert new == (
        "steps:\r\n  - id: a  # the first\r\n    estimate: '3m' # was a guess\r\n"
        "  - id: b\r\n    estimate: 90s\r\n"
    )
    assert [(c.step, c.line, c.old, c.new) for c in changes] == [
        ("a", 3, "'2m'", "3m"),
        ("b", 5, None, "90s"),
    ]
    assert set_estimates(new, {"a": "180s"}) == (new, []), "an equal duration is left as written"


def test_rounding_up_to_human_units() -> None:
    assert [round_up_estimate(s) for s in (0, 0.01, 1.2, 59.5, 61, 599, 601, 3599, 3601)] == [
        0, 1, 2, 60, 90, 600, 660, 3600, 3900,
    ]  # fmt: skip
