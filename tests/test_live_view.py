"""The live terminal view and the Prefect artifact: what people read during the night.

Row building is checked against hand-computed times (a step that finished 34 minutes
late must say so), attempts against real in-process runs (retries, a fan-out, a
gate), the terminal layout against every size from tiny to wide, and the artifact's
Markdown line by line. The real-terminal check (tmux) is in test_live_view_tmux.py.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import sys
from collections.abc import Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

import pytest
from rich.cells import cell_len
from rich.console import Console

from cutbook import registry
from cutbook.adapter import ActionSpec, Args, BaseAdapter, Call, Result
from cutbook.cli.view import LiveView
from cutbook.clock import VirtualClock
from cutbook.engine.board import board, render_board
from cutbook.engine.local import LocalBridge
from cutbook.engine.runner import Runner
from cutbook.engine.session import RunSettings, Session
from cutbook.engine.state import Answer, Question, RunOptions, RunState, Waiting
from cutbook.engine.view import (
    Delta,
    delta_words,
    markdown_table,
    one_line,
    rows,
    short_delta,
    step_row,
    vs_plan,
)
from cutbook.errors import TransientError
from cutbook.validation import load

# -- a small target system for real runs -----------------------------------------------------


class PutArgs(Args):
    key: str
    flaky: int = 0
    """How many times the first attempts of this call fail with a transient error."""
    note: str = ""


class ViewKv(BaseAdapter):
    """A key-value system that answers with a JSON-ish summary and fails on command."""

    name: ClassVar[str] = "viewkv"
    actions: ClassVar[Mapping[str, ActionSpec]] = {
        "put": ActionSpec(args=PutArgs, description="set a key", reversible=False),
    }
    tries: ClassVar[dict[str, int]] = {}

    async def apply(self, call: Call) -> Result:
        args = call.args
        assert isinstance(args, PutArgs)
        n = self.tries[call.idempotency_key] = self.tries.get(call.idempotency_key, 0) + 1
        if n <= args.flaky:
            raise TransientError("503 from viewkv")
        body = json.dumps({"changed": True, "key": args.key, "note": args.note})
        return Result(changed=True, summary=f"PUT /{args.key} → 200 {body}\nsecond line")


registry.register("viewkv", ViewKv)

HEADER = """
apiVersion: cutbook/v1
name: view
timezone: Asia/Ho_Chi_Minh
window: {start: "2025-03-14T23:00", end: "2025-03-15T05:00"}
defaults: {retries: {attempts: 4, delay: 1s, max_delay: 2s}}
targets:
  kv: {adapter: viewkv}
steps:
"""

NIGHT = """
  - {id: flaky, target: kv, action: put, with: {key: a, flaky: 2}, estimate: 10m}
  - id: fan
    target: kv
    action: put
    for_each: [x, y, z, w]
    with: {key: "{{ item }}", flaky: "{{ 1 if item == 'y' else 0 }}"}
    depends_on: [flaky]
    estimate: 10m
  - id: calm-fan
    target: kv
    action: put
    for_each: [p, q]
    with: {key: "{{ item }}", note: "a | pipe"}
    depends_on: [flaky]
  - id: go-no-go
    approval: {approvers: [ops-lead], timeout: 30m}
    depends_on: [fan, calm-fan]
  - {id: after, target: kv, action: put, with: {key: b}, depends_on: [go-no-go]}
