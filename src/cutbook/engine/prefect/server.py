"""The embedded Prefect server: one per data directory, on loopback, kept running.

With ``PREFECT_API_URL`` set, cutbook uses that server as it is. Otherwise it
starts (or reuses) ``prefect server start`` on 127.0.0.1:4200 with SQLite
under ``<data-dir>/prefect``, detached, so the UI shows the run during and
after it. Prefect's temporary per-process server is never used: it is slow,
vanishes with the process and was seen to drop task-run records.

A team's server is started the same way against its own database
(``start_server(..., database_url="postgresql+asyncpg://...")``, see
docs/deploying.md): SQLite stalls the server for tens of seconds after a burst
of task runs, PostgreSQL does not.

Must be called before Prefect is imported, because Prefect reads these
settings from the environment at import time.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from cutbook.errors import EngineError, UsageError

DEFAULT_PORT = 4200


def _healthy(api_url: str, timeout: float = 1.0) -> bool:
    try:
        return httpx.get(api_url.rstrip("/") + "/health", timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


def configure_environment() -> None:
    """Settings every cutbook process wants from Prefect, whoever's server it uses."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "cutbook")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "INFO")
    os.environ.setdefault("PREFECT_LOGGING_TO_API_BATCH_INTERVAL", "0.5")


def server_env(home: Path, port: int, database_url: str | None = None) -> dict[str, str]:
    """The server's environment: SQLite under ``home``, or ``database_url`` (a team's
    PostgreSQL, ``postgresql+asyncpg://USER:PASSWORD@HOST:PORT/DB``)."""
    env = dict(os.environ)
    env.pop("PREFECT_API_URL", None)
    database = database_url or f"sqlite+aiosqlite:///{home / 'prefect.db'}"
    env.update(
        {
            "PREFECT_HOME": str(home),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "DO_NOT_TRACK": "1",
            # Both names of the setting: an inherited newer name would win over the older.
            "PREFECT_SERVER_DATABASE_CONNECTION_URL": database,
            "PREFECT_API_DATABASE_CONNECTION_URL": database,
            "PREFECT_SERVER_API_HOST": "127.0.0.1",
            "PREFECT_SERVER_API_PORT": str(port),
            "PREFECT_UI_API_URL": f"http://127.0.0.1:{port}/api",
        }
    )
    return env


def start_server(
    home: Path, port: int, *, wait: float = 90.0, database_url: str | None = None
) -> subprocess.Popen[bytes]:
    """Start ``prefect server start`` detached; return once /api/health answers.

    ``database_url``: keep the server's records there instead of SQLite under ``home``
    (its tables are created on first start, so allow for the migration in ``wait``).
    """
    home.mkdir(parents=True, exist_ok=True)
    prefect = Path(sys.executable).with_name("prefect")
    cmd = [str(prefect), "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    logfile = (home / "server.log").open("ab")
    proc = subprocess.Popen(
        cmd,
        env=server_env(home, port, database_url),
        stdout=logfile,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    (home / "server.pid").write_text(str(proc.pid))
    (home / "server.port").write_text(str(port))
    url = f"http://127.0.0.1:{port}/api"
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log = home / "server.log"
            raise EngineError(f"the Prefect server exited with {proc.returncode}; see {log}")
        if _healthy(url):
            return proc
        time.sleep(0.3)
    proc.terminate()
    raise EngineError(f"the Prefect server did not answer within {wait:.0f}s; see {home}")


def ensure_server(data_dir: Path) -> str:
    """Point this process at a Prefect API and return its URL."""
    configure_environment()
    given = os.environ.get("PREFECT_API_URL")
    if given:
        if not _healthy(given, timeout=5.0):
            raise EngineError(f"PREFECT_API_URL={given} does not answer /health")
        return given
    port = int(os.environ.get("CUTBOOK_PREFECT_PORT", DEFAULT_PORT))
    url = f"http://127.0.0.1:{port}/api"
    if not _healthy(url):
        start_server((data_dir / "prefect").resolve(), port)
    os.environ["PREFECT_API_URL"] = url
    return url


def use_running_server(data_dir: Path | None = None) -> str:
    """Point this process at the server a run uses, without starting one (``approve``).

    The same rules as a run: ``PREFECT_API_URL``, else ``CUTBOOK_PREFECT_PORT``, else the
    port the data directory's embedded server was started on, else 4200.
    """
    configure_environment()
    given = os.environ.get("PREFECT_API_URL")
    if given:
        return given
    port = os.environ.get("CUTBOOK_PREFECT_PORT")
    if port is None and data_dir is not None:
        try:
            port = (data_dir / "prefect" / "server.port").read_text().strip() or None
        except OSError:
            port = None
    try:
        number = int(port or DEFAULT_PORT)
    except ValueError:
        raise UsageError(f"CUTBOOK_PREFECT_PORT={port!r} is not a port number") from None
    url = f"http://127.0.0.1:{number}/api"
    os.environ["PREFECT_API_URL"] = url
    return url


def ui_url(api_url: str, flow_run_id: object) -> str:
    base = api_url.rstrip("/").removesuffix("/api")
    return f"{base}/runs/flow-run/{flow_run_id}"
