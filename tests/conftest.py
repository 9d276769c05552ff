"""Shared fixtures: one real local Prefect server per test session, started on demand,
and a simulated customs estate per test module that asks for one (``sim`` and
``fresh_estate`` come from the simulator distribution, shared with adapters/tests).

Engine tests run ``cutbook`` as real processes against them, the way an operator
does, so each test sees exit codes, output and the server's records exactly as
people will.

Nothing a test does may touch the real user's data directory: before any test is
collected, ``CUTBOOK_DATA_DIR`` and ``XDG_DATA_HOME`` point into a temporary
directory for the whole session (so every test and every process it starts
inherits them), and ``CUTBOOK_JOURNAL_DIR`` is unset. A test that needs its own
sets it (``monkeypatch.setenv``, or the ``env`` it gives a process).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from cutbook_simulator.process import free_port
from cutbook_simulator.testing import fresh_estate as fresh_estate
from cutbook_simulator.testing import sim as sim
from e2e_support import Cutbook, PrefectServer

ISOLATED: tuple[str, ...] = ("CUTBOOK_DATA_DIR", "XDG_DATA_HOME", "CUTBOOK_JOURNAL_DIR")


def pytest_configure(config: pytest.Config) -> None:
    """Keep the session's journals, reports and Prefect servers out of the user's home."""
    saved = {name: os.environ.get(name) for name in ISOLATED}
    root = Path(tempfile.mkdtemp(prefix="cutbook-tests-user-data-"))
    os.environ["XDG_DATA_HOME"] = str(root)
    os.environ["CUTBOOK_DATA_DIR"] = str(root / "cutbook")
    os.environ.pop("CUTBOOK_JOURNAL_DIR", None)

    def restore() -> None:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        shutil.rmtree(root, ignore_errors=True)

    config.add_cleanup(restore)


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
