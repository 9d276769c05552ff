"""Data is data: a value templated into a URL path can never change the endpoint.

The red-team case: an office code ``../../../vnaccs/intake/start#`` in the office
list turned ``POST /offices/{{ old_code }}/close`` into ``POST /vnaccs/intake/start``
and reopened intake mid-cutover. Here the real engine renders the real runbook
text, and the real http adapter calls the simulated estate over loopback.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from cutbook import templating
from cutbook.adapter import Args, UrlPath, url_path_fields
from cutbook.engine.local import LocalBridge
from cutbook.engine.session import RunSettings, Session
from cutbook.validation import load
from cutbook_simulator.process import SimulatorProcess

HOSTILE = "../../../vnaccs/intake/start#"

RUNBOOK = """
apiVersion: cutbook/v1
name: url-paths
timezone: Asia/Ho_Chi_Minh
window: {start: "2025-03-14T23:00", end: "2025-03-15T05:00"}
vars:
  estate_url: ESTATE
  codes: ["HOSTILE"]
targets:
  vnaccs: {adapter: http, base_url: "{{ vars.estate_url }}/vnaccs"}
  catalogue: {adapter: http, base_url: "{{ vars.estate_url }}/catalogue"}
steps:
  - id: stop-intake
    target: vnaccs
    action: post
    with: {path: /intake/stop}
    rollback: {action: post, with: {path: /intake/start}}
  - id: close-offices
    depends_on: [stop-intake]
    target: catalogue
    action: post
    for_each: "{{ vars.codes }}"
    with: {path: "/offices/{{ item }}/close"}
"""


class PathArgs(Args):
    path: UrlPath = ""
    note: str = ""


def test_each_templated_value_is_one_percent_encoded_segment() -> None:
    assert url_path_fields(PathArgs) == {"path"}
    ctx = {"item": HOSTILE, "vars": {"prefix": "/api/v2"}}
    raw = {"path": "/offices/{{ item }}/close", "note": "{{ item }}"}
    rendered = templating.render_args(raw, ctx, url_path_fields(PathArgs))
    assert rendered["path"] == "/offices/..%2F..%2F..%2Fvnaccs%2Fintake%2Fstart%23/close"
    assert rendered["note"] == HOSTILE  # only URL paths are encoded
    for value, segment in {"..": "%2E%2E", ".": "%2E", "a b?c=1": "a%20b%3Fc%3D1"}.items():
        got = templating.render_args({"path": "/o/{{ item }}"}, {"item": value}, {"path"})
        assert got["path"] == f"/o/{segment}"
    # The runbook can vouch for a whole path, and literal slashes it wrote stay.
    got = templating.render_args({"path": "{{ vars.prefix | raw_path }}/x"}, ctx, {"path"})
    assert got["path"] == "/api/v2/x"


@pytest.mark.usefixtures("fresh_estate")
def test_a_hostile_office_code_cannot_reopen_intake(sim: SimulatorProcess, tmp_path: Path) -> None:
    path = tmp_path / "rb.yaml"
    text = RUNBOOK.replace("ESTATE", sim.url).replace("HOSTILE", HOSTILE)
    path.write_text(text, encoding="utf-8")
    loaded = load(path)
    settings = RunSettings(data_dir=tmp_path / "data", clock="virtual", speed=3600)
    session = Session(loaded, settings)

    async def go() -> str:
        await session.prepare()
        runner = session.runner_for(LocalBridge())
        outcome = await runner.run()
        await session.finish(outcome)
        return outcome

    outcome = asyncio.run(go())
    # The office does not exist, so the step fails and the night rolls back: intake is
    # reopened by stop-intake's rollback, never by the hostile path.
    assert outcome == "rolled_back"
    calls = httpx.get(f"{sim.url}/admin/calls", timeout=10).json()
    paths = [c["path"] for c in calls if c["method"] == "POST"]
    # The estate logs the decoded path; it routed the call to an office (404), not intake.
    close = next(i for i, p in enumerate(paths) if p.startswith("/catalogue/offices/"))
    assert paths[:close] == ["/vnaccs/intake/stop"]
    assert paths[close + 1 :] == ["/vnaccs/intake/start"]  # the rollback, after the failure
    assert httpx.get(f"{sim.url}/vnaccs/intake", timeout=10).json()["state"] == "open"
