"""Shared fixtures: one real local Prefect server per test session, started on demand,
and a simulated customs estate per test module that asks for one (``sim`` and
``fresh_estate`` come from the simulator distribution, shared with adapters/tests).

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

import pytest

from cutbook_simulator.process import free_port
from cutbook_simulator.testing import fresh_estate as fresh_estate
from cutbook_simulator.testing import sim as sim
from e2e_support import Cutbook, PrefectServer


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrefectServer]:
    from cutbook.engine.prefect.server import start_server

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
