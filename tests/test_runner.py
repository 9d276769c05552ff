"""The runner's semantics, in-process and fast: no Prefect, no network.

A small in-memory adapter stands in for a target system (as httpx's
MockTransport stands in for a server): it really keeps state, counts
applications per idempotency key, and fails on command.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

import pytest

from cutbook import registry
from cutbook.adapter import ActionSpec, Args, BaseAdapter, Call, Result
from cutbook.engine.local import LocalBridge
from cutbook.engine.observe import RunObserver
from cutbook.engine.runner import Runner
from cutbook.engine.session import RunSettings, Session
from cutbook.engine.state import Answer, Outcome, Question, RunState
from cutbook.errors import PermanentError, TransientError
from cutbook.journal import read_records, verify
from cutbook.validation import load


class SetArgs(Args):
    key: str
    value: str
    fail: tuple[str, ...] = ()
    """Per attempt: "transient", "permanent" or "ok"; after the list, always ok."""


class GetArgs(Args):
    key: str
    expect: str | None = None


class Store:
    def __init__(self) -> None:
        self.values: dict[str, str] = {}
        self.applied: dict[str, int] = {}
        self.calls: list[tuple[str, str, datetime]] = []


STORE = Store()


class KvAdapter(BaseAdapter):
    """A key-value system: set (reversible) and get (read-only)."""

    name: ClassVar[str] = "kv"
    actions: ClassVar[Mapping[str, ActionSpec]] = {
        "set": ActionSpec(args=SetArgs, description="set a key", reversible=True),
        "get": ActionSpec(args=GetArgs, description="read a key", mutating=False),
    }

    async def apply(self, call: Call) -> Result:
        STORE.calls.append((call.action, call.step_id, call.clock.now()))
        if call.action == "get":
            args = call.args
            assert isinstance(args, GetArgs)
            got = STORE.values.get(args.key)
            if args.expect is not None and got != args.expect:
                raise PermanentError(f"{args.key} is {got!r}, expected {args.expect!r}")
            return Result(summary=f"{args.key}={got}", output={"value": got})
        args = call.args
        assert isinstance(args, SetArgs)
        attempt = sum(1 for c in STORE.calls if c[1] == call.step_id and c[0] == "set")
        if attempt <= len(args.fail):
            mode = args.fail[attempt - 1]
            if mode == "transient":
                raise TransientError("503 from kv")
            if mode == "permanent":
                raise PermanentError("409 from kv")
        before = STORE.values.get(args.key)
        if before == args.value:
            return Result(changed=False, summary="already set", output={"before": before})
        STORE.applied[call.idempotency_key] = STORE.applied.get(call.idempotency_key, 0) + 1
        STORE.values[args.key] = args.value
        return Result(
            changed=True, summary=f"{args.key}: {before} → {args.value}", output={"before": before}
        )

    async def rollback(self, call: Call) -> Result:
        args = call.args
        assert isinstance(args, SetArgs) and call.prior is not None
        before = call.prior.output.get("before")
        if before is None:
            STORE.values.pop(args.key, None)
        else:
            STORE.values[args.key] = str(before)
        STORE.calls.append(("rollback", call.step_id, call.clock.now()))
        return Result(changed=True, summary=f"{args.key} back to {before}")


registry.register("kv", KvAdapter)  # type: ignore[arg-type]

HEADER = """
apiVersion: cutbook/v1
name: semantics
timezone: Asia/Ho_Chi_Minh
window: {start: "2025-03-14T23:00", end: "2025-03-15T05:00"}
defaults: {retries: {attempts: 3, delay: 1s, max_delay: 2s}}
targets:
  kv: {adapter: kv}
steps:
"""


@pytest.fixture(autouse=True)
def fresh_store() -> None:
    STORE.__init__()  # type: ignore[misc]


def execute(
    tmp_path: Path, steps: str, answer: Answer | None = None, speed: float = 3600
) -> tuple[Runner, list[dict[str, Any]], LocalBridge]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "rb.yaml"
    path.write_text(HEADER + steps, encoding="utf-8")
    loaded = load(path)
    session = Session(loaded, RunSettings(data_dir=tmp_path / "data", clock="virtual", speed=speed))

    async def reply(question: Question) -> Answer:
        assert answer is not None
        return answer

    bridge = LocalBridge(reply if answer else None)

    async def go() -> Runner:
        await session.prepare()
        runner = session.runner_for(bridge)
        outcome = await runner.run()
        await session.finish(outcome)
        return runner

    runner = asyncio.run(go())
    assert session.journal is not None
    assert verify(session.journal.path).ok
    return runner, list(read_records(session.journal.path)), bridge


def statuses(runner: Runner) -> dict[str, str]:
    return {sid: st.status for sid, st in runner.states.items()}


def test_a_step_never_starts_before_its_at(tmp_path: Path) -> None:
    runner, records, _ = execute(
        tmp_path,
        """
  - {id: early, target: kv, action: set, with: {key: a, value: "1"}}
  - {id: timed, target: kv, action: set, with: {key: b, value: "1"}, at: "23:40",
     depends_on: [early]}
