"""A throwaway PostgreSQL cluster for tests: initdb, start on a free port, stop, remove.

Why a real cluster: the team's shared stores (the audit store, a Prefect server
on PostgreSQL) run on PostgreSQL, and SQLite in tests would hide its locking,
types and driver (asyncpg) errors. The binaries come from the distribution's
``postgresql-15`` package (``/usr/lib/postgresql/15/bin``, or ``CUTBOOK_PG_BIN``).
initdb refuses to run as root, so as root every server command runs as the
``postgres`` user (``runuser``) in a temporary directory that user owns.

Use it as a context manager, or as the ``postgres_cluster`` fixture::

    from pg_support import PgCluster, postgres_cluster  # noqa: F401  (fixture)

    def test_x(postgres_cluster: PgCluster) -> None:
        url = postgres_cluster.url                     # postgresql+asyncpg://postgres@127.0.0.1:PORT/cutbook
        other = postgres_cluster.create_database("prefect")
        postgres_cluster.params                        # host, port, user, database, password

When the binaries or the ``postgres`` user are missing, the fixture skips with the reason.
Connections are trusted (no password): it listens on 127.0.0.1 only, for one test session.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

PG_BIN = Path(os.environ.get("CUTBOOK_PG_BIN", "/usr/lib/postgresql/15/bin"))
PG_USER = "postgres"
"""The OS user that runs the server when tests run as root; also the database superuser."""


def unavailable_reason() -> str | None:
    """Why a cluster cannot be started here, or None when it can."""
    for tool in ("initdb", "pg_ctl", "createdb"):
        if not (PG_BIN / tool).is_file():
            return f"PostgreSQL binaries not found: no {PG_BIN / tool} (install postgresql-15)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(PG_USER)
        except KeyError:
            return f"running as root and there is no {PG_USER!r} user to run initdb as"
        if shutil.which("runuser") is None:
            return "running as root and runuser is missing (util-linux)"
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _as_server_user(argv: Sequence[str]) -> list[str]:
    if os.geteuid() == 0:
        return ["runuser", "-u", PG_USER, "--", *argv]
    return list(argv)


def _run(argv: Sequence[str], *, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        _as_server_user(argv),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd="/",  # runuser's user may not be allowed into the caller's cwd
    )
    if done.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed ({done.returncode}): {done.stderr or done.stdout}")
    return done


def _reachable_base() -> Path:
    """A folder the server user can walk into (pytest's tmp dirs are root-only)."""
    for candidate in (Path(tempfile.gettempdir()), Path("/tmp")):
        if all(os.stat(p).st_mode & 0o001 for p in (candidate, *candidate.parents)):
            return candidate
    return Path("/tmp")


@dataclass(frozen=True)
class PgCluster:
    """A running cluster: where it listens and the database made for the tests."""

    host: str
    port: int
    user: str
    database: str
    root: Path
    """The temporary directory holding data, socket and log; removed at the end."""

    @property
    def params(self) -> dict[str, Any]:
        """The plain connection parameters (no password: the cluster trusts 127.0.0.1)."""
        return {
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "database": self.database,
            "password": None,
        }

    def url_for(self, database: str | None = None, driver: str = "postgresql+asyncpg") -> str:
        """A SQLAlchemy URL for a database of this cluster."""
        return f"{driver}://{self.user}@{self.host}:{self.port}/{database or self.database}"

    @property
    def url(self) -> str:
        """``postgresql+asyncpg://postgres@127.0.0.1:PORT/DB`` for the tests' database."""
        return self.url_for()

    def create_database(self, name: str) -> str:
        """Another database on the same cluster (one per consumer); returns its URL."""
        _run(
            [
                str(PG_BIN / "createdb"),
                "-h",
                self.host,
                "-p",
                str(self.port),
                "-U",
                self.user,
                name,
            ]
        )
        return self.url_for(name)

    @property
    def log(self) -> str:
        """The server's log, for a failing test's message."""
        try:
            return (self.root / "server.log").read_text(errors="replace")
        except OSError:
            return ""


@contextmanager
def running_cluster(database: str = "cutbook") -> Iterator[PgCluster]:
    """Start a cluster with one database; stop it and delete every file afterwards.

    Raises RuntimeError when it cannot start (call :func:`unavailable_reason` first to skip).
    """
    root = Path(tempfile.mkdtemp(prefix="cutbook-pg-", dir=_reachable_base()))
    data = root / "data"
    started = False
    try:
        if os.geteuid() == 0:
            entry = pwd.getpwnam(PG_USER)
            os.chown(root, entry.pw_uid, entry.pw_gid)
        _run(
            [
                str(PG_BIN / "initdb"),
                "-D",
                str(data),
                "-U",
                PG_USER,
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ]
        )
        port = _free_port()
        options = (
            f"-c listen_addresses=127.0.0.1 -c port={port} "
            f"-c unix_socket_directories={root} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        _run(
            [
                str(PG_BIN / "pg_ctl"),
                "-D",
                str(data),
                "-o",
                options,
                "-l",
                str(root / "server.log"),
                "-w",
                "-t",
                "60",
                "start",
            ]
        )
        started = True
        cluster = PgCluster("127.0.0.1", port, PG_USER, database, root)
        cluster.create_database(database)
        yield cluster
    finally:
        if started:
            with suppress(RuntimeError, subprocess.TimeoutExpired):
                _run(
                    [str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
                    timeout=60,
                )
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PgCluster]:
    """One cluster per test session; skips with the reason when PostgreSQL is not here."""
    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    with running_cluster() as cluster:
        yield cluster
