"""The rehearsal clock: doing takes real time, waiting is skipped.

Unit tests of :class:`~cutbook.clock.VirtualClock`'s accounting (who is busy,
when it may skip, the hand-off between tasks), then whole rehearsals in-process
against the simulator over loopback. Bounds are generous: a slow machine makes
runs slower, never makes skipped time look real.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from cutbook.clock import RealClock, VirtualClock, sleep_until
from cutbook.engine.local import LocalBridge
from cutbook.engine.session import RunSettings, Session
from cutbook.journal import read_records, summarize, verify
from cutbook.validation import load
from cutbook_simulator.process import SimulatorProcess

T = TypeVar("T")
ORIGIN = datetime(2025, 3, 14, 16, 0, tzinfo=UTC)
HOUR = 3600.0


def run(main: Callable[[], Awaitable[T]], limit: float = 30.0) -> T:
    """Run one test's coroutine with a hard real-time limit (a hang fails, not blocks)."""

    async def bounded() -> T:
        return await asyncio.wait_for(main(), limit)

    return asyncio.run(bounded())


def since(clock: VirtualClock, start: datetime) -> float:
    return (clock.now() - start).total_seconds()


# -- unit: the clock on its own ---------------------------------------------------


def test_a_lone_six_hour_sleep_is_skipped() -> None:
    clock = VirtualClock(ORIGIN, speed=1_000_000)

    async def main() -> float:
        started = time.perf_counter()
        await clock.sleep(6 * HOUR)
        return time.perf_counter() - started

    wall = run(main)
    assert wall < 1.0
    assert 6 * HOUR <= since(clock, ORIGIN) < 6 * HOUR + 1.0


def test_at_speed_one_a_wait_is_plain_real_time() -> None:
    clock = VirtualClock(ORIGIN, speed=1)

    async def main() -> float:
        started = time.perf_counter()
        await clock.sleep(0.2)
        return time.perf_counter() - started

    assert 0.19 <= run(main) < 2.0
    assert 0.2 <= since(clock, ORIGIN) < 2.0


def test_work_counts_at_real_time_even_with_a_timer_pending() -> None:
    clock = VirtualClock(ORIGIN, speed=1_000_000)

    async def far() -> None:
        await clock.sleep(100 * HOUR)

    async def main() -> float:
        with clock.participate("test"):
            sleeper = clock.spawn(far())
            await asyncio.sleep(0.01)  # the sleeper is now waiting on its timer
            start = clock.now()
            await asyncio.sleep(0.2)  # I/O, not a clock wait: this participant is busy
            worked = since(clock, start)
            sleeper.cancel()
            clock.reap(sleeper)
            return worked

    worked = run(main)
    assert 0.19 <= worked < 1.0, "0.2 s of work must not count 0.2 * speed"


def test_two_participants_one_waits_one_works() -> None:
    clock = VirtualClock(ORIGIN, speed=1_000_000)

    async def sleeper() -> float:
        start = clock.now()
        await clock.sleep(HOUR)
        return since(clock, start)

    async def worker() -> float:
        start = clock.now()
        await asyncio.sleep(0.3)
        return since(clock, start)

    async def main() -> list[float]:
        with clock.participate("test"):
            return await clock.gather([sleeper(), worker()])

    started = time.perf_counter()
    slept, worked = run(main)
    assert time.perf_counter() - started < 5.0
    assert 0.29 <= worked < 1.3
    assert HOUR <= slept < HOUR + 2.0
    assert HOUR <= since(clock, ORIGIN) < HOUR + 2.0
    assert clock.busy == 0


def test_without_a_timer_nothing_is_skipped() -> None:
    clock = VirtualClock(ORIGIN, speed=1_000_000)

    async def main() -> None:
        with clock.participate("test"):
            done = asyncio.Event()
            asyncio.get_running_loop().call_later(0.2, done.set)  # someone else's doing
            async with clock.idle():  # everyone waits, but on no timer
                await done.wait()

    run(main)
    assert 0.19 <= since(clock, ORIGIN) < 1.0