""",
    )
    assert runner.outcome == "succeeded"
    started = next(c[2] for c in STORE.calls if c[1] == "timed")
    assert started >= runner.rb.resolve_at("23:40")
    waits = [r for r in records if r["event"] == "step.waiting"]
    assert [w["step"] for w in waits] == ["timed"]


def test_only_transient_errors_are_retried(tmp_path: Path) -> None:
    runner, records, _ = execute(
        tmp_path,
        """
  - {id: flaky, target: kv, action: set, with: {key: a, value: "1", fail: [transient, transient]}}
""",
    )
    assert runner.outcome == "succeeded" and runner.states["flaky"].attempts == 3
    attempts = [r for r in records if r["event"] == "step.attempt"]
    assert [a["attempt"] for a in attempts] == [1, 2] and all(
        a["gave_up"] is None for a in attempts
    )

    STORE.__init__()  # type: ignore[misc]
    runner, records, _ = execute(
        tmp_path / "2",
        """
  - {id: broken, target: kv, action: set, with: {key: a, value: "1", fail: [permanent]}}
""",
    )
    assert runner.outcome == "rolled_back" and runner.states["broken"].attempts == 1
    assert not [r for r in records if r["event"] == "step.attempt"]


def test_retries_stop_at_the_attempt_limit(tmp_path: Path) -> None:
    runner, records, _ = execute(
        tmp_path,
        """
  - id: down
    target: kv
    action: set
    with: {key: a, value: "1", fail: [transient, transient, transient, transient]}
""",
    )
    assert runner.states["down"].status == "failed" and runner.states["down"].attempts == 3
    last = [r for r in records if r["event"] == "step.attempt"][-1]
    assert last["gave_up"] == "gave up after 3 attempts"


def test_rollback_undoes_changed_steps_newest_first_and_always_runs(tmp_path: Path) -> None:
    STORE.values["pre"] = "same"
    runner, records, _ = execute(
        tmp_path,
        """
  - {id: one, target: kv, action: set, with: {key: a, value: "1"}}
  - {id: unchanged, target: kv, action: set, with: {key: pre, value: same}, depends_on: [one]}
  - {id: two, target: kv, action: set, with: {key: b, value: "2"}, depends_on: [unchanged]}
  - {id: boom, target: kv, action: set, with: {key: c, value: "3", fail: [permanent]},
     depends_on: [two]}
  - {id: after, target: kv, action: set, with: {key: d, value: "4"}, depends_on: [boom]}
  - {id: cleanup, target: kv, action: set, with: {key: e, value: "5"}, always: true,
     irreversible: true, depends_on: [after]}
""",
    )
    assert runner.outcome == "rolled_back"
    rolled = [c[1] for c in STORE.calls if c[0] == "rollback"]
    assert rolled == ["two", "one"], "newest first; 'unchanged' changed nothing to undo"
    assert STORE.values == {"pre": "same", "e": "5"}
    assert statuses(runner)["after"] == "pending"
    assert records[-1]["outcome"] == "rolled_back"


def test_continue_skips_only_the_dependants(tmp_path: Path) -> None:
    runner, _, _ = execute(
        tmp_path,
        """
  - {id: bad, target: kv, action: set, with: {key: a, value: "1", fail: [permanent]},
     on_failure: continue}
  - {id: child, target: kv, action: set, with: {key: b, value: "1"}, depends_on: [bad]}
  - {id: other, target: kv, action: set, with: {key: c, value: "1"}}
""",
    )
    assert statuses(runner) == {"bad": "failed", "child": "skipped", "other": "succeeded"}
    assert runner.outcome == "failed"


def test_a_rejected_gate_rolls_back(tmp_path: Path) -> None:
    runner, records, bridge = execute(
        tmp_path,
        """
  - {id: change, target: kv, action: set, with: {key: a, value: "1"}}
  - {id: gate, approval: {approvers: [ops-lead]}, depends_on: [change]}
  - {id: more, target: kv, action: set, with: {key: b, value: "1"}, depends_on: [gate]}
""",
        answer=Answer(by="ops-lead", approved=False, comment="not today"),
    )
    assert [q.step_id for q in bridge.questions] == ["gate"]
    assert runner.outcome == "rolled_back" and STORE.values == {}
    answered = next(r for r in records if r["event"] == "gate.answered")
    assert (answered["by"], answered["approved"], answered["comment"]) == (
        "ops-lead",
        False,
        "not today",
    )


def test_fan_out_items_are_keyed_and_tracked(tmp_path: Path) -> None:
    runner, records, _ = execute(
        tmp_path,
        """
  - id: each
    target: kv
    action: set
    for_each: [north, south, east]
    concurrency: 2
    with: {key: "{{ item }}", value: "on"}
    verify: {action: get, with: {key: "{{ item }}", expect: "on"}}
