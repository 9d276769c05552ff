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
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

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


def default_port() -> int:
    """``CUTBOOK_PREFECT_PORT``, else 4200."""
    value = os.environ.get("CUTBOOK_PREFECT_PORT") or str(DEFAULT_PORT)
    try:
        port = int(value)
    except ValueError:
        raise UsageError(f"CUTBOOK_PREFECT_PORT={value!r} is not a port number") from None
    if not 0 < port < 65536:
        raise UsageError(f"port {port} is out of range (1-65535)")
    return port


@dataclass(frozen=True)
class ServerStatus:
    """The embedded server of one data directory, as its pid and port files tell."""

    home: Path
    pid: int | None
    """From ``server.pid``; ``None`` when there is no (readable) pid file."""
    port: int | None
    running: bool
    """The pid is alive and is a ``prefect server`` process."""
    healthy: bool
    """Its /api/health answers."""

    @property
    def url(self) -> str | None:
        return f"http://127.0.0.1:{self.port}/api" if self.port is not None else None

    @property
    def ui(self) -> str | None:
        return f"http://127.0.0.1:{self.port}" if self.port is not None else None

    @property
    def database(self) -> Path:
        return self.home / "prefect.db"

    @property
    def log(self) -> Path:
        return self.home / "server.log"

    @property
    def stale(self) -> bool:
        """A pid file names a process that is gone or is not our server."""
        return self.pid is not None and not self.running


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[:1] != ["Z"]


def _is_prefect_server(pid: int) -> bool:
    """Alive, and its command line is ``... prefect ... server ...``: never kill anything else."""
    if pid <= 1 or pid == os.getpid() or not _alive(pid):
        return False
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    words = raw.decode(errors="replace").split("\0")
    return any("prefect" in w for w in words) and "server" in words


def server_status(data_dir: Path) -> ServerStatus:
    """Whether the embedded server started for ``data_dir`` runs, and where."""
    home = (data_dir / "prefect").resolve()
    pid = _read_int(home / "server.pid")
    port = _read_int(home / "server.port")
    running = pid is not None and _is_prefect_server(pid)
    healthy = running and port is not None and _healthy(f"http://127.0.0.1:{port}/api")
    return ServerStatus(home, pid, port, running, healthy)


def start_embedded(data_dir: Path, port: int) -> tuple[ServerStatus, bool]:
    """Start the data directory's server detached unless it runs; ``(status, started)``."""
    status = server_status(data_dir)
    if status.running:
        return status, False
    if _healthy(f"http://127.0.0.1:{port}/api"):
        raise UsageError(
            f"port {port} already answers as a Prefect server not started for {data_dir}; "
            "choose another with --port"
        )
    start_server(status.home, port)
    return server_status(data_dir), True


StopResult = Literal["stopped", "killed", "not-running", "stale"]


def _group_alive(pgid: int) -> bool:
    """Some process of the group is alive (zombies, waiting for a parent to reap, are not)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if len(fields) > 2 and fields[0] != "Z" and fields[2] == str(pgid):
            return True
    return False


def stop_embedded(data_dir: Path, *, wait: float = 15.0) -> tuple[ServerStatus, StopResult]:
    """Stop the server started for ``data_dir``: SIGTERM its process group, SIGKILL after
    ``wait`` seconds; remove the pid file. A pid file naming anything else is only removed."""
    status = server_status(data_dir)
    pidfile = status.home / "server.pid"
    if status.pid is None:
        pidfile.unlink(missing_ok=True)
        return status, "not-running"
    if not status.running:
        pidfile.unlink(missing_ok=True)
        return status, "stale"
    pid = status.pid
    # start_server makes the server a session (and group) leader; else signal it alone.
    group = os.getpgid(pid) == pid

    def send(sig: signal.Signals) -> None:
        try:
            if group:
                os.killpg(pid, sig)
            else:
                os.kill(pid, sig)
        except ProcessLookupError:
            pass

    def gone() -> bool:
        return not (_group_alive(pid) if group else _alive(pid))

    send(signal.SIGTERM)
    result: StopResult = "stopped"
    deadline = time.monotonic() + wait
    while not gone():
        if time.monotonic() >= deadline:
            send(signal.SIGKILL)
            result = "killed"
            time.sleep(0.5)
            break
        time.sleep(0.2)
    pidfile.unlink(missing_ok=True)
    return status, result


def ensure_server(data_dir: Path) -> str:
    """Point this process at a Prefect API and return its URL."""
    configure_environment()
    given = os.environ.get("PREFECT_API_URL")
    if given:
        if not _healthy(given, timeout=5.0):
            raise EngineError(f"PREFECT_API_URL={given} does not answer /health")
        return given
    if not os.environ.get("CUTBOOK_PREFECT_PORT"):
        # `cutbook server start --port N` for this data directory: use that one.
        own = server_status(data_dir)
        if own.healthy and own.url is not None:
            os.environ["PREFECT_API_URL"] = own.url
            return own.url
    port = default_port()
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
