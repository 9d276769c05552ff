"""The journal's record contract: what cutbook writes is declared, and old journals still read.

The fixture in tests/data/journal-v0.1/ was written by the journal writer as
it was before the journal became a package (commit 9e1fa5e), together with
what that version's readers made of it (expected.json). It must never be
regenerated: it is the evidence that journals already kept stay readable.
"""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import json
import re
import shutil
from collections.abc import Iterator
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from cutbook import audit
from cutbook.engine.resume import reconstruct
from cutbook.errors import UsageError
from cutbook.journal import (
    FIELDS,
    RESERVED_FIELDS,
    Event,
    Journal,
    JournalContractError,
    canonical,
    read_records,
    summarize,
    verify,
)
from cutbook.journal.events import DECLARED
from cutbook.journal.records import encode_line

SRC = Path(__file__).resolve().parents[1] / "src" / "cutbook"
FIXTURE = Path(__file__).resolve().parent / "data" / "journal-v0.1"
NIGHT = "20250502-ports-v01"
CRASHED = "20250502-ports-crashed-v01"
KEY = b"fixture-key-v0.1"
EVENT_NAME = re.compile(r"[a-z]+\.[a-z_]+")


def foreign_append(path: Path, event: str, **fields: Any) -> None:
    """Chain a record the way another writer might: an event this cutbook does not know."""
    last = list(read_records(path))[-1]
    body = canonical(
        {
            **fields,
            "seq": last["seq"] + 1,
            "ts": last["ts"],
            "run_id": last["run_id"],
            "event": event,
            "prev": last["hash"],
        }
    )
    with open(path, "ab") as fh:
        fh.write(encode_line(body, hashlib.sha256(body).hexdigest()))