def test_hand_offs_in_a_chain_never_skip() -> None:
    """A chain of steps, each started by the loop once the previous one ended, while
    a third participant waits for a far timer: the count never touches zero."""
    clock = VirtualClock(ORIGIN, speed=1_000_000)
    links = 60

    async def link() -> None:
        for _ in range(3):
            await asyncio.sleep(0)  # engine work in several slices
        await asyncio.sleep(0.001)  # a little I/O

    async def far() -> None:
        await clock.sleep(1000 * HOUR)

    async def main() -> float:
        with clock.participate("scheduler"):
            sleeper = clock.spawn(far())
            started = time.perf_counter()
            for _ in range(links):
                task = clock.spawn(link())
                async with clock.idle():
                    await asyncio.wait([task])
                clock.reap(task)
            wall = time.perf_counter() - started
            assert not sleeper.done()
            sleeper.cancel()
            clock.reap(sleeper)
            return wall

    wall = run(main)
    assert since(clock, ORIGIN) < wall + 1.0, "a hand-off let the clock skip"


def test_a_chain_of_short_waits_is_skipped_but_never_past_the_next_timer() -> None:
    clock = VirtualClock(ORIGIN, speed=1_000_000)

    async def link() -> None:
        await clock.sleep(60)  # a minute of back-off: skipped, exactly

    async def far() -> None:
        await clock.sleep(1000 * HOUR)

    async def main() -> None:
        with clock.participate("scheduler"):
            sleeper = clock.spawn(far())
            for _ in range(30):
                task = clock.spawn(link())
                async with clock.idle():
                    await asyncio.wait([task])
                clock.reap(task)
            assert not sleeper.done()
            sleeper.cancel()
            clock.reap(sleeper)

    run(main)
    assert 30 * 60 <= since(clock, ORIGIN) < 30 * 60 + 5.0


def test_gather_hands_the_last_child_back_to_the_parent() -> None:
    clock = VirtualClock(ORIGIN, speed=1_000_000)

    async def item(delay: float) -> None:
        await asyncio.sleep(delay)

    async def far() -> None:
        await clock.sleep(1000 * HOUR)

    async def main() -> None:
        with clock.participate("step"):
            sleeper = clock.spawn(far())
            for _ in range(20):
                await clock.gather([item(0.001), item(0.002), item(0)])
            sleeper.cancel()
            clock.reap(sleeper)

    run(main)
    assert since(clock, ORIGIN) < 5.0


def test_idle_with_a_deadline_stops_skipping_there() -> None:
    """A question to a person: waiting, but virtual time never runs past its deadline."""
    clock = VirtualClock(ORIGIN, speed=1_000_000)

    async def far() -> None:
        await clock.sleep(1000 * HOUR)

    async def main() -> None:
        with clock.participate("asker"):
            sleeper = clock.spawn(far())
            async with clock.idle(until=60):
                await asyncio.sleep(0.3)  # the person takes a while
            sleeper.cancel()
            clock.reap(sleeper)

    run(main)
    assert 60 <= since(clock, ORIGIN) < 62.0


def test_sleep_until_is_exact_and_can_be_stopped() -> None:
    clock = VirtualClock(ORIGIN, speed=1_000_000)
    when = ORIGIN + timedelta(hours=2, minutes=30)
    stop = False

    def set_stop() -> None:
        nonlocal stop
        stop = True

    async def main() -> tuple[bool, bool]:
        with clock.participate("step"):
            reached = await sleep_until(clock, when)
            exact = clock.now()
            assert exact >= when and (exact - when).total_seconds() < 1.0
            # Ten years take over five real minutes even at this speed: the stop comes first.
            asyncio.get_running_loop().call_later(0.05, set_stop)
            stopped = await clock.sleep_until(when + timedelta(days=3650), stop=lambda: stop)
            return reached, stopped

    reached, stopped = run(main)
    assert reached is True and stopped is False
    assert clock.busy == 0


def test_a_cancelled_sleep_gives_its_participant_back() -> None:
    clock = VirtualClock(ORIGIN, speed=10)

    async def main() -> None:
        with clock.participate("test"):
            task = clock.spawn(clock.sleep(HOUR))
            await asyncio.sleep(0.01)
            assert clock.busy == 1  # only this block: the sleeper waits
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            assert clock.busy == 2  # cancelled: busy until reaped
            clock.reap(task)
            assert clock.busy == 1

    run(main)
    assert clock.busy == 0


