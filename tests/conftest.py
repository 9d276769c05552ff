"""Shared fixtures: one real local Prefect server per test session, started on demand,
and a simulated customs estate per test module that asks for one.

Engine tests run ``cutbook`` as real processes against them, the way an operator
does, so each test sees exit codes, output and the server's records exactly as
people will.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from cutbook.simulator.process import SimulatorProcess
from e2e_support import Cutbook, PrefectServer


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrefectServer]:
    from cutbook.engine.server import start_server
    from cutbook.simulator.process import free_port

    home = tmp_path_factory.mktemp("prefect-home")
    port = free_port()
    proc = start_server(home, port, wait=120)
    try:
        yield PrefectServer(f"http://127.0.0.1:{port}/api", home)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=15)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(proc.pid, signal.SIGKILL)


@pytest.fixture
def cutbook(prefect_server: PrefectServer, tmp_path: Path) -> Cutbook:
    env = {
        **os.environ,
        "PREFECT_API_URL": prefect_server.api_url,
        "CUTBOOK_DATA_DIR": str(tmp_path / "data"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "COLUMNS": "200",
    }
    return Cutbook(env=env, cwd=tmp_path)


@pytest.fixture(scope="module")
def sim() -> Iterator[SimulatorProcess]:
    """One simulated estate per test module, over loopback."""
    with SimulatorProcess() as process:
        yield process


@pytest.fixture
def fresh_estate(sim: SimulatorProcess) -> None:
    """Back to the seeded estate with no fault rules, before each test that asks."""
    httpx.post(f"{sim.url}/admin/reset").raise_for_status()
    httpx.delete(f"{sim.url}/admin/faults").raise_for_status()
