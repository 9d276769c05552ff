"""The embedded Prefect server under ``cutbook server``: start, status, stop.

Why a command of its own: ``cutbook run`` and ``cutbook demo`` start the data
directory's Prefect server on demand and leave it running, so the UI keeps
showing the run. These commands start it ahead of the night, tell whether it
runs, and stop it without hunting for its pid. Parsing and printing only: the
engine's launch API does the work.

Exit codes: 0 done (``status``: running and healthy), 1 ``status`` found it not
running, 2 bad input or a server that would not start.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Annotated, Final

import typer

from cutbook import paths
from cutbook.cli.console import err, out
from cutbook.cli.options import DataDirOption

if TYPE_CHECKING:
    from cutbook.engine.launch import ServerStatus

START_HELP: Final = """Start the embedded Prefect server for a data directory, detached.

The server keeps its database under DATA-DIR/prefect and keeps running after
this command returns, listening on 127.0.0.1 only. Runs in the same data
directory use it (unless PREFECT_API_URL names another server). If it already
runs, this says so with its URL and starts nothing.

Port: --port, else CUTBOOK_PREFECT_PORT, else 4200.

Example:

    $ cutbook server start --data-dir /srv/cutover --port 4300

    Prefect server started: http://127.0.0.1:4300 (pid 41235)

    stop it with: cutbook server stop --data-dir /srv/cutover
"""

STATUS_HELP: Final = """Tell whether the data directory's embedded Prefect server runs.

Prints its URL, pid, database and log. Exits 0 when it runs and answers
/api/health, 1 otherwise, so a script can test it.

Example:

    $ cutbook server status --data-dir /srv/cutover || cutbook server start --data-dir /srv/cutover
"""

STOP_HELP: Final = """Stop the embedded Prefect server started for a data directory.

Sends SIGTERM to the server's process group, waits up to 15 s, then SIGKILL,
and removes DATA-DIR/prefect/server.pid. Only a process that is a Prefect
server is ever signalled: a pid file naming anything else is stale and only
removed. Nothing running is not an error (exit 0). The database stays, so the
next start shows every past run again.

Example:

    $ cutbook server stop --data-dir /srv/cutover
"""

PortOption = Annotated[
    int | None,
    typer.Option(
        "--port",
        min=1,
        max=65535,
        help="Port on 127.0.0.1. [default: CUTBOOK_PREFECT_PORT, else 4200]",
        show_default=False,
    ),
]


def register(app: typer.Typer) -> None:
    app.command(name="start", help=START_HELP)(start_command)
    app.command(name="status", help=STATUS_HELP)(status_command)
    app.command(name="stop", help=STOP_HELP)(stop_command)


def _stop_hint(data_dir: DataDirOption) -> str:
    return "cutbook server stop" + (f" --data-dir {data_dir}" if data_dir is not None else "")


def _note_api_url() -> None:
    given = os.environ.get("PREFECT_API_URL")
    if given:
        err.print(
            f"note: PREFECT_API_URL={given} is set, so cutbook runs use that server, not this one",
            style="yellow",
            markup=False,
        )


def start_command(data_dir: DataDirOption = None, port: PortOption = None) -> None:
    from cutbook.engine.launch import start_local_server

    status, started = start_local_server(paths.data_dir(data_dir), port)
    if started:
        out.print(f"Prefect server started: {status.ui} (pid {status.pid})", markup=False)
    else:
        out.print(f"Prefect server already running: {status.ui} (pid {status.pid})", markup=False)
    out.print(f"log: {status.log}", markup=False)
    out.print(f"stop it with: {_stop_hint(data_dir)}", markup=False)
    _note_api_url()


def _describe(status: ServerStatus) -> None:
    url = status.ui or "-"
    out.print(f"url:      {url if status.running else f'- (last: {url})'}", markup=False)
    out.print(f"pid:      {status.pid if status.pid is not None else '-'}", markup=False)
    out.print(f"database: {status.database}", markup=False)
    out.print(f"log:      {status.log}", markup=False)


def status_command(data_dir: DataDirOption = None) -> None:
    from cutbook.engine.launch import server_state

    status = server_state(paths.data_dir(data_dir))
    if status.running and status.healthy:
        out.print("Prefect server running", style="green", markup=False)
    elif status.running:
        out.print(
            "Prefect server process running but /api/health does not answer "
            f"(starting, or stuck: see {status.log})",
            style="yellow",
            markup=False,
        )
    elif status.stale:
        out.print(
            f"Prefect server not running (stale pid file: pid {status.pid} is not it)",
            markup=False,
        )
    else:
        out.print("Prefect server not running", markup=False)
    _describe(status)
    _note_api_url()
    raise typer.Exit(0 if status.running and status.healthy else 1)


def stop_command(data_dir: DataDirOption = None) -> None:
    from cutbook.engine.launch import stop_local_server

    status, result = stop_local_server(paths.data_dir(data_dir))
    if result == "not-running":
        out.print(f"no Prefect server running for {status.home.parent}", markup=False)
    elif result == "stale":
        out.print(
            f"no Prefect server running; removed a stale pid file (pid {status.pid} "
            "is gone or is not a Prefect server, left alone)",
            markup=False,
        )
    elif result == "killed":
        out.print(
            f"Prefect server (pid {status.pid}) did not stop within 15 s: killed it",
            style="yellow",
            markup=False,
        )
    else:
        out.print(f"Prefect server stopped (pid {status.pid}, {status.ui})", markup=False)