def as_json(obj: Any) -> Any:
    """Dataclasses, sets and datetimes as the fixture's expected.json holds them."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: as_json(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): as_json(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [as_json(v) for v in obj]
    if isinstance(obj, set):
        return sorted(as_json(v) for v in obj)
    if isinstance(obj, datetime):
        return obj.isoformat()
    return obj


@pytest.fixture
def expected() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURE / "expected.json").read_text(encoding="utf-8"))
    return data


@pytest.fixture
def old_journals(tmp_path: Path) -> Path:
    """A copy of the fixture: tests may add to it, the originals stay untouched."""
    folder = tmp_path / "journal"
    shutil.copytree(FIXTURE, folder, ignore=shutil.ignore_patterns("*.json", "*.md"))
    return folder


# ---------------------------------------------------------------- (a) every write is declared


def _is_event_like(node: ast.expr | None) -> bool:
    if isinstance(node, ast.Constant):
        return isinstance(node.value, str) and EVENT_NAME.fullmatch(node.value) is not None
    return isinstance(node, ast.Attribute) and ast.unparse(node).startswith("Event.")


def _journal_appends() -> Iterator[tuple[str, ast.Call]]:
    """Every call in the cutbook package that writes a journal record.

    A write is ``<...>journal.append(...)``, ``<...>journal.commit(...)`` (the
    coroutines' group commit) or ``<...>journal.write(...)`` (durable with the next
    fsync), or any of those whose first argument
    looks like an event (``Event.X`` or a string such as "step.done").
    """
    for path in sorted(SRC.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if not (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in ("append", "commit", "write")
            ):
                continue
            first = node.args[0] if node.args else None
            if ast.unparse(node.func.value).endswith("journal") or _is_event_like(first):
                yield f"{path.relative_to(SRC.parent)}:{node.lineno}", node


def test_every_append_names_a_declared_event_and_fields() -> None:
    sites = list(_journal_appends())
    assert len(sites) >= 20, "the scan found too few journal writes: is it still looking?"
    problems: list[str] = []
    written: set[Event] = set()
    for where, call in sites:
        first = call.args[0] if call.args else None
        if not (
            isinstance(first, ast.Attribute)
            and isinstance(first.value, ast.Name)
            and first.value.id == "Event"
            and first.attr in Event.__members__
        ):
            shown = ast.unparse(first) if first is not None else "nothing"
            problems.append(f"{where}: first argument is {shown}, not Event.<NAME>")
            continue
        event = Event[first.attr]
        written.add(event)
        passed = {k.arg for k in call.keywords if k.arg is not None}
        undeclared = passed - DECLARED[event]
        if undeclared:
            problems.append(f"{where}: {event.value} passes undeclared {sorted(undeclared)}")
    assert not problems, "\n".join(problems)
    assert written == set(Event), f"declared but never written: {set(Event) - written}"


def test_declarations_cover_every_event_and_reserve_nothing() -> None:
    assert set(FIELDS) == set(Event)
    for event, names in DECLARED.items():
        assert names, event
        assert not names & RESERVED_FIELDS, event


# ---------------------------------------------------------------- (b) append refuses


@pytest.mark.parametrize(
    ("event", "fields", "match"),
    [
        ("x.custom", {}, "not a journal event"),
        ("step.verifed", {"step": "a"}, "not a journal event"),
        (Event.STEP_VERIFIED, {"step": "a", "okay": True}, r"no field\(s\) \['okay'\]"),
        (Event.RUN_FINISHED, {"outcome": "succeeded", "hash": "0"}, "reserved"),
    ],
)
def test_append_refuses_undeclared(
    tmp_path: Path, event: str, fields: dict[str, Any], match: str
) -> None:
    journal = Journal.create(tmp_path, "r", fsync=False)
    journal.append(Event.RUN_STARTED, runbook_name="rb")
    with pytest.raises(JournalContractError, match=match) as caught:
        journal.append(event, **fields)  # type: ignore[arg-type]
    assert isinstance(caught.value, ValueError)  # a programming error, also for old callers
    assert journal.seq == 1  # nothing written, the chain goes on
    journal.append(Event.RUN_FINISHED, outcome="succeeded")
    journal.close()
    assert verify(journal.path).ok


def test_append_takes_the_plain_name_of_a_declared_event(tmp_path: Path) -> None:
    with Journal.create(tmp_path, "r", fsync=False) as journal:
        record = journal.append("step.items", step="a", items=["x"])  # type: ignore[arg-type]
    assert record.event == "step.items" and type(record.event) is str


# ---------------------------------------------------------------- (c) cutbook's own events


def _engine_run(directory: Path) -> Path:
    """A run with every event the engine writes beyond the original vocabulary."""
    journal = Journal.create(directory, "own-events", fsync=False)
    journal.append(Event.RUN_STARTED, runbook_name="rb", clock="real", timezone="UTC")
    journal.append(Event.RUN_FLOW, flow_run_id="f-1", flow_run_url=None)
    journal.append(Event.STEP_STARTED, step="fan", attempt_round=0)
    journal.append(Event.STEP_ITEMS, step="fan", items=["a", "b"])
    for item in ("a", "b"):
        journal.append(Event.STEP_OUTCOME, step="fan", item=item, phase="apply", ok=True)
        journal.append(Event.STEP_VERIFIED, step="fan", item=item, ok=True, summary="reads back")
    journal.append(Event.GATE_REQUESTED, step="fan", kind="failure", approvers=["lead"])
    journal.append(Event.GATE_REFUSED, step="fan", by="intern", reason="not an approver")
    journal.append(Event.GATE_ANSWERED, step="fan", by="lead", approved=True, kind="failure")
    journal.append(Event.STEP_DECISION, step="fan", by="lead", decision="skip", comment="")
    journal.append(Event.STEP_FINISHED, step="fan", status="succeeded")
    journal.append(Event.RUN_FINISHED, outcome="succeeded")
    journal.close()
    return journal.path


def test_report_knows_cutbooks_own_events(tmp_path: Path) -> None:
    path = _engine_run(tmp_path)
    summary = summarize(path)
    assert summary.unknown_events == {}
    assert summary.steps[0].items == ["a", "b"]
    assert summary.flow_runs == ["f-1"]
    for fmt in ("html", "md"):
        assert "does not know" not in audit.report(tmp_path, "own-events", fmt)  # type: ignore[arg-type]
    data = json.loads(audit.report(tmp_path, "own-events", "json"))
    assert data["run"]["unknown_events"] == {}
    assert data["steps"][0]["item_count"] == 2


def test_report_still_lists_a_truly_unknown_event(tmp_path: Path) -> None:
    path = _engine_run(tmp_path)
    foreign_append(path, "x.custom", note="from another tool")
    # Appended after run.finished: the chain links, but the verdict refuses it.
    checked = verify(path)
    assert not checked.ok and "x.custom after run.finished" in (checked.problem or "")
    assert summarize(path).unknown_events == {"x.custom": 1}
    for fmt in ("html", "md"):
        text = audit.report(tmp_path, "own-events", fmt)  # type: ignore[arg-type]
        assert "Events this version does not know: x.custom (1)." in text


# ---------------------------------------------------------------- (d) journals already kept


def test_old_journal_verifies_with_its_key(old_journals: Path) -> None:
    night = verify(old_journals / f"{NIGHT}.jsonl", hmac_key=KEY)
    assert night.ok and night.complete and night.hmac_ok and night.records == 37
    crashed = verify(old_journals / f"{CRASHED}.jsonl")
    assert crashed.ok and not crashed.complete and crashed.records == 17


def test_todays_writer_writes_the_same_bytes(tmp_path: Path) -> None:
    """Replaying the old records through today's writer gives the files byte for byte."""
    for run_id, key in ((NIGHT, KEY), (CRASHED, None)):
        records = list(read_records(FIXTURE / f"{run_id}.jsonl"))
        times = iter(datetime.fromisoformat(r["ts"]) for r in records)
        journal = Journal.create(tmp_path, run_id, hmac_key=key, now=partial(next, times))
        for rec in records:
            fields = {k: v for k, v in rec.items() if k not in RESERVED_FIELDS}
            fields.pop("head_hmac", None)  # the writer computes it from the key
            journal.append(Event(rec["event"]), **fields)
        journal.close()
        assert journal.path.read_bytes() == (FIXTURE / f"{run_id}.jsonl").read_bytes()
    assert (tmp_path / "index.jsonl").read_bytes() == (FIXTURE / "index.jsonl").read_bytes()


