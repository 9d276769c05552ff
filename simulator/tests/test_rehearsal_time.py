"""The estate follows a rehearsal's clock through ``Cutbook-Rehearsal-Time``.

Over loopback against a real child process, plus the clock on its own with a
fake wall clock, so "never backwards" is checked exactly.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from cutbook_simulator import SimulatorProcess
from cutbook_simulator.clock import EstateClock, parse_rehearsal_time

HEADER = "Cutbook-Rehearsal-Time"
NIGHT = datetime(2025, 3, 14, 16, 0, tzinfo=UTC)  # 23:00 in Hanoi: in the past, as usual


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimulatorProcess]:
    with SimulatorProcess(tmp_path_factory.mktemp("sim") / "state.sqlite") as process:
        yield process


@pytest.fixture
def client(sim: SimulatorProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sim.url, timeout=10) as c:
        assert c.post("/admin/reset").status_code == 200
        yield c


def at(moment: datetime) -> dict[str, str]:
    return {HEADER: moment.isoformat()}


def skew(client: httpx.Client) -> float:
    return float(client.get("/admin/clock").json()["skew_s"])


def test_the_queue_drains_on_the_rehearsal_timeline(client: httpx.Client) -> None:
    """Twenty skipped minutes drain the queue at once, as they would on the night."""
    client.get("/vnaccs/intake", headers=at(NIGHT))
    stopped = client.post("/vnaccs/intake/stop", headers=at(NIGHT)).json()
    assert stopped["state"] == "stopped" and stopped["queue"] >= 120
    # Without the header the estate ages at wall-clock pace: still far from drained.
    assert client.get("/vnaccs/intake").json()["queue"] > 60
    later = client.get("/vnaccs/intake", headers=at(NIGHT + timedelta(minutes=20))).json()
    assert later == {"state": "stopped", "queue": 0}
    assert 20 * 60 - 5 < skew(client) <= 20 * 60 + 1
    # The estate's timestamps are on the same timeline.
    notice = client.post(
        "/portal/notices",
        json={"title": "t", "body": "b"},
        headers=at(NIGHT + timedelta(minutes=21)),
    ).json()
    created = datetime.fromisoformat(notice["created_at"].replace("Z", "+00:00"))
    assert created - datetime.now(UTC) > timedelta(minutes=19)


def test_skew_never_moves_backwards(client: httpx.Client) -> None:
    client.get("/vnaccs/intake", headers=at(NIGHT))
    client.get("/vnaccs/intake", headers=at(NIGHT + timedelta(hours=1)))
    ahead = skew(client)
    assert ahead > 3500
    # An earlier time (a request that crossed another, or a new rehearsal) changes nothing...
    client.get("/vnaccs/intake", headers=at(NIGHT + timedelta(minutes=10)))
    assert skew(client) >= ahead
    # ...and progress from there moves the estate on from where it is.
    client.get("/vnaccs/intake", headers=at(NIGHT + timedelta(minutes=40)))
    assert skew(client) > ahead + 1700


def test_reset_clears_the_skew(client: httpx.Client) -> None:
    client.get("/vnaccs/intake", headers=at(NIGHT))
    client.get("/vnaccs/intake", headers=at(NIGHT + timedelta(hours=2)))
    assert skew(client) > 7000
    assert client.post("/admin/reset").status_code == 200
    state = client.get("/admin/clock").json()
    assert state["skew_s"] == 0 and state["rehearsal_time"] is None
    now = datetime.fromisoformat(state["now"])
    assert abs((now - datetime.now(UTC)).total_seconds()) < 5


def test_a_malformed_rehearsal_time_is_refused(client: httpx.Client) -> None:
    reply = client.get("/vnaccs/intake", headers={HEADER: "half past eleven"})
    assert reply.status_code == 400 and "ISO 8601" in reply.json()["error"]
    assert skew(client) == 0


def test_fault_windows_follow_the_estate_clock(client: httpx.Client) -> None:
    client.get("/vnaccs/intake", headers=at(NIGHT))
    rule = {
        "name": "night-outage",
        "path": "/satellites*",
        "outage": {"start": 60, "duration": 600},
    }
    assert client.post("/admin/faults", json=rule).status_code == 200
    assert client.get("/satellites", headers=at(NIGHT)).status_code == 200
    inside = client.get("/satellites", headers=at(NIGHT + timedelta(minutes=5)))
    assert inside.status_code == 503
    after = client.get("/satellites", headers=at(NIGHT + timedelta(minutes=12)))
    assert after.status_code == 200


class FakeWall:
    def __init__(self) -> None:
        self.t = 1_800_000_000.0

    def __call__(self) -> float:
        return self.t


def test_the_clock_only_moves_forward() -> None:
    wall = FakeWall()
    clock = EstateClock(speed=1.0, wall=wall)
    r0 = parse_rehearsal_time("2025-03-14T23:00:00+07:00")
    seen: list[float] = []
    for step, rehearsal in [(1, 0), (1, 1800), (1, 1799.9), (2, 1810), (0, 0), (5, 7200)]:
        wall.t += step
        clock.follow(r0 + rehearsal)
        seen.append(clock.now())
    assert seen == sorted(seen)
    assert clock.skew >= 7200 - 10
    clock.reset()
    assert clock.skew == 0 and clock.now() == wall.t


def test_a_naive_rehearsal_time_means_utc() -> None:
    naive = parse_rehearsal_time("2025-03-14T16:00:00")
    assert naive == NIGHT.timestamp()
    with pytest.raises(ValueError):
        parse_rehearsal_time("tomorrow")