"""


@pytest.fixture(autouse=True)
def fresh_tries() -> None:
    ViewKv.tries.clear()


def execute(tmp_path: Path, steps: str, answer: Answer) -> Runner:
    """A real run in-process (no Prefect): the same engine, a bridge that answers gates."""
    path = tmp_path / "rb.yaml"
    path.write_text(HEADER + steps, encoding="utf-8")
    session = Session(
        load(path), RunSettings(data_dir=tmp_path / "data", clock="virtual", speed=3600)
    )

    async def reply(question: Question) -> Answer:
        return answer

    async def go() -> Runner:
        await session.prepare()
        runner = session.runner_for(LocalBridge(reply))
        await session.finish(await runner.run())
        return runner

    return asyncio.run(go())


class _Recorder:
    def append(self, event: Any, **fields: Any) -> None:
        return None

    async def commit(self, event: Any, **fields: Any) -> None:
        return None


def by_hand(tmp_path: Path, steps: str, now: datetime, **opts: Any) -> RunState:
    """A run's state without running it: times are set by the test, the clock reads ``now``."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "rb.yaml"
    path.write_text(HEADER + steps, encoding="utf-8")
    loaded = load(path)
    clock = VirtualClock(now, speed=1)
    options = RunOptions(run_id="r-1", started_by="alice", clock=clock, **opts)
    return RunState(loaded, {}, _Recorder(), LocalBridge(), options)


def at(hhmm: str, rb_zone: Any, day: int = 14) -> datetime:
    h, m, *s = (int(x) for x in hhmm.split(":"))
    return datetime(2025, 3, day, h, m, s[0] if s else 0, tzinfo=rb_zone)


# -- planned against actual --------------------------------------------------------------------


def test_a_step_that_finished_34_minutes_late_is_not_on_time(tmp_path: Path) -> None:
    run = by_hand(tmp_path, NIGHT, now=datetime(2025, 3, 15, 1, 0).astimezone())
    zone = run.rb.zone
    st = run.states["flaky"]
    st.status = "succeeded"
    st.planned_start, st.planned_finish = at("23:00", zone), at("23:10", zone)
    st.started, st.finished = at("23:00:20", zone), at("23:44", zone)
    row = step_row(run, st, at("23:50", zone))
    assert row.start_delta == Delta(20.0) and row.start_delta.on_time
    assert row.finish_delta == Delta(34 * 60.0) and not row.finish_delta.on_time
    assert vs_plan(row) == "0/+34m"
    assert (delta_words(row.start_delta), delta_words(row.finish_delta)) == (
        "on time",
        "34m late",
    )
    # Early on both ends, and on time on both ends.
    st.started, st.finished = at("22:57:30", zone), at("23:08:59", zone)
    row = step_row(run, st, at("23:50", zone))
    assert (row.start_delta, row.finish_delta) == (Delta(-150.0), Delta(-61.0))
    assert vs_plan(row) == "-2m/-1m"
    assert delta_words(row.start_delta) == "2m30s early"
    st.started, st.finished = at("23:00:59", zone), at("23:09:01", zone)
    assert vs_plan(step_row(run, st, at("23:50", zone))) == "on time"
    # Hours: 1h35m late.
    st.finished = at("00:45", zone, day=15)
    assert short_delta(step_row(run, st, at("01:00", zone, day=15)).finish_delta) == "+1h35m"


def test_a_step_still_running_past_its_planned_finish_is_already_late(tmp_path: Path) -> None:
    run = by_hand(tmp_path, NIGHT, now=datetime(2025, 3, 15, 1, 0).astimezone())
    zone = run.rb.zone
    st = run.states["flaky"]
    st.status = "running"
    st.planned_start, st.planned_finish = at("23:00", zone), at("23:10", zone)
    st.started = at("23:03", zone)
    row = step_row(run, st, at("23:15", zone))
    assert row.start_delta == Delta(180.0)
    assert row.finish_delta == Delta(300.0, at_least=True)
    assert vs_plan(row) == "+3m/≥+5m"
    assert delta_words(row.finish_delta) == "at least 5m late"
    # Before its planned finish nothing is known about the finish yet.
    assert vs_plan(step_row(run, st, at("23:05", zone))) == "+3m/…"
    # A step that has not started by its planned start is late already.
    waiting = run.states["after"]
    waiting.planned_start, waiting.planned_finish = at("23:10", zone), at("23:20", zone)
    assert step_row(run, waiting, at("23:12", zone)).start_delta == Delta(120.0, at_least=True)
    assert step_row(run, waiting, at("23:05", zone)).start_delta is None


