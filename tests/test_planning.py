"""The planner: hand-computed timelines, then properties over generated DAG runbooks."""

from __future__ import annotations

import itertools
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cutbook.errors import RunbookError
from cutbook.model import Runbook
from cutbook.planning import DependencyCycle, Plan, PlannedStep, plan


def make(
    steps: list[dict[str, Any]],
    *,
    start: str = "2025-03-15T01:00",
    end: str = "05:00",
    tz: str = "UTC",
    **extra: Any,
) -> Runbook:
    return Runbook.model_validate(
        {
            "apiVersion": "cutbook/v1",
            "name": "test-runbook",
            "timezone": tz,
            "window": {"start": start, "end": end},
            "steps": steps,
            **extra,
        }
    )


def utc(text: str) -> datetime:
    """A UTC moment from a naive ISO string."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def same(a: datetime, b: datetime) -> bool:
    """Compare instants (plain == on two datetimes of one zone compares wall clocks)."""
    return a.astimezone(UTC) == b.astimezone(UTC)


def by_id(p: Plan) -> dict[str, PlannedStep]:
    return {s.id: s for s in p.steps}


# --- sequencing --------------------------------------------------------------------


def test_chain_runs_back_to_back_from_window_start() -> None:
    rb = make(
        [
            {"id": "a", "target": "t", "estimate": "10m"},
            {"id": "b", "target": "t", "estimate": "20m", "depends_on": ["a"]},
            {"id": "c", "target": "t", "estimate": "5m", "depends_on": ["b"]},
        ]
    )
    p = plan(rb)
    s = by_id(p)
    assert same(s["a"].start, utc("2025-03-15T01:00"))
    assert same(s["b"].start, utc("2025-03-15T01:10"))
    assert same(s["c"].start, utc("2025-03-15T01:30"))
    assert same(p.finish, utc("2025-03-15T01:35"))
    assert p.critical_path == ["a", "b", "c"]
    assert all(x.critical and x.slack_s == 0 for x in p.steps)
    assert s["b"].estimate_s == 1200


def test_default_estimate_is_one_minute_and_defaults_apply() -> None:
    p = plan(make([{"id": "a"}, {"id": "b", "depends_on": ["a"]}]))
    assert same(p.finish, utc("2025-03-15T01:02"))
    p = plan(make([{"id": "a"}, {"id": "b", "depends_on": ["a"]}], defaults={"estimate": "90s"}))
    assert same(p.finish, utc("2025-03-15T01:03"))


def test_parallel_branches_give_the_short_one_slack() -> None:
    rb = make(
        [
            {"id": "short", "estimate": "10m"},
            {"id": "long", "estimate": "30m"},
            {"id": "join", "estimate": "5m", "depends_on": ["short", "long"]},
        ]
    )
    p = plan(rb)
    s = by_id(p)
    assert same(s["join"].start, utc("2025-03-15T01:30"))
    assert s["short"].slack_s == 1200
    assert not s["short"].critical
    assert same(s["short"].latest_start, utc("2025-03-15T01:20"))
    assert s["long"].slack_s == 0
    assert p.critical_path == ["long", "join"]
    assert s["short"].window_slack_s == 1200 + p.margin_s


def test_at_makes_a_step_wait_and_anchors_the_critical_path() -> None:
    rb = make(
        [
            {"id": "prep", "estimate": "10m"},
            {"id": "switch", "estimate": "10m", "at": "02:00", "depends_on": ["prep"]},
        ]
    )
    p = plan(rb)
    s = by_id(p)
    assert same(s["switch"].start, utc("2025-03-15T02:00"))
    assert s["switch"].at is not None and same(s["switch"].at, utc("2025-03-15T02:00"))
    # prep may slip until switch's anchor: 01:10 → 02:00 is 50 minutes
    assert s["prep"].slack_s == 3000
    assert s["switch"].slack_s == 0
    assert p.critical_path == ["switch"]


def test_at_before_the_start_does_not_pull_a_step_earlier() -> None:
    rb = make([{"id": "a", "at": "2025-03-15T00:30", "estimate": "5m"}])
    p = plan(rb)
    assert same(p.steps[0].start, utc("2025-03-15T01:00"))


def test_dependency_later_than_at_wins() -> None:
    rb = make(
        [
            {"id": "a", "estimate": "2h"},
            {"id": "b", "at": "02:00", "depends_on": ["a"]},
        ]
    )
    s = by_id(plan(rb))
    assert same(s["b"].start, utc("2025-03-15T03:00"))
    assert s["a"].critical


def test_steps_are_in_topological_then_file_order() -> None:
    rb = make(
        [
            {"id": "late", "depends_on": ["first"]},
            {"id": "free"},
            {"id": "first"},
        ]
    )
    assert [s.id for s in plan(rb).steps] == ["free", "first", "late"]


def test_zero_estimate_steps_and_ties() -> None:
    rb = make(
        [
            {"id": "a", "estimate": "30m"},
            {"id": "milestone", "estimate": 0, "depends_on": ["a"]},
        ]
    )
    p = plan(rb)
    assert p.critical_path == ["a", "milestone"]
    assert same(p.finish, utc("2025-03-15T01:30"))


# --- fan-out and gates ---------------------------------------------------------------


def test_fan_out_costs_batches_of_concurrency() -> None:
    rb = make(
        [
            {"id": "f", "estimate": "2m", "for_each": "{{ data.offices }}", "concurrency": 10},
            {"id": "g", "estimate": "2m", "for_each": "{{ data.offices }}", "concurrency": 10},
            {"id": "lit", "estimate": "1m", "for_each": ["x", "y", "z"], "concurrency": 2},
            {"id": "one", "estimate": "1m", "for_each": "{{ data.x }}", "concurrency": 1},
        ]
    )
    s = by_id(plan(rb, item_counts={"f": 25, "one": 7}))
    assert s["f"].estimate_s == 3 * 120 and s["f"].items == 25 and not s["f"].items_unknown
    assert s["g"].estimate_s == 120 and s["g"].items == 1 and s["g"].items_unknown
    assert s["lit"].estimate_s == 120 and s["lit"].items == 3 and not s["lit"].items_unknown
    assert s["one"].estimate_s == 7 * 60


def test_empty_fan_out_takes_no_time() -> None:
    s = by_id(plan(make([{"id": "f", "for_each": "{{ data.x }}"}]), item_counts={"f": 0}))
    assert s["f"].estimate_s == 0 and s["f"].items == 0


def test_plain_steps_have_no_items() -> None:
    s = plan(make([{"id": "a"}]), item_counts={"a": 50}).steps[0]
    assert s.items is None and not s.items_unknown and s.estimate_s == 60


def test_approval_gate_takes_its_estimate() -> None:
    rb = make(
        [
            {"id": "go", "approval": {"approvers": ["lead"]}},
            {"id": "go2", "approval": {}, "estimate": "15m", "depends_on": ["go"]},
        ]
    )
    p = plan(rb)
    s = by_id(p)
    assert s["go"].gate and s["go"].estimate_s == 60
    assert same(p.finish, utc("2025-03-15T01:16"))


# --- window fit --------------------------------------------------------------------


def test_fits_with_margin() -> None:
    p = plan(make([{"id": "a", "estimate": "3h"}]))
    assert p.fits_window and p.margin_s == 3600 and p.window_slack_s == 3600


def test_does_not_fit_and_says_by_how_much() -> None:
    p = plan(make([{"id": "a", "estimate": "70m"}], end="02:00"))
    assert not p.fits_window and p.margin_s == -600


def test_exact_fit_counts_as_fitting() -> None:
    p = plan(make([{"id": "a", "estimate": "4h"}]))
    assert p.fits_window and p.margin_s == 0


def test_window_across_midnight() -> None:
    p = plan(make([{"id": "a", "estimate": "1h"}], start="2025-03-14T23:30", end="01:00"))
    assert same(p.window_end, utc("2025-03-15T01:00"))
    assert p.margin_s == 1800


# --- point of no return --------------------------------------------------------------

PONR_STEPS: list[dict[str, Any]] = [
    {"id": "a", "target": "t", "estimate": "30m"},
    {"id": "b", "target": "t", "estimate": "30m", "depends_on": ["a"]},
    {"id": "cleanup", "target": "t", "estimate": "10m", "depends_on": ["b"], "always": True},
]


def test_ponr_at_a_completion() -> None:
    # Budget 03:00 - 10m always = 02:50. Until b completes (02:00) only a (30m)
    # needs undoing: 02:00 + 30m + 10m = 02:40 fits; once b is done it is 1h of
    # rollback, and 02:00 + 1h10m > 03:00. So the latest moment is 02:00.
    p = plan(make(PONR_STEPS, end="03:00"))
    assert p.point_of_no_return is not None
    assert same(p.point_of_no_return, utc("2025-03-15T02:00"))
    assert p.rollback_cost_s(p.point_of_no_return) == 1800
    assert p.always_s == 600
    assert p.ponr_limited_by is None


def test_ponr_inside_an_interval() -> None:
    # Budget 02:30 - 10m = 02:20; with a done the cost is 30m, so 01:50.
    p = plan(make(PONR_STEPS, end="02:30"))
    assert p.point_of_no_return is not None
    assert same(p.point_of_no_return, utc("2025-03-15T01:50"))


def test_ponr_uses_rollback_estimates() -> None:
    steps = [dict(s) for s in PONR_STEPS]
    steps[0]["rollback"] = {"estimate": "5m"}
    steps[1]["rollback"] = {"estimate": "5m"}
    # All done and undone: 02:50 - 10m = 02:40, later than the 02:10 finish.
    p = plan(make(steps, end="03:00"))
    assert p.point_of_no_return is not None
    assert same(p.point_of_no_return, utc("2025-03-15T02:40"))


def test_irreversible_step_caps_ponr() -> None:
    steps = [dict(s) for s in PONR_STEPS]
    steps[1]["irreversible"] = True
    p = plan(make(steps, end="05:00"))
    assert p.point_of_no_return is not None
    assert same(p.point_of_no_return, utc("2025-03-15T01:30"))
    assert p.ponr_limited_by == "b"


def test_irreversible_always_step_does_not_cap_ponr() -> None:
    steps = [dict(s) for s in PONR_STEPS]
    steps[2]["irreversible"] = True
    p = plan(make(steps, end="05:00"))
    assert p.point_of_no_return is not None
    # 05:00 - 10m always - 1h rollback of a and b
    assert same(p.point_of_no_return, utc("2025-03-15T03:50"))
    assert p.ponr_limited_by is None


def test_no_ponr_when_always_steps_alone_overrun() -> None:
    rb = make(
        [
            {"id": "a", "target": "t", "estimate": "5m"},
            {"id": "cleanup", "estimate": "3h", "always": True, "depends_on": ["a"]},
        ],
        end="03:00",
    )
    p = plan(rb)
    assert p.point_of_no_return is None
    assert not p.fits_window


def test_ponr_exactly_at_start() -> None:
    rb = make(
        [
            {"id": "a", "target": "t", "estimate": "5m"},
            {"id": "cleanup", "estimate": "2h", "always": True, "depends_on": ["a"]},
        ],
        end="03:00",
    )
    p = plan(rb)
    assert p.point_of_no_return is not None
    assert same(p.point_of_no_return, utc("2025-03-15T01:00"))


def test_gates_and_untargeted_steps_cost_nothing_to_undo() -> None:
    rb = make(
        [
            {"id": "go", "approval": {}, "target": "t", "estimate": "30m"},
            {"id": "note", "estimate": "30m", "depends_on": ["go"]},
            {"id": "work", "target": "t", "estimate": "30m", "depends_on": ["note"]},
        ],
        end="03:00",
    )
    p = plan(rb)
    s = by_id(p)
    assert s["go"].rollback_s == 0 and s["note"].rollback_s == 0 and s["work"].rollback_s == 1800
    # everything done at 02:30, then 30m of rollback: 03:00 - 30m = 02:30
    assert p.point_of_no_return is not None
    assert same(p.point_of_no_return, utc("2025-03-15T02:30"))


def test_fan_out_rollback_uses_the_same_batches() -> None:
    rb = make(
        [
            {
                "id": "f",
                "target": "t",
                "estimate": "2m",
                "for_each": "{{ data.offices }}",
                "concurrency": 10,
                "rollback": {"estimate": "1m"},
            }
        ]
    )
    s = plan(rb, item_counts={"f": 25}).steps[0]
    assert s.rollback_s == 180


# --- --start shift -------------------------------------------------------------------


def test_start_shifts_window_and_every_at() -> None:
    rb = make(
        [
            {"id": "a", "estimate": "10m"},
            {"id": "b", "at": "02:00", "estimate": "10m"},
            {"id": "c", "at": "2025-03-15T03:30+07:00", "estimate": "10m"},
        ],
        tz="Asia/Ho_Chi_Minh",
    )
    zone = ZoneInfo("Asia/Ho_Chi_Minh")
    p = plan(rb, start=datetime(2025, 3, 21, 23, 0, tzinfo=zone))
    s = by_id(p)
    assert p.start.isoformat() == "2025-03-21T23:00:00+07:00"
    assert p.window_start.isoformat() == "2025-03-21T23:00:00+07:00"
    assert p.window_end.isoformat() == "2025-03-22T03:00:00+07:00"
    assert s["b"].start.isoformat() == "2025-03-22T00:00:00+07:00"
    assert s["c"].start.isoformat() == "2025-03-22T01:30:00+07:00"
    unshifted = plan(rb)
    assert unshifted.margin_s == p.margin_s
    assert [x.slack_s for x in unshifted.steps] == [x.slack_s for x in p.steps]


def test_naive_start_is_read_in_the_runbook_zone() -> None:
    rb = make([{"id": "a"}], tz="Asia/Ho_Chi_Minh")
    p = plan(rb, start=datetime(2025, 3, 21, 23, 0))
    assert p.start.isoformat() == "2025-03-21T23:00:00+07:00"


# --- time zones --------------------------------------------------------------------


def test_elapsed_time_across_a_daylight_saving_change() -> None:
    # London skips 01:00-02:00 on 2025-03-30: one hour from 00:30 GMT is 02:30 BST.
    rb = make(
        [{"id": "a", "estimate": "1h"}],
        tz="Europe/London",
        start="2025-03-30T00:30",
        end="05:00",
    )
    p = plan(rb)
    assert p.finish.isoformat() == "2025-03-30T02:30:00+01:00"
    assert p.duration_s == 3600
    assert p.margin_s == 2.5 * 3600


# --- JSON ------------------------------------------------------------------------------


def test_json_shape_and_offsets() -> None:
    rb = make(
        [
            {"id": "a", "estimate": "3h"},
            {"id": "b", "estimate": "10m", "depends_on": ["a"], "target": "t"},
        ],
        tz="Asia/Ho_Chi_Minh",
    )
    data = plan(rb).to_json()
    assert data["fits_window"] is True
    assert data["finish"] == "2025-03-15T04:10:00+07:00"
    assert data["point_of_no_return"] == "2025-03-15T04:50:00+07:00"
    assert data["timezone"] == "Asia/Ho_Chi_Minh"
    assert data["window"] == {
        "start": "2025-03-15T01:00:00+07:00",
        "end": "2025-03-15T05:00:00+07:00",
    }
    assert data["margin_s"] == 3000
    assert data["critical_path"] == ["a", "b"]
    first = data["steps"][0]
    assert {"id", "start", "finish", "critical", "slack_s"} <= set(first)
    assert first["start"] == "2025-03-15T01:00:00+07:00"
    assert isinstance(first["critical"], bool)
    assert isinstance(first["slack_s"], int | float)
    assert {"title", "items", "estimate_s"} <= set(first)


def test_json_null_ponr() -> None:
    rb = make([{"id": "x", "estimate": "5h", "always": True}])
    assert plan(rb).to_json()["point_of_no_return"] is None


# --- errors ------------------------------------------------------------------------


def test_cycle_is_reported_not_looped() -> None:
    rb = make(
        [
            {"id": "start"},
            {"id": "a", "depends_on": ["start", "c"]},
            {"id": "b", "depends_on": ["a"]},
            {"id": "c", "depends_on": ["b"]},
        ]
    )
    with pytest.raises(RunbookError) as caught:
        plan(rb)
    assert isinstance(caught.value, DependencyCycle)
    cycle = caught.value.cycle
    assert cycle[0] == cycle[-1] and set(cycle) == {"a", "b", "c"}
    assert (
        "a → b → c → a" in str(caught.value)
        or "b → c → a → b" in str(caught.value)
        or ("c → a → b → c" in str(caught.value))
    )


def test_self_dependency_is_a_cycle() -> None:
    with pytest.raises(RunbookError, match="cycle"):
        plan(make([{"id": "a", "depends_on": ["a"]}]))


def test_unknown_dependency_is_an_error() -> None:
    with pytest.raises(RunbookError, match="unknown step 'nope'"):
        plan(make([{"id": "a", "depends_on": ["nope"]}]))


def test_duplicate_ids_are_an_error() -> None:
    with pytest.raises(RunbookError, match="more than one"):
        plan(make([{"id": "a"}, {"id": "a"}]))


def test_negative_item_count_is_an_error() -> None:
    with pytest.raises(RunbookError, match="negative"):
        plan(make([{"id": "f", "for_each": "{{ data.x }}"}]), item_counts={"f": -1})


def test_lookup_by_id() -> None:
    p = plan(make([{"id": "a"}, {"id": "b"}]))
    assert p.step("b").id == "b"
    with pytest.raises(KeyError):
        p.step("zzz")


def test_planning_imports_stay_lean() -> None:
    code = (
        "import sys, cutbook.planning, cutbook.plan_render, cutbook.gantt\n"
        "bad = [m for m in ('prefect', 'rich', 'jinja2') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# --- properties over generated DAG runbooks -----------------------------------------------

ZONES = ["UTC", "Asia/Ho_Chi_Minh", "Europe/London", "America/New_York"]
# Starts near daylight-saving changes as well as ordinary nights.
STARTS = ["2025-03-08T22:00", "2025-03-29T23:00", "2025-06-01T22:00", "2025-10-25T23:30"]


@st.composite
def runbooks(draw: st.DrawFn) -> tuple[Runbook, dict[str, int]]:
    tz = draw(st.sampled_from(ZONES))
    zone = ZoneInfo(tz)
    start_text = draw(st.sampled_from(STARTS))
    local_start = datetime.fromisoformat(start_text).replace(tzinfo=zone)
    window_min = draw(st.integers(30, 600))
    end = (local_start.astimezone(UTC) + timedelta(minutes=window_min)).astimezone(zone)
    n = draw(st.integers(1, 25))
    steps: list[dict[str, Any]] = []
    counts: dict[str, int] = {}
    for i in range(n):
        sid = f"s{i}"
        step: dict[str, Any] = {"id": sid, "estimate": draw(st.integers(0, 3600))}
        if i:
            earlier = [f"s{j}" for j in range(i)]
            step["depends_on"] = draw(st.lists(st.sampled_from(earlier), max_size=3, unique=True))
        if draw(st.integers(0, 4)) == 0:
            offset = draw(st.integers(-60, window_min + 60))
            moment = (local_start.astimezone(UTC) + timedelta(minutes=offset)).astimezone(zone)
            if tz == "UTC" and draw(st.booleans()):
                step["at"] = moment.strftime("%H:%M")
            else:
                step["at"] = moment.isoformat()
        if draw(st.integers(0, 3)) == 0:
            step["for_each"] = "{{ data.items }}"
            step["concurrency"] = draw(st.integers(1, 10))
            if draw(st.booleans()):
                counts[sid] = draw(st.integers(0, 40))
        if draw(st.booleans()):
            step["target"] = "sys"
        if draw(st.integers(0, 6)) == 0:
            step["irreversible"] = True
        if draw(st.integers(0, 6)) == 0:
            step["always"] = True
        if draw(st.integers(0, 6)) == 0:
            step["approval"] = {}
        if draw(st.integers(0, 3)) == 0:
            step["rollback"] = {"estimate": draw(st.integers(0, 1800))}
        steps.append(step)
    rb = make(steps, tz=tz, start=start_text, end=end.isoformat())
    return rb, counts


def _u(moment: datetime) -> datetime:
    return moment.astimezone(UTC)


TOL = timedelta(microseconds=1)

_SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_SETTINGS
@given(runbooks())
def test_property_schedule_respects_constraints(case: tuple[Runbook, dict[str, int]]) -> None:
    rb, counts = case
    p = plan(rb, item_counts=counts)
    s = by_id(p)
    seen: set[str] = set()
    for x in p.steps:
        # topological: every dependency is listed earlier
        assert set(x.depends_on) <= seen
        seen.add(x.id)
        constraints = [_u(p.start)] + [_u(s[d].finish) for d in x.depends_on]
        if x.at is not None:
            constraints.append(_u(x.at))
        # starts no earlier than any constraint, and exactly at the latest one
        assert _u(x.start) == max(constraints)
        assert _u(x.finish) - _u(x.start) == timedelta(seconds=x.estimate_s)
        assert x.slack_s >= -1e-6
        assert x.critical == (abs(x.slack_s) < 1e-6)
        assert _u(x.latest_start) - _u(x.earliest_start) == timedelta(seconds=x.slack_s)
        assert abs(x.window_slack_s - (x.slack_s + p.margin_s)) < 1e-6
    assert _u(p.finish) == max(_u(x.finish) for x in p.steps)
    assert p.fits_window == (_u(p.finish) <= _u(p.window_end))
    assert abs(p.margin_s - (_u(p.window_end) - _u(p.finish)).total_seconds()) < 1e-6


@_SETTINGS
@given(runbooks())
def test_property_latest_starts_are_consistent(case: tuple[Runbook, dict[str, int]]) -> None:
    rb, counts = case
    p = plan(rb, item_counts=counts)
    s = by_id(p)
    for x in p.steps:
        latest_finish = _u(x.latest_start) + timedelta(seconds=x.estimate_s)
        assert latest_finish <= _u(p.finish)
    for x in p.steps:
        for d in x.depends_on:
            dep = s[d]
            assert _u(dep.latest_start) + timedelta(seconds=dep.estimate_s) <= _u(x.latest_start)


@_SETTINGS
@given(runbooks())
def test_property_critical_path_is_a_tight_chain(case: tuple[Runbook, dict[str, int]]) -> None:
    rb, counts = case
    p = plan(rb, item_counts=counts)
    s = by_id(p)
    path = [s[i] for i in p.critical_path]
    assert path and all(x.critical for x in path)
    for prev, nxt in itertools.pairwise(path):
        assert prev.id in nxt.depends_on
        assert _u(prev.finish) == _u(nxt.start)
    first, last = path[0], path[-1]
    assert _u(last.finish) == _u(p.finish)
    # the path's start is anchored by an `at` wait or by the plan start
    anchors = [_u(p.start)] + ([_u(first.at)] if first.at is not None else [])
    assert _u(first.start) == max(anchors)
    length = _u(last.finish) - _u(first.start)
    assert length == sum((timedelta(seconds=x.estimate_s) for x in path), timedelta())
    assert length == _u(p.finish) - _u(first.start)


@_SETTINGS
@given(runbooks(), st.data())
def test_property_slack_is_exactly_the_tolerable_delay(
    case: tuple[Runbook, dict[str, int]], data: st.DataObject
) -> None:
    """Lengthening a step by its slack keeps the finish; one second more moves it."""
    rb, counts = case
    p = plan(rb, item_counts=counts)
    plain = [x for x in p.steps if x.items is None]
    if not plain:
        return
    victim = data.draw(st.sampled_from(plain))
    raw = rb.model_dump(by_alias=True, exclude_none=True)
    for step in raw["steps"]:
        if step["id"] == victim.id:
            step["estimate"] = victim.estimate_s + victim.slack_s
    same_finish = plan(Runbook.model_validate(raw), item_counts=counts)
    assert _u(same_finish.finish) == _u(p.finish)
    for step in raw["steps"]:
        if step["id"] == victim.id:
            step["estimate"] = victim.estimate_s + victim.slack_s + 1
    later = plan(Runbook.model_validate(raw), item_counts=counts)
    assert _u(later.finish) == _u(p.finish) + timedelta(seconds=1)


def _ponr_oracle(p: Plan, rb: Runbook) -> datetime | None:
    """Brute force: the best of every moment where the answer could possibly lie."""
    end = _u(p.window_end)
    always = timedelta(seconds=p.always_s)
    caps = [_u(x.start) for x in p.steps if x.irreversible and not x.always]
    cap = min(caps) if caps else None
    candidates = {_u(p.start)}
    if cap is not None:
        candidates.add(cap)
    costs = {0.0}
    for x in p.steps:
        candidates.add(_u(x.finish))
        costs.add(p.rollback_cost_s(x.finish + timedelta(microseconds=1)))
    for c in costs:
        candidates.add(end - always - timedelta(seconds=c))

    def feasible(t: datetime) -> bool:
        if t < _u(p.start) or (cap is not None and t > cap):
            return False
        return t + timedelta(seconds=p.rollback_cost_s(t)) + always <= end + TOL

    good = [t for t in candidates if feasible(t)]
    return max(good) if good else None


@_SETTINGS
@given(runbooks())
def test_property_point_of_no_return(case: tuple[Runbook, dict[str, int]]) -> None:
    rb, counts = case
    p = plan(rb, item_counts=counts)
    ponr = p.point_of_no_return
    expected = _ponr_oracle(p, rb)
    if ponr is None:
        assert expected is None
        return
    assert expected is not None
    assert abs((_u(ponr) - expected).total_seconds()) < 1e-5
    undo = timedelta(seconds=p.rollback_cost_s(ponr))
    assert _u(ponr) + undo + timedelta(seconds=p.always_s) <= _u(p.window_end) + TOL
    assert _u(ponr) >= _u(p.start)
    if p.ponr_limited_by is not None:
        assert _u(ponr) == _u(p.step(p.ponr_limited_by).start)


@_SETTINGS
@given(runbooks())
def test_property_json_times_carry_offsets(case: tuple[Runbook, dict[str, int]]) -> None:
    rb, counts = case
    data = plan(rb, item_counts=counts).to_json()
    stamps = [data["finish"], data["start"]] + [s["start"] for s in data["steps"]]
    for text in stamps:
        assert datetime.fromisoformat(text).tzinfo is not None
        assert text[-6] in "+-" and text[-3] == ":"
