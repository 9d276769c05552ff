"""Milestone notifications, delivered for real: apprise posts JSON to a local HTTP server.

The run is in-process (a virtual clock, the local bridge and a tiny in-memory
adapter); the channel's URL carries a token that comes from a secret, which must
reach the endpoint and nowhere else.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar

import pytest

from cutbook import registry
from cutbook.adapter import ActionSpec, Args, BaseAdapter, Call, Result
from cutbook.engine.local import LocalBridge
from cutbook.engine.notify import FINAL_WAIT_S
from cutbook.engine.session import RunSettings, Session
from cutbook.engine.state import Answer, Outcome, Question
from cutbook.errors import PermanentError
from cutbook.journal import read_records, verify
from cutbook.validation import load
from notify_support import Endpoint
from notify_support import endpoint as endpoint

TOKEN = "tok-3f9a7c21e5d0"


class PutArgs(Args):
    key: str
    value: str
    fail: bool = False


VALUES: dict[str, str] = {}


class NoteKv(BaseAdapter):
    """Keeps values in memory; fails on command; undoes by forgetting."""

    name: ClassVar[str] = "notekv"
    actions: ClassVar[Mapping[str, ActionSpec]] = {
        "put": ActionSpec(args=PutArgs, description="put a value", reversible=True),
    }

    async def apply(self, call: Call) -> Result:
        args = call.args
        assert isinstance(args, PutArgs)
        if args.fail:
            raise PermanentError(f"{args.key} refused")
        VALUES[args.key] = args.value
        return Result(changed=True, summary=f"{args.key}={args.value}")

    async def rollback(self, call: Call) -> Result:
        args = call.args
        assert isinstance(args, PutArgs)
        VALUES.pop(args.key, None)
        return Result(changed=True, summary=f"{args.key} forgotten")


registry.register("notekv", NoteKv)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


ALL = (
    "[run-started, intake-stopped, gate-waiting, step-failed, rollback-started, "
    "intake-reopened, run-finished]"
)


def runbook(port: int, steps: str) -> str:
    return f"""
apiVersion: cutbook/v1
name: notify-night
timezone: Asia/Ho_Chi_Minh
window: {{start: "2025-03-14T23:00", end: "2025-03-15T05:00"}}
defaults: {{retries: {{attempts: 1}}}}
secrets: [NOTIFY_TOKEN]
notify:
  - name: ops-channel
    urls: ["json://127.0.0.1:{port}/hook/{{{{ secrets.NOTIFY_TOKEN }}}}"]
    on: {ALL}
targets:
  kv: {{adapter: notekv}}
steps:
{steps}"""


def execute(
    tmp_path: Path, text: str, answer: Answer | None = None
) -> tuple[Session, Outcome | None, list[dict[str, Any]], float]:
    path = tmp_path / "rb.yaml"
    path.write_text(text, encoding="utf-8")
    session = Session(
        load(path), RunSettings(data_dir=tmp_path / "data", clock="virtual", speed=3600)
    )

    async def reply(question: Question) -> Answer:
        assert answer is not None
        return answer

    async def go() -> Outcome | None:
        await session.prepare()
        runner = session.runner_for(LocalBridge(reply if answer else None))
        session.attach_flow_run(None, None)  # as the flow does: the run starts here
        outcome = await runner.run()
        await session.finish(outcome)
        return outcome

    began = time.monotonic()
    outcome = asyncio.run(go())
    took = time.monotonic() - began
    assert session.journal is not None
    assert verify(session.journal.path).ok
    return session, outcome, list(read_records(session.journal.path)), took


NIGHT = """\
  - id: stop-intake
    target: kv
    action: put
    with: {key: intake, value: stopped}
    milestone: intake-stopped
  - id: go-no-go
    approval: {approvers: [ops-lead], timeout: 20m}
    depends_on: [stop-intake]
  - id: migrate
    target: kv
    action: put
    with: {key: schema, value: v2, fail: true}
    depends_on: [go-no-go]
  - id: reopen-intake
    target: kv
    action: put
    with: {key: intake, value: open}
    depends_on: [migrate]
    always: true
    irreversible: true
    milestone: intake-reopened
