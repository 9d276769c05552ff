"""``cutbook server start|status|stop`` with real processes: the data directory's
embedded Prefect server started detached on a free port, found, stopped; and a
stale pid file naming some other process, which must be left alone."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from cutbook_simulator.process import free_port
from e2e_support import CUTBOOK

pytestmark = pytest.mark.slow


def _env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL",)}
    env.pop("CUTBOOK_PREFECT_PORT", None)
    env["CUTBOOK_DATA_DIR"] = str(data_dir)
    return env


def _cutbook(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CUTBOOK, "server", *args],
        env=_env(data_dir),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_start_status_stop(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    port = free_port()
    pidfile = data_dir / "prefect" / "server.pid"
    pid: int | None = None
    try:
        started = _cutbook(data_dir, "start", "--port", str(port))
        assert started.returncode == 0, started.stdout + started.stderr
        assert f"http://127.0.0.1:{port}" in started.stdout
        assert "cutbook server stop" in started.stdout
        pid = int(pidfile.read_text())

        status = _cutbook(data_dir, "status")
        assert status.returncode == 0, status.stdout + status.stderr
        assert "running" in status.stdout and str(pid) in status.stdout
        assert str(data_dir / "prefect" / "prefect.db") in status.stdout
        assert httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=5).status_code == 200

        # A run in this data directory uses it, though it is not on CUTBOOK_PREFECT_PORT.
        found = subprocess.run(
            [
                sys.executable,
                "-c",
                "import pathlib, sys; from cutbook.engine.prefect.server import ensure_server; "
                "print(ensure_server(pathlib.Path(sys.argv[1])))",
                str(data_dir),
            ],
            env=_env(data_dir),
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        assert found.stdout.strip() == f"http://127.0.0.1:{port}/api"

        again = _cutbook(data_dir, "start", "--port", str(port))
        assert again.returncode == 0, again.stdout + again.stderr
        assert "already running" in again.stdout and f"127.0.0.1:{port}" in again.stdout
        assert int(pidfile.read_text()) == pid

        stopped = _cutbook(data_dir, "stop")
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
        assert "stopped" in stopped.stdout
        assert not _alive(pid)
        assert not pidfile.exists()

        after = _cutbook(data_dir, "status")
        assert after.returncode == 1, after.stdout + after.stderr
        assert "not running" in after.stdout

        noop = _cutbook(data_dir, "stop")
        assert noop.returncode == 0, noop.stdout + noop.stderr
        assert "no Prefect server running" in noop.stdout
    finally:
        if pid is not None and _alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)


def test_stale_pid_file_is_not_killed(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    home = data_dir / "prefect"
    home.mkdir(parents=True)
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        (home / "server.pid").write_text(str(sleeper.pid))
        (home / "server.port").write_text(str(free_port()))

        status = _cutbook(data_dir, "status")
        assert status.returncode == 1, status.stdout + status.stderr
        assert "stale" in status.stdout

        stopped = _cutbook(data_dir, "stop")
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
        assert "stale" in stopped.stdout
        assert sleeper.poll() is None, "cutbook server stop killed a process that is not it"
        assert not (home / "server.pid").exists()
    finally:
        sleeper.kill()
        sleeper.wait()


def test_bad_port_is_one_line(tmp_path: Path) -> None:
    env = _env(tmp_path) | {"CUTBOOK_PREFECT_PORT": "not-a-port"}
    done = subprocess.run(
        [CUTBOOK, "server", "start"], env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().count("\n") == 0 and "CUTBOOK_PREFECT_PORT" in done.stderr
