"""The deadline guard against the simulated estate, on the rehearsal clock.

One small night: stop intake, switch the catalogue, a step that runs far past its
estimate, one more change, then reopen intake (always). Each guard path is a run:
nobody answers (no-go at the deadline, rolled back inside the window), a go (the
decision to overrun is journalled), --auto-approve (takes the default, no-go) and a
night on plan (no alarm at all).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from cutbook.engine.local import LocalBridge
from cutbook.engine.session import RunSettings, Session
from cutbook.engine.state import Answer, Question
from cutbook.journal import read_records, verify
from cutbook.validation import load
from cutbook_simulator.process import SimulatorProcess
from notify_support import Endpoint
from notify_support import endpoint as endpoint

WINDOW_END = datetime.fromisoformat("2025-03-15T05:00+07:00")


@pytest.fixture
def estate(sim: SimulatorProcess) -> Iterator[SimulatorProcess]:
    sim.reset()
    yield sim


def night(url: str, slow: str, notify: str = "") -> str:
    """Planned 23:00 → 00:15; ``slow`` is how long the slow step really takes."""
    return f"""{notify}
apiVersion: cutbook/v1
name: guarded-night
timezone: Asia/Ho_Chi_Minh
window: {{start: "2025-03-14T23:00", end: "2025-03-15T05:00"}}
defaults: {{retries: {{attempts: 1}}}}
guard: {{margin: 10m, answer_within: 15m, approvers: [ops-lead]}}
targets:
  vnaccs: {{adapter: http, base_url: "{url}/vnaccs"}}
  catalogue: {{adapter: http, base_url: "{url}/catalogue"}}
  pause: {{adapter: wait}}
steps:
  - id: stop-intake
    target: vnaccs
    action: post
    with: {{path: /intake/stop}}
    rollback: {{action: post, with: {{path: /intake/start}}, estimate: 2m}}
    estimate: 2m
  - id: update-catalogue
    target: catalogue
    action: put
    with: {{path: /version, json: {{version: "2025"}}}}
    rollback: {{action: put, with: {{path: /version, json: {{version: "2024"}}}}, estimate: 10m}}
    depends_on: [stop-intake]
    estimate: 10m
  - id: slow-step
    target: pause
    action: sleep
    with: {{duration: {slow}}}
    depends_on: [update-catalogue]
    estimate: 30m
  - id: after-slow
    target: catalogue
    action: get
    with: {{path: /version}}
    depends_on: [slow-step]
    estimate: 30m
  - id: reopen-intake
    target: vnaccs
    action: post
    with: {{path: /intake/start}}
    depends_on: [after-slow]
    always: true
    irreversible: true
    estimate: 3m