def test_old_journal_reports_as_before(old_journals: Path, expected: dict[str, Any]) -> None:
    data = audit.build_report(old_journals / f"{NIGHT}.jsonl", hmac_key=KEY)
    data["report"]["generated_at"] = None
    data["report"]["journal"] = Path(data["report"]["journal"]).name
    text = data["verification"]["text"]
    data["verification"]["text"] = text.replace(f"{old_journals}/", "")
    before = expected["report"]
    # What changed on purpose: cutbook's own events are known, step.items gives the
    # item count, and durations read as everywhere else in cutbook.
    assert before["run"]["unknown_events"] == {
        "gate.refused": 1,
        "run.flow": 1,
        "step.decision": 1,
        "step.items": 1,
        "step.verified": 3,
    }
    before["run"]["unknown_events"] = {}
    move = next(s for s in before["steps"] if s["id"] == "move")
    assert move["item_count"] == 0
    move["item_count"] = 3
    for deviation in before["deviations"]:
        deviation["detail"] = re.sub(r"(\d+m)00s", r"\1", deviation["detail"])
    # The deadline guard is newer than this journal: its section says it had no forecasts.
    assert data.pop("guard") == {"forecasts": 0, "last": None, "tightest": None, "decisions": []}
    # Every answer is listed now, the refused one included (it was folded as unknown).
    answers = data.pop("answers")
    assert [a["outcome"] for a in answers].count("refused") == 1
    assert all(a["signature"] == "unsigned" for a in answers)
    assert len(answers) == len([a for a in data["approvals"] if a["by"]]) + 1
    assert data == before
    for fmt in ("html", "md"):
        text = audit.report(old_journals, NIGHT, fmt, hmac_key=KEY)  # type: ignore[arg-type]
        assert "does not know" not in text and "ports-cutover" in text


def test_old_journal_summary_and_listing_as_before(
    old_journals: Path, expected: dict[str, Any]
) -> None:
    summary = as_json(summarize(old_journals / f"{CRASHED}.jsonl"))
    before = expected["summary_crashed"]
    assert set(before) <= set(summary)
    summary = {k: v for k, v in summary.items() if k in before}
    before["unknown_events"] = {}
    for old, new in zip(before["steps"], summary["steps"], strict=True):
        assert set(old) <= set(new)
        new_only = set(new) - set(old)
        assert new_only == {"recorded"}
        for name in new_only:
            del new[name]
        if old["id"] == "move":
            old["items"] = ["PRIOK", "BATAM", "SOETTA"]
    assert summary == before

    def listing() -> list[dict[str, Any]]:
        runs = [r.to_dict() | {"path": Path(r.path).name} for r in audit.list_runs(old_journals)]
        assert all(r.pop("preflight") is False for r in runs)  # added later: never for 0.1
        return runs

    assert listing() == expected["list"]
    (old_journals / "index.jsonl").unlink()  # without the index: each journal is scanned
    assert listing() == expected["list"]


def test_old_crashed_journal_resumes_as_before(expected: dict[str, Any]) -> None:
    def no_empty_items(state: dict[str, Any]) -> dict[str, Any]:
        state["items"] = {step: items for step, items in state["items"].items() if items}
        return state

    got = as_json(reconstruct(read_records(FIXTURE / f"{CRASHED}.jsonl")))
    assert no_empty_items(got) == no_empty_items(expected["reconstruct_crashed"])
    assert got["items"]["move"]["SOETTA"] == {
        "result": None,
        "uncertain": True,
        "rolled_back": False,
    }


def test_resume_refuses_what_the_fold_says_cannot_resume() -> None:
    with pytest.raises(UsageError, match=r"already finished \(rolled_back\)"):
        reconstruct(read_records(FIXTURE / f"{NIGHT}.jsonl"))
    with pytest.raises(UsageError, match=r"no run\.started"):
        reconstruct([{"event": "journal.repaired", "seq": 0}])


def test_resume_keeps_an_approval_a_later_answer_did_not_repeat() -> None:
    records = [
        {"event": "run.started", "run_id": "r"},
        {"event": "gate.answered", "step": "go", "approved": True},
        {"event": "gate.answered", "step": "go", "approved": False},
    ]
    assert reconstruct(records).approved_gates == {"go"}
