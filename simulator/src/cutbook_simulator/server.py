"""Start the simulator from the command line: validation, one log line, clean shutdown."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sqlite3
import sys
import threading
from pathlib import Path
from types import FrameType

from cutbook_simulator.errors import SimulatorUsageError

__all__ = ["DEFAULT_PORT", "DEFAULT_STATE", "serve"]

DEFAULT_PORT = 8765
DEFAULT_STATE = Path(".cutbook/simulator.sqlite")


def _check_port(host: str, port: int) -> None:
    if not 1 <= port <= 65535:
        raise SimulatorUsageError(f"--port must be between 1 and 65535, not {port}")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise SimulatorUsageError(
                f"cannot listen on {host}:{port}: {exc.strerror or exc} "
                "(address already in use? pick another --port)"
            ) from None


def _exit_when_stdin_closes() -> None:
    """Used by SimulatorProcess: when the parent dies, its pipe closes and we stop."""

    def watch() -> None:
        with contextlib.suppress(OSError, ValueError):
            while sys.stdin.buffer.read(4096):
                pass
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="stdin-watch", daemon=True).start()


def serve(
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    faults: str | None = None,
    state: Path = DEFAULT_STATE,
    seed: Path | None = None,
    *,
    seed_random: int | None = None,
    exit_on_stdin_eof: bool = False,
) -> None:
    """Run the simulator until SIGINT or SIGTERM; user mistakes raise SimulatorUsageError."""
    from cutbook_simulator.faults import load_faults

    config = load_faults(faults, seed_random)
    if seed is not None and not Path(seed).is_file():
        raise SimulatorUsageError(f"--seed {seed}: no such file")
    _check_port(host, port)

    import uvicorn

    from cutbook_simulator.app import create_app
    from cutbook_simulator.store import StoreError

    try:
        app = create_app(Path(state), seed, config)
    except StoreError as exc:
        raise SimulatorUsageError(f"--state {state}: {exc.message}") from None
    except sqlite3.DatabaseError as exc:
        raise SimulatorUsageError(
            f"--state {state} is not a usable simulator state file: {exc}"
        ) from None
    except OSError as exc:
        raise SimulatorUsageError(f"--state {state}: {exc.strerror or exc}") from None

    label = config.name if config.seed is None else f"{config.name}, seed {config.seed}"
    url = f"http://{host}:{port}"

    estate = app.state.estate

    class _Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            estate.stopping = True
            super().handle_exit(sig, frame)

        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets=sockets)
            if self.started:
                print(
                    f"simulator listening on {url} (faults: {label})", file=sys.stderr, flush=True
                )

    server = _Server(
        uvicorn.Config(
            app,
            host=host,
            port=port,
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=1,
            lifespan="on",
        )
    )
    if exit_on_stdin_eof:
        _exit_when_stdin_closes()
    # uvicorn re-raises the signal it caught once it has shut down cleanly; a
    # Ctrl-C then surfaces as KeyboardInterrupt, which is not an error here.
    with contextlib.suppress(KeyboardInterrupt):
        server.run()