"""


def rehearse(
    tmp_path: Path, text: str, *, answer: Answer | None = None, auto: bool = False
) -> tuple[str | None, list[dict[str, Any]], list[Question]]:
    path = tmp_path / "night.yaml"
    path.write_text(text, encoding="utf-8")
    session = Session(
        load(path),
        RunSettings(data_dir=tmp_path / "data", clock="virtual", speed=3600, auto_approve=auto),
    )

    async def reply(question: Question) -> Answer:
        if answer is None:
            await asyncio.Event().wait()  # nobody is there: only the deadline ends this
        assert answer is not None
        return answer

    bridge = LocalBridge(reply)

    async def go() -> str | None:
        await session.prepare()
        runner = session.runner_for(bridge)
        session.attach_flow_run(None, None)
        outcome = await runner.run()
        await session.finish(outcome)
        return outcome

    outcome = asyncio.run(go())
    assert session.journal is not None
    assert verify(session.journal.path).ok
    return outcome, list(read_records(session.journal.path)), bridge.questions


def events(records: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [r for r in records if r["event"] == name]


def finished_at(records: list[dict[str, Any]], step: str) -> datetime:
    (rec,) = [r for r in events(records, "step.finished") if r["step"] == step]
    return datetime.fromisoformat(rec["finished"])


def estate_state(sim: SimulatorProcess) -> tuple[str, str]:
    intake = httpx.get(f"{sim.url}/vnaccs/intake").json()["state"]
    version = httpx.get(f"{sim.url}/catalogue/version").json()["version"]
    return intake, version


def test_nobody_answers_so_the_guard_rolls_back_inside_the_window(
    estate: SimulatorProcess, tmp_path: Path
) -> None:
    # The slow step would end at 05:42; with 33m still to go the forecast passes 05:00
    # at 04:27. A no-go must come by 04:35 (05:00 - 10m margin - 3m always - 12m
    # rollback), nobody answers, and the run rolls back from there: the sleeping step
    # gives way instead of holding the rollback past the window.
    outcome, records, asked = rehearse(tmp_path, night(estate.url, "6h30m"))
    assert outcome == "rolled_back"
    (decision,) = events(records, "guard.decision")
    assert decision["alarm"] == "overrun" and decision["decision"] == "no-go"
    assert decision["by"] == "timeout"
    asked_at = datetime.fromisoformat(decision["asked_at"])
    deadline = datetime.fromisoformat(decision["deadline"])
    assert datetime.fromisoformat(decision["forecast"]["finish"]) > WINDOW_END
    assert deadline <= datetime.fromisoformat("2025-03-15T04:35+07:00")
    assert asked_at < deadline
    assert [q.kind for q in asked] == ["guard"] and asked[0].approvers == ("ops-lead",)
    # The waiting step gave way; what changed was undone, newest first; intake reopened
    # before the window ended.
    slow = next(r for r in events(records, "step.finished") if r["step"] == "slow-step")
    assert slow["status"] == "failed" and "rolling back" in slow["error"]
    undone = [r["step"] for r in events(records, "step.outcome") if r.get("phase") == "rollback"]
    assert undone == ["update-catalogue", "stop-intake"]
    assert finished_at(records, "reopen-intake") < WINDOW_END
    assert estate_state(estate) == ("open", "2024")
    forecasts = events(records, "guard.forecast")
    assert forecasts[0]["reason"] == "run started"
    assert any(f["reason"].startswith("step stop-intake") for f in forecasts)
    assert all(set(f) >= {"finish", "slack_s", "point_of_no_return"} for f in forecasts)


def test_a_go_overruns_as_a_journalled_decision(estate: SimulatorProcess, tmp_path: Path) -> None:
    go = Answer(by="ops-lead", approved=True, comment="finish the certificates")
    outcome, records, _ = rehearse(tmp_path, night(estate.url, "5h30m"), answer=go)
    assert outcome == "succeeded"
    decisions = events(records, "guard.decision")
    assert decisions and all(d["decision"] == "go" and d["by"] == "ops-lead" for d in decisions)
    assert decisions[0]["comment"] == "finish the certificates"
    assert all(datetime.fromisoformat(d["forecast"]["finish"]) > WINDOW_END for d in decisions)
    assert events(records, "rollback.started") == []  # it went on, as chosen
    assert estate_state(estate) == ("open", "2025")


def test_auto_approve_does_not_answer_the_guard(
    estate: SimulatorProcess, tmp_path: Path, endpoint: Endpoint
) -> None:
    channel = f"notify: [{{urls: ['json://127.0.0.1:{endpoint.port}/hook'], on: [guard-alarm]}}]\n"
    text = night(estate.url, "6h30m", notify=channel)
    outcome, records, asked = rehearse(tmp_path, text, auto=True)
    assert outcome == "rolled_back"
    assert asked == []  # nobody was asked: a rehearsal takes the default
    (decision,) = events(records, "guard.decision")
    assert decision["decision"] == "no-go" and decision["by"] == "default"
    answered = [r for r in events(records, "gate.answered") if r["step"] == "guard"]
    assert answered and answered[0]["auto"] is True and answered[0]["approved"] is False
    assert finished_at(records, "reopen-intake") < WINDOW_END
    assert estate_state(estate) == ("open", "2024")
    # People were told, with the forecast and the way to answer.
    assert endpoint.milestones() == ["guard-alarm"]
    body = endpoint.received[0][1]["message"]
    assert "Forecast finish" in body and "cutbook approve" in body and " guard " in body
    (sent,) = events(records, "notification.sent")
    assert sent["milestone"] == "guard-alarm" and sent["ok"] is True


def test_a_night_on_plan_raises_no_alarm(estate: SimulatorProcess, tmp_path: Path) -> None:
    outcome, records, asked = rehearse(tmp_path, night(estate.url, "20m"), auto=True)
    assert outcome == "succeeded"
    assert events(records, "guard.decision") == [] and asked == []
    forecasts = events(records, "guard.forecast")
    assert len(forecasts) >= 5  # the start and every step that settled
    assert all(f["slack_s"] > 0 for f in forecasts)
    assert estate_state(estate) == ("open", "2025")


def test_a_no_go_stops_a_fan_out_between_items(estate: SimulatorProcess, tmp_path: Path) -> None:
    # Forty offices planned at 2m each (80m) really take 10m each (6h40m): the guard's
    # default no-go must stop the fan-out instead of letting every office run first.
    text = (
        night(estate.url, "1m")
        .replace(
            """    target: pause
    action: sleep
    with: {duration: 1m}""",
            """    target: pause
    action: sleep
    for_each: "{{ range(40) | list }}"
    concurrency: 1
    with: {duration: 10m}""",
        )
        .replace("estimate: 30m\n  - id: after-slow", "estimate: 2m\n  - id: after-slow")
    )
    outcome, records, _ = rehearse(tmp_path, text, auto=True)
    assert outcome == "rolled_back"
    (decision,) = events(records, "guard.decision")
    assert decision["decision"] == "no-go"
    slow = next(r for r in events(records, "step.finished") if r["step"] == "slow-step")
    assert slow["status"] == "failed"
    # The rate of the first items (10m each, not 2m) forecast the overrun long before
    # the estimate ran out: the alarm came after a few offices, not after 32.
    done = int(re.search(r"\((\d+) done\)", slow["error"]).group(1))  # type: ignore[union-attr]
    assert 0 < done <= 3, slow["error"]
    first = events(records, "guard.forecast")[0]
    assert datetime.fromisoformat(decision["asked_at"]) < datetime.fromisoformat(
        "2025-03-15T00:00+07:00"
    ), first
    assert finished_at(records, "reopen-intake") < WINDOW_END
    assert estate_state(estate) == ("open", "2024")