# -- attempts, items, gates -----------------------------------------------------------------


def test_attempts_count_applies_not_items_and_gates_say_who(tmp_path: Path) -> None:
    runner = execute(tmp_path, NIGHT, Answer(by="ops-lead", approved=True))
    assert runner.outcome == "succeeded"
    got = {r.step_id: r for r in rows(runner.state)}
    assert got["flaky"].attempts == "3"  # two transient failures, then success
    assert got["fan"].attempts == "+1 retry"  # four items, one retried once: not "5"
    assert (got["fan"].items_done, got["fan"].items_total) == (4, 4)
    assert got["calm-fan"].attempts == "1 each"
    assert (got["calm-fan"].items_done, got["calm-fan"].items_total) == (2, 2)
    assert got["flaky"].items_total is None
    assert got["go-no-go"].attempts == "go"
    assert got["go-no-go"].summary.startswith("go")
    assert got["after"].attempts == "1"
    # Summaries are one line with the JSON body as key=value pairs.
    assert got["flaky"].summary == "PUT /a → 200 changed=true key=a note= second line"
    assert all("\n" not in r.summary and '{"' not in r.summary for r in got.values())


def test_a_rejected_gate_says_no_go_and_from_whom(tmp_path: Path) -> None:
    runner = execute(tmp_path, NIGHT, Answer(by="ops-lead", approved=False, comment="smoke red"))
    got = {r.step_id: r for r in rows(runner.state)}
    assert got["go-no-go"].status == "failed"
    assert got["go-no-go"].attempts == "no-go"
    assert got["go-no-go"].summary == "no-go from ops-lead: smoke red"


def test_a_gate_shows_who_answered_and_until_when_it_waits(tmp_path: Path) -> None:
    run = by_hand(tmp_path, NIGHT, now=datetime(2025, 3, 15, 0, 0).astimezone())
    zone = run.rb.zone
    gate = run.states["go-no-go"]
    assert step_row(run, gate, at("23:00", zone)).summary == "asks ops-lead (within 30m)"
    question = Question(step_id="go-no-go", title="Go?", instructions="", approvers=("ops-lead",))
    run.waiting = Waiting(question, at("23:10", zone), at("23:40", zone))
    gate.status = "running"
    row = step_row(run, gate, at("23:11", zone))
    assert row.attempts == "asking"
    assert row.summary == "waiting for go/no-go from ops-lead until 23:40"
    run.waiting = None
    gate.status, gate.answered_by = "succeeded", "ops-lead"
    row = step_row(run, gate, at("23:12", zone))
    assert (row.attempts, row.summary) == ("go", "go from ops-lead")
    auto = by_hand(tmp_path / "auto", NIGHT, now=at("23:00", zone), auto_approve=True)
    auto.states["go-no-go"].status = "succeeded"
    assert step_row(auto, auto.states["go-no-go"], at("23:12", zone)).summary == (
        "go (auto-approved for alice)"
    )


def test_json_in_summaries_becomes_pairs_even_when_cut_short() -> None:
    assert one_line('POST /x → 201 {"changed":true,"id":1,"title":"A b"}') == (
        "POST /x → 201 changed=true id=1 title=A b"
    )
    cut = one_line('PUT /s → 200 {"name":"e-cargo","intake":"off","config":{"org…[33 more]')
    assert cut.startswith("PUT /s → 200 name=e-cargo intake=off") and '{"' not in cut
    assert one_line("GET /q → 200 [1, 2, 3]") == "GET /q → 200 [3 items]"
    assert one_line("plain\ntext  with   gaps") == "plain text with gaps"
    assert one_line('ready after 30s (200 {"queue":0}) then {"a":[1]} x') == (
        "ready after 30s (200 queue=0) then a=[1] x"
    )
    assert one_line("3 items {not json}") == "3 items {not json}"


# -- the terminal ---------------------------------------------------------------------------