def test_restart_starts_the_timeline_again() -> None:
    clock = VirtualClock(ORIGIN, speed=1_000_000)
    run(lambda: clock.sleep(HOUR))
    later = ORIGIN + timedelta(hours=3)
    clock.restart(later)
    assert 0 <= (clock.now() - later).total_seconds() < 1.0
    clock.restart()
    assert 0 <= (clock.now() - later).total_seconds() < 1.0
    assert clock.kind == "virtual" and clock.rehearsal is True


def test_the_real_clock_has_the_same_api_as_no_ops() -> None:
    clock = RealClock()

    async def main() -> list[int]:
        async def one(n: int) -> int:
            await asyncio.sleep(0)
            return n

        with clock.participate("x"):
            task = clock.spawn(one(1))
            async with clock.idle(until=5):
                await asyncio.wait([task])
            clock.reap(task)
            return [task.result(), *await clock.gather([one(2), one(3)])]

    assert run(main) == [1, 2, 3]
    assert clock.rehearsal is False and clock.real_seconds(7) == 7


def test_speed_range_is_accepted() -> None:
    for speed in (1, 1_000_000):
        assert VirtualClock(ORIGIN, speed).speed == speed
    with pytest.raises(ValueError):
        VirtualClock(ORIGIN, 0)


# -- whole rehearsals against the simulator ---------------------------------------------

WINDOW = {"start": "2025-03-14T23:00", "end": "2025-03-15T05:00"}


def write_runbook(path: Path, doc: dict[str, Any]) -> Path:
    path.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")  # JSON is YAML
    return path


def chain_runbook(n: int) -> dict[str, Any]:
    """``n`` reads of the estate, one after another: nothing waits."""
    steps: list[dict[str, Any]] = []
    for i in range(n):
        step: dict[str, Any] = {
            "id": f"s{i}",
            "target": "estate",
            "action": "get",
            "with": {"path": "/catalogue/version"},
        }
        if i:
            step["depends_on"] = [f"s{i - 1}"]
        steps.append(step)
    return {
        "apiVersion": "cutbook/v1",
        "name": "chain",
        "timezone": "Asia/Ho_Chi_Minh",
        "window": WINDOW,
        "defaults": {"estimate": "1s"},
        "vars": {"estate_url": "http://127.0.0.1:1"},
        "targets": {"estate": {"adapter": "http", "base_url": "{{ vars.estate_url }}"}},
        "steps": steps,
    }


def drain_runbook() -> dict[str, Any]:
    """Stop intake at 23:30, wait for the queue to drain, sleep 2 h, reopen at 03:00."""
    return {
        "apiVersion": "cutbook/v1",
        "name": "drain",
        "timezone": "Asia/Ho_Chi_Minh",
        "window": WINDOW,
        "vars": {"estate_url": "http://127.0.0.1:1"},
        "targets": {
            "vnaccs": {"adapter": "http", "base_url": "{{ vars.estate_url }}/vnaccs"},
            "drain": {"adapter": "wait"},
        },
        "steps": [
            {
                "id": "stop-intake",
                "target": "vnaccs",
                "action": "post",
                "with": {"path": "/intake/stop"},
                "at": "2025-03-14T23:30",
                "estimate": "1m",
            },
            {
                "id": "drain-queue",
                "target": "drain",
                "action": "until",
                "with": {
                    "url": "{{ vars.estate_url }}/vnaccs/intake",
                    "json": {"queue": 0},
                    "interval": "5m",
                    "timeout": "30m",
                },
                "depends_on": ["stop-intake"],
                "estimate": "5m",
            },
            {
                "id": "settle",
                "target": "drain",
                "action": "sleep",
                "with": {"duration": "2h"},
                "depends_on": ["drain-queue"],
                "estimate": "2h",
            },
            {
                "id": "reopen-intake",
                "target": "vnaccs",
                "action": "post",
                "with": {"path": "/intake/start"},
                "depends_on": ["settle"],
                "at": "2025-03-15T03:00",
                "estimate": "1m",
            },
        ],
    }


