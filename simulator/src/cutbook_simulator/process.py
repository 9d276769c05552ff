"""Run the simulator as a real child process, for tests, demos and benchmarks.

A subprocess (not an in-process server) keeps the client honest: every call
crosses loopback, a restart really loses in-memory state, and a hung request
cannot block the test's own event loop.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import weakref
from pathlib import Path
from types import TracebackType

__all__ = ["SimulatorProcess", "free_port"]


def free_port(host: str = "127.0.0.1") -> int:
    """A port the OS says is free right now (a race is possible; callers retry)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _kill(proc: subprocess.Popen[bytes]) -> None:
    """Stop a child for sure: SIGTERM, a short grace period, then SIGKILL."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait(timeout=5)
    if proc.stdin is not None:
        with contextlib.suppress(OSError):
            proc.stdin.close()


class _PortTaken(Exception):
    pass


class SimulatorProcess:
    """The simulator in a child process on a free loopback port.

    Usage::

        with SimulatorProcess(faults="flaky") as sim:
            httpx.get(f"{sim.url}/vnaccs/intake")

    ``state_path`` defaults to a file in a private temporary directory that is
    removed on exit. The child also exits on its own if this process dies,
    because it watches its stdin pipe for end-of-file.
    """

    def __init__(
        self,
        state_path: Path | None = None,
        faults: str | None = None,
        *,
        port: int | None = None,
        seed_csv: Path | None = None,
        seed_random: int | None = None,
        startup_timeout: float = 15.0,
        env: dict[str, str] | None = None,
    ) -> None:
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if state_path is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="cutbook-sim-")
            state_path = Path(self._tmp.name) / "simulator.sqlite"
        self.state_path = Path(state_path)
        self.faults = faults
        self.seed_csv = seed_csv
        self.seed_random = seed_random
        self.startup_timeout = startup_timeout
        self._auto_port = port is None
        self.port = port if port is not None else free_port()
        self.host = "127.0.0.1"
        self._env = env
        self._proc: subprocess.Popen[bytes] | None = None
        self._finalizer: weakref.finalize[[subprocess.Popen[bytes]], SimulatorProcess] | None = None
        log_dir = Path(self._tmp.name) if self._tmp else self.state_path.parent
        self.log_path = log_dir / f"simulator-{self.port}.log"
        self._log_offset = 0

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _command(self) -> list[str]:
        cmd = [
            sys.executable,
            "-m",
            "cutbook_simulator",
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--state",
            str(self.state_path),
            "--exit-on-stdin-eof",
        ]
        if self.faults:
            cmd += ["--faults", self.faults]
        if self.seed_csv is not None:
            cmd += ["--seed", str(self.seed_csv)]
        if self.seed_random is not None:
            cmd += ["--seed-random", str(self.seed_random)]
        return cmd

    def start(self) -> SimulatorProcess:
        """Start the child and wait until ``/healthz`` answers.

        A port picked by us can be taken by someone else before the child binds
        it; then we try another, up to three times.
        """
        if self.running():
            return self
        for attempt in range(3):
            try:
                return self._start_once()
            except _PortTaken:
                if not self._auto_port or attempt == 2:
                    raise RuntimeError(f"port {self.port} is in use:\n{self.log_tail()}") from None
                self.port = free_port()
        raise AssertionError("unreachable")

    def _start_once(self) -> SimulatorProcess:
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        if self._env:
            env.update(self._env)
        env.setdefault("PYTHONUNBUFFERED", "1")
        with open(self.log_path, "ab") as log:
            self._log_offset = log.tell()
            self._proc = subprocess.Popen(
                self._command(),
                stdin=subprocess.PIPE,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
        self._finalizer = weakref.finalize(self, _kill, self._proc)
        try:
            self._wait_healthy()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_healthy(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + self.startup_timeout
        while True:
            code = self._proc.poll()
            if code is not None:
                if "address already in use" in self.log_tail().lower():
                    raise _PortTaken
                raise RuntimeError(
                    f"simulator exited with code {code} before it was ready:\n{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=1.0) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"simulator not healthy after {self.startup_timeout:.0f}s on {self.url}:\n"
                    f"{self.log_tail()}"
                )
            time.sleep(0.05)

    def reset(self) -> None:
        """Back to the seeded estate with no fault rules, without a restart.

        Tests share one child per module (starting one costs ~1 s), so each test
        that changes the estate starts from here instead.
        """
        for method, path in (("POST", "/admin/reset"), ("DELETE", "/admin/faults")):
            request = urllib.request.Request(f"{self.url}{path}", method=method)
            with urllib.request.urlopen(request, timeout=10) as resp:  # raises on 4xx/5xx
                resp.read()

    def log_tail(self, lines: int = 30) -> str:
        """The end of the child's output, for error messages."""
        try:
            with open(self.log_path, "rb") as fh:
                fh.seek(self._log_offset)
                text = fh.read().decode("utf-8", errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        """Stop the child (SIGTERM, then SIGKILL after 5 s); safe to call twice."""
        if self._proc is not None:
            _kill(self._proc)
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None

    def restart(self) -> SimulatorProcess:
        """Stop and start again on the same port with the same state file."""
        self.stop()
        return self.start()

    def close(self) -> None:
        self.stop()
        if self._tmp is not None:
            with contextlib.suppress(OSError):
                self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> SimulatorProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
