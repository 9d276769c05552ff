"""Signals mean "stop safely", never "die": the run is left for ``cutbook resume``."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from typing import TYPE_CHECKING

from cutbook.engine.state import Halt

if TYPE_CHECKING:
    from cutbook.engine.runner import Runner
    from cutbook.engine.session import Session

STOP_GRACE_ENV = "CUTBOOK_STOP_GRACE"
"""Seconds (real time) a first SIGINT/SIGTERM lets changes in flight finish; default 30."""
EXIT_CODES = {"SIGINT": 130, "SIGTERM": 143}
"""128 + the signal's number, as shells report a process a signal stopped."""


def _say(message: str) -> None:
    """Straight to stderr: the operator must see this whatever the logging does."""
    with contextlib.suppress(OSError, ValueError):
        sys.stderr.write(f"cutbook: {message}\n")
        sys.stderr.flush()


class StopSignals:
    """SIGINT and SIGTERM mean "stop safely", never "die".

    The first: start nothing new, let changes in flight finish (for up to
    ``CUTBOOK_STOP_GRACE`` seconds, default 30), then leave the run resumable.
    A second, or the grace running out: cancel what is in flight now; the
    write-ahead intents make that safe to resume. Handlers live on the event
    loop (``add_signal_handler``), so they run between awaits, never inside a
    journal write.
    """

    def __init__(self, session: Session) -> None:
        self.session = session
        self.received: str | None = None
        self.hard = False
        self.grace = float(os.environ.get(STOP_GRACE_ENV) or 30.0)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None

    def arm(self) -> None:
        """(Re)install the handlers; Prefect's flow engine replaces SIGTERM's on entry."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._loop = loop
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, self._received, sig)
            except (ValueError, RuntimeError, NotImplementedError):
                return  # not the main thread (an embedder): the host's handlers apply

    def settle(self) -> None:
        """The run is over or halted: no hard stop is due. The handlers stay until the
        event loop closes (closing removes them), so a late Ctrl-C cannot raise
        KeyboardInterrupt inside Prefect's teardown."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def apply(self, runner: Runner) -> None:
        """A signal that came before the runner existed stops it before it starts."""
        if self.received is not None:
            runner.state.halt(Halt("signal", self.received, hard=self.hard))

    def _received(self, signum: int) -> None:
        name = signal.Signals(signum).name
        runner = self.session.runner
        if runner is not None and runner.outcome is not None:
            return  # already over; it is only closing
        if self.received is None:
            self.received = name
            _say(
                f"{name}: stopping safely: nothing new starts; changes in flight may finish "
                f"(up to {self.grace:g} s). Press Ctrl-C (or send {name}) again to stop now. "
                f"The run stays resumable: {self.session.resume_command}"
            )
            if self._loop is not None:
                self._timer = self._loop.call_later(self.grace, self._stop_now, "time is up")
            if runner is not None:
                runner.state.halt(Halt("signal", name))
            return
        self._stop_now(f"a second {name}")

    def _stop_now(self, why: str) -> None:
        if self.hard:
            return
        self.hard = True
        runner = self.session.runner
        _say(f"{why}: stopping now; changes in flight are cancelled (resume settles them)")
        if runner is not None and self.received is not None:
            runner.state.halt(Halt("signal", self.received, hard=True))
