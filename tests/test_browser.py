"""The two pages people look at, opened in a real (headless) Chromium.

Checks that the plan page and the audit report render to a non-blank image
with their chart painted, that the browser's DOM holds what a reader needs,
and that neither page loads anything from the network. Each check is also
run on a page built to fail it, so a check that can no longer fail is caught.

Skipped only when Chromium is missing and ``CUTBOOK_REQUIRE_BROWSER`` is unset
(``make test`` installs Chromium and sets it). Set ``CUTBOOK_SCREENSHOTS=DIR``
to keep the screenshots for a human to look at.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import browser_support as bs
from cutbook.gantt import STATUS_COLOURS

CHROMIUM = bs.find_chromium()
REQUIRED = bool(os.environ.get("CUTBOOK_REQUIRE_BROWSER"))

pytestmark: list[pytest.MarkDecorator] = [pytest.mark.slow]
if CHROMIUM is None and not REQUIRED:
    pytestmark.append(
        pytest.mark.skip(reason="no chromium (make test installs it; CUTBOOK_REQUIRE_BROWSER=1)")
    )

CRITICAL_BAR = "#1f3a5f"  # gantt._CRITICAL: dark bars of the critical path
SIZE = (1400, 2000)
CONTROL_PAGE = """<!DOCTYPE html><html><head><meta charset="utf-8">
<link rel="stylesheet" href="https://cdn.example.org/site.css">
<style>body { background: url(http://img.example.org/bg.png); }</style></head>
<body><img src="http://img.example.org/logo.png" alt="logo"><p>control</p></body></html>
"""


@dataclass
class Page:
    name: str
    html: str
    path: Path
    png: Path
    shot: bs.Shot
    dom: str


@pytest.fixture(scope="module")
def chromium() -> str:
    if CHROMIUM is None:
        pytest.fail("CUTBOOK_REQUIRE_BROWSER is set but no chromium or chromium-browser is on PATH")
    return CHROMIUM


def _open(binary: str, work: Path, name: str, html: str, size: tuple[int, int] = SIZE) -> Page:
    path = work / f"{name}.html"
    path.write_text(html, encoding="utf-8")
    png = work / f"{name}.png"
    shot = bs.screenshot(binary, path, png, size=size)
    dom = bs.dump_dom(binary, path)
    return Page(name, html, path, png, shot, dom)


@pytest.fixture(scope="module")
def pages(chromium: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Page]]:
    work = tmp_path_factory.mktemp("browser")
    plan_page, _ = bs.plan_html()
    bs.write_journal(work / "journal")
    report_page = bs.report_html(work / "journal")
    opened = {
        "plan": _open(chromium, work, "plan", plan_page),
        "report": _open(chromium, work, "report", report_page),
        # Negative controls: a blank page and a page that does load things.
        "blank": _open(chromium, work, "blank", "<!DOCTYPE html><title>b</title>", (400, 300)),
        "control": _open(chromium, work, "control", CONTROL_PAGE, (400, 300)),
    }
    yield opened
    keep = os.environ.get("CUTBOOK_SCREENSHOTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        for name in ("plan", "report"):
            shutil.copy2(opened[name].png, Path(keep) / f"{name}.png")


def _painted(page: Page) -> tuple[bs.Image, dict[tuple[int, int, int], int]]:
    assert page.shot.returncode == 0, page.shot.stderr[-2000:]
    assert page.png.is_file() and page.png.read_bytes()[:8] == bs.PNG_SIGNATURE
    image = bs.read_png(page.png)
    return image, image.colours(step=2)


def _not_blank(colours: dict[tuple[int, int, int], int]) -> None:
    sampled = sum(colours.values())
    white = colours.get((255, 255, 255), 0)
    assert len(colours) > 200, f"only {len(colours)} colours: the page looks blank"
    assert sampled - white > sampled * 0.05, "under 5% of the page is not white"


def test_blank_page_fails_the_blank_check(pages: dict[str, Page]) -> None:
    _, colours = _painted(pages["blank"])
    with pytest.raises(AssertionError, match="looks blank"):
        _not_blank(colours)


def test_plan_page_renders(pages: dict[str, Page]) -> None:
    image, colours = _painted(pages["plan"])
    assert (image.width, image.height) == SIZE
    _not_blank(colours)
    # The Gantt chart itself was painted, not just the text around it.
    assert bs.near(colours, CRITICAL_BAR) > 200


def test_report_page_renders(pages: dict[str, Page]) -> None:
    image, colours = _painted(pages["report"])
    assert (image.width, image.height) == SIZE
    _not_blank(colours)
    # Above the fold: the green "verified" banner and the rolled-back outcome badge.
    assert bs.near(colours, "#e8f5e9") > 1000
    assert bs.near(colours, "#fff4e0") > 50


def test_report_chart_painted(chromium: str, pages: dict[str, Page], tmp_path: Path) -> None:
    """The report's chart sits below the first screen: take a tall shot to see it."""
    png = tmp_path / "report-tall.png"
    shot = bs.screenshot(chromium, pages["report"].path, png, size=(1400, 4200))
    assert shot.returncode == 0, shot.stderr[-2000:]
    colours = bs.read_png(png).colours(step=2)
    for status in ("failed", "rolled_back", "succeeded"):
        assert bs.near(colours, STATUS_COLOURS[status]) > 20, status
    assert bs.near(colours, CRITICAL_BAR) > 100
    keep = os.environ.get("CUTBOOK_SCREENSHOTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy2(png, Path(keep) / "report-chart.png")


def test_plan_dom(pages: dict[str, Page]) -> None:
    dom = pages["plan"].dom
    assert "<svg" in dom and "</svg>" in dom
    for needle in (
        "Cutover plan: customs-reorg-2025",
        "update-certificates",
        "Fits the window: yes",
        "point of no return 01:28",
        "Asia/Ho_Chi_Minh",
    ):
        assert needle in dom, needle


def test_report_dom(pages: dict[str, Page]) -> None:
    dom = pages["report"].dom
    assert "<svg" in dom and "</svg>" in dom
    for needle in (
        "Audit report: customs-reorg-2025",
        bs.RUN_ID,
        bs.FAILED_STEP,
        bs.RETRIED_STEP,
        "Verified: ",
        "every hash and link checks out",
        bs.APPROVER,
        bs.OPERATOR,
        "How to read this report",
        "409 Conflict",
    ):
        assert needle in dom, needle
    assert "JOURNAL FAILED VERIFICATION" not in dom


@pytest.mark.parametrize("name", ["plan", "report"])
def test_no_network(pages: dict[str, Page], name: str) -> None:
    page = pages[name]
    assert bs.external_references(page.html) == []
    assert bs.external_references(page.dom) == []
    assert bs.page_requests(page.shot.netlog) == []


def test_network_checks_catch_a_page_that_loads_things(pages: dict[str, Page]) -> None:
    page = pages["control"]
    assert page.shot.returncode == 0, page.shot.stderr[-2000:]
    assert len(bs.external_references(page.html)) == 3
    requested = bs.page_requests(page.shot.netlog)
    assert "http://img.example.org/logo.png" in requested
    assert "https://cdn.example.org/site.css" in requested