def rehearse(path: Path, data_dir: Path, sim: SimulatorProcess, speed: float) -> tuple[Any, float]:
    """Run a rehearsal in-process without Prefect; the journal's path and the wall time."""
    loaded = load(path, overrides={"estate_url": sim.url})
    settings = RunSettings(
        data_dir=data_dir, clock="virtual", speed=speed, auto_approve=True, started_by="test"
    )
    session = Session(loaded, settings)

    async def go() -> tuple[str | None, float]:
        await session.prepare()
        runner = session.runner_for(LocalBridge())
        started = time.perf_counter()
        outcome = None
        try:
            outcome = await runner.run()
        finally:
            wall = time.perf_counter() - started
            await session.finish(outcome)
        assert outcome == "succeeded", runner.failure
        return outcome, wall

    _outcome, wall = asyncio.run(go())
    assert session.journal is not None and verify(session.journal.path).ok
    return session.journal.path, wall


def step_times(journal: Path) -> tuple[datetime, datetime]:
    records = list(read_records(journal))
    starts = [datetime.fromisoformat(r["started"]) for r in records if r.get("started")]
    ends = [datetime.fromisoformat(r["finished"]) for r in records if r.get("finished")]
    return min(starts), max(ends)


@pytest.mark.slow
@pytest.mark.usefixtures("fresh_estate")
@pytest.mark.parametrize("speed", [1, 100, 100_000, 1_000_000])
def test_a_200_step_chain_rehearses_at_any_speed(
    tmp_path: Path, sim: SimulatorProcess, speed: float
) -> None:
    path = write_runbook(tmp_path / "chain.yaml", chain_runbook(200))
    journal, wall = rehearse(path, tmp_path / "data", sim, speed)
    first, last = step_times(journal)
    span = (last - first).total_seconds()
    # Nothing waited, so runbook time is the work's real time, whatever the speed.
    assert span <= wall + 1.0, f"{span:.1f}s of runbook time in {wall:.1f}s"
    assert wall < 60
    summary = summarize(journal)
    assert summary.outcome == "succeeded"
    assert [d for d in summary.deviations if d.kind == "late"] == []
    # The estate followed the rehearsal without being aged: no waits, no skew to speak of.
    skew = httpx.get(f"{sim.url}/admin/clock").json()["skew_s"]
    assert skew < 5.0


@pytest.mark.slow
@pytest.mark.usefixtures("fresh_estate")
def test_the_estate_drains_on_the_rehearsal_timeline(tmp_path: Path, sim: SimulatorProcess) -> None:
    """Skipped minutes pass in the estate too: the poll after a skipped 5-minute
    interval sees the queue drained, and the two-hour sleep costs no real time."""
    path = write_runbook(tmp_path / "drain.yaml", drain_runbook())
    journal, wall = rehearse(path, tmp_path / "data", sim, 1_000_000)
    assert wall < 30
    records = list(read_records(journal))
    verified = [
        r for r in records if r.get("event") == "step.outcome" and r.get("step") == "drain-queue"
    ]
    assert verified and all(r["ok"] for r in verified)
    finished = {
        r["step"]: datetime.fromisoformat(r["finished"])
        for r in records
        if r.get("event") == "step.finished" and r.get("finished")
    }
    started = {
        r["step"]: datetime.fromisoformat(r["started"])
        for r in records
        if r.get("event") == "step.finished" and r.get("started")
    }
    zone_start = datetime.fromisoformat("2025-03-14T23:30:00+07:00")
    assert 0 <= (started["stop-intake"] - zone_start).total_seconds() < 5
    drained_after = (finished["drain-queue"] - started["drain-queue"]).total_seconds()
    assert 5 * 60 <= drained_after < 5 * 60 + 30  # one skipped interval, then drained
    reopen = datetime.fromisoformat("2025-03-15T03:00:00+07:00")
    assert 0 <= (started["reopen-intake"] - reopen).total_seconds() < 5
    state = httpx.get(f"{sim.url}/vnaccs/intake").json()
    assert state["state"] == "open"
    clock = httpx.get(f"{sim.url}/admin/clock").json()
    assert clock["skew_s"] > 3 * HOUR  # the estate lived through the night's waits