""",
    )
    assert runner.outcome == "succeeded"
    assert STORE.values == {"north": "on", "south": "on", "east": "on"}
    outcomes = [r["item"] for r in records if r["event"] == "step.outcome"]
    assert sorted(outcomes) == ["east", "north", "south"]
    assert len({k for k in STORE.applied}) == 3 and set(STORE.applied.values()) == {1}


def test_a_failed_verify_fails_the_step(tmp_path: Path) -> None:
    runner, _, _ = execute(
        tmp_path,
        """
  - id: set-a
    target: kv
    action: set
    with: {key: a, value: "1"}
    verify: {action: get, with: {key: a, expect: "2"}}
    on_failure: abort
""",
    )
    assert runner.states["set-a"].status == "failed"
    assert "verification failed" in (runner.states["set-a"].error or "")
    assert runner.outcome == "aborted" and STORE.values == {"a": "1"}, "abort does not roll back"


def test_only_a_listed_approver_can_answer_a_gate(tmp_path: Path) -> None:
    answers = iter([Answer(by="intern", approved=True), Answer(by="ops-lead", approved=True)])

    async def reply(question: Question) -> Answer:
        return next(answers)

    path = tmp_path / "rb.yaml"
    path.write_text(
        HEADER
        + """
  - {id: gate, approval: {approvers: [ops-lead]}}
  - {id: change, target: kv, action: set, with: {key: a, value: "1"}, depends_on: [gate]}
""",
        encoding="utf-8",
    )
    session = Session(load(path), RunSettings(data_dir=tmp_path / "d", clock="virtual"))
    bridge = LocalBridge(reply)

    async def go() -> Runner:
        await session.prepare()
        runner = session.runner_for(bridge)
        await session.finish(await runner.run())
        return runner

    runner = asyncio.run(go())
    assert runner.outcome == "succeeded" and len(bridge.questions) == 2
    assert session.journal is not None
    refused = [r for r in read_records(session.journal.path) if r["event"] == "gate.refused"]
    assert [r["by"] for r in refused] == ["intern"]


def test_observers_see_the_run_from_prepared_to_finished(tmp_path: Path) -> None:
    seen: list[tuple[str, object]] = []

    class Watcher(RunObserver):
        def run_prepared(self, run_id: str) -> None:
            seen.append(("prepared", run_id))

        def run_started(self, run: RunState, where: str | None) -> None:
            seen.append(("started", where))

        def run_changed(self, run: RunState) -> None:
            running = [sid for sid, st in run.states.items() if st.status == "running"]
            seen.append(("changed", tuple(running)))

        def run_finished(self, run: RunState, outcome: Outcome | None) -> None:
            seen.append(("finished", outcome))

    path = tmp_path / "rb.yaml"
    path.write_text(
        HEADER
        + """
  - {id: one, target: kv, action: set, with: {key: a, value: "1"}}
  - {id: two, target: kv, action: set, with: {key: b, value: "1"}, depends_on: [one]}
""",
        encoding="utf-8",
    )
    session = Session(load(path), RunSettings(data_dir=tmp_path / "d", clock="virtual"))
    session.observers.append(Watcher())

    async def go() -> None:
        await session.prepare()
        runner = session.runner_for(LocalBridge())
        session.attach_flow_run(None, "where-to-look")
        await session.finish(await runner.run())

    asyncio.run(go())
    assert seen[:2] == [("prepared", session.run_id), ("started", "where-to-look")]
    assert seen[-1] == ("finished", "succeeded")
    changes = [what for kind, what in seen[2:-1] if kind == "changed"]
    assert ("one",) in changes and ("two",) in changes, "each step is seen while it runs"
    assert changes[-1] == (), "and once more when it is over"


def test_on_the_real_clock_nothing_starts_before_the_window_opens(tmp_path: Path) -> None:
    """A run started early waits for its window, visibly, even for steps without an `at`."""
    path = tmp_path / "rb.yaml"
    path.write_text(
        HEADER + '  - {id: first, target: kv, action: set, with: {key: a, value: "1"}}\n',
        encoding="utf-8",
    )
    loaded = load(path)
    opens = datetime.now(loaded.runbook.zone).replace(microsecond=0) + timedelta(seconds=3)
    session = Session(loaded, RunSettings(data_dir=tmp_path / "data", clock="real", start=opens))

    async def go() -> Runner:
        await session.prepare()
        runner = session.runner_for(LocalBridge())
        await session.finish(await runner.run())
        return runner

    runner = asyncio.run(go())
    assert runner.outcome == "succeeded"
    started = next(c[2] for c in STORE.calls if c[1] == "first")
    assert started >= opens
    assert session.journal is not None
    waits = [r for r in read_records(session.journal.path) if r["event"] == "step.waiting"]
    assert [(w["step"], datetime.fromisoformat(w["until"])) for w in waits] == [("first", opens)]