"""


def test_milestones_reach_the_channel_in_order_and_are_journalled(
    tmp_path: Path, endpoint: Endpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOTIFY_TOKEN", TOKEN)
    session, outcome, records, _ = execute(
        tmp_path, runbook(endpoint.port, NIGHT), Answer(by="ops-lead", approved=True)
    )
    assert outcome == "rolled_back"
    expected = [
        "run-started",
        "intake-stopped",
        "gate-waiting",
        "step-failed",
        "rollback-started",
        "intake-reopened",
        "run-finished",
    ]
    assert endpoint.milestones() == expected
    run_id = session.run_id
    for path, body in endpoint.received:
        assert path == f"/hook/{TOKEN}"  # the secret reached the endpoint, as it must
        assert run_id in body["message"]
    by_milestone = {m: body for m, (_, body) in zip(expected, endpoint.received, strict=True)}
    gate = by_milestone["gate-waiting"]["message"]
    assert f"cutbook approve {run_id} go-no-go --by NAME" in gate
    assert "ops-lead" in gate and "(Asia/Ho_Chi_Minh)" in gate
    assert "migrate" in by_milestone["step-failed"]["message"]
    assert "rolled back" in by_milestone["run-finished"]["title"]

    sent = [r for r in records if r["event"] == "notification.sent"]
    assert [r["milestone"] for r in sent] == expected
    assert all(r["ok"] and r["channel"] == "ops-channel" and r["error"] is None for r in sent)
    assert {r["milestone"]: r["step"] for r in sent}["step-failed"] == "migrate"
    assert records[-1]["event"] == "run.finished"  # every send recorded before the end
    journal_text = Path(str(session.journal.path if session.journal else "")).read_text()
    assert TOKEN not in journal_text
    # The runbook's own text (in run.started) holds the URL's template; nothing else names it.
    rest = json.dumps(records[1:])
    assert "json://" not in rest and f"127.0.0.1:{endpoint.port}" not in rest


def test_a_dead_channel_neither_delays_nor_fails_the_night(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("NOTIFY_TOKEN", TOKEN)
    steps = """\
  - id: stop-intake
    target: kv
    action: put
    with: {key: intake, value: stopped}
    milestone: intake-stopped
"""
    port = closed_port()
    session, outcome, records, took = execute(tmp_path, runbook(port, steps))
    assert outcome == "succeeded"
    assert took < 15
    finished = next(r for r in records if r["event"] == "step.finished")
    assert finished["status"] == "succeeded"
    sent = [r for r in records if r["event"] == "notification.sent"]
    assert [r["milestone"] for r in sent] == ["run-started", "intake-stopped", "run-finished"]
    assert all(r["ok"] is False and r["error"].startswith("url 1: ") for r in sent)
    assert records[-1]["event"] == "run.finished" and records[-1]["outcome"] == "succeeded"
    journal_text = Path(str(session.journal.path if session.journal else "")).read_text()
    assert TOKEN not in journal_text
    out = capsys.readouterr()
    for text in (json.dumps(records[1:]), out.out, out.err):
        assert TOKEN not in text
        assert f"127.0.0.1:{port}" not in text and "json://" not in text


def test_a_url_apprise_cannot_use_is_journalled_not_fatal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOTIFY_TOKEN", TOKEN)
    text = runbook(1, "  - {id: only, milestone: intake-stopped}\n").replace(
        "json://127.0.0.1:1/hook/", "nosuchscheme://"
    )
    _session, outcome, records, _ = execute(tmp_path, text)
    assert outcome == "succeeded"
    sent = [r for r in records if r["event"] == "notification.sent"]
    assert sent and all(not r["ok"] and "url 1" in r["error"] for r in sent)
    assert TOKEN not in json.dumps(records)


def test_a_channel_that_never_answers_holds_up_no_step_and_the_end_only_briefly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOTIFY_TOKEN", TOKEN)
    steps = """\
  - id: stop-intake
    target: kv
    action: put
    with: {key: intake, value: stopped}
    milestone: intake-stopped
"""
    with socket.socket() as silent:  # takes connections, never reads or answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        _session, outcome, records, took = execute(tmp_path, runbook(port, steps))
    assert outcome == "succeeded"
    assert took < FINAL_WAIT_S + 3
    started = next(r for r in records if r["event"] == "step.started")
    finished = next(r for r in records if r["event"] == "step.finished")
    gap = datetime.fromisoformat(finished["ts"]) - datetime.fromisoformat(started["ts"])
    assert gap.total_seconds() < 1  # the step did not wait for the channel
    sent = [r for r in records if r["event"] == "notification.sent"]
    assert [r["milestone"] for r in sent] == ["run-started", "intake-stopped", "run-finished"]
    assert not any(r["ok"] for r in sent)
    assert "still sending" in sent[-1]["error"]
    assert records[-1]["event"] == "run.finished"
