"""A quorum in-process: distinct go's open the gate, and one no-go stops it, named as
the person who said it (not as the go's that came before)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from cutbook.engine.local import LocalBridge
from cutbook.engine.session import RunSettings, Session
from cutbook.engine.state import Answer, Question
from cutbook.journal import read_records
from cutbook.validation import load

RUNBOOK = """
apiVersion: cutbook/v1
name: quorum-night
timezone: UTC
window: {start: "2025-03-14T23:00", end: "2025-03-15T05:00"}
steps:
  - id: three-person
    approval: {approvers: [alice, bob, carol], quorum: 3}
"""


def answered(tmp_path: Path, answers: list[Answer]) -> tuple[str | None, list[dict[str, object]]]:
    path = tmp_path / "quorum.yaml"
    path.write_text(RUNBOOK, encoding="utf-8")
    session = Session(load(path), RunSettings(data_dir=tmp_path / "data", clock="virtual"))
    queue = list(answers)

    async def reply(question: Question) -> Answer:
        return queue.pop(0)

    async def go() -> str | None:
        await session.prepare()
        outcome = await session.runner_for(LocalBridge(reply)).run()
        await session.finish(outcome)
        return outcome

    outcome = asyncio.run(go())
    assert session.journal is not None
    return outcome, list(read_records(session.journal.path))


def test_one_no_go_stops_a_quorum_and_is_named_as_its_own(tmp_path: Path) -> None:
    outcome, records = answered(
        tmp_path,
        [
            Answer(by="alice", approved=True),
            Answer(by="bob", approved=True),
            Answer(by="carol", approved=False, comment="LAN down"),
        ],
    )
    assert outcome == "rolled_back"
    finished = next(r for r in records if r["event"] == "step.finished")
    assert finished["status"] == "failed"
    assert finished["error"] == "no-go from carol: LAN down"


def test_three_distinct_gos_open_it(tmp_path: Path) -> None:
    outcome, records = answered(
        tmp_path,
        [
            Answer(by="alice", approved=True),
            Answer(by="alice", approved=True),  # refused: already counted
            Answer(by="bob", approved=True),
            Answer(by="carol", approved=True),
        ],
    )
    assert outcome == "succeeded"
    quorum = [r["quorum"] for r in records if r["event"] == "gate.answered"]
    assert quorum == ["1 of 3", "2 of 3", "3 of 3"]
    assert [r["by"] for r in records if r["event"] == "gate.refused"] == ["alice"]
