"""The demo ends with what a person needs next, not 500 lines up.

``cutbook demo`` prints hundreds of lines; its last ones must say how the run ended
(and which step failed), where the flow run is in the Prefect UI, where the report
and journal are, which data directory it used, and whether the Prefect server it
started is still running, with the command that stops it. The end-to-end test runs
the real demo once, fast, on an embedded server of its own, and stops that server
with the very command the summary prints.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import subprocess
from pathlib import Path

import httpx
import pytest

from cutbook import paths
from cutbook.cli.demo import DemoSummary, PrefectServerNote, stop_hint, summary_lines
from cutbook.engine.launch import flow_run_url
from cutbook_simulator.process import free_port
from e2e_support import CUTBOOK, REPO, TINY_RUNBOOK, Cutbook

RUN = "customs-reorg-2025-20250314T160000-ab12"


def summary(**changes: object) -> DemoSummary:
    base: dict[str, object] = {
        "outcome": "succeeded",
        "failure": None,
        "failed_steps": (),
        "run_id": RUN,
        "flow_run_url": "http://127.0.0.1:4200/runs/flow-run/7f9c",
        "report": Path("/data/reports") / f"{RUN}.html",
        "journal": Path("/data/journal") / f"{RUN}.jsonl",
        "data_dir": Path("/data"),
        "estate_problems": 0,
        "chain": "intact (760 records)",
        "server": PrefectServerNote(
            ui="http://127.0.0.1:4200", ours=True, started=True, running=True, pid=41235
        ),
    }
    base.update(changes)
    return DemoSummary(**base)  # type: ignore[arg-type]


def fields(lines: list[str]) -> dict[str, str]:
    return {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in lines)}


def test_a_calm_demo_says_completed_and_where_everything_is() -> None:
    got = fields(summary_lines(summary()))
    assert got["outcome"] == "completed"
    assert got["flow run"] == "http://127.0.0.1:4200/runs/flow-run/7f9c"
    assert got["report"] == f"/data/reports/{RUN}.html"
    assert got["journal"] == f"/data/journal/{RUN}.jsonl"
    assert got["data dir"] == "/data"
    assert got["journal chain"] == "intact (760 records)"
    assert "started by the demo, left running" in got["prefect server"]
    assert got["prefect server"].endswith("stop it with: cutbook server stop --data-dir /data")


def test_a_rolled_back_demo_names_the_step_that_failed() -> None:
    lines = summary_lines(
        summary(
            outcome="rolled_back",
            failure="step 'rename-offices' failed: HTTP 503",
            failed_steps=("rename-offices",),
            estate_problems=3,
        )
    )
    got = fields(lines)
    assert got["outcome"].startswith("rolled back (step rename-offices failed)")
    assert "HTTP 503" in got["outcome"]
    assert got["estate"].startswith("NOT in the expected final state: 3 problems")


def test_a_run_left_unfinished_says_how_to_resume() -> None:
    got = fields(summary_lines(summary(outcome=None, report=None, chain=None)))
    assert got["outcome"] == f"stopped before finishing: resume it with cutbook resume {RUN}"
    assert "journal chain" not in got and got["report"].startswith("-")


def test_a_server_the_demo_did_not_start_is_not_its_to_stop() -> None:
    given = PrefectServerNote(ui="http://prefect.internal:4200", given=True)
    got = fields(summary_lines(summary(server=given)))
    assert "PREFECT_API_URL" in got["prefect server"] and "nothing to stop" in got["prefect server"]
    other = PrefectServerNote(ui="http://127.0.0.1:4200")
    assert (
        "another data directory" in fields(summary_lines(summary(server=other)))["prefect server"]
    )


def test_the_stop_command_names_the_data_dir_only_when_it_is_not_the_default(
    tmp_path: Path,
) -> None:
    assert stop_hint(paths.default_data_dir()) == "cutbook server stop"
    spaced = tmp_path / "my data"
    assert shlex.split(stop_hint(spaced)) == [
        "cutbook",
        "server",
        "stop",
        "--data-dir",
        str(spaced),
    ]


@pytest.mark.prefect
@pytest.mark.slow
def test_a_flow_run_url_is_found_after_the_run_when_the_start_did_not_know_it(
    cutbook: Cutbook, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A slow server creates the flow run after the first step started (the run never
    waits for it), so the demo asks the server afterwards, by the run's tag."""
    (tmp_path / "tiny.yaml").write_text(TINY_RUNBOOK, encoding="utf-8")
    cutbook.run("run", "tiny.yaml", "--clock", "virtual", "--run-id", "tiny-url", check=True)
    monkeypatch.setenv("PREFECT_API_URL", cutbook.env["PREFECT_API_URL"])
    url = flow_run_url("tiny-url")
    base = cutbook.env["PREFECT_API_URL"].removesuffix("/api")
    assert url is not None and re.fullmatch(
        rf"{re.escape(base)}/runs/flow-run/[0-9a-f-]{{36}}", url
    )
    flow_run = httpx.get(f"{cutbook.env['PREFECT_API_URL']}/flow_runs/{url.rsplit('/', 1)[1]}")
    assert "cutbook-run:tiny-url" in flow_run.json()["tags"]
    assert flow_run_url("no-such-run") is None
    monkeypatch.delenv("PREFECT_API_URL")
    assert flow_run_url("tiny-url") is None


@pytest.mark.slow
def test_the_real_demo_ends_with_its_summary_and_the_stop_command_works(tmp_path: Path) -> None:
    data = tmp_path / "demo data"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env.update(
        CUTBOOK_DATA_DIR=str(data),
        CUTBOOK_PREFECT_PORT=str(port),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        COLUMNS="100",  # narrower than a URL line: the summary must not fold it
    )
    try:
        done = subprocess.run(
            [CUTBOOK, "demo", "--speed", "3600"],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        lines = done.stdout.rstrip("\n").splitlines()
        rule = max(i for i, line in enumerate(lines) if "demo summary" in line)
        tail = lines[rule + 1 :]
        assert len(tail) <= 10, "a short summary, last"
        got = fields(tail)
        assert got["outcome"] == "completed"
        url = re.fullmatch(
            rf"http://127\.0\.0\.1:{port}/runs/flow-run/([0-9a-f-]{{36}})", got["flow run"]
        )
        assert url, got["flow run"]
        flow_run = httpx.get(f"http://127.0.0.1:{port}/api/flow_runs/{url.group(1)}", timeout=10)
        assert flow_run.status_code == 200, "the URL names the demo's flow run on that server"
        report, journal = Path(got["report"]), Path(got["journal"])
        assert report.suffix == ".html" and report.is_file() and report.is_absolute()
        assert journal.is_file() and journal.parent == data.resolve() / "journal"
        assert Path(got["data dir"]) == data.resolve()
        assert got["journal chain"].startswith("intact")
        server = got["prefect server"]
        assert (
            f"http://127.0.0.1:{port}" in server and "started by the demo, left running" in server
        )
        stop = server.split("stop it with: ", 1)[1]
        assert shlex.split(stop)[:3] == ["cutbook", "server", "stop"]
        stopped = subprocess.run(
            [CUTBOOK, *shlex.split(stop)[1:]],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert stopped.returncode == 0 and "Prefect server stopped" in stopped.stdout, (
            stopped.stdout + stopped.stderr
        )
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=3)
    finally:
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            subprocess.run(
                [CUTBOOK, "server", "stop", "--data-dir", str(data)],
                env=env,
                capture_output=True,
                timeout=60,
                check=False,
            )