MANY = "".join(
    f"""
  - id: s{i:02d}-with-a-rather-long-identifier-that-goes-on
    target: kv
    action: put
    with: {{key: k{i}, note: "{"a long note " * 8}"}}
    {"for_each: [a, b, c]" if i % 4 == 0 else ""}
"""
    for i in range(30)
)


def _many(tmp_path: Path) -> RunState:
    run = by_hand(tmp_path, MANY, now=datetime(2025, 3, 15, 0, 0).astimezone())
    zone = run.rb.zone
    for i, st in enumerate(run.states.values()):
        st.planned_start = at("23:00", zone) + timedelta(minutes=5 * i)
        st.planned_finish = st.planned_start + timedelta(minutes=5)
        if i < 20:
            st.status = "succeeded"
            st.started = st.planned_start + timedelta(minutes=1)
            st.finished = st.planned_finish + timedelta(minutes=34)
            st.attempts = 1
            st.summary = 'PUT /k → 200 {"changed":true,"note":"' + "long " * 40 + '"}'
    run.states["s20-with-a-rather-long-identifier-that-goes-on"].status = "running"
    run.states["s25-with-a-rather-long-identifier-that-goes-on"].status = "failed"
    run.states["s25-with-a-rather-long-identifier-that-goes-on"].error = "boom\n" * 20
    return run


def _lines(renderable: Any, width: int, height: int) -> list[str]:
    sink = io.StringIO()
    console = Console(file=sink, width=width, height=height, color_system=None)
    console.print(renderable)
    return sink.getvalue().rstrip("\n").split("\n")


@pytest.mark.parametrize(
    ("width", "height"), [(120, 40), (160, 50), (80, 24), (60, 12), (40, 8), (200, 60), (20, 5)]
)
def test_the_live_table_fits_the_terminal_whatever_its_size(
    tmp_path: Path, width: int, height: int
) -> None:
    run = _many(tmp_path)
    lines = _lines(render_board(board(run), width, height), width, height)
    assert max(cell_len(line) for line in lines) <= width
    assert len(lines) <= height - 1
    if height >= 8:
        text = "\n".join(lines)
        # The running and the failed step are shown even when most are cut.
        assert "s20-" in text and "s25-" in text
        if height < 30:  # 30 steps do not fit: the rest is counted
            assert "more (" in text
        assert "✗" in text and "▸" in text


def test_everything_shows_when_it_fits_and_the_header_is_one_line(tmp_path: Path) -> None:
    run = _many(tmp_path)
    lines = _lines(render_board(board(run), 200, 60), 200, 60)
    assert sum(1 for line in lines if "vs plan" in line) == 1
    assert sum(1 for line in lines if "-with-a-rather-long" in line) == 30
    assert not any("more (" in line for line in lines)
    first = next(line for line in lines if "s00-" in line)
    assert "+1m/+34m" in first and "23:00→23:05" in first and "23:01→23:39" in first
    assert "changed=true" in first and '{"' not in first
    assert max(cell_len(line) for line in lines) <= 200


def test_the_live_view_stays_off_a_pipe(tmp_path: Path) -> None:
    run = _many(tmp_path)
    sink = io.StringIO()
    for view in (
        LiveView(Console(file=sink, width=80), stdout_is_terminal=True),
        LiveView(Console(file=sink, width=80, force_terminal=True), stdout_is_terminal=False),
    ):
        view.run_started(run, None)
        assert view.live is None
        view.run_changed(run)
        view.run_finished(run, "succeeded")
    assert sink.getvalue() == ""


def test_the_live_view_redraws_in_place_on_a_terminal(tmp_path: Path) -> None:
    run = _many(tmp_path)
    sink = io.StringIO()
    console = Console(file=sink, width=100, height=30, force_terminal=True, color_system=None)
    view = LiveView(console, refresh_per_second=50, stdout_is_terminal=True)
    view.run_started(run, None)
    for st in run.states.values():
        st.status = "succeeded"
        view.run_changed(run)
        view.live.refresh()  # type: ignore[union-attr]
    view.run_finished(run, "succeeded")
    assert view.live is None
    out = sink.getvalue()
    # Each redraw goes back over the previous one (cursor up), never below it.
    assert "\x1b[1A" in out and "\x1b[2K" in out
    assert "30/30 steps done" in out


