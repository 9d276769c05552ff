"""Plan renderers and the Gantt SVG: readable, well-formed, self-contained, escaped."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from cutbook.gantt import GanttRow, render_svg
from cutbook.model import Runbook
from cutbook.plan_render import render
from cutbook.planning import plan

HCM = ZoneInfo("Asia/Ho_Chi_Minh")
EVIL = '<script>alert("x")</script> & "quotes" \'apos\''


def make(steps: list[dict[str, Any]], **extra: Any) -> Runbook:
    doc: dict[str, Any] = {
        "apiVersion": "cutbook/v1",
        "name": "customs-demo",
        "description": "Reorganise customs offices <b>tonight</b>",
        "timezone": "Asia/Ho_Chi_Minh",
        "window": {"start": "2025-03-14T22:30", "end": "05:00"},
        "steps": steps,
    }
    doc.update(extra)
    return Runbook.model_validate(doc)


STEPS: list[dict[str, Any]] = [
    {"id": "stop-intake", "name": "Stop intake", "target": "vnaccs", "estimate": "10m"},
    {
        "id": "drain",
        "name": EVIL,
        "target": "vnaccs",
        "estimate": "20m",
        "depends_on": ["stop-intake"],
    },
    {"id": "go", "approval": {}, "estimate": "5m", "depends_on": ["drain"]},
    {
        "id": "rename",
        "target": "catalogue",
        "estimate": "90s",
        "for_each": "{{ data.offices }}",
        "concurrency": 4,
        "depends_on": ["go"],
        "at": "01:00",
    },
    {"id": "side", "target": "catalogue", "estimate": "5m", "depends_on": ["go"]},
    {"id": "announce", "irreversible": True, "estimate": "2m", "depends_on": ["rename"]},
    {
        "id": "reopen",
        "always": True,
        "target": "vnaccs",
        "estimate": "3m",
        "depends_on": ["announce"],
    },
]


@pytest.fixture
def runbook() -> Runbook:
    return make(STEPS)


def test_text_lists_every_step_and_the_verdict(runbook: Runbook) -> None:
    p = plan(runbook, item_counts={"rename": 10})
    out = render(p, runbook, "text")
    for step in p.steps:
        assert step.id in out
    assert "Fits the window:" in out and "yes, with" in out
    assert "Point of no return:" in out
    assert "Critical path:" in out and "rename → announce → reopen" in out
    # critical rows are starred, the first time carries the date, later ones only HH:MM:SS
    rename_line = next(line for line in out.splitlines() if " rename " in line)
    assert rename_line.startswith("*")
    assert "2025-03-14 22:30:00" in out
    assert "2025-03-15 01:00:00" in out  # the date is shown again when it changes
    assert "10 items" in out and "approval gate" in out and "IRREVERSIBLE" in out


def test_text_says_when_it_does_not_fit(runbook: Runbook) -> None:
    rb = make([{"id": "huge", "estimate": "8h"}])
    out = render(plan(rb), rb, "text")
    assert "NO: over the window by 1h30m" in out


def test_text_flags_unknown_item_counts(runbook: Runbook) -> None:
    out = render(plan(runbook), runbook, "text")
    assert "item count unknown" in out
    assert "Item counts unknown: rename" in out


def test_text_without_seconds_uses_hh_mm() -> None:
    rb = make([{"id": "a", "estimate": "10m"}, {"id": "b", "estimate": "5m", "depends_on": ["a"]}])
    out = render(plan(rb), rb, "text")
    assert "2025-03-14 22:30 " in out and "22:40" in out and "22:40:00" not in out


def test_ponr_wording_names_the_step_it_waits_for() -> None:
    rb = make(
        [
            {"id": "a", "target": "t", "estimate": "2h"},
            {"id": "b", "target": "t", "estimate": "2h", "depends_on": ["a"]},
        ]
    )
    p = plan(rb)  # at 02:30 only a (2h) is done; undoing b as well (4h) would not fit
    assert p.point_of_no_return is not None
    out = render(p, rb, "text")
    assert "2025-03-15 02:30 (+07:00), before b finishes" in out
    assert "2h of rollback" in out


def test_ponr_wording_for_an_irreversible_step() -> None:
    rb = make([{"id": "a", "target": "t"}, {"id": "b", "irreversible": True, "depends_on": ["a"]}])
    out = render(plan(rb), rb, "text")
    assert "the start of irreversible step b" in out


def test_markdown_is_a_table(runbook: Runbook) -> None:
    p = plan(runbook, item_counts={"rename": 10})
    out = render(p, runbook, "md")
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("| | Step |"))
    assert re.fullmatch(r"\|(-{3,}:?\|)+", lines[header + 1])
    rows = lines[header + 2 : header + 2 + len(p.steps)]
    assert len(rows) == len(p.steps)
    columns = lines[header].count("|")
    for row in rows:
        assert row.startswith("| ") and row.endswith(" |")
        # escaped pipes do not add columns
        assert row.count("|") - row.count("\\|") == columns
    assert "**Fits the window:**" in out
    assert "<script>" not in out


def test_json_is_the_plan_json(runbook: Runbook) -> None:
    p = plan(runbook)
    out = render(p, runbook, "json")
    assert json.loads(out) == p.to_json()
    data = json.loads(out)
    assert data["finish"].endswith("+07:00")


def test_unknown_format_is_refused(runbook: Runbook) -> None:
    with pytest.raises(ValueError, match="unknown plan format"):
        render(plan(runbook), runbook, "pdf")  # type: ignore[arg-type]


class _Balance(HTMLParser):
    """Checks that non-void tags open and close in order."""

    VOID = frozenset({"meta", "br", "hr", "img", "input", "link", "col", "area", "base", "wbr"})

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.tags: set[str] = set()
        self.errors: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        for _, value in attrs:
            if value and re.search(r"\b(?:https?:)?//", value):
                self.errors.append(f"external reference {value!r}")
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"unexpected </{tag}> with open {self.stack[-3:]}")
            return
        self.stack.pop()


def test_html_is_self_contained_and_well_formed(runbook: Runbook) -> None:
    p = plan(runbook, item_counts={"rename": 10})
    page = render(p, runbook, "html")
    assert page.startswith("<!DOCTYPE html>")
    assert "http://" not in page and "https://" not in page
    assert "<script" not in page.lower() and "<link" not in page.lower()
    checker = _Balance()
    checker.feed(page)
    checker.close()
    assert not checker.errors, checker.errors
    assert not checker.stack
    assert {"svg", "table", "style", "header"} <= checker.tags
    svg = page[page.index("<svg") : page.index("</svg>") + len("</svg>")]
    root = ET.fromstring(svg)
    assert root.tag == "svg"
    for step in p.steps:
        assert f'<td class="id">{step.id}</td>' in page
    assert "customs-demo" in page and "Asia/Ho_Chi_Minh" in page
    assert "point of no return" in page
    assert "Fits the window" in page


def test_html_escapes_injected_markup(runbook: Runbook) -> None:
    page = render(plan(runbook), runbook, "html")
    assert "<script>" not in page
    assert "&lt;script&gt;" in page
    assert "<b>tonight</b>" not in page and "&lt;b&gt;tonight" in page


def test_html_for_a_plan_that_does_not_fit_and_has_no_ponr() -> None:
    rb = make([{"id": "a", "estimate": "5m"}, {"id": "z", "always": True, "estimate": "7h"}])
    page = render(plan(rb), rb, "html")
    assert 'class="verdict over"' in page
    assert "none: even abandoning" in page


def test_html_renders_a_large_plan() -> None:
    steps = [
        {"id": f"s{i}", "estimate": 30, "depends_on": [f"s{i - 1}"] if i else []}
        for i in range(400)
    ]
    rb = make(steps)
    page = render(plan(rb), rb, "html")
    svg = page[page.index("<svg") : page.index("</svg>") + len("</svg>")]
    ET.fromstring(svg)
    assert page.count("<tr") == 401


# --- the Gantt module on its own ---------------------------------------------------------


def _rows(n: int, **extra: Any) -> list[GanttRow]:
    base = datetime(2025, 3, 14, 22, 30, tzinfo=HCM)
    return [
        GanttRow(
            id=f"s{i}",
            label=f"Step {i}",
            planned_start=base + timedelta(minutes=i),
            planned_finish=base + timedelta(minutes=i + 5),
            critical=i % 3 == 0,
            **extra,
        )
        for i in range(n)
    ]


def _window() -> tuple[datetime, datetime]:
    return (datetime(2025, 3, 14, 22, 30, tzinfo=HCM), datetime(2025, 3, 15, 5, 0, tzinfo=HCM))


def test_gantt_one_row() -> None:
    svg = render_svg(_rows(1), window=_window(), tz=HCM)
    root = ET.fromstring(svg)
    assert root.tag == "svg"
    texts = [t.text for t in root.iter("text")]
    assert "Step 0" in texts
    assert "23:00" in texts  # hour ticks in the runbook's zone
    assert any(t and "Mar" in t for t in texts)


def test_gantt_five_hundred_rows() -> None:
    svg = render_svg(_rows(500), window=_window(), tz=HCM)
    root = ET.fromstring(svg)
    assert len(root.findall("g")) == 500
    assert int(root.get("height", "0")) < 12_000


def test_gantt_no_rows() -> None:
    root = ET.fromstring(render_svg([], window=None, tz=HCM))
    assert any(t.text == "no steps" for t in root.iter("text"))


def test_gantt_escapes_every_text() -> None:
    rows = [
        GanttRow(
            id="x<y",
            label=EVIL,
            planned_start=datetime(2025, 1, 1, 1, 0, tzinfo=UTC),
            planned_finish=datetime(2025, 1, 1, 2, 0, tzinfo=UTC),
            status='odd"<status>',
        )
    ]
    svg = render_svg(rows, window=None, markers=[(rows[0].planned_start, "<now>")], tz=UTC)
    assert "<script>" not in svg and "<now>" not in svg and "<status>" not in svg
    root = ET.fromstring(svg)  # still well-formed
    assert any("<now>" in (t.text or "") for t in root.iter("text"))


def test_gantt_actuals_statuses_and_markers() -> None:
    base = datetime(2025, 3, 14, 22, 30, tzinfo=HCM)
    rows = [
        GanttRow(
            "a",
            "A",
            base,
            base + timedelta(minutes=10),
            base,
            base + timedelta(minutes=12),
            True,
            "succeeded",
        ),
        GanttRow(
            "b",
            "B",
            base,
            base + timedelta(minutes=10),
            base + timedelta(minutes=1),
            None,
            False,
            "running",
        ),
        GanttRow("c", "C", base, base + timedelta(minutes=10), status="skipped"),
        GanttRow(
            "d",
            "D",
            base,
            base + timedelta(minutes=10),
            base,
            base + timedelta(minutes=3),
            status="failed",
        ),
    ]
    now = base + timedelta(minutes=20)
    svg = render_svg(
        rows, window=_window(), markers=[(now, "now"), (base, "point of no return")], tz=HCM
    )
    root = ET.fromstring(svg)
    texts = " ".join(t.text or "" for t in root.iter("text"))
    assert "now 22:50" in texts and "point of no return 22:30" in texts
    assert "actual: succeeded" in texts and "actual: failed" in texts and "actual: skipped" in texts
    fills = {r.get("fill") for r in root.iter("rect")}
    assert {"#2e7d32", "#c62828", "#9e9e9e", "#00897b"} <= fills


def test_gantt_standalone_has_namespace() -> None:
    svg = render_svg(_rows(2), window=None, tz=HCM, standalone=True)
    root = ET.fromstring(svg)
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    assert "xmlns" not in render_svg(_rows(2), window=None, tz=HCM)


def test_gantt_long_and_daylight_saving_ranges() -> None:
    london = ZoneInfo("Europe/London")
    start = datetime(2025, 3, 29, 20, 0, tzinfo=UTC)
    rows = [GanttRow("a", "A", start, start + timedelta(hours=40))]
    root = ET.fromstring(render_svg(rows, window=None, tz=london))
    ticks = [t.text or "" for t in root.iter("text") if re.fullmatch(r"\d\d:\d\d", t.text or "")]
    assert 3 <= len(ticks) <= 20
