"""The deadline guard's arithmetic: the plan's no-go column and the forecast from a run's
progress. Pure: hand-computed timelines, no engine."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from cutbook.forecast import Progress, forecast
from cutbook.model import Runbook
from cutbook.planning import plan


def make(steps: list[dict[str, Any]], **extra: Any) -> Runbook:
    return Runbook.model_validate(
        {
            "apiVersion": "cutbook/v1",
            "name": "guarded",
            "timezone": "UTC",
            "window": {"start": "2025-03-15T00:00", "end": "2025-03-15T06:00"},
            "steps": steps,
            **extra,
        }
    )


def t(hhmm: str) -> datetime:
    return datetime.fromisoformat(f"2025-03-15T{hhmm}").replace(tzinfo=UTC)


# Stop 10m (rollback 10m), change 1h (rollback 30m), check 20m (read-only: a GET),
# reopen 10m (always, irreversible). Plan: 00:00 → 01:40.
NIGHT = [
    {"id": "stop", "target": "t", "action": "post", "estimate": "10m"},
    {
        "id": "change",
        "target": "t",
        "action": "put",
        "estimate": "1h",
        "depends_on": ["stop"],
        "rollback": {"estimate": "30m"},
    },
    {"id": "check", "target": "t", "action": "get", "estimate": "20m", "depends_on": ["change"]},
    {
        "id": "reopen",
        "target": "t",
        "action": "post",
        "estimate": "10m",
        "always": True,
        "irreversible": True,
        "depends_on": ["check"],
    },
]


def test_read_only_steps_cost_nothing_to_abandon() -> None:
    rb = make(NIGHT)
    counted = plan(rb)  # without adapter knowledge a GET looks like any change
    known = plan(rb, read_only={"check"})
    assert counted.step("check").rollback_s == 20 * 60
    assert known.step("check").rollback_s == 0
    # The point of no return no longer moves for the read-only step: the budget is
    # 6h - 10m always - (10m + 30m) rollback = 05:10, later than the finish.
    assert known.point_of_no_return is not None
    assert known.point_of_no_return > counted.point_of_no_return  # type: ignore[operator]


def test_plan_names_the_latest_no_go_per_step() -> None:
    rb = make(NIGHT, guard={"margin": "15m"})
    p = plan(rb, read_only={"check"})
    # Window end 06:00 - 15m margin - 10m always = 05:35, minus the rollback of every
    # step finished by then.
    assert p.step("stop").no_go_by == t("05:25")
    assert p.step("change").no_go_by == t("04:55")
    assert p.step("check").no_go_by == t("04:55")
    assert p.step("reopen").no_go_by is None  # always: not a no-go moment
    assert p.to_json()["steps"][1]["no_go_by"] == t("04:55").isoformat()


def test_no_go_stops_at_the_first_irreversible_step() -> None:
    steps = [dict(s) for s in NIGHT]
    steps[2] = {**steps[2], "action": "post", "irreversible": True}
    p = plan(make(steps))
    assert p.step("change").no_go_by is not None
    assert p.step("check").no_go_by is None


def test_on_plan_the_forecast_is_the_plan() -> None:
    p = plan(make(NIGHT), read_only={"check"})
    fc = forecast(p, {}, t("00:00"))
    assert fc.finish == p.finish == t("01:40")
    assert fc.fits and fc.slack_s == (6 * 60 - 100) * 60
    assert fc.rollback_s == 0 and fc.always_s == 600
    assert fc.irreversible_ahead == () and fc.irreversible_done == ()


def test_a_slow_running_step_moves_the_finish_with_the_clock() -> None:
    p = plan(make(NIGHT), read_only={"check"}, start=t("00:00"))
    progress = {
        "stop": Progress("succeeded", t("00:00"), t("00:10")),
        "change": Progress("running", t("00:10")),
    }
    early = forecast(p, progress, t("00:30"))
    assert early.finish == t("01:40")  # still inside its estimate
    late = forecast(p, progress, t("05:40"))  # 5h30m into a 1h step
    assert late.finish == t("06:10")  # now + check 20m + reopen 10m
    assert not late.fits and late.slack_s == -600
    # A no-go now undoes stop (10m) and the running change (30m), then reopens (10m).
    assert late.rollback_s == 40 * 60
    assert late.no_go_finish == t("06:30") and not late.no_go_fits
    assert late.point_of_no_return is None  # that moment has passed
    ok = forecast(p, progress, t("03:00"), margin=timedelta(minutes=10))
    # Budget: 06:00 - 10m margin - 10m always - 40m rollback = 05:00.
    assert ok.point_of_no_return == t("05:00")


def test_finished_steps_keep_their_actual_times() -> None:
    p = plan(make(NIGHT), read_only={"check"})
    progress = {
        "stop": Progress("succeeded", t("00:00"), t("00:50")),  # 40 minutes late
    }
    fc = forecast(p, progress, t("00:50"))
    assert fc.finish == t("02:20")
    assert fc.drift_s == 40 * 60


def test_irreversible_work_done_means_no_full_return() -> None:
    steps = [dict(s) for s in NIGHT]
    steps[0] = {**steps[0], "irreversible": True}
    p = plan(make(steps))
    fc = forecast(p, {"stop": Progress("succeeded", t("00:00"), t("00:10"))}, t("00:10"))
    assert fc.irreversible_done == ("stop",)
    assert fc.point_of_no_return is None
    ahead = forecast(p, {}, t("00:00"))
    assert ahead.irreversible_ahead == ("stop",)


def test_a_running_fan_out_is_forecast_from_its_rate_so_far() -> None:
    p = plan(make(NIGHT), read_only={"check"})
    # change is a fan-out of 10 items planned inside 1h; 2 done after 30 minutes.
    progress = {
        "stop": Progress("succeeded", t("00:00"), t("00:10")),
        "change": Progress("running", t("00:10"), items_done=2, items_total=10),
    }
    fc = forecast(p, progress, t("00:40"))
    # 15 minutes an item: 8 left end at 02:40, then check 20m and reopen 10m.
    assert fc.finish == t("03:10")