def test_log_lines_go_above_the_table_not_through_it(tmp_path: Path) -> None:
    """Any logger writing to the terminal (Prefect's too) writes through the live view
    while it runs, and gets its stream back afterwards."""
    run = _many(tmp_path)
    logger = logging.getLogger("prefect.live-view-test")
    handler = logging.StreamHandler(sys.stderr)
    logger.addHandler(handler)
    logger.propagate = False
    sink = io.StringIO()
    console = Console(file=sink, width=100, height=30, force_terminal=True, color_system=None)
    view = LiveView(console, refresh_per_second=50, stdout_is_terminal=True)
    try:
        view.run_started(run, None)
        assert handler.stream is not sys.stderr
        logger.warning("the Prefect API is slow")
        view.run_changed(run)
        view.live.refresh()  # type: ignore[union-attr]
        view.run_finished(run, "succeeded")
        assert handler.stream is sys.stderr
    finally:
        logger.removeHandler(handler)
    out = sink.getvalue()
    assert "the Prefect API is slow" in out
    # The table comes back after the line: its last frame follows the log line.
    assert out.rindex("vs plan") > out.index("the Prefect API is slow")


# -- the Prefect artifact -------------------------------------------------------------------


def test_the_artifact_has_start_finish_attempts_items_and_gates(tmp_path: Path) -> None:
    runner = execute(tmp_path, NIGHT, Answer(by="ops-lead", approved=True))
    md = markdown_table(runner.state)
    lines = md.splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith("| step |"))
    assert lines[head] == (
        "| step | status | planned start → finish | actual start → finish | start vs plan "
        "| finish vs plan | attempts | items | summary |"
    )
    table = {line.split(" | ")[0][2:]: line for line in lines[head + 2 :] if line.startswith("|")}
    assert set(table) == {"flaky", "fan", "calm-fan", "go-no-go", "after"}
    cells = {k: [c.strip() for c in v.strip("|").split(" | ")] for k, v in table.items()}
    assert all(len(c) == 9 for c in cells.values())
    assert cells["flaky"][6] == "3"
    assert (cells["fan"][6], cells["fan"][7]) == ("+1 retry", "4/4 (100%)")
    assert (cells["calm-fan"][6], cells["calm-fan"][7]) == ("1 each", "2/2 (100%)")
    assert cells["go-no-go"][6] == "go" and cells["go-no-go"][8].startswith("go")
    assert cells["flaky"][3].count("→") == 1 and cells["flaky"][2].count("→") == 1
    # Rehearsal work takes seconds where the plan says minutes: finished early, in words.
    assert cells["flaky"][5].endswith("early")
    assert "a \\| pipe" in cells["calm-fan"][8]
    assert not any('{"' in line for line in lines)
    assert "5/5 steps done" in md


def test_the_artifact_says_a_late_finish_is_late(tmp_path: Path) -> None:
    run = by_hand(tmp_path, NIGHT, now=datetime(2025, 3, 15, 1, 0).astimezone())
    zone = run.rb.zone
    st = run.states["flaky"]
    st.status, st.attempts = "succeeded", 1
    st.planned_start, st.planned_finish = at("23:00", zone), at("23:10", zone)
    st.started, st.finished = at("23:00", zone), at("23:44", zone)
    st.summary = "x" * 500
    row = next(line for line in markdown_table(run).splitlines() if line.startswith("| flaky "))
    cells = [c.strip() for c in row.strip("|").split(" | ")]
    assert cells[2:6] == ["23:00:00 → 23:10:00", "23:00:00 → 23:44:00", "on time", "34m late"]
    assert len(cells[8]) == 100 and cells[8].endswith("…")
