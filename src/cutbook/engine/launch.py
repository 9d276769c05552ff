"""Starting, resuming and answering runs: the engine's API for the CLI, the demo, embedders.

A run executes as a Prefect flow run, on the server ``PREFECT_API_URL``
names or on a local one started on demand, so the UI shows it while it runs
and after. Prefect reads its settings from the environment when first
imported, so each function here points the process at a server before
anything imports Prefect.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import httpx

from cutbook.engine.observe import RunObserver
from cutbook.engine.prefect.secrets import PrefectSecrets
from cutbook.engine.prefect.server import (
    ServerStatus,
    StopResult,
    default_port,
    ensure_server,
    server_status,
    start_embedded,
    stop_embedded,
    use_running_server,
)
from cutbook.engine.preflight import Preflight, StepCheck
from cutbook.engine.session import RunSettings, Session, new_run_id
from cutbook.engine.signals import EXIT_CODES
from cutbook.engine.state import Choice, Halt, Outcome
from cutbook.errors import EngineError, UsageError
from cutbook.logs import configure as configure_logs
from cutbook.validation import LoadedRunbook, load

if TYPE_CHECKING:
    from cutbook.engine.prefect.deploy import ScheduledCutover

T = TypeVar("T")

__all__ = [
    "Launched",
    "RunObserver",
    "RunSettings",
    "ServerStatus",
    "StepCheck",
    "StopResult",
    "answer_gate",
    "launch",
    "preflight",
    "resume",
    "schedule",
    "schedules",
    "serve",
    "server_state",
    "start_local_server",
    "stop_local_server",
    "unschedule",
]


@dataclass(frozen=True)
class Launched:
    """What became of a run: its outcome, and the session for anything more (journal, state)."""

    session: Session
    outcome: Outcome | None
    """``None``: the run stopped before it had one (Prefect refused the flow run)."""

    @property
    def run_id(self) -> str:
        return self.session.run_id

    @property
    def failure(self) -> str | None:
        return self.session.runner.failure if self.session.runner else None

    @property
    def halted(self) -> Halt | None:
        """Why the run stopped without finishing, left for resume (then ``outcome`` is None)."""
        return self.session.halted

    @property
    def exit_code(self) -> int:
        """0 succeeded; 130/143 stopped by SIGINT/SIGTERM (resumable); 1 anything else."""
        halt = self.halted
        if halt is not None and halt.signal is not None:
            return EXIT_CODES.get(halt.signal, 1)
        return 0 if self.outcome == "succeeded" else 1

    @property
    def journal_path(self) -> Path | None:
        return self.session.journal.path if self.session.journal else None

    def counts(self) -> dict[str, int]:
        """How many steps ended in each status."""
        counts: dict[str, int] = {}
        if self.session.runner is not None:
            for st in self.session.runner.states.values():
                counts[st.status] = counts.get(st.status, 0) + 1
        return counts


def launch(
    runbook: LoadedRunbook | Path,
    settings: RunSettings,
    *,
    variables: Mapping[str, Any] | None = None,
    observers: Sequence[RunObserver] = (),
) -> Launched:
    """Run a runbook to its end (rollback and ``always`` steps included)."""
    ensure_server(settings.data_dir)
    loaded = runbook if isinstance(runbook, LoadedRunbook) else load(runbook, overrides=variables)
    return _execute(Session(loaded, settings, secret_store=PrefectSecrets()), observers)


def resume(
    run_id: str,
    settings: RunSettings,
    *,
    observers: Sequence[RunObserver] = (),
    rollback: bool = False,
) -> Launched:
    """Continue a run that stopped without finishing, from its journal (``settings`` gives
    the data directory, who resumes and whether gates are auto-approved; the rest is the
    run's). ``rollback``: undo what it changed and run its ``always`` steps instead."""
    session = Session.resume(run_id, settings, secret_store=PrefectSecrets())
    session.rollback_on_resume = rollback
    ensure_server(settings.data_dir)
    return _execute(session, observers)


def preflight(
    runbook: LoadedRunbook | Path,
    settings: RunSettings,
    *,
    variables: Mapping[str, Any] | None = None,
) -> tuple[Session, list[StepCheck]]:
    """Check every step against the real targets now, changing nothing (see
    :mod:`cutbook.engine.preflight`). Secrets come from the environment, else from
    Prefect Secret blocks on the server ``PREFECT_API_URL`` names, as on the night."""
    loaded = runbook if isinstance(runbook, LoadedRunbook) else load(runbook, overrides=variables)
    settings = replace(settings, preflight=True, dry_run=True, clock="real", start=None)
    store = PrefectSecrets() if os.environ.get("PREFECT_API_URL") else None
    session = Session(loaded, settings, secret_store=store)
    configure_logs(redactor=session.redactor, zone=loaded.runbook.zone)

    async def go() -> list[StepCheck]:
        await session.prepare()
        return await Preflight(session).run()

    try:
        return session, asyncio.run(go())
    finally:
        session.release()


def answer_gate(
    run_id: str,
    step: str,
    *,
    choice: Choice,
    by: str,
    comment: str = "",
    key_file: Path | None = None,
    data_dir: Path | None = None,
) -> str:
    """Answer the question a running run waits on at ``step``; says what was answered.

    The server is found as a run finds it (``PREFECT_API_URL``, ``CUTBOOK_PREFECT_PORT``,
    the data directory's embedded server); ``key_file`` signs the answer."""
    use_running_server(data_dir)
    from cutbook.engine.prefect.gates import answer_gate as answer

    return answer(run_id, step, choice=choice, by=by, comment=comment, key_file=key_file)


def _execute(session: Session, observers: Sequence[RunObserver]) -> Launched:
    # Scrubs the secrets prepare() will learn; stamps lines in the runbook's zone.
    configure_logs(redactor=session.redactor, zone=session.loaded.runbook.zone)
    session.observers.extend(observers)
    try:
        return Launched(session, asyncio.run(_run(session)))
    finally:
        session.release()


async def _run(session: Session) -> Outcome | None:
    """Prepare and run; SIGINT/SIGTERM stop it safely from here on (see StopSignals)."""
    from cutbook.engine.prefect.flow import run_in_process

    session.stop.arm()
    await session.prepare()
    await run_in_process(session)
    return session.runner.outcome if session.runner else None


def schedule(
    loaded: LoadedRunbook, settings: RunSettings, at: datetime, *, pool: str
) -> ScheduledCutover:
    """Freeze the runbook and schedule its flow run for ``at`` (the window moves there)."""
    rb = loaded.runbook
    now = datetime.now(UTC)
    if at <= now:
        raise UsageError(f"--at {at.isoformat()} is in the past (now {now.astimezone(rb.zone)})")
    end = rb.window_end + (at - rb.window_start)
    if end <= at:
        raise UsageError(f"--at {at.isoformat()}: the window would end ({end}) before it opens")
    if not pool.strip():
        raise UsageError("--pool must name a work pool")
    ensure_server(settings.data_dir)
    from cutbook.engine.prefect.deploy import schedule as create

    settings = replace(
        settings,
        data_dir=settings.data_dir.resolve(),
        clock="real",
        start=at,
        run_id=settings.run_id or new_run_id(rb.name),
    )
    return _ask_prefect(create(loaded, settings, at, pool))


def tell_scheduled(
    loaded: LoadedRunbook, made: ScheduledCutover, at: datetime
) -> list[tuple[str, str | None]]:
    """Announce ``run-scheduled`` to the channels that subscribe; each channel with why it
    failed, if it did. Never raises: a notification must not undo a schedule. Secrets come
    from the environment only (the store is the worker's, read when the run starts)."""
    from cutbook.engine.notify import Message, tell_now
    from cutbook.redact import Redactor

    rb = loaded.runbook
    if not any("run-scheduled" in c.on for c in rb.notify):
        return []
    found = {n: os.environ[n] for n in rb.secrets if os.environ.get(n)}
    redactor = Redactor(found.values())
    end = rb.window_end + (at - rb.window_start)
    local = f"{at.astimezone(rb.zone):%a %d %b %H:%M} – {end.astimezone(rb.zone):%H:%M}"
    message = Message(
        "run-scheduled",
        f"scheduled for {local} ({rb.timezone})",
        f"{rb.name} is scheduled for {local} ({rb.timezone}); run id {made.run_id}, "
        f"schedule id {made.id}, runbook sha256 {made.sha256[:12]}.",
    )
    try:
        return tell_now(rb, loaded.static_context(found), redactor, message)
    except (ImportError, OSError, ValueError, RuntimeError) as exc:
        return [("notify", redactor.scrub_text(f"{type(exc).__name__}: {exc}"))]


def schedules() -> list[ScheduledCutover]:
    """Scheduled cutovers that have not ended, soonest first."""
    use_running_server()
    from cutbook.engine.prefect.deploy import upcoming

    return _ask_prefect(upcoming())


def unschedule(prefix: str) -> ScheduledCutover:
    """Cancel a scheduled cutover that has not started; returns what was cancelled."""
    use_running_server()
    from cutbook.engine.prefect.deploy import cancel

    return _ask_prefect(cancel(prefix))


def serve(data_dir: Path, *, pool: str, say: Callable[[str], None]) -> None:
    """Run scheduled cutovers on this machine until stopped: a process worker on ``pool``."""
    os.environ.setdefault("PREFECT_WORKER_QUERY_SECONDS", "5")  # before Prefect is imported
    ensure_server(data_dir)
    from cutbook.engine.prefect.deploy import serve as work

    asyncio.run(work(pool, say))


def start_local_server(data_dir: Path, port: int | None = None) -> tuple[ServerStatus, bool]:
    """Start the data directory's embedded Prefect server, detached, unless it runs;
    ``(status, started)``. ``port``: else ``CUTBOOK_PREFECT_PORT``, else 4200."""
    return start_embedded(data_dir, port if port is not None else default_port())


def server_state(data_dir: Path) -> ServerStatus:
    """Whether the data directory's embedded Prefect server runs, where, with which files."""
    return server_status(data_dir)


def stop_local_server(data_dir: Path) -> tuple[ServerStatus, StopResult]:
    """Stop the data directory's embedded Prefect server (never any other process)."""
    return stop_embedded(data_dir)


def _ask_prefect(call: Coroutine[Any, Any, T]) -> T:
    """One request to the Prefect API; a server that is not there is one line, not a trace."""
    try:
        return asyncio.run(call)
    except (httpx.HTTPError, OSError) as exc:
        api = os.environ.get("PREFECT_API_URL", "the Prefect API")
        raise EngineError(f"{api}: {exc}".splitlines()[0]) from None


def flow_run_url(run_id: str) -> str | None:
    """The run's flow run page, asked of the server after the run: on a slow server the
    flow run may only exist after the first step started (the run never waits for it)."""
    from cutbook.engine.prefect.parameters import run_tag
    from cutbook.engine.prefect.server import ui_url

    api = os.environ.get("PREFECT_API_URL")
    if not api:
        return None
    body = {"flow_runs": {"tags": {"all_": [run_tag(run_id)]}}, "limit": 1}
    try:
        found = httpx.post(f"{api.rstrip('/')}/flow_runs/filter", json=body, timeout=10).json()
    except (httpx.HTTPError, ValueError):
        return None
    if isinstance(found, list) and found and isinstance(found[0], dict) and found[0].get("id"):
        return ui_url(api, found[0]["id"])
    return None
