"""``Cutbook-Rehearsal-Time``: sent under a rehearsal clock only, so the estate keeps up."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from cutbook.testing import FakeClock, make_call, make_context, run
from cutbook_adapters.http import HttpAdapter, HttpConfig
from cutbook_adapters.wait import WaitAdapter, WaitConfig
from cutbook_simulator.process import SimulatorProcess

pytestmark = pytest.mark.usefixtures("fresh_estate")


class RehearsalClock(FakeClock):
    """What the engine's rehearsal clock looks like to an adapter."""

    rehearsal = True


class NightClock(FakeClock):
    """A real night's clock says so."""

    rehearsal = False


def last_call(sim: SimulatorProcess) -> dict[str, Any]:
    calls: list[dict[str, Any]] = httpx.get(f"{sim.url}/admin/calls").json()
    return [c for c in calls if not c["path"].startswith("/admin")][-1]


async def http_get(sim: SimulatorProcess, clock: FakeClock) -> None:
    adapter = HttpAdapter(HttpConfig(base_url=sim.url), make_context())
    try:
        await adapter.apply(make_call(HttpAdapter, "get", {"path": "/vnaccs/intake"}, clock=clock))
    finally:
        await adapter.aclose()


def test_http_sends_the_rehearsal_time_under_a_rehearsal_clock(sim: SimulatorProcess) -> None:
    clock = RehearsalClock()
    run(http_get(sim, clock))
    assert last_call(sim)["rehearsal_time"] == clock.now().isoformat()


@pytest.mark.parametrize("clock", [NightClock(), FakeClock()], ids=["real", "no-attribute"])
def test_http_never_sends_it_otherwise(sim: SimulatorProcess, clock: FakeClock) -> None:
    run(http_get(sim, clock))
    assert last_call(sim)["rehearsal_time"] is None
    assert httpx.get(f"{sim.url}/admin/clock").json()["skew_s"] == 0


def test_wait_polls_send_it_and_see_the_drain(sim: SimulatorProcess) -> None:
    """A skipped five-minute interval drains the queue in the estate too."""
    httpx.post(f"{sim.url}/vnaccs/intake/stop").raise_for_status()
    clock = RehearsalClock()
    adapter = WaitAdapter(WaitConfig(base_url=sim.url), make_context(clock=clock))
    args = {"url": "/vnaccs/intake", "json": {"queue": 0}, "interval": "5m", "timeout": "20m"}
    call = make_call(WaitAdapter, "until", args, clock=clock)

    async def go() -> Any:
        try:
            return await adapter.apply(call)
        finally:
            await adapter.aclose()

    result = run(go())
    assert result.output["polls"] == 2 and clock.sleeps == [300.0]
    assert last_call(sim)["rehearsal_time"] == clock.now().isoformat()
